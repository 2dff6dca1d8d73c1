//! Fan-out items in the store: the item list as kept with the job (a JSON
//! array, or a count and chunk size whose items are computed), and the
//! pages `job.items` reads.

use std::sync::Arc;

use holdfast_api::{FanOutItem, ItemCounts, ItemPage};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::{StoreError, rfc3339};

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
                let start = u64::from(index) * chunk_size;
                json!({
                    "index": index,
                    "start": start,
                    "end": (start + chunk_size).min(*count),
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
    super::read::item_counts(conn, job_id, idx, &mut counts)?;
    let limit = limit.clamp(1, MAX_ITEM_PAGE);
    let end = offset.saturating_add(limit).min(total);
    let mut rows = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT item, state, attempts, pid, exit_code, signal, error_id, error, error_message,
                started_at, finished_at, log_bytes
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
