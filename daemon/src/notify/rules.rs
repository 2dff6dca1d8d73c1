//! Notification rules: `[notify.NAME]` tables of the settings file, checked
//! when the settings load, and of chain files, checked when the chain loads
//! (named `CHAIN.NAME`, for that chain's events only), so a rule that can
//! never work (an unreadable secret file, a hook that is not there, an
//! unknown event kind, a run-as user the daemon cannot switch to) stops the
//! daemon from starting, or the chain from loading, instead of failing at
//! 3 a.m.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_api::LoadError;
use holdfast_workflow::Chain;
use serde::Deserialize;

use super::smtp::Smtp;
use super::tls::{self, Roots};
use crate::settings::Settings;

/// Attempts of one delivery, unless the rule says otherwise.
const DEFAULT_ATTEMPTS: u32 = 10;
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(5);
const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Event kinds a rule may name in `on`.
pub use holdfast_workflow::NOTIFY_KINDS as KINDS;

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
    #[serde(default)]
    attach_report: bool,
}

/// Where mail rules send without `[smtp]`.
pub const SENDMAIL: &str = "/usr/sbin/sendmail";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFile {
    url: String,
    secret_file: Option<PathBuf>,
    /// PEM certificates trusted besides the system's, for an https URL.
    ca_file: Option<PathBuf>,
}

/// Where a rule delivers.
#[derive(Debug, Clone)]
pub enum Target {
    /// POST the event JSON to `url` (`http://` or `https://host:port/path`).
    Webhook {
        url: String,
        host: String,
        port: u16,
        path: String,
        /// Read at each delivery, so a rotated secret is picked up.
        secret_file: Option<PathBuf>,
        /// For `https://`: how the receiver is verified.
        tls: Option<WebhookTls>,
    },
    /// Run the argv with the event JSON on stdin, as `run_as` (a chain
    /// rule's, looked up again at each delivery) or else as the daemon's
    /// user.
    Exec {
        argv: Vec<String>,
        run_as: Option<crate::run_as::Request>,
    },
    /// A readable text mail through the `[smtp]` server or sendmail, with
    /// the job's HTML execution report attached when `attach_report`.
    Mail {
        to: Vec<String>,
        via: MailVia,
        attach_report: bool,
    },
}

/// An https webhook's TLS: the client configuration (system certificates
/// and the rule's `ca_file`) and the name the receiver's certificate must
/// carry (also its SNI).
#[derive(Debug, Clone)]
pub struct WebhookTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// How a mail leaves: the `[smtp]` server, or the local sendmail program.
#[derive(Debug, Clone)]
pub enum MailVia {
    Smtp(Smtp),
    Sendmail(PathBuf),
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
    /// Does an event of `kind`, `chain` and `tenant` concern this rule?
    pub fn matches(&self, kind: &str, chain: Option<&str>, tenant: Option<&str>) -> bool {
        self.on.iter().any(|k| k == kind)
            && (self.chains.is_empty()
                || chain.is_some_and(|c| self.chains.iter().any(|g| glob(g, c))))
            && (self.tenants.is_empty()
                || tenant.is_some_and(|t| self.tenants.iter().any(|g| glob(g, t))))
    }

    /// The wait before attempt `attempts + 1`, doubling from `retry_delay`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.retry_delay
            .saturating_mul(factor)
            .min(self.max_retry_delay)
    }
}

/// A rule as `workflow.get` shows it.
pub fn info(rule: &Rule) -> holdfast_api::NotifyRuleInfo {
    let (target, run_as) = match &rule.target {
        Target::Webhook { url, .. } => (format!("webhook {url}"), None),
        Target::Exec { argv, run_as } => (
            format!("exec {}", argv.join(" ")),
            run_as.as_ref().map(|r| match &r.group {
                Some(group) => format!("{} (group {group})", r.user),
                None => r.user.clone(),
            }),
        ),
        Target::Mail {
            to,
            via,
            attach_report,
        } => (
            format!(
                "mail {} via {}{}",
                to.join(", "),
                match via {
                    MailVia::Smtp(smtp) => smtp.describe(),
                    MailVia::Sendmail(program) => format!("sendmail {}", program.display()),
                },
                if *attach_report {
                    ", with the job's report"
                } else {
                    ""
                }
            ),
            None,
        ),
    };
    holdfast_api::NotifyRuleInfo {
        name: rule.name.clone(),
        on: rule.on.clone(),
        target,
        run_as,
        coalesce_seconds: rule.coalesce.map(|d| d.as_secs_f64()),
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

/// Mail settings as the settings file gives them: `[smtp]`, else the
/// local sendmail at `sendmail` (default [`SENDMAIL`]).
pub struct MailSettings<'a> {
    pub smtp: Option<&'a Smtp>,
    pub sendmail: &'a std::path::Path,
}

/// Check every rule; the message names the rule and says what to change.
pub fn check(
    files: BTreeMap<String, RuleFile>,
    mail: &MailSettings<'_>,
) -> Result<Vec<Rule>, String> {
    files
        .into_iter()
        .map(|(name, file)| {
            check_one(&name, file, mail).map_err(|e| format!("[notify.{name}]: {e}"))
        })
        .collect()
}

fn check_one(name: &str, file: RuleFile, mail: &MailSettings<'_>) -> Result<Rule, String> {
    if file.on.is_empty() {
        return Err("`on` names no event; list kinds such as \"job.failed\"".into());
    }
    if let Some(kind) = file.on.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown event kind {kind:?} in `on`; use one of {}",
            KINDS.join(", ")
        ));
    }
    let target = target(
        file.webhook,
        file.exec,
        file.mail.map(|m| (m.to, m.attach_report)),
        mail,
        None,
    )?;
    let duration = |key: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => humantime::parse_duration(text).map_err(|e| format!("{key} {text:?}: {e}")),
        None => Ok(default),
    };
    let max_attempts = file.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
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
        retry_delay: duration("retry_delay", &file.retry_delay, DEFAULT_RETRY_DELAY)?,
        max_retry_delay: duration(
            "max_retry_delay",
            &file.max_retry_delay,
            DEFAULT_MAX_RETRY_DELAY,
        )?,
        coalesce: match &file.coalesce {
            Some(text) => Some(
                humantime::parse_duration(text).map_err(|e| format!("coalesce {text:?}: {e}"))?,
            ),
            None => None,
        },
    })
}

/// Where a rule delivers, checked against this host.
fn target(
    webhook_file: Option<WebhookFile>,
    exec: Option<Vec<String>>,
    mail_to: Option<(Vec<String>, bool)>,
    mail: &MailSettings<'_>,
    run_as: Option<crate::run_as::Request>,
) -> Result<Target, String> {
    Ok(match (webhook_file, exec, mail_to) {
        (None, None, Some((to, attach_report))) => {
            let via = match mail.smtp {
                Some(smtp) => MailVia::Smtp(smtp.clone()),
                None if mail.sendmail.is_file() => MailVia::Sendmail(mail.sendmail.to_path_buf()),
                None => {
                    return Err(format!(
                        "mail needs an SMTP server or a local sendmail ({} does not exist): \
                         add [smtp] with host (and port) to the settings, or install one",
                        mail.sendmail.display()
                    ));
                }
            };
            if to.is_empty()
                || to
                    .iter()
                    .any(|a| !a.contains('@') || a.contains(['<', '>', '\r', '\n']))
            {
                return Err("mail.to needs addresses such as \"ops@example.com\"".into());
            }
            Target::Mail {
                to,
                via,
                attach_report,
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
            Target::Exec { argv, run_as }
        }
        (None, None, None) => return Err("give `webhook`, `exec` or `mail`".into()),
        _ => return Err("give one of `webhook`, `exec` and `mail`, not several".into()),
    })
}

/// The rules of a chain file, checked against this host: named
/// `CHAIN.NAME`, matching only that chain's events, an `exec` hook run as
/// the chain's activities that name no user are. Errors point at the
/// rule's table.
pub fn for_chain(chain: &Chain, settings: &Settings) -> Result<Vec<Rule>, Refused> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut from_database = false;
    let mut permanent = false;
    let mail = MailSettings {
        smtp: settings.smtp.as_ref(),
        sendmail: &settings.sendmail,
    };
    for rule in &chain.notify {
        let error = |message: String| LoadError {
            file: chain.file.display().to_string(),
            line: Some(rule.line),
            column: Some(rule.column),
            message: format!("notify.{}: {message}", rule.name),
        };
        let run_as = match (
            &rule.exec,
            crate::run_as::default_user(rule.user.as_deref(), settings),
        ) {
            (Some(_), Some(user)) => {
                let checked = match crate::run_as::check_user(user, rule.user.is_some(), settings) {
                    Err(e) => Err((e, false)),
                    Ok(()) => crate::run_as::resolve_within(
                        user,
                        rule.group.as_deref(),
                        &settings.run_as_groups,
                        settings.user_database_wait,
                    )
                    .map(drop)
                    .map_err(|e| (e.to_string(), crate::run_as::from_database(&e))),
                };
                if let Err((e, database)) = checked {
                    from_database |= database;
                    permanent |= !database;
                    errors.push(error(format!("the exec hook would run as {user:?}: {e}")));
                    continue;
                }
                Some(crate::run_as::Request {
                    user: user.to_string(),
                    group: rule.group.clone(),
                    run_as_groups: settings.run_as_groups.clone(),
                })
            }
            _ => None,
        };
        let webhook_file = rule.webhook.as_ref().map(|hook| WebhookFile {
            url: hook.url.clone(),
            secret_file: hook.secret_file.clone(),
            ca_file: hook.ca_file.clone(),
        });
        let target = match target(
            webhook_file,
            rule.exec.clone(),
            rule.mail_to.clone().map(|to| (to, rule.mail_attach_report)),
            &mail,
            run_as,
        ) {
            Ok(target) => target,
            Err(message) => {
                permanent = true;
                errors.push(error(message));
                continue;
            }
        };
        rules.push(Rule {
            name: format!("{}.{}", chain.name, rule.name),
            on: rule.on.clone(),
            chains: vec![chain.name.clone()],
            tenants: rule.tenants.clone(),
            target,
            max_attempts: rule.max_attempts.unwrap_or(DEFAULT_ATTEMPTS),
            retry_delay: rule.retry_delay.unwrap_or(DEFAULT_RETRY_DELAY),
            max_retry_delay: rule.max_retry_delay.unwrap_or(DEFAULT_MAX_RETRY_DELAY),
            coalesce: rule.coalesce,
        });
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(Refused {
            errors,
            unconfirmed: from_database && !permanent,
        })
    }
}

/// Why a chain file's rules were refused.
#[derive(Debug)]
pub struct Refused {
    pub errors: Vec<LoadError>,
    /// Only for what the user database answered about an `exec` hook's
    /// user (see [`crate::run_as::ChainCheck::unconfirmed`]).
    pub unconfirmed: bool,
}

fn webhook(hook: WebhookFile) -> Result<Target, String> {
    let (https, rest) = if let Some(rest) = hook.url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = hook.url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "webhook url {:?}: give an http:// or https:// URL",
            hook.url
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    // The port follows the last colon, unless that colon is inside an IPv6
    // address's brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse()
                .map_err(|_| format!("webhook url {:?}: bad port {port:?}", hook.url))?,
        ),
        _ => (authority, if https { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("webhook url {:?} names no host", hook.url));
    }
    if let Some(file) = &hook.secret_file {
        std::fs::read(file)
            .map_err(|e| format!("secret_file {} cannot be read: {e}", file.display()))?;
    }
    let host = host.to_string();
    let tls = match (https, &hook.ca_file) {
        (false, Some(_)) => {
            return Err(format!(
                "webhook url {:?}: ca_file is for https:// URLs; use https or remove ca_file",
                hook.url
            ));
        }
        (false, None) => None,
        (true, ca_file) => {
            let roots = Roots::load(ca_file.as_deref())?;
            Some(WebhookTls {
                config: roots.client_config()?,
                server_name: tls::server_name(&host)
                    .map_err(|e| format!("webhook url {:?}: {e}", hook.url))?,
            })
        }
    };
    Ok(Target::Webhook {
        url: hook.url,
        host,
        port,
        path,
        secret_file: hook.secret_file,
        tls,
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
