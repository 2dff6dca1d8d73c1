//! Schema versions 19 and 20: the rollup's triggers, rewritten to cost
//! less in the transaction of every submission and every activity run
//! (19), and peak memory added as the number it is taken back as (20).
//!
//! Version 16's triggers added each delta through a view whose `INSTEAD
//! OF` trigger upserted it and then deleted the row if it fell to
//! nothing, and tested states with `state IN ('succeeded', 'failed',
//! 'cancelled')`. Inside a trigger both are dear: SQLite builds the
//! three-value `IN` list as an ephemeral table on every row the trigger
//! fires for, and an insert into a view gathers its rows into another
//! before the `INSTEAD OF` trigger runs. Measured on a copy of a real
//! store with 12,000 jobs (BENCHMARKS.md, "rollup triggers"), the
//! triggers took 55 of a submission's 107 µs of writes and about 950 of
//! a one-activity job run's 1,120 µs.
//!
//! Now a delta that cannot take a count below zero (every insert and
//! update in the engine's normal course) is upserted straight into its
//! row, states are compared one by one, and a trigger whose body has
//! nothing to do is skipped by its `WHEN` clause. Only deletions
//! (retention) and values taken back (a job run again, a figure
//! corrected) still go through the views, which drop emptied rows. What
//! the rollup holds is unchanged: the same rows, counted in the same
//! transaction by any writer, `sqlite3` included.
//!
//! SQLite fires the triggers of one event newest first, so each trigger
//! that takes a value back is created after the one that adds the new
//! value: a value moved within its bucket is removed before it is added,
//! as version 16 did.

/// Version 19's SQL.
pub(in crate::store) const V19: &str = r#"
DROP TRIGGER stats_job_insert;
CREATE TRIGGER stats_job_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO stats_jobs (hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight)
    VALUES (NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), 1,
            NEW.state = 'succeeded', NEW.state = 'failed', NEW.state = 'cancelled',
            NEW.state = 'queued' OR NEW.state = 'running')
    ON CONFLICT DO UPDATE SET jobs = jobs + excluded.jobs,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, in_flight = in_flight + excluded.in_flight;
END;
-- A job written already started (rare): its queue wait and duration.
CREATE TRIGGER stats_job_insert_values AFTER INSERT ON jobs
WHEN NEW.started_at IS NOT NULL BEGIN
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, '', kind,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT NEW.created_at / 3600000 AS hour, NEW.chain AS chain,
                     COALESCE(NEW.tenant, '') AS tenant, 0 AS kind,
                     NEW.finished_at - NEW.started_at AS v
              WHERE NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled'
              UNION ALL
              SELECT NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), 1,
                     NEW.started_at - NEW.created_at)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;

DROP TRIGGER stats_job_update;
CREATE TRIGGER stats_job_update AFTER UPDATE OF state ON jobs
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO stats_jobs (hour, chain, tenant, jobs, succeeded, failed, cancelled, in_flight)
    VALUES (NEW.created_at / 3600000, NEW.chain, COALESCE(NEW.tenant, ''), 0,
            (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
            (NEW.state = 'failed') - (OLD.state = 'failed'),
            (NEW.state = 'cancelled') - (OLD.state = 'cancelled'),
            (NEW.state = 'queued' OR NEW.state = 'running')
                - (OLD.state = 'queued' OR OLD.state = 'running'))
    ON CONFLICT DO UPDATE SET jobs = jobs + excluded.jobs,
        succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, in_flight = in_flight + excluded.in_flight;
END;
-- Duration (kind 0) once the job ended, queue wait (kind 1) once it
-- started, where they are new.
CREATE TRIGGER stats_job_update_values AFTER UPDATE OF state, started_at, finished_at ON jobs
WHEN ((NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled')
      AND NEW.started_at IS NOT NULL AND NEW.finished_at IS NOT NULL
      AND NOT ((OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
               AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at))
  OR (NEW.started_at IS NOT NULL AND NEW.started_at IS NOT OLD.started_at) BEGIN
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, '', 0,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT NEW.created_at / 3600000 AS hour, NEW.chain AS chain,
                     COALESCE(NEW.tenant, '') AS tenant, NEW.finished_at - NEW.started_at AS v)
        WHERE v IS NOT NULL
          AND (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled')
          AND NOT ((OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
                   AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at)
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, '', 1,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT NEW.created_at / 3600000 AS hour, NEW.chain AS chain,
                     COALESCE(NEW.tenant, '') AS tenant, NEW.started_at - NEW.created_at AS v)
        WHERE v IS NOT NULL AND NEW.started_at IS NOT OLD.started_at
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;
-- The values they replace (a job run again), through the view.
CREATE TRIGGER stats_job_update_values_removed
AFTER UPDATE OF state, started_at, finished_at ON jobs
WHEN ((OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
      AND OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL
      AND NOT ((NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled')
               AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at))
  OR (OLD.started_at IS NOT NULL AND NEW.started_at IS NOT OLD.started_at) BEGIN
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 0,
               OLD.finished_at - OLD.started_at, -1
        WHERE (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
          AND OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL
          AND NOT ((NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled')
                   AND NEW.started_at IS OLD.started_at AND NEW.finished_at IS OLD.finished_at);
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 1,
               OLD.started_at - OLD.created_at, -1
        WHERE OLD.started_at IS NOT NULL AND NEW.started_at IS NOT OLD.started_at;
END;

DROP TRIGGER stats_job_delete;
CREATE TRIGGER stats_job_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO stats_jobs_delta VALUES (OLD.created_at / 3600000, OLD.chain,
        COALESCE(OLD.tenant, ''), -1, -(OLD.state = 'succeeded'), -(OLD.state = 'failed'),
        -(OLD.state = 'cancelled'), -(OLD.state = 'queued' OR OLD.state = 'running'));
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 0,
               OLD.finished_at - OLD.started_at, -1
        WHERE (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled')
          AND OLD.started_at IS NOT NULL AND OLD.finished_at IS NOT NULL;
    INSERT INTO stats_values_delta
        SELECT OLD.created_at / 3600000, OLD.chain, COALESCE(OLD.tenant, ''), '', 1,
               OLD.started_at - OLD.created_at, -1
        WHERE OLD.started_at IS NOT NULL;
END;

DROP TRIGGER stats_activity_insert;
CREATE TRIGGER stats_activity_insert AFTER INSERT ON activities BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), NEW.path, 1,
               NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled',
               NEW.state = 'succeeded', NEW.state = 'failed', 0, 0, 0
        FROM jobs j WHERE j.id = NEW.job_id
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
END;
DROP TRIGGER stats_activity_update;
CREATE TRIGGER stats_activity_update AFTER UPDATE OF state ON activities
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), NEW.path, 0,
               (NEW.state = 'succeeded' OR NEW.state = 'failed' OR NEW.state = 'cancelled')
                   - (OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled'),
               (NEW.state = 'succeeded') - (OLD.state = 'succeeded'),
               (NEW.state = 'failed') - (OLD.state = 'failed'), 0, 0, 0
        FROM jobs j WHERE j.id = NEW.job_id
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
END;
DROP TRIGGER stats_activity_delete;
CREATE TRIGGER stats_activity_delete AFTER DELETE ON activities BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''), OLD.path, -1,
               -(OLD.state = 'succeeded' OR OLD.state = 'failed' OR OLD.state = 'cancelled'),
               -(OLD.state = 'succeeded'), -(OLD.state = 'failed'), 0, 0, 0
        FROM jobs j WHERE j.id = OLD.job_id;
END;

-- Attempts: duration (kind 2), the activity's queue wait (kind 3, first
-- attempts) and peak memory (kind 4), one statement each.
DROP TRIGGER stats_attempt_insert;
CREATE TRIGGER stats_attempt_insert AFTER INSERT ON attempts BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               0, 0, 0, 0, 1, NEW.number > 1,
               COALESCE(NEW.user_cpu_us, 0) + COALESCE(NEW.system_cpu_us, 0)
        FROM jobs j WHERE j.id = NEW.job_id
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 2,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.finished_at - NEW.started_at AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 3,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.started_at - j.created_at AS v
              FROM jobs j WHERE j.id = NEW.job_id AND NEW.number = 1)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 4,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.peak_memory_bytes AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;

DROP TRIGGER stats_attempt_update;
CREATE TRIGGER stats_attempt_update
AFTER UPDATE OF number, user_cpu_us, system_cpu_us ON attempts
WHEN NEW.number > 1 IS NOT OLD.number > 1 OR NEW.user_cpu_us IS NOT OLD.user_cpu_us
     OR NEW.system_cpu_us IS NOT OLD.system_cpu_us BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               0, 0, 0, 0, 0, (NEW.number > 1) - (OLD.number > 1),
               COALESCE(NEW.user_cpu_us, 0) + COALESCE(NEW.system_cpu_us, 0)
                   - COALESCE(OLD.user_cpu_us, 0) - COALESCE(OLD.system_cpu_us, 0)
        FROM jobs j WHERE j.id = NEW.job_id
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
END;
CREATE TRIGGER stats_attempt_update_values
AFTER UPDATE OF number, started_at, finished_at, peak_memory_bytes ON attempts
WHEN (NEW.finished_at - NEW.started_at IS NOT NULL
      AND NEW.finished_at - NEW.started_at IS NOT OLD.finished_at - OLD.started_at)
  OR (NEW.number = 1
      AND NEW.started_at IS NOT CASE WHEN OLD.number = 1 THEN OLD.started_at END)
  OR (NEW.peak_memory_bytes IS NOT NULL AND NEW.peak_memory_bytes IS NOT OLD.peak_memory_bytes)
BEGIN
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 2,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.finished_at - NEW.started_at AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL AND v IS NOT OLD.finished_at - OLD.started_at
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 3,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.started_at - j.created_at AS v
              FROM jobs j WHERE j.id = NEW.job_id AND NEW.number = 1)
        WHERE v IS NOT NULL
          AND NEW.started_at IS NOT CASE WHEN OLD.number = 1 THEN OLD.started_at END
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 4,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.peak_memory_bytes AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL AND v IS NOT OLD.peak_memory_bytes
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;
-- The values they replace (a figure corrected), through the view.
CREATE TRIGGER stats_attempt_update_values_removed
AFTER UPDATE OF number, started_at, finished_at, peak_memory_bytes ON attempts
WHEN (OLD.finished_at - OLD.started_at IS NOT NULL
      AND OLD.finished_at - OLD.started_at IS NOT NEW.finished_at - NEW.started_at)
  OR (OLD.number = 1
      AND OLD.started_at IS NOT CASE WHEN NEW.number = 1 THEN NEW.started_at END)
  OR (OLD.peak_memory_bytes IS NOT NULL AND OLD.peak_memory_bytes IS NOT NEW.peak_memory_bytes)
BEGIN
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               c.kind, c.old - CASE c.kind WHEN 3 THEN j.created_at ELSE 0 END, -1
        FROM jobs j,
             (SELECT 2 AS kind, OLD.finished_at - OLD.started_at AS old,
                     NEW.finished_at - NEW.started_at AS new
              UNION ALL SELECT 3, CASE WHEN OLD.number = 1 THEN OLD.started_at END,
                               CASE WHEN NEW.number = 1 THEN NEW.started_at END
              UNION ALL SELECT 4, OLD.peak_memory_bytes, NEW.peak_memory_bytes) c
        WHERE j.id = NEW.job_id AND c.old IS NOT NULL AND c.old IS NOT c.new;
END;
DROP TRIGGER stats_attempt_delete;
CREATE TRIGGER stats_attempt_delete AFTER DELETE ON attempts BEGIN
    INSERT INTO stats_activities_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = OLD.job_id AND idx = OLD.idx), ''),
               0, 0, 0, 0, -1, -(OLD.number > 1),
               -(COALESCE(OLD.user_cpu_us, 0) + COALESCE(OLD.system_cpu_us, 0))
        FROM jobs j WHERE j.id = OLD.job_id;
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = OLD.job_id AND idx = OLD.idx), ''),
               v.kind, v.value - CASE v.kind WHEN 3 THEN j.created_at ELSE 0 END, -1
        FROM jobs j, (SELECT 2 AS kind, OLD.finished_at - OLD.started_at AS value
                      UNION ALL SELECT 3, CASE WHEN OLD.number = 1 THEN OLD.started_at END
                      UNION ALL SELECT 4, OLD.peak_memory_bytes) v
        WHERE j.id = OLD.job_id AND v.value IS NOT NULL;
END;
"#;

/// Version 20: peak memory (kind 4) is added as the number it is taken
/// back as. Version 19 added the column's raw value where its removal
/// (through the view) takes `value - 0`; only a value no writer of the
/// daemon's makes (text, written by hand with `sqlite3`) told them apart,
/// and then the hand write failed or was bucketed unlike its removal. The
/// update trigger now adds a new value exactly when its removal takes the
/// old one back (the column's own values differ). The removal trigger is
/// created again after it, unchanged, so it still fires first.
pub(in crate::store) const V20: &str = r#"
DROP TRIGGER stats_attempt_insert;
CREATE TRIGGER stats_attempt_insert AFTER INSERT ON attempts BEGIN
    INSERT INTO stats_activities (hour, chain, tenant, path, activities, runs, succeeded,
                                  failed, attempts, retries, cpu_us)
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               0, 0, 0, 0, 1, NEW.number > 1,
               COALESCE(NEW.user_cpu_us, 0) + COALESCE(NEW.system_cpu_us, 0)
        FROM jobs j WHERE j.id = NEW.job_id
    ON CONFLICT DO UPDATE SET activities = activities + excluded.activities,
        runs = runs + excluded.runs, succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed, attempts = attempts + excluded.attempts,
        retries = retries + excluded.retries, cpu_us = cpu_us + excluded.cpu_us;
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 2,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.finished_at - NEW.started_at AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 3,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.started_at - j.created_at AS v
              FROM jobs j WHERE j.id = NEW.job_id AND NEW.number = 1)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 4,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.peak_memory_bytes - 0 AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;

DROP TRIGGER stats_attempt_update_values;
CREATE TRIGGER stats_attempt_update_values
AFTER UPDATE OF number, started_at, finished_at, peak_memory_bytes ON attempts
WHEN (NEW.finished_at - NEW.started_at IS NOT NULL
      AND NEW.finished_at - NEW.started_at IS NOT OLD.finished_at - OLD.started_at)
  OR (NEW.number = 1
      AND NEW.started_at IS NOT CASE WHEN OLD.number = 1 THEN OLD.started_at END)
  OR (NEW.peak_memory_bytes IS NOT NULL AND NEW.peak_memory_bytes IS NOT OLD.peak_memory_bytes)
BEGIN
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 2,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.finished_at - NEW.started_at AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL AND v IS NOT OLD.finished_at - OLD.started_at
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 3,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.started_at - j.created_at AS v
              FROM jobs j WHERE j.id = NEW.job_id AND NEW.number = 1)
        WHERE v IS NOT NULL
          AND NEW.started_at IS NOT CASE WHEN OLD.number = 1 THEN OLD.started_at END
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
    INSERT INTO stats_values (hour, chain, tenant, path, kind, value, n, max_exact)
        SELECT hour, chain, tenant, path, 4,
               v - v % CASE WHEN v < 1000 THEN 1
                   ELSE CAST(substr('1000000000000000000', 1, length(v) - 2) AS INTEGER) END,
               1, v
        FROM (SELECT j.created_at / 3600000 AS hour, j.chain AS chain,
                     COALESCE(j.tenant, '') AS tenant,
                     COALESCE((SELECT path FROM activities
                               WHERE job_id = NEW.job_id AND idx = NEW.idx), '') AS path,
                     NEW.peak_memory_bytes - 0 AS v
              FROM jobs j WHERE j.id = NEW.job_id)
        WHERE v IS NOT NULL AND NEW.peak_memory_bytes IS NOT OLD.peak_memory_bytes
    ON CONFLICT DO UPDATE SET n = n + excluded.n, max_exact = MAX(max_exact, excluded.max_exact);
END;
-- The values they replace (a figure corrected), through the view.
DROP TRIGGER stats_attempt_update_values_removed;
CREATE TRIGGER stats_attempt_update_values_removed
AFTER UPDATE OF number, started_at, finished_at, peak_memory_bytes ON attempts
WHEN (OLD.finished_at - OLD.started_at IS NOT NULL
      AND OLD.finished_at - OLD.started_at IS NOT NEW.finished_at - NEW.started_at)
  OR (OLD.number = 1
      AND OLD.started_at IS NOT CASE WHEN NEW.number = 1 THEN NEW.started_at END)
  OR (OLD.peak_memory_bytes IS NOT NULL AND OLD.peak_memory_bytes IS NOT NEW.peak_memory_bytes)
BEGIN
    INSERT INTO stats_values_delta
        SELECT j.created_at / 3600000, j.chain, COALESCE(j.tenant, ''),
               COALESCE((SELECT path FROM activities
                         WHERE job_id = NEW.job_id AND idx = NEW.idx), ''),
               c.kind, c.old - CASE c.kind WHEN 3 THEN j.created_at ELSE 0 END, -1
        FROM jobs j,
             (SELECT 2 AS kind, OLD.finished_at - OLD.started_at AS old,
                     NEW.finished_at - NEW.started_at AS new
              UNION ALL SELECT 3, CASE WHEN OLD.number = 1 THEN OLD.started_at END,
                               CASE WHEN NEW.number = 1 THEN NEW.started_at END
              UNION ALL SELECT 4, OLD.peak_memory_bytes, NEW.peak_memory_bytes) c
        WHERE j.id = NEW.job_id AND c.old IS NOT NULL AND c.old IS NOT c.new;
END;
"#;
