//! Finding where a chain's activity got one of its settings, for errors
//! found after parsing (the daemon's run-as checks), which the model alone
//! cannot place in the file.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::line_column;
use crate::model::{Activity, Chain};

/// 1-based line and column of the `key` (`user`, `group`, ...) that gives
/// `activity` its value: in the activity's own table, else in
/// `[defaults]`. None when the key is in neither (or the source no longer
/// parses, which a loaded chain's never does).
pub fn setting_position(chain: &Chain, activity: &Activity, key: &str) -> Option<(usize, usize)> {
    let root = DeTable::parse(&chain.source).ok()?.into_inner();
    // A handler's activities live under [handler.<kind>].
    let section = if activity.handler.is_some() {
        "handler"
    } else {
        "process"
    };
    let own = table_of(&root, section)
        .and_then(|t| table_of(t, &activity.process))
        .and_then(|t| table_of(t, "activity"))
        .and_then(|t| table_of(t, &activity.name))
        .and_then(|t| key_start(t, key));
    let start = own.or_else(|| table_of(&root, "defaults").and_then(|t| key_start(t, key)))?;
    Some(line_column(&chain.source, start))
}

fn entry<'t, 'a>(table: &'t DeTable<'a>, key: &str) -> Option<&'t Spanned<DeValue<'a>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

fn table_of<'t, 'a>(table: &'t DeTable<'a>, key: &str) -> Option<&'t DeTable<'a>> {
    match entry(table, key)?.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

fn key_start(table: &DeTable<'_>, key: &str) -> Option<usize> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, _)| k.span().start)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::parse_chain;

    #[test]
    fn finds_the_activitys_key_then_the_defaults() {
        let source = "[defaults]\nuser = \"etl\"\ngroup = \"etl\"\n\n\
                      [process.p.activity.a]\ncommand = [\"true\"]\n  group = \"disk\"\n\n\
                      [process.p.activity.b]\ncommand = [\"true\"]\n";
        let chain = parse_chain(Path::new("c.toml"), source).expect("the chain parses");
        let (a, b) = (&chain.activities[0], &chain.activities[1]);
        assert_eq!(super::setting_position(&chain, a, "group"), Some((7, 3)));
        assert_eq!(super::setting_position(&chain, b, "group"), Some((3, 1)));
        assert_eq!(super::setting_position(&chain, a, "user"), Some((2, 1)));
        assert_eq!(super::setting_position(&chain, a, "nofile"), None);
    }

    #[test]
    fn finds_a_handler_activitys_key() {
        let source = "[process.p.activity.a]\ncommand = [\"true\"]\n\n\
                      [handler.on_exit.activity.a]\ncommand = [\"true\"]\nuser = \"etl\"\n";
        let chain = parse_chain(Path::new("c.toml"), source).expect("the chain parses");
        let note = chain
            .activity("on_exit", "a")
            .expect("the handler's activity");
        assert_eq!(super::setting_position(&chain, note, "user"), Some((6, 1)));
    }
}
