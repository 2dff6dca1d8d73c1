//! The control channel: one message a line on fd 3 of every activity.
//!
//! ```text
//! progress 65 loading facts
//! checkpoint {"chunk":150}
//! output {"rows":1250}
//! alert stock below threshold
//! error ORA-01555: snapshot too old
//! ```
//!
//! Also what one attempt may send on it ([`Gate`]): outputs within a cap,
//! checkpoints small enough to hand to the next attempt in its environment,
//! and alerts at a bounded rate, so a hostile activity cannot grow the
//! daemon's memory, its database or its log without bound.

use std::collections::HashMap;
use std::time::Instant;

use holdfast_workflow::params::fits_environment;
use serde_json::{Map, Value};

/// Longest control line accepted; longer lines are dropped with a warning.
pub const MAX_LINE: usize = 256 * 1024;

/// The most an activity's outputs may take, merged, as compact JSON.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The most keys an activity's outputs may have.
pub const MAX_OUTPUT_KEYS: usize = 256;

/// The most of an alert's text that is kept (in the daemon's log, the
/// journal and the job's `last_alert`).
pub const MAX_ALERT_CHARS: usize = 1000;

/// Alerts an attempt may send at once before the rate limit applies.
pub const ALERT_BURST: u32 = 20;

/// Alerts a second an attempt may send once its burst is spent.
pub const ALERTS_PER_SECOND: f64 = 1.0;

/// The variable a checkpoint reaches the next attempt in.
const CHECKPOINT_VARIABLE: &str = "HF_CHECKPOINT";

/// One parsed control message.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlMessage {
    Progress {
        percent: f64,
        text: Option<String>,
    },
    Checkpoint(Value),
    Output(Map<String, Value>),
    Alert(String),
    /// `error <text>`: what went wrong, in the activity's words; kept on
    /// the attempt (the latest) and shown with its failure.
    Error(String),
}

/// Parse one line (without its newline). The error says what was wrong, for
/// the warning recorded in the attempt's log.
pub fn parse_line(line: &str) -> Result<ControlMessage, String> {
    let line = line.trim_end_matches('\r');
    let (verb, rest) = match line.split_once(char::is_whitespace) {
        Some((verb, rest)) => (verb, rest.trim()),
        None => (line, ""),
    };
    match verb {
        "progress" => {
            let (number, text) = match rest.split_once(char::is_whitespace) {
                Some((n, t)) => (n, Some(t.trim().to_string()).filter(|t| !t.is_empty())),
                None => (rest, None),
            };
            let percent: f64 = number
                .trim_end_matches('%')
                .parse()
                .map_err(|_| format!("progress needs a number from 0 to 100, got {number:?}"))?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!("progress must be between 0 and 100, got {percent}"));
            }
            Ok(ControlMessage::Progress { percent, text })
        }
        "checkpoint" => serde_json::from_str(rest)
            .map(ControlMessage::Checkpoint)
            .map_err(|e| format!("checkpoint needs JSON: {e}")),
        "output" => match serde_json::from_str::<Value>(rest) {
            Ok(Value::Object(map)) => Ok(ControlMessage::Output(map)),
            Ok(_) => Err("output needs a JSON object".to_string()),
            Err(e) => Err(format!("output needs a JSON object: {e}")),
        },
        "alert" if !rest.is_empty() => Ok(ControlMessage::Alert(truncate_alert(rest))),
        "alert" => Err("alert needs a text".to_string()),
        "error" if !rest.is_empty() => Ok(ControlMessage::Error(truncate_alert(rest))),
        "error" => Err("error needs a text".to_string()),
        "" => Err("empty control line".to_string()),
        other => Err(format!(
            "unknown control message {other:?}; expected progress, checkpoint, output, alert or error"
        )),
    }
}

/// The start of an alert's text, at most [`MAX_ALERT_CHARS`] characters,
/// with `...` when something was cut.
fn truncate_alert(text: &str) -> String {
    match text.char_indices().nth(MAX_ALERT_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// The size of `"key":value,` in an object's compact JSON.
fn member_size(key: &str, value: &Value) -> usize {
    Value::String(key.to_string()).to_string().len() + value.to_string().len() + 2
}

/// Why the gate refused a message; the text goes to the attempt's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The note for the attempt's log.
    Note(String),
    /// Dropped without a note (an alert over the rate, after the first).
    Quiet,
}

/// What one attempt has sent so far, and what it may still send: outputs
/// within [`MAX_OUTPUT_BYTES`] and [`MAX_OUTPUT_KEYS`], checkpoints that fit
/// in `HF_CHECKPOINT`, alerts at [`ALERTS_PER_SECOND`] after a burst of
/// [`ALERT_BURST`]. It keeps sizes, never a copy of the values.
#[derive(Debug)]
pub struct Gate {
    /// Each output key with the size of its member in the merged object.
    outputs: HashMap<String, usize>,
    output_bytes: usize,
    alert_tokens: f64,
    alert_refill: Instant,
    /// Alerts dropped since the last one let through.
    alerts_dropped: u64,
    /// Alerts dropped over the whole attempt.
    pub alerts_dropped_total: u64,
}

impl Gate {
    /// A gate for an attempt of an activity that has `outputs` from
    /// earlier attempts: they stay and count against the cap.
    pub fn new(now: Instant, outputs: &Map<String, Value>) -> Gate {
        let mut gate = Gate {
            outputs: HashMap::new(),
            output_bytes: 2,
            alert_tokens: f64::from(ALERT_BURST),
            alert_refill: now,
            alerts_dropped: 0,
            alerts_dropped_total: 0,
        };
        for (key, value) in outputs {
            let size = member_size(key, value);
            gate.output_bytes += size;
            gate.outputs.insert(key.clone(), size);
        }
        gate
    }

    /// Let `message` through, or say why not.
    pub fn admit(&mut self, message: &ControlMessage, now: Instant) -> Result<(), Refusal> {
        match message {
            ControlMessage::Progress { .. } => Ok(()),
            ControlMessage::Checkpoint(value) => {
                let bytes = value.to_string().len();
                if fits_environment(CHECKPOINT_VARIABLE, bytes) {
                    Ok(())
                } else {
                    Err(Refusal::Note(format!(
                        "checkpoint of {bytes} bytes refused: the next attempt gets it in {CHECKPOINT_VARIABLE}, \
                         and one environment variable holds at most 128 KiB; save a position, not the data \
                         (the previous checkpoint stays)"
                    )))
                }
            }
            ControlMessage::Output(map) => self.admit_output(map),
            // Errors share the alerts' rate: each is cut like an alert and
            // the engine keeps only the latest.
            ControlMessage::Alert(_) | ControlMessage::Error(_) => self.admit_alert(now),
        }
    }

    fn admit_output(&mut self, map: &Map<String, Value>) -> Result<(), Refusal> {
        let mut sizes = HashMap::new();
        let mut bytes = self.output_bytes;
        let mut keys = self.outputs.len();
        for (key, value) in map {
            let size = member_size(key, value);
            match self.outputs.get(key) {
                Some(old) => bytes = bytes - old + size,
                None => {
                    bytes += size;
                    keys += 1;
                }
            }
            sizes.insert(key.clone(), size);
        }
        if bytes > MAX_OUTPUT_BYTES || keys > MAX_OUTPUT_KEYS {
            return Err(Refusal::Note(format!(
                "output refused: the outputs would take {bytes} bytes in {keys} keys, more than \
                 the cap of {} KiB and {MAX_OUTPUT_KEYS} keys; output counts and paths, and write data to files",
                MAX_OUTPUT_BYTES / 1024
            )));
        }
        self.output_bytes = bytes;
        self.outputs.extend(sizes);
        Ok(())
    }

    fn admit_alert(&mut self, now: Instant) -> Result<(), Refusal> {
        let elapsed = now
            .saturating_duration_since(self.alert_refill)
            .as_secs_f64();
        self.alert_refill = now;
        self.alert_tokens =
            (self.alert_tokens + elapsed * ALERTS_PER_SECOND).min(f64::from(ALERT_BURST));
        if self.alert_tokens >= 1.0 {
            self.alert_tokens -= 1.0;
            self.alerts_dropped = 0;
            return Ok(());
        }
        self.alerts_dropped += 1;
        self.alerts_dropped_total += 1;
        if self.alerts_dropped == 1 {
            Err(Refusal::Note(format!(
                "alerts dropped: more than {ALERT_BURST} at once, then more than {ALERTS_PER_SECOND} a second; \
                 raise fewer alerts (the count dropped is noted when the attempt ends)"
            )))
        } else {
            Err(Refusal::Quiet)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            parse_line("progress 65 loading facts"),
            Ok(ControlMessage::Progress {
                percent: 65.0,
                text: Some("loading facts".into())
            })
        );
        assert_eq!(
            parse_line("progress 100"),
            Ok(ControlMessage::Progress {
                percent: 100.0,
                text: None
            })
        );
        assert_eq!(
            parse_line(r#"checkpoint {"chunk":150}"#),
            Ok(ControlMessage::Checkpoint(json!({"chunk": 150})))
        );
        assert_eq!(
            parse_line("error ORA-01555: snapshot too old"),
            Ok(ControlMessage::Error("ORA-01555: snapshot too old".into()))
        );
        assert!(parse_line("error").is_err());
        let Ok(ControlMessage::Output(map)) = parse_line(r#"output {"rows":1250}"#) else {
            panic!("output did not parse");
        };
        assert_eq!(map.get("rows"), Some(&json!(1250)));
        assert_eq!(
            parse_line("alert stock below threshold"),
            Ok(ControlMessage::Alert("stock below threshold".into()))
        );
    }

    #[test]
    fn alerts_are_cut_to_their_start() {
        let long = "x".repeat(MAX_ALERT_CHARS * 3);
        let Ok(ControlMessage::Alert(text)) = parse_line(&format!("alert {long}")) else {
            panic!("alert did not parse");
        };
        assert_eq!(text.chars().count(), MAX_ALERT_CHARS + 3);
        assert!(text.ends_with("..."));
    }

    #[test]
    fn outputs_past_the_cap_are_refused_and_replacing_a_key_is_counted_once() {
        let now = Instant::now();
        let mut gate = Gate::new(now, &Map::new());
        let big = "y".repeat(MAX_OUTPUT_BYTES / 2);
        let first = ControlMessage::Output(Map::from_iter([("a".to_string(), json!(big))]));
        // The same key again replaces the value; the size does not add up.
        for _ in 0..10 {
            assert_eq!(gate.admit(&first, now), Ok(()));
        }
        let second = ControlMessage::Output(Map::from_iter([("b".to_string(), json!(big))]));
        assert!(matches!(gate.admit(&second, now), Err(Refusal::Note(_))));
        let small = ControlMessage::Output(Map::from_iter([("c".to_string(), json!(1))]));
        assert_eq!(gate.admit(&small, now), Ok(()));

        let mut gate = Gate::new(now, &Map::new());
        for n in 0..MAX_OUTPUT_KEYS {
            let one = ControlMessage::Output(Map::from_iter([(format!("k{n}"), json!(n))]));
            assert_eq!(gate.admit(&one, now), Ok(()), "key {n}");
        }
        let more = ControlMessage::Output(Map::from_iter([("last".to_string(), json!(0))]));
        assert!(matches!(gate.admit(&more, now), Err(Refusal::Note(_))));

        // Outputs of an earlier attempt stay, so they count.
        let earlier = Map::from_iter([("a".to_string(), json!(big))]);
        let mut gate = Gate::new(now, &earlier);
        assert!(matches!(gate.admit(&second, now), Err(Refusal::Note(_))));
        assert_eq!(gate.admit(&first, now), Ok(()));
    }

    #[test]
    fn checkpoints_must_fit_in_the_environment() {
        let now = Instant::now();
        let mut gate = Gate::new(now, &Map::new());
        let fits = ControlMessage::Checkpoint(json!("z".repeat(100 * 1024)));
        assert_eq!(gate.admit(&fits, now), Ok(()));
        let too_big = ControlMessage::Checkpoint(json!("z".repeat(128 * 1024)));
        assert!(matches!(gate.admit(&too_big, now), Err(Refusal::Note(_))));
    }

    #[test]
    fn alerts_pass_in_a_burst_then_at_the_rate() {
        let start = Instant::now();
        let mut gate = Gate::new(start, &Map::new());
        let alert = ControlMessage::Alert("a".into());
        for _ in 0..ALERT_BURST {
            assert_eq!(gate.admit(&alert, start), Ok(()));
        }
        assert!(matches!(gate.admit(&alert, start), Err(Refusal::Note(_))));
        assert_eq!(gate.admit(&alert, start), Err(Refusal::Quiet));
        let later = start + std::time::Duration::from_secs(1);
        assert_eq!(gate.admit(&alert, later), Ok(()));
        assert!(matches!(gate.admit(&alert, later), Err(Refusal::Note(_))));
        assert_eq!(gate.alerts_dropped_total, 3);
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_line("progress 101").is_err());
        assert!(parse_line("progress lots").is_err());
        assert!(parse_line("output [1,2]").is_err());
        assert!(parse_line("checkpoint {").is_err());
        assert!(parse_line("alert").is_err());
        assert!(parse_line("hello").is_err());
        assert!(parse_line("").is_err());
    }
}
