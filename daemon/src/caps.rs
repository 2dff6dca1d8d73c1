//! What enforces each resource cap of an activity on this host.
//!
//! One decision serves both the executor and `hfctl describe`, so what
//! describe says is what runs. Each cap goes to the attempt's cgroup when
//! its controller was granted to the daemon (see [`crate::cgroup`]), else
//! to the closest rlimit set in the child before `exec`:
//!
//! | cap          | cgroup v2                         | fallback                                        |
//! |--------------|-----------------------------------|-------------------------------------------------|
//! | `memory_max` | `memory.max` (+ swap 0, OOM group) | RLIMIT_AS (address space: over-counts)          |
//! | `tasks_max`  | `pids.max`                        | RLIMIT_NPROC (counted per user, not per attempt; not enforced for root) |
//! | `cpu_weight` | `cpu.weight`                      | a nice value                                     |
//! | `cpu_quota`  | `cpu.max`                         | none: not enforced, and describe says so        |
//! | `nofile`     | —                                 | RLIMIT_NOFILE (always)                          |

use holdfast_workflow::Activity;

use crate::cgroup::{CgroupLimits, Controllers};

/// The caps set in the child before `exec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rlimits {
    pub address_space: Option<u64>,
    pub open_files: Option<u64>,
    pub processes: Option<u64>,
    pub nice: Option<i32>,
}

/// How one activity's caps are enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    pub rlimits: Rlimits,
    pub cgroup: CgroupLimits,
}

/// One cap, its value and what enforces it, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub name: &'static str,
    pub value: String,
    pub how: String,
}

/// Split `activity`'s caps between the cgroup (`controllers`, `None`
/// without cgroups) and rlimits. `as_root`: the activity runs with uid 0,
/// which the kernel exempts from RLIMIT_NPROC.
pub fn plan(
    activity: &Activity,
    controllers: Option<Controllers>,
    as_root: bool,
) -> (Plan, Vec<Mechanism>) {
    let on = controllers.unwrap_or_default();
    let mut plan = Plan::default();
    let mut how = Vec::new();
    let mut note = |name: &'static str, value: String, text: String| {
        how.push(Mechanism {
            name,
            value,
            how: text,
        });
    };
    let missing = |controller: &str| match controllers {
        None => "no cgroup".to_string(),
        Some(_) => format!("no {controller} controller delegated"),
    };
    if let Some(bytes) = activity.memory_max {
        if on.memory {
            plan.cgroup.memory_max = Some(bytes);
            note("memory_max", bytes.to_string(), "cgroup memory.max".into());
        } else {
            plan.rlimits.address_space = Some(bytes);
            note(
                "memory_max",
                bytes.to_string(),
                format!("rlimit RLIMIT_AS, address space ({})", missing("memory")),
            );
        }
    }
    if let Some(tasks) = activity.tasks_max {
        if on.pids {
            plan.cgroup.tasks_max = Some(tasks);
            note("tasks_max", tasks.to_string(), "cgroup pids.max".into());
        } else if as_root {
            // The kernel never applies RLIMIT_NPROC to root: setting it
            // would only pretend.
            note(
                "tasks_max",
                tasks.to_string(),
                format!(
                    "not enforced ({}; the kernel does not apply RLIMIT_NPROC to root): \
                     delegate the pids controller or run the activity as another user",
                    missing("pids")
                ),
            );
        } else {
            plan.rlimits.processes = Some(tasks);
            note(
                "tasks_max",
                tasks.to_string(),
                format!(
                    "rlimit RLIMIT_NPROC, which counts every process of the activity's user, \
                     not only this attempt's ({})",
                    missing("pids")
                ),
            );
        }
    }
    if let Some(weight) = activity.cpu_weight {
        if on.cpu {
            plan.cgroup.cpu_weight = Some(weight);
            note("cpu_weight", weight.to_string(), "cgroup cpu.weight".into());
        } else {
            let nice = nice_for_weight(weight);
            plan.rlimits.nice = Some(nice);
            note(
                "cpu_weight",
                weight.to_string(),
                format!("nice {nice} ({})", missing("cpu")),
            );
        }
    }
    if let Some(percent) = activity.cpu_quota {
        if on.cpu {
            plan.cgroup.cpu_quota = Some(percent);
            note("cpu_quota", format!("{percent}%"), "cgroup cpu.max".into());
        } else {
            note(
                "cpu_quota",
                format!("{percent}%"),
                format!("not enforced ({})", missing("cpu")),
            );
        }
    }
    if let Some(files) = activity.nofile {
        plan.rlimits.open_files = Some(files);
        note("nofile", files.to_string(), "rlimit RLIMIT_NOFILE".into());
    }
    (plan, how)
}

/// A cgroup-style CPU weight (100 normal, 1..10000) as a nice value: each
/// nice step is about 1.25x CPU share, so weight = 100 / 1.25^nice.
pub fn nice_for_weight(weight: u32) -> i32 {
    let ratio = f64::from(weight.max(1)) / 100.0;
    let nice = -(ratio.ln() / 1.25f64.ln());
    nice.round().clamp(-20.0, 19.0) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped() -> Activity {
        let source = "[defaults]\nmemory_max = \"64M\"\ntasks_max = 50\ncpu_weight = 200\n\
                      cpu_quota = \"50%\"\nnofile = 256\n\
                      [process.p.activity.a]\ncommand = [\"true\"]\n";
        let chain = holdfast_workflow::parse_chain(std::path::Path::new("c.toml"), source)
            .expect("the test chain parses");
        chain.activities[0].clone()
    }

    #[test]
    fn weights_map_to_nice_values() {
        assert_eq!(nice_for_weight(100), 0);
        assert!(nice_for_weight(10) > 0);
        assert!(nice_for_weight(1000) < 0);
        assert_eq!(nice_for_weight(1), 19.min(nice_for_weight(1)));
    }

    #[test]
    fn every_controller_takes_its_caps() {
        let all = Controllers {
            memory: true,
            cpu: true,
            pids: true,
        };
        let (plan, how) = plan(&capped(), Some(all), false);
        assert_eq!(
            plan.cgroup,
            CgroupLimits {
                memory_max: Some(64 << 20),
                tasks_max: Some(50),
                cpu_weight: Some(200),
                cpu_quota: Some(50),
            }
        );
        assert_eq!(
            plan.rlimits,
            Rlimits {
                open_files: Some(256),
                ..Rlimits::default()
            }
        );
        assert!(
            how.iter()
                .all(|m| m.name == "nofile" || m.how.starts_with("cgroup "))
        );
    }

    #[test]
    fn missing_controllers_fall_back_to_rlimits() {
        let pids_only = Controllers {
            pids: true,
            ..Controllers::default()
        };
        let (plan, how) = plan(&capped(), Some(pids_only), false);
        assert_eq!(plan.cgroup.tasks_max, Some(50));
        assert_eq!(plan.cgroup.memory_max, None);
        assert_eq!(plan.rlimits.address_space, Some(64 << 20));
        assert_eq!(plan.rlimits.nice, Some(nice_for_weight(200)));
        let quota = how
            .iter()
            .find(|m| m.name == "cpu_quota")
            .expect("cpu_quota listed");
        assert_eq!(quota.how, "not enforced (no cpu controller delegated)");
        let (_, how) = super::plan(&capped(), None, false);
        let memory = how
            .iter()
            .find(|m| m.name == "memory_max")
            .expect("memory_max listed");
        assert_eq!(memory.how, "rlimit RLIMIT_AS, address space (no cgroup)");
    }

    #[test]
    fn root_gets_no_pretend_process_limit() {
        let (plan, how) = plan(&capped(), None, true);
        assert_eq!(plan.rlimits.processes, None);
        let tasks = how
            .iter()
            .find(|m| m.name == "tasks_max")
            .expect("tasks_max listed");
        assert!(
            tasks.how.starts_with("not enforced (no cgroup;"),
            "{tasks:?}"
        );
        let (plan, how) = super::plan(&capped(), None, false);
        assert_eq!(plan.rlimits.processes, Some(50));
        let tasks = how
            .iter()
            .find(|m| m.name == "tasks_max")
            .expect("tasks_max listed");
        assert!(
            tasks.how.contains("every process of the activity's user"),
            "{tasks:?}"
        );
    }
}
