//! The order of a chain: cycles among processes' `after`, the activities
//! each activity waits for, and what runs upstream of an activity.

use std::collections::BTreeSet;

/// Every cycle in a graph where `edges[i]` lists the nodes `i` waits for.
/// Each cycle is given once, starting at its lowest node (the one written
/// first in the file), without repeating it at the end.
pub(super) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut found: BTreeSet<Vec<usize>> = BTreeSet::new();
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // An explicit stack of (node, next edge to follow), so a long
        // chain of `after` cannot overflow the thread's stack.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&target) = edges[node].get(*next) else {
                marks[node] = Mark::Done;
                path.pop();
                continue;
            };
            *next += 1;
            match marks[target] {
                Mark::New => {
                    marks[target] = Mark::OnPath;
                    path.push((target, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                    let lowest = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|&(_, n)| *n)
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(lowest);
                    found.insert(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    found.into_iter().collect()
}

/// For each node, every node reachable through `deps` (what has to finish
/// before it can start, directly or not).
pub(super) fn upstream(deps: &[Vec<usize>]) -> Vec<BTreeSet<usize>> {
    (0..deps.len())
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut queue: Vec<usize> = deps[start].clone();
            while let Some(node) = queue.pop() {
                if seen.insert(node) {
                    queue.extend(deps[node].iter().copied());
                }
            }
            seen
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cycle_once() {
        // 0 waits for 1, 1 for 2, 2 for 0; 3 waits for itself via 4.
        let edges = vec![vec![1], vec![2], vec![0], vec![4], vec![3], vec![]];
        assert_eq!(cycles(&edges), vec![vec![0, 1, 2], vec![3, 4]]);
        assert!(cycles(&[vec![], vec![0], vec![0, 1]]).is_empty());
    }

    #[test]
    fn upstream_is_transitive() {
        let deps = vec![vec![], vec![0], vec![1], vec![0]];
        let up = upstream(&deps);
        assert_eq!(up[2], BTreeSet::from([0, 1]));
        assert_eq!(up[3], BTreeSet::from([0]));
        assert!(up[0].is_empty());
    }
}
