//! Replacing secret values with `***` in text the daemon shows or keeps:
//! an activity's captured output (before it reaches the attempt log,
//! `job.follow_logs` and the journal) and rendered values in a plan.
//!
//! Output arrives in pieces, and a secret may be split across two reads:
//! [`StreamMasker`] holds back a piece's tail while it could still be the
//! start of a secret, and only that long.

use std::borrow::Cow;

use holdfast_workflow::params::MASK;
use serde_json::{Map, Value};

use crate::executor::control::ControlMessage;

/// Masks a fixed set of secret values in a stream of bytes.
#[derive(Debug, Clone)]
pub struct StreamMasker {
    /// The values, longest first, so that a secret containing another is
    /// masked whole.
    needles: Vec<Vec<u8>>,
    /// Bytes held back: the end of what came so far is the start of a
    /// secret.
    held: Vec<u8>,
}

impl StreamMasker {
    /// A masker for `values`; empty values are ignored. None when there is
    /// nothing to mask, so output without secrets costs nothing.
    pub fn new(values: impl IntoIterator<Item = String>) -> Option<StreamMasker> {
        let mut needles: Vec<Vec<u8>> = values
            .into_iter()
            .filter(|v| !v.is_empty())
            .map(String::into_bytes)
            .collect();
        if needles.is_empty() {
            return None;
        }
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Some(StreamMasker {
            needles,
            held: Vec::new(),
        })
    }

    /// Masks `chunk` (after what was held back) and appends what is safe to
    /// show to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            if let Some(needle) = self.needles.iter().find(|n| rest.starts_with(n)) {
                out.extend_from_slice(MASK.as_bytes());
                i += needle.len();
                continue;
            }
            // The rest could still become a secret with the next read.
            if self
                .needles
                .iter()
                .any(|n| n.len() > rest.len() && n.starts_with(rest))
            {
                self.held = rest.to_vec();
                return;
            }
            out.push(data[i]);
            i += 1;
        }
    }

    /// The stream ended: what was held back was not a secret after all.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
    }

    /// `text` with every secret masked, in one piece.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self
            .needles
            .iter()
            .any(|n| text.as_bytes().windows(n.len()).any(|w| w == n.as_slice()))
        {
            return Cow::Borrowed(text);
        }
        let mut fresh = self.clone();
        fresh.held.clear();
        let mut out = Vec::with_capacity(text.len());
        fresh.push(text.as_bytes(), &mut out);
        fresh.finish(&mut out);
        Cow::Owned(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Masks whole strings (a plan's rendered values); a no-op without secrets.
#[derive(Debug, Clone)]
pub struct Masker(Option<StreamMasker>);

impl Masker {
    pub fn new(values: impl IntoIterator<Item = String>) -> Masker {
        Masker(StreamMasker::new(values))
    }

    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match &self.0 {
            Some(masker) => masker.mask(text),
            None => Cow::Borrowed(text),
        }
    }

    /// Does any string in `value` (keys too) hold a secret?
    pub fn holds_secret(&self, value: &Value) -> bool {
        if self.0.is_none() {
            return false;
        }
        match value {
            Value::String(text) => matches!(self.mask(text), Cow::Owned(_)),
            Value::Array(items) => items.iter().any(|v| self.holds_secret(v)),
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| matches!(self.mask(k), Cow::Owned(_)) || self.holds_secret(v)),
            _ => false,
        }
    }

    /// Every string in `value` (keys too) masked.
    pub fn mask_json(&self, value: &mut Value) {
        if self.0.is_none() {
            return;
        }
        match value {
            Value::String(text) => {
                if let Cow::Owned(masked) = self.mask(text) {
                    *text = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_json(v)),
            Value::Object(map) => self.mask_map(map),
            _ => {}
        }
    }

    fn mask_map(&self, map: &mut Map<String, Value>) {
        let entries = std::mem::take(map);
        for (key, mut value) in entries {
            self.mask_json(&mut value);
            map.insert(self.mask(&key).into_owned(), value);
        }
    }

    /// A control message with the secrets in what others will see masked:
    /// alert and progress text, output keys and values. A checkpoint is
    /// the activity's own resume data, handed back to it as sent, so one
    /// holding a secret is refused instead (`holds_secret`).
    pub fn mask_control(&self, message: ControlMessage) -> ControlMessage {
        if self.0.is_none() {
            return message;
        }
        match message {
            ControlMessage::Alert(text) => ControlMessage::Alert(self.mask(&text).into_owned()),
            ControlMessage::Error(text) => ControlMessage::Error(self.mask(&text).into_owned()),
            ControlMessage::Progress { percent, text } => ControlMessage::Progress {
                percent,
                text: text.map(|t| self.mask(&t).into_owned()),
            },
            ControlMessage::Output(mut map) => {
                self.mask_map(&mut map);
                ControlMessage::Output(map)
            }
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stream(values: &[&str], pieces: &[&str]) -> String {
        let mut masker = StreamMasker::new(values.iter().map(|v| v.to_string())).unwrap();
        let mut out = Vec::new();
        for piece in pieces {
            masker.push(piece.as_bytes(), &mut out);
        }
        masker.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn secrets_are_masked_however_the_output_is_cut() {
        let text = "user=etl password=REALKEY-123 again REALKEY-123.\n";
        let want = "user=etl password=*** again ***.\n";
        for cut in 0..text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(stream(&["REALKEY-123"], &[a, b]), want, "cut at {cut}");
        }
        // One byte at a time.
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(stream(&["REALKEY-123"], &pieces), want);
    }

    #[test]
    fn a_prefix_that_never_completes_is_shown_at_the_end() {
        assert_eq!(stream(&["REALKEY"], &["abc REAL", "KE"]), "abc REALKE");
        assert_eq!(stream(&["REALKEY"], &["REALKEREALKEY"]), "REALKE***");
    }

    #[test]
    fn the_longest_secret_wins_and_empty_values_are_ignored() {
        assert_eq!(
            stream(&["abc", "abcdef", ""], &["xabcdefy abc"]),
            "x***y ***"
        );
        assert!(StreamMasker::new([String::new()]).is_none());
    }

    #[test]
    fn control_messages_are_masked_but_checkpoints_are_not() {
        let masker = Masker::new(["s3cr3t".to_string()]);
        let alert = masker.mask_control(ControlMessage::Alert("login s3cr3t failed".into()));
        assert!(matches!(alert, ControlMessage::Alert(t) if t == "login *** failed"));
        let output: Map<String, Value> =
            serde_json::from_str(r#"{"url": "u:s3cr3t@h", "s3cr3t": [1, "s3cr3t"]}"#).unwrap();
        let ControlMessage::Output(shown) = masker.mask_control(ControlMessage::Output(output))
        else {
            panic!("still an output");
        };
        assert_eq!(
            Value::Object(shown).to_string(),
            r#"{"***":[1,"***"],"url":"u:***@h"}"#
        );
    }

    #[test]
    fn whole_strings_are_masked() {
        let masker = Masker::new(["s3cr3t".to_string()]);
        assert_eq!(
            masker.mask("postgres://etl:s3cr3t@db/x"),
            "postgres://etl:***@db/x"
        );
        assert!(matches!(masker.mask("nothing here"), Cow::Borrowed(_)));
        assert_eq!(Masker::new([]).mask("s3cr3t"), "s3cr3t");
    }
}
