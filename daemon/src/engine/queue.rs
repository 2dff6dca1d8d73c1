//! A chain's queue of jobs waiting for admission under its `concurrency`:
//! highest priority first, then the oldest (lowest id) first.
//!
//! Kept as one id list per priority rather than one ordered set of
//! `(priority, id)`, so that a job's place in the queue (`job.get`'s "N
//! queued ahead") is found by binary search instead of a walk over the jobs
//! ahead of it: with 10,000 jobs queued, the walk took longer than the rest
//! of the call. Ids are handed out in increasing order, so a new job is
//! nearly always appended; one whose commit finished after a later one's is
//! inserted in its place. Taking a job out of the middle (a cancel, a
//! deadline) moves the ids on its shorter side: a few microseconds with
//! 10,000 queued, against the logarithmic removal of an ordered set.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// A job's place: its priority (highest first) and its id.
pub(super) type QueueKey = (Reverse<i32>, u64);

#[derive(Debug, Default)]
pub(super) struct Queue {
    /// The ids of each priority, ascending; the map puts the highest
    /// priority first.
    classes: BTreeMap<Reverse<i32>, VecDeque<u64>>,
    len: usize,
}

impl Queue {
    /// Queue a job; false if it was queued already.
    pub fn insert(&mut self, (priority, id): QueueKey) -> bool {
        let class = self.classes.entry(priority).or_default();
        match class.back() {
            Some(&last) if last >= id => match class.binary_search(&id) {
                Ok(_) => return false,
                Err(at) => class.insert(at, id),
            },
            _ => class.push_back(id),
        }
        self.len += 1;
        true
    }

    /// Take a job out; false if it was not queued.
    pub fn remove(&mut self, (priority, id): &QueueKey) -> bool {
        let Some(class) = self.classes.get_mut(priority) else {
            return false;
        };
        let Ok(at) = class.binary_search(id) else {
            return false;
        };
        class.remove(at);
        if class.is_empty() {
            self.classes.remove(priority);
        }
        self.len -= 1;
        true
    }

    /// The job admitted next.
    pub fn first(&self) -> Option<QueueKey> {
        let (&priority, class) = self.classes.first_key_value()?;
        Some((priority, *class.front()?))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// How many jobs are ahead of each of `keys` that is queued, as `(id,
    /// position)`, for those with at most `cap` ahead: one pass over the
    /// priorities up to the last key's (most queues have one) with a binary
    /// search per key. The pass stops once `cap` jobs are behind it, so
    /// even a queue whose every job has a priority of its own costs at most
    /// `cap` steps.
    pub fn positions(&self, mut keys: Vec<QueueKey>, cap: usize) -> Vec<(u64, usize)> {
        keys.sort_unstable();
        keys.dedup();
        let mut keys = keys.into_iter().peekable();
        let mut found = Vec::new();
        let mut ahead = 0;
        for (priority, class) in &self.classes {
            // A key of a priority that has no jobs here is not queued.
            while keys.next_if(|(p, _)| p < priority).is_some() {}
            while let Some((_, id)) = keys.next_if(|(p, _)| p == priority) {
                if let Ok(at) = class.binary_search(&id)
                    && ahead + at <= cap
                {
                    found.push((id, ahead + at));
                }
            }
            ahead += class.len();
            if keys.peek().is_none() || ahead > cap {
                break;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Against an ordered set of the same keys, through random inserts
    /// (in and out of order, repeated) and removals (present or not).
    #[test]
    fn behaves_as_an_ordered_set() {
        let mut seed = 0x2545_f491_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut queue = Queue::default();
        let mut model: BTreeSet<QueueKey> = BTreeSet::new();
        let mut newest = 0;
        for _ in 0..5_000 {
            let key = (Reverse(next(4) as i32 - 1), next(200));
            match next(5) {
                0 | 1 => {
                    newest += 1 + next(3);
                    let key = (key.0, 200 + newest);
                    assert_eq!(queue.insert(key), model.insert(key), "{key:?}");
                }
                2 => assert_eq!(queue.insert(key), model.insert(key), "{key:?}"),
                _ => assert_eq!(queue.remove(&key), model.remove(&key), "{key:?}"),
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!(queue.first(), model.first().copied());
            // Some queued keys, some not, in any order.
            let mut asked: Vec<QueueKey> = model.iter().copied().filter(|_| next(8) == 0).collect();
            asked.push(key);
            asked.reverse();
            let mut expected: Vec<(u64, usize)> = model
                .iter()
                .enumerate()
                .filter(|(_, k)| asked.contains(k))
                .map(|(at, k)| (k.1, at))
                .collect();
            let cap = next(70) as usize;
            expected.retain(|&(_, at)| at <= cap);
            let mut got = queue.positions(asked, cap);
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected);
        }
        assert!(queue.classes.values().all(|c| !c.is_empty()));
    }
}
