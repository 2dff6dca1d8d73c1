//! Notification rules in chain files: they see only their chain's events,
//! load and reload with the file (a broken rule is a located load error
//! and the last good rules stay), are listed by their `CHAIN.NAME`, and
//! their `exec` hooks run as the chain's activities that name no user do,
//! not as root. Failure events carry each failed activity's `error_tail`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use holdfast_api::WorkflowSummary;
use holdfast_tests::{TestDaemon, eventually};
use serde_json::Value;

use crate::events::{EVENT_WAIT, FAILS};
use crate::notifications::{deliveries, lines_of};

/// `nightly` with a rule of its own: every `job.failed` and
/// `activity.failed` to a hook that appends the event to `@DIR@/paged`.
const NIGHTLY_WITH_RULE: &str = r#"
[process.load.activity.facts]
shell = "echo 'ORA-01555: snapshot too old' >&2; exit 3"

[notify.pager]
on = ["job.failed", "activity.failed"]
exec = ["@DIR@/page.sh"]
"#;

/// The same chain with a rule that can never load: an unknown event kind.
const NIGHTLY_BROKEN_RULE: &str = r#"
[process.load.activity.facts]
shell = "echo 'ORA-01555: snapshot too old' >&2; exit 3"

[notify.pager]
on = ["job.exploded"]
exec = ["@DIR@/page.sh"]
"#;

/// Write an executable hook at `dir/name` that appends its stdin and a
/// newline to `out`, and before it the output of `id -un` when `who` is set.
pub(crate) fn write_hook(dir: &Path, name: &str, out: &Path, who: bool) {
    let hook = dir.join(name);
    let whoami = if who {
        format!("id -un >> {}\n", out.display())
    } else {
        String::new()
    };
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n{whoami}cat >> {0}; echo >> {0}\n",
            out.display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn workflow(daemon: &TestDaemon, name: &str) -> WorkflowSummary {
    let value = daemon.hfctl_json(&["workflows"]);
    let listed: Vec<WorkflowSummary> = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("`hfctl --json workflows` is a list ({e}): {value}"));
    listed
        .into_iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("chain {name} is listed"))
}

/// Events of `job_id` the hook got, by kind.
fn paged_for(paged: &Path, job_id: u64) -> Vec<Value> {
    lines_of(paged)
        .into_iter()
        .filter(|e| e["job_id"] == job_id)
        .collect()
}

/// A chain's `[notify.pager]` gets that chain's failures, and not another
/// chain's (a settings rule, `witness`, sees both): the `job.failed` event
/// names the failed activity with its error id and `error_tail`, the
/// `activity.failed` event carries the tail too. The delivery is listed
/// under `nightly.pager`. A broken edit of the rule is a load error at its
/// line and column and the last good rule keeps notifying; removing the
/// rule from the file stops it.
#[test]
fn chain_rules_see_their_chain_only_and_reload_with_the_file() {
    let settings = r#"
[notify.witness]
on = ["job.failed"]
exec = ["@DIR@/witness.sh"]
"#;
    let mut daemon = TestDaemon::prepare(
        Some(settings),
        &[("nightly.toml", NIGHTLY_WITH_RULE), ("other.toml", FAILS)],
    );
    let dir = daemon.dir().to_path_buf();
    let (paged, witnessed) = (dir.join("paged"), dir.join("witnessed"));
    write_hook(&dir, "page.sh", &paged, false);
    write_hook(&dir, "witness.sh", &witnessed, false);
    daemon.launch();

    let other = daemon.submit("other", &[]);
    daemon.wait_done(other);
    let nightly = daemon.submit("nightly", &[]);
    let job = daemon.wait_done(nightly);
    let error_id = crate::support::activity(&job, "load.facts").attempts[0]
        .error_id
        .clone()
        .expect("an error id");
    let witnessed_both = |jobs: &[u64]| {
        eventually(EVENT_WAIT, "the witness rule to see the jobs", || {
            let seen: Vec<u64> = lines_of(&witnessed)
                .iter()
                .filter_map(|e| e["job_id"].as_u64())
                .collect();
            if jobs.iter().all(|j| seen.contains(j)) {
                Ok(())
            } else {
                Err(format!("seen {seen:?}"))
            }
        })
    };
    witnessed_both(&[other, nightly]);
    let (events, _) = eventually(EVENT_WAIT, "the chain's hook to get both events", || {
        let events = paged_for(&paged, nightly);
        if events.len() >= 2 {
            Ok(events)
        } else {
            Err(format!("{events:#?}"))
        }
    });
    assert!(
        paged_for(&paged, other).is_empty(),
        "another chain's failure reaches no rule of nightly: {:#?}",
        lines_of(&paged)
    );
    let failed = events
        .iter()
        .find(|e| e["kind"] == "job.failed")
        .unwrap_or_else(|| panic!("a job.failed event: {events:#?}"));
    let entry = &failed["failed"][0];
    assert_eq!(entry["activity"], "nightly.load.facts", "{failed:#}");
    assert_eq!(entry["error_id"], error_id.as_str(), "{failed:#}");
    assert!(
        entry["error_tail"]
            .as_str()
            .is_some_and(|t| t.contains("ORA-01555: snapshot too old")),
        "the failed activity's output tail is in the payload: {failed:#}"
    );
    let activity_failed = events
        .iter()
        .find(|e| e["kind"] == "activity.failed")
        .unwrap_or_else(|| panic!("an activity.failed event: {events:#?}"));
    assert!(
        activity_failed["error_tail"]
            .as_str()
            .is_some_and(|t| t.contains("ORA-01555")),
        "{activity_failed:#}"
    );
    let listed = deliveries(&daemon, &[]);
    assert!(
        listed
            .iter()
            .any(|d| d["rule"] == "nightly.pager" && d["job_id"] == nightly),
        "the chain's rule is listed by its CHAIN.NAME: {listed:#?}"
    );
    let detail = daemon.hfctl_json(&["describe", "nightly"]);
    assert_eq!(detail["notify"][0]["name"], "nightly.pager", "{detail:#}");
    assert_eq!(
        detail["notify"][0]["on"],
        serde_json::json!(["job.failed", "activity.failed"]),
        "{detail:#}"
    );
    let described = daemon.hfctl(&["describe", "nightly"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains("nightly.pager on job.failed, activity.failed: exec ")
            && text.contains("page.sh"),
        "{text}"
    );

    // A broken rule: the file is broken at the rule's line and column, the
    // last good rule still notifies.
    daemon.save_workflow_by_rename("nightly.toml", NIGHTLY_BROKEN_RULE);
    let (entry, _) = eventually(EVENT_WAIT, "the broken rule to be refused", || {
        let entry = workflow(&daemon, "nightly");
        if entry.status == "broken" {
            Ok(entry)
        } else {
            Err(format!("{entry:#?}"))
        }
    });
    let error = entry.error.expect("the load error");
    assert_eq!((error.line, error.column), (Some(6), Some(7)), "{error:#?}");
    assert!(
        error.message.contains("notify.pager") && error.message.contains("job.exploded"),
        "{error:#?}"
    );
    let again = daemon.submit("nightly", &[]);
    daemon.wait_done(again);
    eventually(EVENT_WAIT, "the last good rule to notify", || {
        let events = paged_for(&paged, again);
        if events.iter().any(|e| e["kind"] == "job.failed") {
            Ok(())
        } else {
            Err(format!("{events:#?}"))
        }
    });

    // The rule removed: the witness sees the next failure, the rule does not.
    daemon.save_workflow_by_rename("nightly.toml", FAILS);
    eventually(EVENT_WAIT, "the chain without its rule to load", || {
        let entry = workflow(&daemon, "nightly");
        if entry.status == "loaded" {
            Ok(())
        } else {
            Err(format!("{entry:#?}"))
        }
    });
    let last = daemon.submit("nightly", &[]);
    daemon.wait_done(last);
    witnessed_both(&[last]);
    // Deliveries of one event are queued together: the witness's is there,
    // so a rule that still matched would have one too.
    let listed = deliveries(&daemon, &[]);
    let for_last: Vec<&Value> = listed.iter().filter(|d| d["job_id"] == last).collect();
    assert!(
        !for_last.is_empty() && for_last.iter().all(|d| d["rule"] == "witness"),
        "{for_last:#?}"
    );
}

/// Rules that can never work are load errors of the chain file, at the
/// rule: `chains` (a chain's rule sees its chain only), a mail rule with
/// neither `[smtp]` nor a sendmail program, an `exec` program that is not
/// there. A file whose rules fail never loads, so nothing can submit it.
#[test]
fn impossible_chain_rules_are_load_errors_of_the_file() {
    let chains = r#"
[process.p.activity.a]
command = ["true"]

[notify.wide]
on = ["job.failed"]
chains = ["*"]
exec = ["/bin/true"]
"#;
    let mail = r#"
[process.p.activity.a]
command = ["true"]

[notify.ops]
on = ["job.failed"]
mail = { to = ["ops@example.com"] }
"#;
    let missing = r#"
[process.p.activity.a]
command = ["true"]

[notify.pager]
on = ["job.failed"]
exec = ["/nonexistent/page"]
"#;
    let daemon = TestDaemon::start_with(
        "sendmail = \"@DIR@/no-sendmail\"\n",
        &[
            ("chains.toml", chains),
            ("mail.toml", mail),
            ("missing.toml", missing),
        ],
    );
    for (name, at, words) in [
        (
            "chains",
            (7, 10),
            &["notify.wide", "chains", "settings file"][..],
        ),
        ("mail", (5, 9), &["notify.ops", "sendmail", "[smtp]"][..]),
        (
            "missing",
            (5, 9),
            &["notify.pager", "/nonexistent/page"][..],
        ),
    ] {
        let entry = workflow(&daemon, name);
        assert_eq!(entry.status, "broken", "{entry:#?}");
        let error = entry.error.clone().expect("an error");
        assert_eq!(
            (error.line, error.column),
            (Some(at.0), Some(at.1)),
            "{error:#?}"
        );
        for word in words {
            assert!(error.message.contains(word), "{word:?} in {error:#?}");
        }
    }
    let refused = daemon.hfctl(&["submit", "chains"]);
    assert!(!refused.status.success(), "a broken chain is not submitted");
}

/// In system mode, a chain's `exec` hook runs as the chain's activities
/// that name no user do: as `[defaults] user` when the chain names one,
/// else as `run_as_default`, never as root by surprise; the settings
/// file's hooks run as the daemon's user (root).
#[test]
fn chain_exec_hooks_run_as_the_chains_user() {
    let Some(_accounts) = crate::users::accounts_or_skip("chain_exec_hooks_run_as_the_chains_user")
    else {
        return;
    };
    // The hooks and what they write live where their users reach them.
    let hooks = tempfile::Builder::new()
        .prefix("hf-e2e-hooks-")
        .tempdir()
        .expect("a temporary directory");
    let dir = hooks.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = dir.join("out");
    std::fs::create_dir(&out).expect("out dir");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for name in ["named", "unnamed", "root"] {
        write_hook(dir, &format!("{name}.sh"), &out.join(name), true);
    }
    let named = format!(
        r#"
[defaults]
user = "hft-runas"

[process.p.activity.a]
command = ["false"]

[notify.pager]
on = ["job.failed"]
exec = ["{}/named.sh"]
"#,
        dir.display()
    );
    let unnamed = format!(
        r#"
[process.p.activity.a]
command = ["false"]

[notify.pager]
on = ["job.failed"]
exec = ["{}/unnamed.sh"]
"#,
        dir.display()
    );
    let settings = format!(
        r#"
socket_group = "hft-sock"
run_as_allowed = ["hft-runas"]
run_as_default = "hft-member"

[notify.root]
on = ["job.failed"]
exec = ["{}/root.sh"]
"#,
        dir.display()
    );
    let daemon = holdfast_tests::users::SystemDaemon::start(
        &settings,
        &[("named.toml", &named), ("unnamed.toml", &unnamed)],
        &[],
    );
    for chain in ["named", "unnamed"] {
        let job_id = daemon.submit(chain, &[]);
        daemon.wait_done(job_id);
    }
    let who = |name: &str, events: usize| {
        let path = out.join(name);
        let (text, _) = eventually(EVENT_WAIT, &format!("the {name} hook to run"), || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Each run writes the user, then the event and a newline.
            if text.lines().filter(|l| l.starts_with('{')).count() >= events {
                Ok(text)
            } else {
                Err(text)
            }
        });
        text.lines().next().unwrap_or_default().to_string()
    };
    assert_eq!(
        who("named", 1),
        "hft-runas",
        "as the chain's [defaults] user"
    );
    assert_eq!(
        who("unnamed", 1),
        "hft-member",
        "as run_as_default, not root"
    );
    assert_eq!(
        who("root", 2),
        "root",
        "a settings rule runs as the daemon's user"
    );
}

/// A daemon without any rule: a chain file that gains a rule notifies the
/// failures after it loaded, not the ones before (which no rule wanted
/// when they happened).
#[test]
fn a_rule_added_later_notifies_from_then_on() {
    let daemon = TestDaemon::start(&[("nightly.toml", FAILS)]);
    let dir = daemon.dir().to_path_buf();
    let paged = dir.join("paged");
    write_hook(&dir, "page.sh", &paged, false);
    let before = daemon.submit("nightly", &[]);
    daemon.wait_done(before);
    let first = workflow(&daemon, "nightly").version;
    daemon.save_workflow_by_rename("nightly.toml", NIGHTLY_WITH_RULE);
    eventually(EVENT_WAIT, "the chain with its rule to load", || {
        let entry = workflow(&daemon, "nightly");
        if entry.status == "loaded" && entry.version != first {
            Ok(())
        } else {
            Err(format!("{entry:#?}"))
        }
    });
    let after = daemon.submit("nightly", &[]);
    daemon.wait_done(after);
    eventually(
        EVENT_WAIT,
        "the failure under the rule to be notified",
        || {
            let events = paged_for(&paged, after);
            if events.iter().any(|e| e["kind"] == "job.failed") {
                Ok(())
            } else {
                Err(format!("{:#?}", lines_of(&paged)))
            }
        },
    );
    let got: Vec<u64> = lines_of(&paged)
        .iter()
        .filter_map(|e| e["job_id"].as_u64())
        .collect();
    assert!(got.contains(&after), "{got:?}");
    assert!(
        !got.contains(&before),
        "the failure before the rule loaded is not notified: {got:?}"
    );
}

/// The `error_tail` a failure event carries is the stored, masked one: a
/// secret parameter the failing activity printed reaches the hook as
/// `***`, and its value is nowhere in what the hook got.
#[test]
fn failure_payloads_carry_the_masked_error_tail() {
    const SECRET: &str = "hf-tok-8c1d0e77";
    let chain = r#"
[params.token]
type = "string"
secret = true

[process.load.activity.facts]
shell = "echo \"login with $HF_PARAM_TOKEN refused\" >&2; exit 3"

[notify.pager]
on = ["job.failed", "activity.failed"]
exec = ["@DIR@/page.sh"]
"#;
    let mut daemon = TestDaemon::prepare(None, &[("nightly.toml", chain)]);
    let dir = daemon.dir().to_path_buf();
    let paged = dir.join("paged");
    write_hook(&dir, "page.sh", &paged, false);
    daemon.launch();
    let params = dir.join("params.json");
    std::fs::write(&params, format!(r#"{{"token": "{SECRET}"}}"#)).expect("params file");
    let job_id = daemon.submit("nightly", &["--params", &params.display().to_string()]);
    daemon.wait_done(job_id);
    let (events, _) = eventually(EVENT_WAIT, "both failure events", || {
        let events = paged_for(&paged, job_id);
        if events.len() >= 2 {
            Ok(events)
        } else {
            Err(format!("{events:#?}"))
        }
    });
    let failed = events
        .iter()
        .find(|e| e["kind"] == "job.failed")
        .expect("job.failed");
    assert!(
        failed["failed"][0]["error_tail"]
            .as_str()
            .is_some_and(|t| t.contains("login with *** refused")),
        "{failed:#}"
    );
    let raw = std::fs::read_to_string(&paged).expect("paged");
    assert!(
        !raw.contains(SECRET),
        "the secret never reaches the hook:\n{raw}"
    );
}
