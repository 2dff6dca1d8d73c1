//! The control channel: arbitrary bytes on fd 3, cut into lines and parsed
//! exactly as the daemon's executor does, must give messages or reasons,
//! never a panic, and every accepted message must hold what it promises.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser lives in the daemon's binary crate, which cannot be imported;
// it depends only on serde_json and holdfast-workflow, so the file itself
// is compiled in here.
#[allow(dead_code)]
#[path = "../../daemon/src/executor/control.rs"]
mod control;

use control::{ControlMessage, MAX_LINE, parse_line};
use serde_json::Value;

/// Equal JSON, except that floats may differ in their last bits: without
/// its `float_roundtrip` feature serde_json does not parse every float it
/// prints back to the same bits (seeds/control_line/checkpoint-float-roundtrip).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    // As the executor reads fd 3: lines up to MAX_LINE bytes, lossy UTF-8,
    // the newline removed, blank lines skipped.
    for line in data.split(|&b| b == b'\n') {
        if line.len() > MAX_LINE {
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(&text) {
            Ok(ControlMessage::Progress { percent, text }) => {
                assert!(
                    percent.is_finite() && (0.0..=100.0).contains(&percent),
                    "progress {percent} accepted"
                );
                if let Some(text) = text {
                    assert!(!text.is_empty(), "an empty progress text is None");
                    assert_eq!(text.trim(), text, "progress text is trimmed");
                }
            }
            Ok(ControlMessage::Alert(text)) => {
                assert!(!text.trim().is_empty(), "an alert has a text");
            }
            Ok(ControlMessage::Checkpoint(value)) => {
                // Checkpoints are stored as JSON text and handed back.
                let stored = value.to_string();
                let back: Value = serde_json::from_str(&stored).expect("a checkpoint round-trips");
                assert!(
                    same(&back, &value),
                    "a checkpoint round-trips unchanged: {value} came back as {back}"
                );
            }
            Ok(ControlMessage::Output(map)) => {
                let stored = Value::Object(map).to_string();
                assert!(
                    serde_json::from_str::<Value>(&stored).is_ok(),
                    "an output round-trips"
                );
            }
            Ok(ControlMessage::Error(text)) => {
                assert!(!text.trim().is_empty(), "an error message has a text");
            }
            Err(why) => assert!(!why.is_empty(), "a refusal says why"),
        }
    }
});
