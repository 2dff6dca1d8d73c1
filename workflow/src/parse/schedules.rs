//! `[schedule.<name>]` tables on their way into a [`Schedule`]: the cron
//! rule and its zone, catch-up and overlap, and the parameters a scheduled
//! job is submitted with. All of it is checked at load time, so a bad
//! schedule shows now rather than at 4 a.m.

use indexmap::IndexMap;
use toml::Spanned;

use super::raw::{Named, RawSchedule};
use super::values::{positive, to_json};
use super::{Diagnostics, check_name};
use crate::cron::{self, CatchUp, CronRule, Overlap};
use crate::model::{ParamSpec, Schedule};
use crate::params::{self, Strictness};

pub(super) fn build_schedules(
    raw: Vec<Named<RawSchedule>>,
    declared: &IndexMap<String, ParamSpec>,
    diagnostics: &mut Diagnostics<'_>,
) -> Vec<Schedule> {
    let mut schedules = Vec::new();
    for entry in raw {
        check_name("schedule", &entry.name, &entry.name_span, diagnostics);
        let Some(schedule) = entry.value else {
            continue;
        };
        let rule = build_rule(&schedule.cron, schedule.timezone.as_ref(), diagnostics);
        // A bad value is reported; the default stands in for it so the
        // rest of the table is still checked.
        let catch_up = choice(schedule.catch_up, CatchUp::parse, diagnostics);
        let overlap = choice(schedule.overlap, Overlap::parse, diagnostics);
        let max_catch_up = schedule
            .max_catch_up
            .and_then(|n| positive("max_catch_up", &n, diagnostics))
            .unwrap_or(Schedule::DEFAULT_MAX_CATCH_UP);
        for tenant in &schedule.tenants {
            check_name("tenant", tenant.get_ref(), &tenant.span(), diagnostics);
        }
        // A schedule's parameters are checked as a submission would be.
        let mut params = serde_json::Map::new();
        for (name, value) in schedule.params.into_iter().flatten() {
            let Some(spec) = declared.get(name.get_ref()) else {
                diagnostics.error(
                    &name.span(),
                    format!(
                        "parameter {:?}: {}",
                        name.get_ref(),
                        params::unknown_parameter_message(declared.keys())
                    ),
                );
                continue;
            };
            if spec.secret {
                // The chain file is readable by whoever reads the chain.
                diagnostics.error(
                    &value.span(),
                    format!(
                        "parameter {:?} is secret, so a schedule cannot hold its value in the \
                         chain file; give it from a tenant's [secrets] (schedule tenants)",
                        name.get_ref()
                    ),
                );
                continue;
            }
            // A text with template syntax is computed at each fire from the
            // fire's instant (`schedule.at`); its value is checked then.
            if let toml::Value::String(text) = value.get_ref()
                && crate::template::has_template_syntax(text)
            {
                match crate::template::check_schedule_template(text) {
                    Ok(()) => {
                        params.insert(name.into_inner(), serde_json::Value::String(text.clone()));
                    }
                    Err(message) => diagnostics.error(
                        &value.span(),
                        format!("parameter {:?}: {message}", name.get_ref()),
                    ),
                }
                continue;
            }
            match to_json(value.get_ref())
                .and_then(|json| params::check_value(spec, &json, Strictness::Submitted))
            {
                Ok(json) => {
                    params.insert(name.into_inner(), json);
                }
                Err(message) => diagnostics.error(
                    &value.span(),
                    format!("parameter {:?}: {message}", name.get_ref()),
                ),
            }
        }
        // Tenants may supply parameters of their own; without tenants the
        // schedule alone must satisfy the required ones.
        if schedule.tenants.is_empty() && diagnostics.shape_errors == 0 {
            for spec in declared.values() {
                if spec.required && spec.default.is_none() && !params.contains_key(&spec.name) {
                    diagnostics.error(
                        &entry.span,
                        format!(
                            "schedule {:?} does not give the required parameter {:?}; add it to \
                             params",
                            entry.name, spec.name
                        ),
                    );
                }
            }
        }
        // Without a rule the file has an error already, and no chain is
        // built from it.
        let Some(rule) = rule else {
            continue;
        };
        schedules.push(Schedule {
            name: entry.name,
            rule,
            timezone: schedule.timezone.map(Spanned::into_inner),
            params,
            tenants: schedule
                .tenants
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            catch_up,
            max_catch_up,
            overlap,
            enabled: schedule.enabled.unwrap_or(true),
        });
    }
    schedules
}

/// The cron rule, with each error at the value it is about.
fn build_rule(
    expression: &Spanned<String>,
    timezone: Option<&Spanned<String>>,
    diagnostics: &mut Diagnostics<'_>,
) -> Option<CronRule> {
    let parsed = cron::parse_expression(expression.get_ref())
        .map_err(|message| diagnostics.error(&expression.span(), message));
    let zone = match timezone {
        Some(name) => cron::parse_zone(name.get_ref())
            .map(Some)
            .map_err(|message| diagnostics.error(&name.span(), message)),
        None => Ok(None),
    };
    let rule = CronRule::new(expression.get_ref(), parsed.ok()?, zone.ok()?);
    if rule.never_fires() {
        diagnostics.error(
            &expression.span(),
            format!(
                "cron expression {:?} never fires: no date matches its day-of-month, month and \
                 day-of-week fields",
                expression.get_ref()
            ),
        );
        return None;
    }
    Some(rule)
}

/// A word from a fixed set (`catch_up`, `overlap`); the default when the
/// key is absent or wrong.
fn choice<T: Default>(
    value: Option<Spanned<String>>,
    parse: impl Fn(&str) -> Result<T, String>,
    diagnostics: &mut Diagnostics<'_>,
) -> T {
    let Some(value) = value else {
        return T::default();
    };
    parse(value.get_ref()).unwrap_or_else(|message| {
        diagnostics.error(&value.span(), message);
        T::default()
    })
}
