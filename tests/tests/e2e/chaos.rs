//! Chaos: a daemon killed with SIGKILL at random moments while jobs are
//! being submitted and run, then restarted, several times over. Every
//! activity appends `start` and `end` lines to one file; at the end the file,
//! the daemon's attempts and `/proc` must tell the same story.
//!
//! The random choices come from a seed printed at the start; set
//! `HF_E2E_CHAOS_SEED` to replay one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdfast_api::{ActivityState, AttemptState, Job, JobState};
use holdfast_tests::process::environment_values;
use holdfast_tests::{TestDaemon, hfctl_command, run_with_deadline};

/// Daemon lifetimes ended by SIGKILL; one more then runs everything to the end.
const ROUNDS: u32 = 6;
/// How long a daemon runs before it is killed: a random time in this range.
const RUN_MIN_MS: u64 = 150;
const RUN_MAX_MS: u64 = 700;
/// Pause between two submissions of the background submitter.
const SUBMIT_GAP_MS: u64 = 60;
/// Set on each daemon (and so inherited by its activities) to
/// `<fixture dir>#<generation>`: `/proc` then tells which daemon started a
/// process, and the fixture directory keeps other tests' processes out.
const GENERATION_VAR: &str = "HF_E2E_CHAOS_GENERATION";
/// How long a process SIGKILLed during recovery may take to finish dying.
const DYING: Duration = Duration::from_millis(500);

/// Appends `start`, sleeps 0-300 ms, appends `end`; each line carries the
/// job, `process.activity`, attempt, pid, daemon generation and time (ns).
const SCRIPT: &str = r#"'''
line="$HF_JOB_ID $HF_PROCESS.$HF_ACTIVITY $HF_ATTEMPT $$ ${HF_E2E_CHAOS_GENERATION##*#}"
echo "start $line $(date +%s%N)" >> @DIR@/events
ms=$(( $(od -An -N2 -tu2 /dev/urandom) % 300 ))
sleep "$(printf '0.%03d' "$ms")"
echo "end $line $(date +%s%N)" >> @DIR@/events
'''"#;

/// A serial process followed by a parallel one.
fn serial_then_parallel() -> String {
    format!(
        r#"
[process.load]
mode = "serial"

[process.load.activity.a]
shell = {SCRIPT}

[process.load.activity.b]
shell = {SCRIPT}

[process.fan]
after = ["load"]
mode = "parallel"

[process.fan.activity.c]
shell = {SCRIPT}

[process.fan.activity.d]
shell = {SCRIPT}
"#
    )
}

/// A parallel process followed by a single activity.
fn parallel_then_one() -> String {
    format!(
        r#"
[process.fan]
mode = "parallel"

[process.fan.activity.a]
shell = {SCRIPT}

[process.fan.activity.b]
shell = {SCRIPT}

[process.fan.activity.c]
shell = {SCRIPT}

[process.tail]
after = ["fan"]

[process.tail.activity.z]
shell = {SCRIPT}
"#
    )
}

/// xorshift64*: enough randomness for choosing moments, and replayable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn seed() -> u64 {
    if let Some(seed) = std::env::var("HF_E2E_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return seed;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

/// One `start` or `end` line.
#[derive(Debug, Clone, Copy)]
struct Mark {
    pid: u32,
    generation: u32,
    at: u128,
}

/// The lines of one attempt.
#[derive(Debug, Default)]
struct Marks {
    start: Option<Mark>,
    end: Option<Mark>,
}

/// Attempts by (job, `process.activity`, attempt number).
type Events = BTreeMap<(u64, String, u32), Marks>;

fn read_events(path: &Path, findings: &mut Findings) -> Events {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut events = Events::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [edge, job, activity, attempt, pid, generation, at] = fields[..] else {
            panic!("malformed events line {line:?}");
        };
        assert!(
            !generation.is_empty(),
            "{GENERATION_VAR} did not reach the activity ({line:?}); this test relies on \
             activities inheriting the daemon's environment (user mode, no run-as)"
        );
        let number = |s: &str| -> u128 {
            s.parse()
                .unwrap_or_else(|_| panic!("malformed events line {line:?}"))
        };
        let mark = Mark {
            pid: number(pid) as u32,
            generation: number(generation) as u32,
            at: number(at),
        };
        let key = (
            number(job) as u64,
            activity.to_string(),
            number(attempt) as u32,
        );
        let marks = events.entry(key).or_default();
        let slot = match edge {
            "start" => &mut marks.start,
            "end" => &mut marks.end,
            _ => panic!("malformed events line {line:?}"),
        };
        if slot.is_some() {
            findings.duplicated.push(format!(
                "attempt {:?} wrote `{edge}` twice: the same attempt number ran twice",
                events_key_text(line)
            ));
        }
        *slot = Some(mark);
    }
    events
}

fn events_key_text(line: &str) -> String {
    line.split(' ')
        .skip(1)
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Submit jobs back to back until `stop`; returns the ids hfctl reported
/// (acknowledged submissions). Failures (the daemon was killed) are expected.
fn submit_until(socket: &Path, stop: &AtomicBool, chains: &[&str], turn: &mut usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let chain = chains[*turn % chains.len()];
        *turn += 1;
        let mut cmd = hfctl_command(socket);
        cmd.args(["--json", "submit", chain]);
        let output = run_with_deadline(cmd, Duration::from_secs(30));
        if output.status.success() {
            let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("submit succeeded but printed no JSON ({e})"));
            ids.push(
                answer["job_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no job_id in {answer}")),
            );
        }
        thread::sleep(Duration::from_millis(SUBMIT_GAP_MS));
    }
    ids
}

/// Processes started by daemons of generations before `generation` that are
/// still alive (not zombies), as `(generation, pid)`; one pass over `/proc`.
fn leftovers(dir: &Path, generation: u32) -> Vec<(u32, i32)> {
    let prefix = format!("{}#", dir.display());
    environment_values(GENERATION_VAR)
        .into_iter()
        .filter_map(|(pid, value)| {
            let g: u32 = value.strip_prefix(&prefix)?.parse().ok()?;
            (g < generation).then_some((g, pid))
        })
        .collect()
}

/// Every job the daemon lists, page by page.
fn every_job_id(daemon: &TestDaemon) -> BTreeSet<u64> {
    let mut all = BTreeSet::new();
    let mut before: Option<u64> = None;
    loop {
        let mut args = vec!["list".to_string(), "--limit".into(), "1000".into()];
        if let Some(b) = before {
            args.extend(["--before".into(), b.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let listed = daemon.hfctl_json(&args);
        let jobs = listed["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{listed}"));
        all.extend(jobs.iter().filter_map(|job| job["id"].as_u64()));
        match listed["next_before"].as_u64() {
            Some(next) if !jobs.is_empty() => before = Some(next),
            _ => return all,
        }
    }
}

/// Earlier daemons' processes still alive once the grace for dying is over.
fn orphans_after_start(dir: &Path, generation: u32) -> Vec<(u32, i32)> {
    let deadline = Instant::now() + DYING;
    loop {
        let found = leftovers(dir, generation);
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// How many daemon lifetimes end in SIGKILL: `HF_E2E_CHAOS_ROUNDS`, else
/// the default run's [`ROUNDS`] (scripts/chaos runs 100 and more).
fn rounds() -> u32 {
    std::env::var("HF_E2E_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}

/// Every broken promise found, by kind; the test prints the counts (the
/// figures BENCHMARKS.md records) and fails if any is non-zero.
#[derive(Debug, Default)]
struct Findings {
    /// Acknowledged jobs the daemon no longer knows.
    lost: Vec<String>,
    /// An activity that succeeded in more than one attempt, or an attempt
    /// number that ran twice.
    duplicated: Vec<String>,
    /// Two attempts of one activity running at once, or an interrupted
    /// attempt's process outliving the next daemon's recovery.
    overlaps: Vec<String>,
    /// Processes of an earlier daemon alive after the next one was ready.
    orphans: Vec<String>,
    /// Anything else that disagrees: states, pids, unrecorded attempts.
    other: Vec<String>,
}

impl Findings {
    fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.overlaps.is_empty()
            && self.orphans.is_empty()
            && self.other.is_empty()
    }
}

#[test]
fn kill_9_at_random_moments_loses_no_job_and_runs_no_attempt_twice() {
    let seed = seed();
    let rounds = rounds();
    eprintln!("chaos seed {seed} (set HF_E2E_CHAOS_SEED={seed} to replay), {rounds} rounds");
    let mut random = Random(seed);
    let began = Instant::now();

    let settings = "max_parallel = 4\nmax_interruptions = 1000\nkill_grace = \"1s\"\n";
    let serial = serial_then_parallel();
    let parallel = parallel_then_one();
    let mut daemon = TestDaemon::prepare(
        Some(settings),
        &[("serial.toml", &serial), ("parallel.toml", &parallel)],
    );
    let dir: PathBuf = daemon.dir().to_path_buf();
    let socket = daemon.socket().to_path_buf();
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut findings = Findings::default();
    // When each generation's daemon reported ready (ns since the epoch).
    let mut ready_at: Vec<u128> = Vec::new();
    let mut turn = 0;
    // How long each start took (recovery included), for the summary.
    let mut starts: Vec<Duration> = Vec::new();

    for generation in 0..=rounds {
        daemon.set_env(GENERATION_VAR, format!("{}#{generation}", dir.display()));
        let launched = Instant::now();
        daemon.launch();
        ready_at.push(now_ns());
        starts.push(launched.elapsed());
        for (g, pid) in orphans_after_start(&dir, generation) {
            findings.orphans.push(format!(
                "pid {pid} of daemon {g} alive after daemon {generation} was ready"
            ));
        }
        if generation == rounds {
            break;
        }

        let run_for = Duration::from_millis(random.between(RUN_MIN_MS, RUN_MAX_MS));
        let stop = AtomicBool::new(false);
        thread::scope(|scope| {
            let submitter =
                scope.spawn(|| submit_until(&socket, &stop, &["serial", "parallel"], &mut turn));
            thread::sleep(run_for);
            daemon.kill9();
            stop.store(true, Ordering::Release);
            acknowledged.extend(submitter.join().expect("the submitter does not panic"));
        });
    }

    assert!(
        acknowledged.len() >= rounds as usize,
        "too few submissions were acknowledged to test anything: {acknowledged:?}"
    );
    let all = every_job_id(&daemon);
    for id in &acknowledged {
        if !all.contains(id) {
            findings
                .lost
                .push(format!("acknowledged job {id} is gone after the crashes"));
        }
    }

    // Long soaks leave hundreds of jobs to run at the end; the bound grows
    // with the rounds (scripts/chaos bounds the whole run).
    let drain = Duration::from_secs(60 + 5 * u64::from(rounds));
    let jobs: Vec<Job> = all
        .iter()
        .map(|&id| daemon.wait_for_within(id, "finished", drain, |job| job.state.is_terminal()))
        .collect();
    let events = read_events(&dir.join("events"), &mut findings);
    let mut attempts_seen = 0;
    for job in &jobs {
        if job.state != JobState::Succeeded {
            findings
                .other
                .push(format!("job {} ended {:?}", job.id, job.state));
        }
        for run in &job.activities {
            let path = format!("{}.{}", run.process, run.activity);
            attempts_seen += run.attempts.len();
            check_activity(job.id, &path, run, &events, &ready_at, &mut findings);
        }
    }
    // Every start line belongs to a recorded attempt.
    for (job_id, path, number) in events.keys() {
        let Some(job) = jobs.iter().find(|j| j.id == *job_id) else {
            findings.other.push(format!(
                "events name job {job_id}, which the daemon does not know"
            ));
            continue;
        };
        let known = job
            .activities
            .iter()
            .filter(|a| format!("{}.{}", a.process, a.activity) == *path)
            .flat_map(|a| a.attempts.iter())
            .any(|a| a.number == *number);
        if !known {
            findings.other.push(format!(
                "{job_id} {path} attempt {number} ran but no attempt row records it"
            ));
        }
    }
    let mut sorted = starts.clone();
    sorted.sort();
    eprintln!(
        "chaos summary: rounds={rounds} seconds={:.1} jobs={} acknowledged={} attempts={attempts_seen} \
         lost={} duplicated={} overlaps={} orphans={} other={} start_median_ms={} start_max_ms={}",
        began.elapsed().as_secs_f64(),
        jobs.len(),
        acknowledged.len(),
        findings.lost.len(),
        findings.duplicated.len(),
        findings.overlaps.len(),
        findings.orphans.len(),
        findings.other.len(),
        sorted[sorted.len() / 2].as_millis(),
        sorted.last().map_or(0, Duration::as_millis),
    );
    assert!(findings.is_clean(), "{findings:#?}");
}

/// The rules for one activity of a finished job:
///
/// 1. it succeeded; its last attempt is `succeeded` and every earlier one is
///    `interrupted`;
/// 2. attempt numbers run 1..=n; an attempt with a `start` line ran as the
///    pid the daemon recorded for it (so that a restarted daemon can find
///    and kill it); an attempt without one is
///    `interrupted` (the daemon died between recording it and the process's
///    first write);
/// 3. the succeeded attempt has both lines;
/// 4. an `end` line of an interrupted attempt was written before the next
///    daemon finished its recovery (the process ended just before the kill,
///    or between the kill and the restart, and was never run over);
/// 5. attempts never overlap: an attempt's `end`, if written, comes before
///    the next attempt's `start`.
fn check_activity(
    job_id: u64,
    path: &str,
    run: &holdfast_api::ActivityRun,
    events: &Events,
    ready_at: &[u128],
    findings: &mut Findings,
) {
    let context = |what: String| format!("job {job_id} {path}: {what}");
    if run.state != ActivityState::Succeeded {
        findings
            .other
            .push(context(format!("activity ended {:?}", run.state)));
    }
    let numbers: Vec<u32> = run.attempts.iter().map(|a| a.number).collect();
    let expected: Vec<u32> = (1..=run.attempts.len() as u32).collect();
    if numbers != expected {
        findings
            .other
            .push(context(format!("attempt numbers {numbers:?}")));
    }
    let succeeded = run
        .attempts
        .iter()
        .filter(|a| a.state == AttemptState::Succeeded)
        .count();
    if succeeded > 1 {
        findings
            .duplicated
            .push(context(format!("{succeeded} attempts succeeded")));
    }
    if let Some((last, earlier)) = run.attempts.split_last() {
        if last.state != AttemptState::Succeeded {
            findings
                .other
                .push(context(format!("last attempt ended {:?}", last.state)));
        }
        for attempt in earlier {
            if attempt.state != AttemptState::Interrupted
                && attempt.state != AttemptState::Succeeded
            {
                findings.other.push(context(format!(
                    "attempt {} ended {:?}",
                    attempt.number, attempt.state
                )));
            }
        }
    } else {
        findings.other.push(context("no attempt".to_string()));
    }

    let marks = |n: u32| events.get(&(job_id, path.to_string(), n));
    let mut previous_end: Option<(u32, u128)> = None;
    for attempt in &run.attempts {
        let n = attempt.number;
        let Some(seen) = marks(n).filter(|m| m.start.is_some()) else {
            if attempt.state != AttemptState::Interrupted {
                findings.other.push(context(format!(
                    "attempt {n} never started its script but ended {:?}",
                    attempt.state
                )));
            }
            if marks(n).is_some_and(|m| m.end.is_some()) {
                findings.other.push(context(format!(
                    "attempt {n} has an end line but no start line"
                )));
            }
            continue;
        };
        let Some(start) = seen.start else { continue };
        // The pid is committed just after the spawn, so a kill -9 in between
        // leaves it unrecorded on an interrupted attempt; the restarted
        // daemon then finds the process by its HF_* environment instead
        // (the overlap check below and the orphan check prove it did).
        // A recorded pid must be the right one, and a succeeded attempt
        // always has one.
        match attempt.pid {
            Some(pid) if pid != start.pid => findings.other.push(context(format!(
                "attempt {n} ran as pid {}, but the daemon recorded {pid}",
                start.pid
            ))),
            None if attempt.state != AttemptState::Interrupted => {
                findings.other.push(context(format!(
                    "attempt {n} ran as pid {} and ended {:?} without a recorded pid",
                    start.pid, attempt.state
                )))
            }
            _ => {}
        }
        if let Some((m, end)) = previous_end
            && end >= start.at
        {
            findings.overlaps.push(context(format!(
                "attempt {m} wrote its end after attempt {n} started: two copies ran at once"
            )));
        }
        match (attempt.state, seen.end) {
            (AttemptState::Succeeded, None) => findings.other.push(context(format!(
                "attempt {n} succeeded without writing its end"
            ))),
            (AttemptState::Interrupted, Some(end)) => {
                let recovered_by = ready_at
                    .get(start.generation as usize + 1)
                    .copied()
                    .unwrap_or(u128::MAX);
                if end.at >= recovered_by {
                    findings.overlaps.push(context(format!(
                        "interrupted attempt {n} (daemon {}) wrote its end {} ms after the next \
                         daemon was ready: its process outlived the restart",
                        start.generation,
                        (end.at - recovered_by) / 1_000_000
                    )));
                }
                previous_end = Some((n, end.at));
            }
            (_, end) => previous_end = end.map(|e| (n, e.at)),
        }
    }
}
