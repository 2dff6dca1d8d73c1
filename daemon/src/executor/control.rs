//! The control channel: one message a line on fd 3 of every activity.
//!
//! ```text
//! progress 65 loading facts
//! checkpoint {"chunk":150}
//! output {"rows":1250}
//! alert stock below threshold
//! ```

use serde_json::{Map, Value};

/// Longest control line accepted; longer lines are dropped with a warning.
pub const MAX_LINE: usize = 256 * 1024;

/// One parsed control message.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlMessage {
    Progress { percent: f64, text: Option<String> },
    Checkpoint(Value),
    Output(Map<String, Value>),
    Alert(String),
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
        "alert" if !rest.is_empty() => Ok(ControlMessage::Alert(rest.to_string())),
        "alert" => Err("alert needs a text".to_string()),
        "" => Err("empty control line".to_string()),
        other => Err(format!(
            "unknown control message {other:?}; expected progress, checkpoint, output or alert"
        )),
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
