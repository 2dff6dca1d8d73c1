//! What can go wrong in a command, and how a command that ran to its end
//! turned out. `main` maps both to the documented exit codes.

use std::path::PathBuf;

use holdfast_api::ErrorCode;
use holdfast_api::error::FieldError;
use holdfast_api::oneshot::OneShotError;
use jsonrpsee::core::client::Error as ClientError;

/// Why a daemon over its connection caps turned us away (HTTP 503).
pub const OVER_CAPS: &str = "it serves as many connections as it may (overall, or for this user); \
                             close idle clients or try again later";

/// How a command that did not fail with an [`Error`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done.
    Success,
    /// The command ran but part of it did not succeed (a job that could not
    /// be cancelled, a workflow file that does not validate). It has already
    /// said why on stderr.
    Failed,
    /// The waited-for job ended `failed`.
    JobFailed,
    /// The waited-for job ended `cancelled`.
    JobCancelled,
}

/// Who may open a socket hfctl was refused, read from its mode and
/// owners: what the refusal tells the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAccess {
    /// Read and write for its group: members get in.
    Group { group: String },
    /// Closed to its group and to others: its owner alone.
    Owner { owner: String, mode: u32 },
    /// Its mode could not be read, or it is open to others: a directory
    /// above it keeps the caller out.
    Directory,
}

impl std::fmt::Display for SocketAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketAccess::Group { group } => write!(
                f,
                "ask an administrator to add you to the '{group}' group, then log in again"
            ),
            SocketAccess::Owner { owner, mode } => write!(
                f,
                "only its owner '{owner}' may use it (mode {mode:04o}); run hfctl as '{owner}', or start a daemon of your own"
            ),
            SocketAccess::Directory => write!(
                f,
                "a directory above it is closed to you; ask an administrator which socket to use"
            ),
        }
    }
}

/// Whether `error` says the daemon went away (stopped, restarting, killed)
/// or cannot take the connection for now (its backlog full), rather than
/// that it refused the call.
pub fn is_lost(error: &Error) -> bool {
    matches!(
        error,
        Error::ConnectionLost { .. }
            | Error::NotRunning { .. }
            | Error::Timeout { .. }
            | Error::Handshake { .. }
            | Error::Dropped { .. }
            | Error::Busy { .. }
    )
}

/// Errors of hfctl's commands. Messages are lowercase and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no daemon answers on {}; start one with 'holdfastd' (user mode) or 'systemctl start holdfast'",
        socket.display()
    )]
    NotRunning { socket: PathBuf },

    #[error("permission denied on {}; {access}", socket.display())]
    SocketPermission {
        socket: PathBuf,
        access: SocketAccess,
    },

    #[error("the daemon on {} did not complete the handshake: {message}", socket.display())]
    Handshake { socket: PathBuf, message: String },

    /// The daemon's listen backlog is full: it runs, but more slowly than
    /// connections come. Waits and watches try again.
    #[error(
        "the daemon on {} is not taking connections as fast as they come (its backlog is full); try again",
        socket.display()
    )]
    Busy { socket: PathBuf },

    /// The daemon went away with the connection in its backlog (stopping
    /// or killed as hfctl connected): waits and watches connect again.
    #[error(
        "the daemon on {} dropped the connection as it was opened ({cause}); it may be restarting",
        socket.display()
    )]
    Dropped {
        socket: PathBuf,
        /// Named so that it is not also printed as the error's source.
        cause: std::io::Error,
    },

    #[error(
        "this hfctl speaks protocol {ours} but the daemon at {} speaks {theirs}; upgrade the older one",
        socket.display()
    )]
    ProtocolMismatch {
        socket: PathBuf,
        ours: u32,
        theirs: u32,
    },

    #[error("{message}")]
    NotFound { message: String },

    #[error("{message}")]
    PermissionDenied { message: String },

    #[error("{}", render_invalid_parameters(target.as_deref(), message, fields))]
    InvalidParameters {
        /// The submitted target, when the call was a submission.
        target: Option<String>,
        message: String,
        fields: Vec<FieldError>,
    },

    #[error("{message}")]
    InvalidState { message: String },

    /// A command used where it cannot work, or with a bad value that clap
    /// could not check (exit code 2, like clap's own usage errors).
    #[error("{message}")]
    Usage { message: String },

    #[error("{message}")]
    Unavailable { message: String },

    /// A JSON-RPC error without an application code (unknown method, bad
    /// request, internal error).
    #[error("the daemon refused the call: {message} (code {code})")]
    Rpc { code: i32, message: String },

    #[error("the connection to the daemon on {} was lost", socket.display())]
    ConnectionLost {
        socket: PathBuf,
        #[source]
        source: ClientError,
    },

    #[error("the daemon on {} did not answer in time", socket.display())]
    Timeout { socket: PathBuf },

    #[error("the daemon on {} sent an answer hfctl does not understand", socket.display())]
    BadAnswer {
        socket: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "the daemon stopped sending updates for job {job_id} before it ended; see 'hfctl status {job_id}'"
    )]
    WatchEnded { job_id: u64 },

    #[error(
        "job {job_id} had not ended after {seconds}s; wait again with 'hfctl wait {job_id}' or a longer --timeout"
    )]
    WaitTimedOut { job_id: u64, seconds: f64 },

    #[error("cannot read {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} must hold a JSON object of parameters", path.display())]
    ParamsFile {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),

    #[error("cannot write {}; choose a new file in a directory you can write", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the daemon on {} ended the backup after {received} of {size} bytes; nothing was kept, try again",
        socket.display()
    )]
    BackupIncomplete {
        socket: PathBuf,
        received: u64,
        size: u64,
    },
}

impl Error {
    /// Classify an error of a call to the daemon listening on `socket`.
    pub fn from_client(socket: &std::path::Path, error: ClientError) -> Error {
        match error {
            ClientError::Call(object) => {
                let message = object.message().to_string();
                match ErrorCode::from_code(object.code()) {
                    Some(ErrorCode::NotFound) => Error::NotFound { message },
                    Some(ErrorCode::PermissionDenied) => Error::PermissionDenied { message },
                    Some(ErrorCode::InvalidState) => Error::InvalidState { message },
                    Some(ErrorCode::Unavailable) => Error::Unavailable { message },
                    Some(ErrorCode::InvalidParameters) => {
                        // A daemon that sends no usable field list still gets
                        // its message shown.
                        let fields = object
                            .data()
                            .and_then(|raw| serde_json::from_str(raw.get()).ok())
                            .unwrap_or_default();
                        Error::InvalidParameters {
                            target: None,
                            message,
                            fields,
                        }
                    }
                    None => Error::Rpc {
                        code: object.code(),
                        message,
                    },
                }
            }
            ClientError::RequestTimeout => Error::Timeout {
                socket: socket.to_path_buf(),
            },
            ClientError::ParseError(source) => Error::BadAnswer {
                socket: socket.to_path_buf(),
                source,
            },
            ClientError::Transport(inner) if inner.is::<OneShotError>() => {
                match inner.downcast::<OneShotError>().map(|e| *e) {
                    Ok(error) => Error::from_one_shot(socket, error),
                    Err(inner) => Error::ConnectionLost {
                        socket: socket.to_path_buf(),
                        source: ClientError::Transport(inner),
                    },
                }
            }
            other => Error::ConnectionLost {
                socket: socket.to_path_buf(),
                source: other,
            },
        }
    }

    /// Name the submitted target in an INVALID_PARAMETERS error.
    /// A one-shot call's failure below JSON-RPC, classified as the same
    /// failure of a WebSocket connection is.
    fn from_one_shot(socket: &std::path::Path, error: OneShotError) -> Error {
        let socket = socket.to_path_buf();
        match error {
            OneShotError::ProtocolMismatch { ours, theirs } => Error::ProtocolMismatch {
                socket,
                ours,
                theirs: theirs.unwrap_or(0),
            },
            OneShotError::Refused(_) => Error::Handshake {
                socket,
                message: OVER_CAPS.to_string(),
            },
            OneShotError::Status { .. } | OneShotError::Malformed(_) => Error::Handshake {
                socket,
                message: error.to_string(),
            },
            OneShotError::Io(_) => Error::ConnectionLost {
                socket,
                source: ClientError::Transport(Box::new(error)),
            },
        }
    }

    pub fn for_target(self, submitted: &str) -> Error {
        match self {
            Error::InvalidParameters {
                target: None,
                message,
                fields,
            } => Error::InvalidParameters {
                target: Some(submitted.to_string()),
                message,
                fields,
            },
            other => other,
        }
    }
}

fn render_invalid_parameters(target: Option<&str>, message: &str, fields: &[FieldError]) -> String {
    let mut text = match target {
        Some(target) => format!("invalid parameters for {target}:"),
        None => "invalid parameters:".to_string(),
    };
    if fields.is_empty() {
        text.push(' ');
        text.push_str(message);
    }
    for field in fields {
        text.push_str(&format!("\n  {}: {}", field.field, field.message));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_parameters_list_one_line_per_field() {
        let error = Error::InvalidParameters {
            target: Some("nightly-etl".into()),
            message: "bad parameters".into(),
            fields: vec![
                FieldError {
                    field: "date".into(),
                    message: "required".into(),
                },
                FieldError {
                    field: "mode".into(),
                    message: "must be one of full, incremental".into(),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "invalid parameters for nightly-etl:\n  date: required\n  mode: must be one of full, incremental"
        );
    }

    #[test]
    fn application_codes_are_classified() {
        let socket = std::path::Path::new("/tmp/s");
        let call = |code: ErrorCode| {
            Error::from_client(
                socket,
                ClientError::Call(code.error("job 9 does not exist")),
            )
        };
        assert!(matches!(call(ErrorCode::NotFound), Error::NotFound { .. }));
        assert!(matches!(
            call(ErrorCode::InvalidState),
            Error::InvalidState { .. }
        ));
        let with_fields = Error::from_client(
            socket,
            ClientError::Call(ErrorCode::InvalidParameters.error_with(
                "bad",
                vec![FieldError {
                    field: "date".into(),
                    message: "required".into(),
                }],
            )),
        )
        .for_target("etl");
        assert_eq!(
            with_fields.to_string(),
            "invalid parameters for etl:\n  date: required"
        );
    }
}
