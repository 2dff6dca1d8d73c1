//! The document's shape: every reference resolves, every application code
//! is a component, results are real schemas.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Value::String(r) = v {
                        out.insert(r.clone());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = serde_json::to_value(document("0")).expect("serialize");
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let pointer = r.strip_prefix('#').expect("local ref");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn every_application_code_is_a_component_and_used() {
    let doc = document("0");
    for code in -32099..=-32000 {
        if let Some(c) = ErrorCode::from_code(code) {
            let error = &doc.components.errors[c.name()];
            assert_eq!(error["code"], code);
            assert!(
                methods()
                    .iter()
                    .any(|m| m.errors.contains(&MethodError::App(c))),
                "{} is referenced by no method",
                c.name()
            );
        }
    }
}

#[test]
fn no_result_is_a_bare_object_and_arrays_have_items() {
    let doc = document("0");
    for method in &doc.methods {
        let schema = &method["result"]["schema"];
        assert_ne!(
            schema,
            &serde_json::json!({"type": "object"}),
            "{}",
            method["name"]
        );
    }
    let job_list = &doc.components.schemas["JobList"];
    assert_eq!(
        job_list["properties"]["jobs"]["items"]["$ref"],
        "#/components/schemas/JobSummary"
    );
}

#[test]
fn subscriptions_answer_integer_ids_and_name_their_notifications() {
    let doc = document("0");
    assert_eq!(doc.components.schemas["SubscriptionId"]["type"], "integer");
    let names: BTreeSet<&str> = doc
        .methods
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for method in &doc.methods {
        if let Some(sub) = method.get("x-subscription") {
            let unsubscribe = sub["unsubscribe"].as_str().expect("unsubscribe");
            assert!(names.contains(unsubscribe), "{unsubscribe}");
            assert!(sub["notification"].is_string());
            assert!(sub["params"].is_object());
        }
    }
    for name in [
        "job.unwatch",
        "job.unfollow_logs",
        "store.backup_cancel",
        "events.unsubscribe",
    ] {
        assert!(names.contains(name), "{name}");
        assert_eq!(param_names(name), None);
    }
    assert_eq!(param_names("job.get"), Some(vec!["job_id"]));
}
