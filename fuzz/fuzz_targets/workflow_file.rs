//! Chain files: any text through `parse_chain` must give a chain or located
//! errors, never a panic; a chain that loads must render its activities
//! with its defaults without panicking either.

#![no_main]

use std::path::Path;

use holdfast_workflow::Program;
use holdfast_workflow::params::resolve_params;
use holdfast_workflow::template::{
    JobContext, MAX_RENDERED_BYTES, RenderContext, has_template_syntax, render_activity,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Map;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match holdfast_workflow::parse_chain(Path::new("f.toml"), &text) {
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused file has at least one error");
            let lines = text.matches('\n').count() + 1;
            for error in &errors {
                assert_eq!(error.file, "f.toml", "errors name the file: {error:?}");
                assert!(!error.message.is_empty(), "an error says something");
                if let Some(line) = error.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "line {line} is outside the file ({lines} lines): {error:?}"
                    );
                }
                if let Some(column) = error.column {
                    assert!(column >= 1, "columns are 1-based: {error:?}");
                }
            }
        }
        Ok(chain) => {
            assert!(!chain.name.is_empty(), "a chain has a name");
            assert!(!chain.activities.is_empty(), "a chain has an activity");
            for activity in &chain.activities {
                for &dep in &activity.deps {
                    assert!(
                        dep < chain.activities.len(),
                        "dependency {dep} of {} is out of range",
                        activity.path
                    );
                }
            }
            // Defaults alone: required parameters may be missing, which
            // rendering reports as an error; it must not panic.
            let params = resolve_params(&chain, &Map::new()).unwrap_or_default();
            let ctx = RenderContext {
                params,
                job: JobContext {
                    id: 1,
                    run_id: 1,
                    chain: chain.name.clone(),
                    target: chain.name.clone(),
                    tenant: None,
                    attempt: 1,
                    outcome: None,
                },
                outputs: Map::new(),
                secret_dir: None,
                item: None,
                schedule: None,
            };
            for activity in &chain.activities {
                let Ok(program) = render_activity(activity, &ctx) else {
                    continue;
                };
                if let Program::Command(argv) = &activity.program {
                    assert_eq!(argv.len(), program.argv.len(), "one rendered arg per arg");
                    for (template, rendered) in argv.iter().zip(&program.argv) {
                        if has_template_syntax(template) {
                            assert!(rendered.len() <= MAX_RENDERED_BYTES, "renders are bounded");
                        } else {
                            assert_eq!(template, rendered, "plain text renders to itself");
                        }
                    }
                }
            }
        }
    }
});
