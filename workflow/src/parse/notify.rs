//! A chain file's `[notify.NAME]` tables: the keys of a settings file
//! rule, checked for shape, event kinds and durations with their
//! positions. A chain's rules see only that chain's events, so `chains`
//! is refused here rather than silently ignored.

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

use super::raw::Named;
use super::values::{Settings, duration};
use super::{Diagnostics, check_name, line_column};
use crate::model::{NOTIFY_KINDS, NotifyRule, NotifyWebhook};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    on: Spanned<Vec<Spanned<String>>>,
    /// Refused: declared so the message says why, not "unknown key".
    chains: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    tenants: Vec<String>,
    webhook: Option<RawWebhook>,
    exec: Option<Spanned<Vec<String>>>,
    mail: Option<RawMail>,
    coalesce: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    retry_delay: Option<Spanned<String>>,
    max_retry_delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: Option<String>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMail {
    to: Vec<String>,
    #[serde(default)]
    attach_report: bool,
}

/// The chain's rules; a table with an error is reported and left out.
pub(super) fn build_rules(
    raw: Vec<Named<RawNotify>>,
    defaults: &Settings,
    diagnostics: &mut Diagnostics<'_>,
) -> Vec<NotifyRule> {
    let mut rules = Vec::new();
    for entry in raw {
        check_name(
            "notification rule",
            &entry.name,
            &entry.name_span,
            diagnostics,
        );
        let Some(file) = entry.value else {
            continue;
        };
        let before = diagnostics.errors.len();
        let at = |key: &str| format!("notify.{}: {key}", entry.name);
        if let Some(chains) = &file.chains {
            diagnostics.error(
                &chains.span(),
                format!(
                    "{}: a chain file's rule sees only this chain's events; remove chains \
                     (rules for several chains belong in the settings file)",
                    at("chains")
                ),
            );
        }
        if file.on.get_ref().is_empty() {
            diagnostics.error(
                &file.on.span(),
                format!(
                    "{}: names no event; list kinds such as \"job.failed\"",
                    at("on")
                ),
            );
        }
        for kind in file.on.get_ref() {
            if !NOTIFY_KINDS.contains(&kind.get_ref().as_str()) {
                diagnostics.error(
                    &kind.span(),
                    format!(
                        "{}: unknown event kind {:?}; use one of {}",
                        at("on"),
                        kind.get_ref(),
                        NOTIFY_KINDS.join(", ")
                    ),
                );
            }
        }
        let targets = [
            file.webhook.is_some(),
            file.exec.is_some(),
            file.mail.is_some(),
        ];
        match targets.iter().filter(|t| **t).count() {
            1 => {}
            0 => diagnostics.error(
                &entry.name_span,
                format!("notify.{}: give `webhook`, `exec` or `mail`", entry.name),
            ),
            _ => diagnostics.error(
                &entry.name_span,
                format!(
                    "notify.{}: give one of `webhook`, `exec` and `mail`, not several",
                    entry.name
                ),
            ),
        }
        if let Some(exec) = &file.exec
            && exec.get_ref().is_empty()
        {
            diagnostics.error(
                &exec.span(),
                format!("{}: is empty; give a program and its arguments", at("exec")),
            );
        }
        let max_attempts =
            file.max_attempts
                .as_ref()
                .and_then(|n| match u32::try_from(*n.get_ref()) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        diagnostics.error(
                            &n.span(),
                            format!("{}: must be at least 1", at("max_attempts")),
                        );
                        None
                    }
                });
        let durations = [
            ("coalesce", &file.coalesce),
            ("retry_delay", &file.retry_delay),
            ("max_retry_delay", &file.max_retry_delay),
        ]
        .map(|(key, value)| {
            value
                .as_ref()
                .and_then(|v| duration(&at(key), v, false, diagnostics))
        });
        if diagnostics.errors.len() > before {
            continue;
        }
        let (line, column) = line_column(diagnostics.source, entry.name_span.start);
        let [coalesce, retry_delay, max_retry_delay] = durations;
        rules.push(NotifyRule {
            name: entry.name,
            line,
            column,
            on: file
                .on
                .into_inner()
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            tenants: file.tenants,
            webhook: file.webhook.map(|hook| NotifyWebhook {
                url: hook.url,
                secret_file: hook.secret_file.map(Into::into),
                ca_file: hook.ca_file.map(Into::into),
            }),
            exec: file.exec.map(Spanned::into_inner),
            mail_attach_report: file.mail.as_ref().is_some_and(|mail| mail.attach_report),
            mail_to: file.mail.map(|mail| mail.to),
            coalesce,
            max_attempts,
            retry_delay,
            max_retry_delay,
            user: defaults.user.clone(),
            group: defaults.group.clone(),
        });
    }
    rules
}
