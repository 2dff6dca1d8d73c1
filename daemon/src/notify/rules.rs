//! Notification rules: `[notify.NAME]` tables of the settings file, checked
//! when the settings load, so a rule that can never work (an unreadable
//! secret file, a hook that is not there, an unknown event kind) stops the
//! daemon from starting instead of failing at 3 a.m.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_api::Event;
use serde::Deserialize;

/// Event kinds a rule may name in `on`.
pub const KINDS: [&str; 13] = [
    "job.submitted",
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.finished",
    "job.alert",
    "activity.started",
    "activity.succeeded",
    "activity.retrying",
    "activity.failed",
    "schedule.refused",
    "daemon.recovered",
];

/// A `[notify.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    on: Vec<String>,
    #[serde(default)]
    chains: Vec<String>,
    #[serde(default)]
    tenants: Vec<String>,
    webhook: Option<WebhookFile>,
    exec: Option<Vec<String>>,
    mail: Option<MailFile>,
    coalesce: Option<String>,
    max_attempts: Option<u32>,
    retry_delay: Option<String>,
    max_retry_delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MailFile {
    to: Vec<String>,
}

/// `[smtp]` of the settings file: the server mail rules send through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    #[serde(default = "smtp_port")]
    pub port: u16,
    /// The sender; `holdfast@` the host's name when left out.
    pub from: Option<String>,
    #[serde(default)]
    starttls: bool,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

fn smtp_port() -> u16 {
    25
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    secret_file: Option<PathBuf>,
}

/// Where a rule delivers.
#[derive(Debug, Clone)]
pub enum Target {
    /// POST the event JSON to `http://host:port/path`.
    Webhook {
        host: String,
        port: u16,
        path: String,
        /// Read at each delivery, so a rotated secret is picked up.
        secret_file: Option<PathBuf>,
    },
    /// Run the argv with the event JSON on stdin.
    Exec(Vec<String>),
    /// A readable text mail through the `[smtp]` server.
    Mail { to: Vec<String>, smtp: Smtp },
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub on: Vec<String>,
    pub chains: Vec<String>,
    pub tenants: Vec<String>,
    pub target: Target,
    pub max_attempts: u32,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// Events within this window after the first go out as one digest.
    pub coalesce: Option<Duration>,
}

impl Rule {
    /// Does `event` concern this rule?
    pub fn matches(&self, event: &Event) -> bool {
        self.on.contains(&event.kind)
            && (self.chains.is_empty()
                || event
                    .chain
                    .as_deref()
                    .is_some_and(|c| self.chains.iter().any(|g| glob(g, c))))
            && (self.tenants.is_empty()
                || event
                    .tenant
                    .as_deref()
                    .is_some_and(|t| self.tenants.iter().any(|g| glob(g, t))))
    }

    /// The wait before attempt `attempts + 1`, doubling from `retry_delay`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.retry_delay
            .saturating_mul(factor)
            .min(self.max_retry_delay)
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(mut remaining) = text.strip_prefix(head) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            loop {
                if glob(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

/// Check every rule; the message names the rule and says what to change.
pub fn check(files: BTreeMap<String, RuleFile>, smtp: Option<&Smtp>) -> Result<Vec<Rule>, String> {
    if let Some(smtp) = smtp
        && (smtp.starttls || smtp.user.is_some() || smtp.password_file.is_some())
    {
        return Err(
            "[smtp]: starttls and authentication are not supported by this version; \
             relay through a local server (host = \"127.0.0.1\")"
                .into(),
        );
    }
    files
        .into_iter()
        .map(|(name, file)| {
            check_one(&name, file, smtp).map_err(|e| format!("[notify.{name}]: {e}"))
        })
        .collect()
}

fn check_one(name: &str, file: RuleFile, smtp: Option<&Smtp>) -> Result<Rule, String> {
    if file.on.is_empty() {
        return Err("`on` names no event; list kinds such as \"job.failed\"".into());
    }
    if let Some(kind) = file.on.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown event kind {kind:?} in `on`; use one of {}",
            KINDS.join(", ")
        ));
    }
    let target = match (file.webhook, file.exec, file.mail) {
        (None, None, Some(mail)) => {
            let smtp = smtp.ok_or(
                "mail needs an SMTP server: add [smtp] with host (and port) to the settings",
            )?;
            if mail.to.is_empty()
                || mail
                    .to
                    .iter()
                    .any(|a| !a.contains('@') || a.contains(['<', '>', '\r', '\n']))
            {
                return Err("mail.to needs addresses such as \"ops@example.com\"".into());
            }
            Target::Mail {
                to: mail.to,
                smtp: smtp.clone(),
            }
        }
        (Some(hook), None, None) => webhook(hook)?,
        (None, Some(argv), None) => {
            let program = argv
                .first()
                .ok_or("exec is empty; give a program and its arguments")?;
            let path = std::path::Path::new(program);
            if !path.is_absolute() {
                return Err(format!("exec program {program:?} is not an absolute path"));
            }
            if !path.is_file() {
                return Err(format!("exec program {program} does not exist"));
            }
            Target::Exec(argv)
        }
        (None, None, None) => return Err("give `webhook`, `exec` or `mail`".into()),
        _ => return Err("give one of `webhook`, `exec` and `mail`, not several".into()),
    };
    let duration = |key: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => humantime::parse_duration(text).map_err(|e| format!("{key} {text:?}: {e}")),
        None => Ok(default),
    };
    let max_attempts = file.max_attempts.unwrap_or(10);
    if max_attempts == 0 {
        return Err("max_attempts must be at least 1".into());
    }
    Ok(Rule {
        name: name.to_string(),
        on: file.on,
        chains: file.chains,
        tenants: file.tenants,
        target,
        max_attempts,
        retry_delay: duration("retry_delay", &file.retry_delay, Duration::from_secs(5))?,
        max_retry_delay: duration(
            "max_retry_delay",
            &file.max_retry_delay,
            Duration::from_secs(3600),
        )?,
        coalesce: match &file.coalesce {
            Some(text) => Some(
                humantime::parse_duration(text).map_err(|e| format!("coalesce {text:?}: {e}"))?,
            ),
            None => None,
        },
    })
}

fn webhook(hook: WebhookFile) -> Result<Target, String> {
    let rest = hook.url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "webhook url {:?}: only http:// is supported (put a local proxy in front of https)",
            hook.url
        )
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse()
                .map_err(|_| format!("webhook url {:?}: bad port {port:?}", hook.url))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("webhook url {:?} names no host", hook.url));
    }
    if let Some(file) = &hook.secret_file {
        std::fs::read(file)
            .map_err(|e| format!("secret_file {} cannot be read: {e}", file.display()))?;
    }
    Ok(Target::Webhook {
        host: host.to_string(),
        port,
        path,
        secret_file: hook.secret_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("nightly-*", "nightly-etl"));
        assert!(glob("*", "x"));
        assert!(glob("a*c", "abbbc"));
        assert!(!glob("nightly-*", "daily"));
        assert!(!glob("a*c", "abd"));
    }
}
