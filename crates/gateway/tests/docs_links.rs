//! The README is the front door and `docs/` holds the rest, by reader: the README stays short,
//! every page in `docs/` is reachable from it, and no relative link (to a file, or to a heading
//! in one) is broken.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pages checked: the README and every Markdown file in `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The targets of the page's Markdown links, `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let text = prose(text);
    let mut found = Vec::new();
    for (at, _) in text.match_indices("](") {
        let rest = &text[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = &rest[..end];
            if !target.is_empty() && !target.contains(char::is_whitespace) {
                found.push(target.to_string());
            }
        }
    }
    found
}

/// The anchors GitHub gives the page's headings: lower case, punctuation but `-` and `_` dropped,
/// spaces made `-`.
fn anchors(text: &str) -> HashSet<String> {
    prose(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn no_relative_link_in_the_docs_is_broken() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let Ok(linked_text) = std::fs::read_to_string(&linked) else {
                if !linked.is_dir() {
                    broken.push(format!("{}: {target} (no such file)", page.display()));
                }
                continue;
            };
            if !anchor.is_empty() && !anchors(&linked_text).contains(anchor) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(checked >= 10, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_short_front_door_that_maps_every_page_in_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "the README has {lines} lines; move sections to docs/"
    );
    let linked: HashSet<String> = links(&readme).into_iter().collect();
    for page in pages()
        .into_iter()
        .filter(|p| p.parent().unwrap().ends_with("docs"))
    {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        assert!(linked.contains(&name), "{name} is not in the README's map");
    }
}

#[test]
fn the_link_check_finds_a_broken_link_and_a_missing_heading() {
    let text = "# A page\n\n## Some heading (with words)\n\nSee [x](#some-heading-with-words).\n\
                ```\n[not a link](nowhere.md)\n```\n";
    assert_eq!(links(text), vec!["#some-heading-with-words"]);
    assert!(anchors(text).contains("some-heading-with-words"));
    assert!(!anchors(text).contains("some-heading"));
}
