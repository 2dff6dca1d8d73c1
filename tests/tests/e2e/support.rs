//! Small helpers shared by the end-to-end tests: finding an activity in a
//! job, reading the timestamp files activities leave behind, and the
//! methods an `rpc.discover` document lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Output;

use holdfast_api::{ActivityRun, Job};
use serde_json::Value;

/// The activity `process.activity` of a job; panics with the job when absent.
pub fn activity<'a>(job: &'a Job, path: &str) -> &'a ActivityRun {
    job.activities
        .iter()
        .find(|a| format!("{}.{}", a.process, a.activity) == path)
        .unwrap_or_else(|| panic!("job {} has no activity {path}: {job:#?}", job.id))
}

/// A shell snippet that records `name`'s start and end (nanoseconds since the
/// epoch) in `@DIR@/times`, sleeping `seconds` in between.
pub fn timed(name: &str, seconds: &str) -> String {
    format!(
        "echo \"start $(date +%s%N) {name}\" >> @DIR@/times; sleep {seconds}; \
         echo \"end $(date +%s%N) {name}\" >> @DIR@/times"
    )
}

/// Start and end of one activity as written by [`timed`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Interval {
    pub start: u128,
    pub end: u128,
}

impl Interval {
    pub fn overlaps(self, other: Interval) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Read the `times` file of `dir`: every name with its interval.
pub fn intervals(dir: &Path) -> HashMap<String, Interval> {
    let text = std::fs::read_to_string(dir.join("times")).expect("activities wrote their times");
    let mut out: HashMap<String, Interval> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [edge, nanos, name] = fields[..] else {
            panic!("bad line in times file: {line:?}\n{text}");
        };
        let nanos: u128 = nanos
            .parse()
            .unwrap_or_else(|_| panic!("bad time in {line:?}"));
        let entry = out.entry(name.to_string()).or_default();
        match edge {
            "start" => entry.start = nanos,
            "end" => entry.end = nanos,
            _ => panic!("bad line in times file: {line:?}"),
        }
    }
    for (name, interval) in &out {
        assert!(
            interval.start > 0 && interval.end >= interval.start,
            "{name} has an incomplete interval: {interval:?}\n{text}"
        );
    }
    out
}

/// stdout and stderr of a command, for assertion messages.
pub fn shown(output: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Leave a socket file at `path` with nobody listening, as a crashed daemon
/// would. While other tests spawn processes, a child between fork and exec
/// briefly holds a copy of every descriptor, the listener's included, so the
/// socket counts as stale only once a connection is refused.
pub fn stale_socket(path: &Path) {
    drop(std::os::unix::net::UnixListener::bind(path).expect("a socket can be bound"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(path).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still accepts connections after its listener was dropped",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Each method an OpenRPC document (the `result` of `rpc.discover`) lists,
/// with the names of its parameters.
pub fn discovered_methods(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["methods"]
        .as_array()
        .unwrap_or_else(|| panic!("rpc.discover lists no methods: {doc}"))
        .iter()
        .map(|m| {
            let params = m["params"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect();
            (m["name"].as_str().unwrap_or_default().to_string(), params)
        })
        .collect()
}
