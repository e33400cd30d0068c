//! `docs/threat-model.md` names, for each threat, the tests that show its mitigation: every test
//! it names must exist where it says.

use std::path::Path;

#[test]
fn every_test_the_threat_model_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/threat-model.md")).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    // Citations read "`test_name` (path/to/file.rs)"; where several names share one path
    // ("`a` and `b` (file.rs)"), the last one is checked.
    for (at, _) in doc.match_indices(".rs") {
        let Some(open) = doc[..at].rfind(" (") else {
            continue;
        };
        let path = &doc[open + 2..at + 3];
        // Mitigations cite files in backquotes; tests cite them bare.
        if path.starts_with('`') || path.contains(char::is_whitespace) || !path.contains('/') {
            continue;
        }
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|_| panic!("the threat model cites {path}, which does not exist"));
        // The names cited for this file: backquoted words back to the previous citation.
        let since = doc[..open].rfind(".rs)").map_or(0, |i| i + 4);
        let span = &doc[since..open];
        let names: Vec<&str> = span
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| {
                !n.is_empty()
                    && n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        if let Some(name) = names.last() {
            checked += 1;
            if !source.contains(&format!("fn {name}(")) {
                missing.push(format!("{name} in {path}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} citations found: has the format changed?"
    );
    assert!(missing.is_empty(), "cited but missing: {missing:#?}");
}
