//! Digests of `coalesce` rules in the store: events join the open digest
//! as rows of their own, a digest whose time has come takes no more, and
//! its payload is built in event order when it is due.

use rusqlite::Connection;

use super::{NewDelivery, WriteOp, due_deliveries, schema};

fn database() -> Connection {
    let mut conn = Connection::open_in_memory().expect("in memory");
    schema::migrations().to_latest(&mut conn).expect("migrated");
    conn
}

fn queue(conn: &mut Connection, events: &[u64], until: i64, at: i64) {
    let deliveries = events
        .iter()
        .map(|&id| NewDelivery {
            event_id: id,
            rule: "ops".into(),
            kind: "job.failed".into(),
            job_id: Some(id),
            payload: format!("{{\"id\":{id}}}"),
            digest_until: Some(until),
        })
        .collect();
    let tx = conn.transaction().expect("transaction");
    WriteOp::QueueDeliveries {
        deliveries,
        last_event: *events.last().expect("events"),
        at,
    }
    .apply(&tx)
    .expect("queued");
    tx.commit().expect("commit");
}

#[test]
fn a_digest_collects_its_window_in_order_then_a_new_one_opens() {
    let mut conn = database();
    queue(&mut conn, &[3, 1, 2], 1_000, 100);
    // Queued again (after a restart): nothing twice.
    queue(&mut conn, &[3], 1_000, 200);
    assert!(due_deliveries(&conn, 999, 10).expect("due").is_empty());
    let due = due_deliveries(&conn, 1_000, 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].payload,
        r#"{"kind":"digest","rule":"ops","count":3,"events":[{"id":1},{"id":2},{"id":3}]}"#
    );
    // Its time has come: a later event opens the next digest.
    queue(&mut conn, &[4], 2_000, 1_000);
    let due = due_deliveries(&conn, 2_000, 10).expect("due");
    assert_eq!(due.len(), 2, "{due:#?}");
    assert!(due[0].payload.contains("\"count\":3"), "{due:#?}");
    assert_eq!(
        due[1].payload,
        r#"{"kind":"digest","rule":"ops","count":1,"events":[{"id":4}]}"#
    );
}

/// A digest a version-8 database kept whole in its payload keeps its
/// events after the upgrade, and new ones join them.
#[test]
fn an_open_digest_of_version_8_keeps_its_events() {
    let mut conn = Connection::open_in_memory().expect("in memory");
    schema::migrations()
        .to_version(&mut conn, 8)
        .expect("version 8");
    conn.execute(
        "INSERT INTO deliveries (event_id, rule, kind, payload, state, next_at, created_at)
         VALUES (1, 'ops', 'digest',
            '{\"kind\":\"digest\",\"rule\":\"ops\",\"count\":2,\"events\":[{\"id\":1},{\"id\":2}]}',
            'collecting', 1000, 100)",
        [],
    )
    .expect("an old digest");
    schema::migrations().to_latest(&mut conn).expect("upgraded");
    queue(&mut conn, &[5], 1_000, 200);
    let due = due_deliveries(&conn, 1_000, 10).expect("due");
    assert_eq!(
        due[0].payload,
        r#"{"kind":"digest","rule":"ops","count":3,"events":[{"id":1},{"id":2},{"id":5}]}"#
    );
}
