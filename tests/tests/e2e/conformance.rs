//! JSON-RPC 2.0 conformance as an independent client sees it: the Python
//! libraries jsonrpcclient (messages), requests-unixsocket (HTTP) and
//! websockets (WebSocket) drive the real daemon's socket through
//! tests/conformance/jsonrpc_client.py. Without those libraries the test is
//! skipped, unless HOLDFAST_JSONRPC_CLIENT_TEST=required (CI installs them).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_tests::{TestDaemon, run_with_deadline};

/// Set to `required` where the client libraries must be present.
const REQUIRED_ENV: &str = "HOLDFAST_JSONRPC_CLIENT_TEST";
/// The script's exit code when a library is missing.
const MISSING: i32 = 77;

const TINY: &str = r#"
[process.p.activity.a]
command = ["true"]
"#;

#[test]
fn an_independent_client_library_agrees() {
    let daemon = TestDaemon::start(&[("tiny.toml", TINY)]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/jsonrpc_client.py");
    let mut command = Command::new("python3");
    command.arg(&script).arg(daemon.socket()).arg("tiny");
    let output = run_with_deadline(command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(MISSING) {
        assert!(
            std::env::var(REQUIRED_ENV).as_deref() != Ok("required"),
            "{REQUIRED_ENV}=required, but the client libraries are missing: {stderr}"
        );
        eprintln!("SKIPPED: {stderr}");
        return;
    }
    assert!(
        output.status.success(),
        "the independent client found the daemon at fault ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("checks hold"),
        "the script ran its checks: {stdout}"
    );
    eprintln!("{stdout}");
}
