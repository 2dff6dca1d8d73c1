//! The notifications scenario: the 2,000-activity job and 1,000 separate
//! submissions on a daemon without notify rules, on one with the three
//! rules an operator writes (the notifications issue's own example: mail
//! and a pager on failures, a chat webhook on every job's end, delivered to
//! a live receiver here), and on one whose three rules fire on every job
//! and fail (the worst case), alternating, five runs each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;

use super::{Daemon, median, secs};

/// Separate `hfctl submit` calls per run, as the notifications issue asks.
const SUBMITS: usize = 1000;

/// The issue's example: failures go to mail and a pager (no job fails
/// here, so they only have to be matched), every job's end is posted to a
/// chat webhook. `{url}` is the live receiver.
const OPERATOR_RULES: &str = r#"
[notify.ops]
on = ["job.failed", "job.alert", "schedule.refused"]
mail = { to = ["ops@example.invalid"] }
[notify.chat]
on = ["job.finished"]
webhook = { url = "{url}" }
[notify.pager]
on = ["job.failed"]
exec = ["/bin/true"]
[smtp]
host = "127.0.0.1"
port = 9
"#;

/// Three rules that each match every job: a webhook to a receiver that is
/// down (its deliveries are retried), an exec hook on submission and end
/// (two processes per job, where the job itself starts one), and a mail
/// rule to an SMTP port nobody listens on.
const EVERY_JOB_RULES: &str = r#"
[notify.hook]
on = ["job.finished"]
webhook = { url = "http://127.0.0.1:9/hook" }
[notify.pager]
on = ["job.finished", "job.submitted"]
exec = ["/bin/true"]
[notify.ops]
on = ["job.finished"]
mail = { to = ["ops@example.invalid"] }
[smtp]
host = "127.0.0.1"
port = 9
"#;

/// An HTTP receiver that answers every POST with 204 and counts them;
/// returns its URL and the count.
fn receiver() -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || serve(stream, &count));
        }
    });
    Ok((url, received))
}

/// Requests on one connection, kept alive until the client closes it.
fn serve(stream: TcpStream, count: &AtomicUsize) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // The request line and headers, up to the blank line.
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
        if writer
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// (n) Notifications must not slow the engine: the two scenarios on the
/// three daemons, alternating.
pub fn with_notify_rules() -> Result<()> {
    let mut chain = String::from("[chain]\nmax_parallel = 2\n[process.p]\nmode = \"parallel\"\n");
    for i in 0..2000 {
        chain.push_str(&format!(
            "[process.p.activity.a{i}]\ncommand = [\"sh\", \"-c\", \"true\"]\n"
        ));
    }
    let one = "[process.p.activity.a]\ncommand = [\"true\"]\n".to_string();
    let settings = "max_parallel = 2\n";
    let (url, received) = receiver()?;
    let workflows = [("many.toml", chain), ("one.toml", one)];
    let mut daemons = [
        ("no rules", Daemon::new(settings, &workflows)?),
        (
            "operator's rules",
            Daemon::new(
                &format!("{settings}{}", OPERATOR_RULES.replace("{url}", &url)),
                &workflows,
            )?,
        ),
        (
            "rules on every job",
            Daemon::new(&format!("{settings}{EVERY_JOB_RULES}"), &workflows)?,
        ),
    ];
    let mut spawn = vec![Vec::new(); daemons.len()];
    let mut submit = vec![Vec::new(); daemons.len()];
    for _ in 0..5 {
        for (i, (_, daemon)) in daemons.iter().enumerate() {
            let started = Instant::now();
            daemon.hfctl(&["submit", "many", "--wait"])?;
            spawn[i].push(secs(started.elapsed()));
            submit[i].push(daemon.submit_all_and_wait("one", SUBMITS)?);
        }
    }
    for (_, daemon) in daemons.iter_mut() {
        daemon.stop()?;
    }
    let (spawn0, submit0) = (median(spawn[0].clone()), median(submit[0].clone()));
    for (i, (name, _)) in daemons.iter().enumerate() {
        let (a, b) = (median(spawn[i].clone()), median(submit[i].clone()));
        println!(
            "notify: {name:<18} 2000 activities median {a:.3} s ({:.3}x) {:.3?}",
            a / spawn0,
            spawn[i]
        );
        println!(
            "notify: {name:<18} {SUBMITS} submits     median {b:.3} s ({:.3}x) {:.3?}",
            b / submit0,
            submit[i]
        );
    }
    println!(
        "notify: the chat webhook received {} posts (one per job of the operator's daemon: {})",
        received.load(Ordering::Relaxed),
        5 * (SUBMITS + 1)
    );
    Ok(())
}
