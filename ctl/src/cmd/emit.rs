//! `hfctl emit ...`: write one control-channel message from inside an
//! activity (a shell script, say) to the fd named by `HF_CONTROL_FD`, or,
//! inside a Slurm job, to the control file named by `HF_CONTROL_FILE`.

use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub message: Message,
}

#[derive(Debug, clap::Subcommand)]
pub enum Message {
    /// Report progress: a percentage from 0 to 100 and an optional text.
    Progress {
        #[arg(allow_negative_numbers = true)]
        percent: f64,
        #[arg(trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// Save a checkpoint (JSON), handed back in HF_CHECKPOINT on the next attempt.
    Checkpoint {
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Add outputs (a JSON object) for downstream templates and the job result.
    Output {
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Raise an alert: the job ends "with alerts" even if everything succeeds.
    Alert {
        #[arg(required = true, trailing_var_arg = true)]
        text: Vec<String>,
    },
    /// Say what went wrong: kept on the attempt, shown with its failure.
    Error {
        #[arg(required = true, trailing_var_arg = true)]
        text: Vec<String>,
    },
}

/// The line to write, checked here so a typo fails the script at once.
pub fn line(message: &Message) -> Result<String, String> {
    match message {
        Message::Progress { percent, text } => {
            if !(0.0..=100.0).contains(percent) {
                return Err(format!("progress must be between 0 and 100, got {percent}"));
            }
            let text = text.join(" ");
            Ok(if text.is_empty() {
                format!("progress {percent}\n")
            } else {
                format!("progress {percent} {text}\n")
            })
        }
        Message::Checkpoint { value } => {
            let value: serde_json::Value =
                serde_json::from_str(value).map_err(|e| format!("checkpoint is not JSON: {e}"))?;
            Ok(format!("checkpoint {value}\n"))
        }
        Message::Output { value } => match serde_json::from_str::<serde_json::Value>(value) {
            Ok(value @ serde_json::Value::Object(_)) => Ok(format!("output {value}\n")),
            Ok(_) => Err("output must be a JSON object".into()),
            Err(e) => Err(format!("output is not JSON: {e}")),
        },
        Message::Alert { text } => Ok(format!("alert {}\n", text.join(" ").replace('\n', " "))),
        Message::Error { text } => Ok(format!("error {}\n", text.join(" ").replace('\n', " "))),
    }
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let line = line(&args.message).map_err(|message| Error::Usage { message })?;
    // Inside a Slurm job the control channel is a file on storage shared
    // with the daemon; a job step started with `srun` has no fd 3 at all.
    if std::env::var_os("SLURM_JOB_ID").is_some()
        && let Some(path) = std::env::var_os("HF_CONTROL_FILE")
    {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::Usage {
                message: format!(
                    "cannot open the control file {}: {e}; run this inside a HoldFast activity",
                    std::path::Path::new(&path).display()
                ),
            })?;
        // One write per line: appends of whole lines do not interleave.
        file.write_all(line.as_bytes()).map_err(Error::Stdout)?;
        return Ok(Outcome::Success);
    }
    let fd: i32 = std::env::var("HF_CONTROL_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Usage {
            message: "HF_CONTROL_FD is not set: `hfctl emit` works inside a HoldFast activity"
                .into(),
        })?;
    if fd < 0 {
        return Err(Error::Usage {
            message: format!("HF_CONTROL_FD {fd} is not a file descriptor"),
        });
    }
    // Check the fd is open before adopting it, so a wrong number fails
    // cleanly instead of closing someone else's descriptor.
    #[allow(unsafe_code)]
    // SAFETY: the fd is only borrowed for the fcntl check.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(Error::Usage {
            message: format!("HF_CONTROL_FD {fd} is not open: run this inside a HoldFast activity"),
        });
    }
    #[allow(unsafe_code)]
    // SAFETY: the fd is open (checked above) and this process owns it from
    // here on; it is the control pipe the daemon gave the activity.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(line.as_bytes()).map_err(Error::Stdout)?;
    // Keep the pipe open for the rest of the activity: other writers share it.
    std::mem::forget(file);
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked() {
        assert_eq!(
            line(&Message::Progress {
                percent: 65.0,
                text: vec!["loading".into(), "facts".into()]
            }),
            Ok("progress 65 loading facts\n".into())
        );
        assert_eq!(
            line(&Message::Checkpoint {
                value: r#"{"chunk": 150}"#.into()
            }),
            Ok("checkpoint {\"chunk\":150}\n".into())
        );
        assert!(
            line(&Message::Output {
                value: "[1]".into()
            })
            .is_err()
        );
        assert!(
            line(&Message::Progress {
                percent: 120.0,
                text: vec![]
            })
            .is_err()
        );
    }
}
