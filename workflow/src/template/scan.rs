//! A small lexical scan of a template's `{{ }}` and `{% %}` blocks: which
//! filters and tests it applies, and whether it uses a construct HoldFast
//! does not offer because it could build a value without bound.
//!
//! minijinja caps the instructions of a render (fuel) and the length of a
//! repeated string, but not what one instruction may build: `[0] * 10**12`
//! is a lazy sequence that the next `~`, `in` or conversion walks whole
//! inside one instruction, and names bound with `set` (or `namespace`)
//! let every step double a value. Templates only substitute values, so the
//! constructs that make values grow are refused when the file loads and
//! again before every render (the renderer does not trust its caller).

use std::collections::BTreeSet;

use minijinja::ErrorKind;

use super::{EXPANDING_FILTERS, WIDENING_FILTERS, environment};

/// What the scan finds in one template.
#[derive(Debug, Default)]
struct Scan {
    /// Names after `|` and after `{% filter`.
    filters: BTreeSet<String>,
    /// Names after `is` / `is not`.
    tests: BTreeSet<String>,
    /// Refused constructs, as the messages that name them.
    refused: BTreeSet<&'static str>,
}

/// Statements that bind a name to a computed value: with them a template
/// can double a value at every step, and the doubling happens inside single
/// instructions that fuel does not see.
const BINDING_STATEMENTS: [(&str, &str); 4] = [
    (
        "set",
        "`{% set %}`, which is not offered: a bound name can grow at every step",
    ),
    (
        "with",
        "`{% with %}`, which is not offered: a bound name can grow at every step",
    ),
    (
        "macro",
        "`{% macro %}`, which is not offered: a macro can grow a value at every call",
    ),
    (
        "call",
        "`{% call %}`, which is not offered: a macro can grow a value at every call",
    ),
];

const STAR: &str = "the `*` operator, which is not offered: it repeats strings and lists \
                    without bound (compute products in the activity)";
const NAMESPACE: &str = "`namespace()`, which is not offered: it carries a growing value across \
                         loop iterations";
const RECURSIVE: &str = "a `recursive` loop, which is not offered: each level can grow a value";

/// The constructs of `template` that are refused, as messages. Empty for
/// text without template syntax.
pub fn refused_constructs(template: &str) -> Vec<String> {
    scan(template)
        .refused
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The filters and tests `template` applies that this environment does not
/// offer (the withheld builtins, misspellings), and the constructs it may
/// not use, as messages. Each filter or test name is checked against the
/// environment itself, so the answer is the one rendering would give.
pub(crate) fn unavailable_names(template: &str) -> Vec<String> {
    if !super::has_template_syntax(template) {
        return Vec::new();
    }
    let env = environment();
    let found = scan(template);
    let mut problems = Vec::new();
    for name in found.filters {
        let probe = format!("{{{{ none | {name} }}}}");
        if env
            .render_str(&probe, ())
            .is_err_and(|e| e.kind() == ErrorKind::UnknownFilter)
        {
            let why = if EXPANDING_FILTERS.contains(&name.as_str()) {
                "is withheld because it expands a whole sequence in one step"
            } else if WIDENING_FILTERS.contains(&name.as_str()) {
                "is withheld because it can widen a value many times over in one step"
            } else {
                "does not exist"
            };
            problems.push(format!("filter `{name}`, which {why}"));
        }
    }
    for name in found.tests {
        let probe = format!("{{{{ none is {name} }}}}");
        if env
            .render_str(&probe, ())
            .is_err_and(|e| e.kind() == ErrorKind::UnknownTest)
        {
            problems.push(format!("test `{name}`, which does not exist"));
        }
    }
    problems.extend(found.refused.into_iter().map(str::to_string));
    problems
}

/// Scans the `{{ }}` and `{% %}` blocks of `template`; string literals and
/// comments are skipped.
fn scan(template: &str) -> Scan {
    let bytes = template.as_bytes();
    let mut found = Scan::default();
    let ident = |at: usize| -> (usize, &str) {
        let mut i = at;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        (i, &template[start..i])
    };
    let mut i = 0;
    while i + 1 < bytes.len() {
        let close: &[u8] = match &bytes[i..i + 2] {
            b"{{" => b"}}",
            b"{%" => b"%}",
            b"{#" => {
                i = template[i..]
                    .find("#}")
                    .map_or(bytes.len(), |at| i + at + 2);
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let statement = close == b"%}";
        i += 2;
        // `{%-` and `{{-` trim whitespace; the dash is not an operator.
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        // `{% raw %}...{% endraw %}` is text: skip to its end.
        if statement && ident(i).1 == "raw" {
            i = template[i..]
                .find("endraw")
                .map_or(bytes.len(), |at| i + at + "endraw".len());
            continue;
        }
        let mut first_word = true;
        while i < bytes.len() && !bytes[i..].starts_with(close) {
            match bytes[i] {
                quote @ (b'"' | b'\'') => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'*' => {
                    if bytes.get(i + 1) == Some(&b'*') {
                        // `**` is the power operator: integers are checked
                        // for overflow, so it cannot build a large value.
                        i += 2;
                    } else {
                        found.refused.insert(STAR);
                        i += 1;
                    }
                }
                b'|' => {
                    let (end, name) = ident(i + 1);
                    if !name.is_empty() {
                        found.filters.insert(name.to_string());
                    }
                    i = end.max(i + 1);
                }
                b if b.is_ascii_alphabetic() || b == b'_' => {
                    let (end, word) = ident(i);
                    if word == "is" {
                        let (after, next) = ident(end);
                        let (after, name) = if next == "not" {
                            ident(after)
                        } else {
                            (after, next)
                        };
                        if !name.is_empty() {
                            found.tests.insert(name.to_string());
                        }
                        i = after;
                    } else if statement && first_word && word == "filter" {
                        let (after, name) = ident(end);
                        if !name.is_empty() {
                            found.filters.insert(name.to_string());
                        }
                        i = after;
                    } else {
                        if statement
                            && first_word
                            && let Some((_, why)) =
                                BINDING_STATEMENTS.iter().find(|(name, _)| *name == word)
                        {
                            found.refused.insert(why);
                        }
                        if statement && word == "recursive" {
                            found.refused.insert(RECURSIVE);
                        }
                        if word == "namespace" && next_non_space(bytes, end) == Some(b'(') {
                            found.refused.insert(NAMESPACE);
                        }
                        i = end;
                    }
                    first_word = false;
                    continue;
                }
                _ => i += 1,
            }
            if !bytes
                .get(i.saturating_sub(1))
                .is_some_and(u8::is_ascii_whitespace)
            {
                first_word = false;
            }
        }
        i += 2;
    }
    found
}

fn next_non_space(bytes: &[u8], from: usize) -> Option<u8> {
    bytes[from.min(bytes.len())..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_tests_and_refused_constructs_are_found() {
        let found = scan(
            "{{ a | upper }}{% if b is not defined %}{{ '*|x' }}{% endif %}{# * | y #}\
             {% filter lower %}z{% endfilter %}{{ 2 ** 3 }}",
        );
        assert_eq!(
            found.filters.iter().map(String::as_str).collect::<Vec<_>>(),
            ["lower", "upper"]
        );
        assert_eq!(
            found.tests.iter().map(String::as_str).collect::<Vec<_>>(),
            ["defined"]
        );
        assert!(found.refused.is_empty(), "{:?}", found.refused);
        for (template, expected) in [
            ("{{ [0] * 10 }}", STAR),
            ("{{ 'x'*3 }}", STAR),
            ("{% set x = 1 %}", BINDING_STATEMENTS[0].1),
            ("{%- set x = 1 -%}", BINDING_STATEMENTS[0].1),
            ("{% with x = 1 %}{% endwith %}", BINDING_STATEMENTS[1].1),
            ("{% macro f() %}{% endmacro %}", BINDING_STATEMENTS[2].1),
            ("{{ namespace (a=1) }}", NAMESPACE),
            ("{% for x in y recursive %}{% endfor %}", RECURSIVE),
        ] {
            assert!(
                scan(template).refused.contains(expected),
                "{template} must be refused"
            );
        }
        // Text in a raw block is not an expression.
        assert!(
            scan("{% raw %}{{ a * b }}{% set x %}{% endraw %}")
                .refused
                .is_empty()
        );
        assert!(!scan("{% raw %}x{% endraw %}{{ 2 * 3 }}").refused.is_empty());
        // Words that only look like the refused ones.
        assert!(
            scan("{{ params.set }}{{ settings }}{{ namespace }} * set")
                .refused
                .is_empty()
        );
    }
}
