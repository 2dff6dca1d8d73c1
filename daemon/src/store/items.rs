//! Fan-out items in the store: the item list as kept with the job (a JSON
//! array, or a count and chunk size whose items are computed), and the
//! pages `job.items` reads.

use std::sync::Arc;

use holdfast_api::{FanOutItem, ItemCounts, ItemPage};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value, json};

use super::read::{AttemptRef, StoredJob, json_object};
use super::{StoreError, WriteOp, rfc3339};

/// A fan-out's items, fixed when the activity first starts.
#[derive(Debug, Clone)]
pub enum ItemList {
    List(Arc<Vec<Value>>),
    /// `{index, start, end}` chunks of `0..count` (`end` excluded).
    Chunks {
        count: u64,
        chunk_size: u64,
    },
}

impl ItemList {
    pub fn total(&self) -> u32 {
        match self {
            ItemList::List(list) => list.len() as u32,
            ItemList::Chunks { count, chunk_size } => count.div_ceil(*chunk_size) as u32,
        }
    }

    /// Item `index` (below `total`).
    pub fn item(&self, index: u32) -> Value {
        match self {
            ItemList::List(list) => list.get(index as usize).cloned().unwrap_or(Value::Null),
            ItemList::Chunks { count, chunk_size } => {
                let start = u64::from(index).saturating_mul(*chunk_size);
                json!({
                    "index": index,
                    "start": start,
                    "end": start.saturating_add(*chunk_size).min(*count),
                })
            }
        }
    }

    /// As kept in `activities.items`.
    pub fn stored(&self) -> Value {
        match self {
            ItemList::List(list) => json!({ "list": list.as_ref() }),
            ItemList::Chunks { count, chunk_size } => {
                json!({ "count": count, "chunk_size": chunk_size })
            }
        }
    }

    pub fn from_stored(value: &Value) -> Option<ItemList> {
        if let Some(Value::Array(list)) = value.get("list") {
            return Some(ItemList::List(Arc::new(list.clone())));
        }
        Some(ItemList::Chunks {
            count: value.get("count")?.as_u64()?,
            chunk_size: value.get("chunk_size")?.as_u64()?.max(1),
        })
    }
}

/// One fan-out item's row.
#[derive(Debug, Clone)]
pub struct StoredItem {
    pub item: u32,
    pub state: String,
    pub attempts: u32,
    pub interruptions: u32,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub started_at: Option<i64>,
    pub checkpoint: Option<Value>,
    pub outputs: Map<String, Value>,
    /// For an item on Slurm: its array's job name and id, the task's own
    /// job id, and how far its control file was applied.
    pub slurm_name: Option<String>,
    pub slurm_job_id: Option<u64>,
    pub slurm_task_job_id: Option<u64>,
    pub control_offset: u64,
}

/// The item rows of a stored job's fan-outs, onto its activities: those a
/// resume or a retry acts on (not succeeded, or succeeded with outputs to
/// pass on), and for the others a count, so a 100,000-item fan-out that
/// mostly succeeded loads counts rather than 100,000 rows.
pub(super) fn load_item_rows(conn: &Connection, job: &mut StoredJob) -> Result<(), StoreError> {
    let mut totals = conn.prepare_cached(
        "SELECT idx, SUM(state = 'succeeded' AND outputs IS NULL), MAX(item) + 1
         FROM items WHERE job_id = ?1 GROUP BY idx",
    )?;
    let mut rows = totals.query(params![job.id as i64])?;
    while let Some(row) = rows.next()? {
        let idx = row.get::<_, i64>(0)? as usize;
        if let Some(a) = job.activities.iter_mut().find(|a| a.idx == idx) {
            a.items_succeeded_plain = row.get(1)?;
            a.items_next = row.get(2)?;
        }
    }
    let mut item_stmt = conn.prepare_cached(
        "SELECT idx, item, state, attempts, interruptions, pid, pid_start, started_at,
                checkpoint, outputs, slurm_name, slurm_job_id, slurm_task_job_id, control_offset
         FROM items WHERE job_id = ?1 AND (state != 'succeeded' OR outputs IS NOT NULL)
         ORDER BY idx, item",
    )?;
    let mut rows = item_stmt.query(params![job.id as i64])?;
    while let Some(row) = rows.next()? {
        let idx = row.get::<_, i64>(0)? as usize;
        let checkpoint: Option<String> = row.get(8)?;
        let item = StoredItem {
            item: row.get(1)?,
            state: row.get(2)?,
            attempts: row.get(3)?,
            interruptions: row.get(4)?,
            pid: row.get(5)?,
            pid_start: row.get::<_, Option<i64>>(6)?.map(|s| s as u64),
            started_at: row.get(7)?,
            checkpoint: checkpoint.and_then(|c| serde_json::from_str(&c).ok()),
            outputs: json_object(row.get(9)?),
            slurm_name: row.get(10)?,
            slurm_job_id: row.get::<_, Option<i64>>(11)?.map(|id| id as u64),
            slurm_task_job_id: row.get::<_, Option<i64>>(12)?.map(|id| id as u64),
            control_offset: row.get::<_, i64>(13)?.max(0) as u64,
        };
        if let Some(a) = job.activities.iter_mut().find(|a| a.idx == idx) {
            a.item_rows.push(item);
        }
    }
    Ok(())
}

/// Count a fan-out's items by state (`total` already set): one indexed
/// range of `items`, rows only for items started.
pub(super) fn item_counts(
    conn: &Connection,
    job_id: u64,
    idx: i64,
    counts: &mut ItemCounts,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT state, COUNT(*) FROM items WHERE job_id = ?1 AND idx = ?2 GROUP BY state",
    )?;
    let mut rows = stmt.query(params![job_id as i64, idx])?;
    let mut seen = 0;
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let n: u32 = row.get(1)?;
        seen += n;
        match state.as_str() {
            "succeeded" => counts.succeeded += n,
            "failed" => counts.failed += n,
            "running" => counts.running += n,
            "retry_wait" => counts.retry_wait += n,
            "cancelled" => counts.cancelled += n,
            _ => counts.not_started += n,
        }
    }
    counts.not_started += counts.total.saturating_sub(seen);
    Ok(())
}

/// `process.activity[17]` as (`process.activity`, Some(17)); anything else
/// as itself.
pub fn split_item(name: &str) -> (&str, Option<u32>) {
    if let Some(open) = name.rfind('[')
        && let Some(index) = name[open + 1..].strip_suffix(']')
        && let Ok(item) = index.parse::<u32>()
    {
        return (&name[..open], Some(item));
    }
    (name, None)
}

/// The latest attempt of an item, as `find_item_attempt` reads it.
struct ItemAttemptRow {
    attempts: u32,
    finished_at: Option<i64>,
    log_dropped: i64,
    log_error: Option<String>,
    state: String,
}

/// An attempt of one fan-out item. The item's row holds its latest
/// attempt; earlier ones are finished and keep their log files.
pub(super) fn find_item_attempt(
    conn: &Connection,
    job_id: u64,
    idx: i64,
    path: &str,
    item: u32,
    attempt: Option<u32>,
) -> Result<Result<AttemptRef, String>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT attempts, finished_at, log_dropped, log_error, state FROM items
             WHERE job_id = ?1 AND idx = ?2 AND item = ?3",
        )?
        .query_row(params![job_id as i64, idx, item], |r| {
            Ok(ItemAttemptRow {
                attempts: r.get(0)?,
                finished_at: r.get(1)?,
                log_dropped: r.get(2)?,
                log_error: r.get(3)?,
                state: r.get(4)?,
            })
        })
        .optional()?;
    let path = crate::executor::logs::item_path(path, Some(item));
    let Some(row) = row else {
        return Ok(Err(format!("{path} has not started yet")));
    };
    if row.attempts == 0 {
        // A retry carries succeeded items over without running them.
        return Ok(Err(if row.state == "succeeded" {
            format!(
                "{path} did not run in job {job_id}: it succeeded in the job this one \
                 retries (see `retry of` in hfctl status {job_id}), whose logs have it"
            )
        } else {
            format!("{path} has not started yet")
        }));
    }
    let ItemAttemptRow {
        attempts: latest,
        finished_at,
        log_dropped: dropped,
        log_error,
        ..
    } = row;
    let number = attempt.unwrap_or(latest);
    if number == 0 || number > latest {
        return Ok(Err(format!("{path} has no attempt {number}")));
    }
    let last = number == latest;
    Ok(Ok(AttemptRef {
        idx: idx as usize,
        path,
        number,
        finished: !last || finished_at.is_some(),
        log_dropped: if last { dropped as u64 } else { 0 },
        log_error: if last { log_error } else { None },
        item: Some(item),
    }))
}

/// The fan-out writes (`WriteOp::ActivityItems`, `Item*`, `CarryItems`).
pub(super) fn apply(op: &WriteOp, tx: &Transaction<'_>) -> Result<(), StoreError> {
    match op {
        WriteOp::ActivityItems {
            job_id,
            idx,
            items,
            total,
        } => {
            tx.prepare_cached(
                "UPDATE activities SET items = ?3, items_total = ?4
                     WHERE job_id = ?1 AND idx = ?2",
            )?
            .execute(params![*job_id as i64, *idx as i64, items, total])?;
        }
        WriteOp::ItemStart {
            job_id,
            idx,
            item,
            attempt,
            started_at,
            slurm_name,
        } => {
            tx.prepare_cached(
                "INSERT INTO items (job_id, idx, item, state, attempts, attempt_state, started_at,
                        slurm_name)
                     VALUES (?1, ?2, ?3, 'running', ?4, 'running', ?5, ?6)
                     ON CONFLICT (job_id, idx, item) DO UPDATE SET state = 'running',
                        attempts = ?4, attempt_state = 'running', started_at = ?5, pid = NULL,
                        pid_start = NULL, exit_code = NULL, signal = NULL, error_id = NULL,
                        error = NULL, error_tail = NULL, error_message = NULL,
                        finished_at = NULL, log_bytes = 0, log_dropped = 0, log_error = NULL,
                        slurm_name = ?6, slurm_job_id = NULL, slurm_task_job_id = NULL,
                        control_offset = 0",
            )?
            .execute(params![
                *job_id as i64,
                *idx as i64,
                item,
                attempt,
                started_at,
                slurm_name
            ])?;
        }
        WriteOp::ItemSlurmJob {
            job_id,
            idx,
            item,
            attempt,
            slurm_job_id,
            task_job_id,
        } => {
            tx.prepare_cached(
                "UPDATE items SET slurm_job_id = COALESCE(?5, slurm_job_id),
                        slurm_task_job_id = COALESCE(?6, slurm_task_job_id)
                     WHERE job_id = ?1 AND idx = ?2 AND item = ?3 AND attempts = ?4",
            )?
            .execute(params![
                *job_id as i64,
                *idx as i64,
                item,
                attempt,
                slurm_job_id.map(|id| id as i64),
                task_job_id.map(|id| id as i64)
            ])?;
        }
        WriteOp::ItemControlOffset {
            job_id,
            idx,
            item,
            attempt,
            offset,
        } => {
            tx.prepare_cached(
                "UPDATE items SET control_offset = ?5
                     WHERE job_id = ?1 AND idx = ?2 AND item = ?3 AND attempts = ?4",
            )?
            .execute(params![
                *job_id as i64,
                *idx as i64,
                item,
                attempt,
                *offset as i64
            ])?;
        }
        WriteOp::ItemPid {
            job_id,
            idx,
            item,
            pid,
            pid_start,
        } => {
            tx.prepare_cached(
                "UPDATE items SET pid = ?4, pid_start = ?5
                     WHERE job_id = ?1 AND idx = ?2 AND item = ?3",
            )?
            .execute(params![
                *job_id as i64,
                *idx as i64,
                item,
                pid,
                pid_start.map(|s| s as i64)
            ])?;
        }
        WriteOp::ItemState {
            job_id,
            idx,
            item,
            state,
        } => {
            tx.prepare_cached(
                "UPDATE items SET state = ?4 WHERE job_id = ?1 AND idx = ?2 AND item = ?3",
            )?
            .execute(params![*job_id as i64, *idx as i64, item, state])?;
        }
        WriteOp::ItemEnd {
            item,
            item_state,
            interruptions,
            end,
        } => {
            tx.prepare_cached(
                "UPDATE items SET state = ?4, attempt_state = ?5, exit_code = ?6, signal = ?7,
                        error_id = ?8, error = ?9, finished_at = ?10, log_bytes = ?11,
                        log_dropped = ?12, error_tail = ?13, error_message = ?14,
                        interruptions = ?15
                     WHERE job_id = ?1 AND idx = ?2 AND item = ?3",
            )?
            .execute(params![
                end.job_id as i64,
                end.idx as i64,
                item,
                item_state,
                end.state,
                end.exit_code,
                end.signal,
                end.error_id,
                end.error,
                end.finished_at,
                end.log_bytes as i64,
                end.log_dropped as i64,
                end.error_tail,
                end.error_message,
                interruptions,
            ])?;
        }
        WriteOp::ItemControl {
            job_id,
            idx,
            item,
            checkpoint,
            outputs,
        } => {
            tx.prepare_cached(
                "UPDATE items SET checkpoint = COALESCE(?4, checkpoint),
                        outputs = COALESCE(?5, outputs)
                     WHERE job_id = ?1 AND idx = ?2 AND item = ?3",
            )?
            .execute(params![
                *job_id as i64,
                *idx as i64,
                item,
                checkpoint,
                outputs
            ])?;
        }
        WriteOp::CarryItems { from, job_id, idx } => {
            tx.prepare_cached(
                "INSERT INTO items (job_id, idx, item, state, attempts, checkpoint, outputs)
                     SELECT ?2, idx, item,
                        CASE state WHEN 'succeeded' THEN 'succeeded' ELSE 'pending' END,
                        0, checkpoint, CASE state WHEN 'succeeded' THEN outputs END
                     FROM items WHERE job_id = ?1 AND idx = ?3",
            )?
            .execute(params![*from as i64, *job_id as i64, *idx as i64])?;
            tx.prepare_cached(
                "UPDATE activities SET (items, items_total) = (SELECT items, items_total
                        FROM activities WHERE job_id = ?1 AND idx = ?3)
                     WHERE job_id = ?2 AND idx = ?3",
            )?
            .execute(params![*from as i64, *job_id as i64, *idx as i64])?;
        }
        _ => {}
    }
    Ok(())
}

/// The most items one `job.items` page holds.
pub const MAX_ITEM_PAGE: u32 = 1000;

/// A page of fan-out `activity` (`process.activity` or
/// `chain.process.activity`) of a job; Err(message) when there is no such
/// job or fan-out.
pub fn job_items(
    conn: &Connection,
    job_id: u64,
    activity: &str,
    offset: u32,
    limit: u32,
) -> Result<Result<ItemPage, String>, StoreError> {
    let chain: Option<String> = conn
        .prepare_cached("SELECT chain FROM jobs WHERE id = ?1")?
        .query_row(params![job_id as i64], |r| r.get(0))
        .optional()?;
    let Some(chain) = chain else {
        return Ok(Err(format!("job {job_id} does not exist")));
    };
    let path = if activity.starts_with(&format!("{chain}.")) && activity.matches('.').count() == 2 {
        activity.to_string()
    } else {
        format!("{chain}.{activity}")
    };
    let row: Option<(i64, Option<String>, Option<u32>)> = conn
        .prepare_cached(
            "SELECT idx, items, items_total FROM activities WHERE job_id = ?1 AND path = ?2",
        )?
        .query_row(params![job_id as i64, path], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((idx, stored, total)) = row else {
        return Ok(Err(format!("job {job_id} has no activity {activity}")));
    };
    let (Some(stored), Some(total)) = (stored, total) else {
        return Ok(Err(format!(
            "{path} has no items: it has no foreach, or has not started yet"
        )));
    };
    let list = serde_json::from_str(&stored)
        .ok()
        .and_then(|v| ItemList::from_stored(&v));
    let mut counts = ItemCounts {
        total,
        ..ItemCounts::default()
    };
    item_counts(conn, job_id, idx, &mut counts)?;
    let limit = limit.clamp(1, MAX_ITEM_PAGE);
    let end = offset.saturating_add(limit).min(total);
    let mut rows = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT item, state, attempts, pid, exit_code, signal, error_id, error, error_message,
                started_at, finished_at, log_bytes, slurm_job_id, slurm_task_job_id
         FROM items WHERE job_id = ?1 AND idx = ?2 AND item >= ?3 AND item < ?4 ORDER BY item",
    )?;
    let mut found = stmt.query(params![job_id as i64, idx, offset, end])?;
    while let Some(r) = found.next()? {
        let index: u32 = r.get(0)?;
        rows.insert(
            index,
            FanOutItem {
                index,
                item: Value::Null,
                state: r.get(1)?,
                attempts: r.get(2)?,
                pid: r.get(3)?,
                exit_code: r.get(4)?,
                signal: r.get(5)?,
                error_id: r.get(6)?,
                error: r.get(7)?,
                error_message: r.get(8)?,
                started_at: r.get::<_, Option<i64>>(9)?.map(rfc3339),
                finished_at: r.get::<_, Option<i64>>(10)?.map(rfc3339),
                log_bytes: r.get::<_, i64>(11)? as u64,
                slurm_job: r
                    .get::<_, Option<i64>>(12)?
                    .map(|array| format!("{array}_{index}")),
                slurm_task_job_id: r.get::<_, Option<i64>>(13)?.map(|id| id as u64),
            },
        );
    }
    let items = (offset..end)
        .map(|index| {
            let mut item = rows.remove(&index).unwrap_or_else(|| FanOutItem {
                index,
                item: Value::Null,
                state: "not_started".into(),
                attempts: 0,
                pid: None,
                exit_code: None,
                signal: None,
                error_id: None,
                error: None,
                error_message: None,
                started_at: None,
                finished_at: None,
                log_bytes: 0,
                slurm_job: None,
                slurm_task_job_id: None,
            });
            if let Some(list) = &list {
                item.item = list.item(index);
            }
            item
        })
        .collect();
    Ok(Ok(ItemPage {
        activity: path,
        counts,
        items,
        next_offset: (end < total).then_some(end),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_count_once_and_the_last_is_short() {
        let list = ItemList::Chunks {
            count: 2501,
            chunk_size: 1000,
        };
        assert_eq!(list.total(), 3);
        assert_eq!(list.item(0), json!({"index": 0, "start": 0, "end": 1000}));
        assert_eq!(
            list.item(2),
            json!({"index": 2, "start": 2000, "end": 2501})
        );
        let huge = ItemList::Chunks {
            count: u64::MAX,
            chunk_size: u64::MAX / 2 + 1,
        };
        assert_eq!(huge.total(), 2);
        assert_eq!(huge.item(1)["end"], json!(u64::MAX));
        let none = ItemList::Chunks {
            count: 0,
            chunk_size: 10,
        };
        assert_eq!(none.total(), 0);
    }

    #[test]
    fn a_stored_list_reads_back_the_same() {
        for list in [
            ItemList::List(Arc::new(vec![json!("a"), json!({"b": 1})])),
            ItemList::Chunks {
                count: 10,
                chunk_size: 3,
            },
        ] {
            let back = ItemList::from_stored(&list.stored()).expect("reads back");
            assert_eq!(back.total(), list.total());
            for i in 0..list.total() {
                assert_eq!(back.item(i), list.item(i));
            }
        }
        assert!(ItemList::from_stored(&json!({"other": 1})).is_none());
    }
}
