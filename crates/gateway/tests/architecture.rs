//! The gateway crate's plan, held as tests: the layers import only downward, no modules form a
//! cycle, and no file or function grows past what a reader takes in (see `lib.rs` and
//! `docs/development.md`, "The gateway inside").
//!
//! The check reads the sources as text: each module's `use crate::…` / `super::…` trees and
//! inline `crate::…` paths, and paths through a child module (`outbox::insert_event`). A folder's
//! `pub use` lines are its face, not a dependency of it, and `pub mod` declares. Test code
//! (`#[cfg(test)] mod …`, in a file or a file of its own) may reach any layer, so it is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the top; a layer may import only layers with a smaller rank. Layers of one rank
/// are siblings and do not import each other.
const LAYERS: &[(&str, u8)] = &[
    ("devtools", 8),
    ("http", 7),
    ("jobs", 6),
    ("lifecycle", 5),
    ("analytics", 5),
    ("app", 4),
    ("providers", 3),
    ("store", 3),
    ("config", 2),
    ("infra", 1),
];

const MAX_FILE_LINES: usize = 700;
const MAX_FUNCTION_LINES: usize = 120;

type Module = Vec<String>;

/// One source file: its module path and its code with the test modules cut out.
struct Source {
    module: Module,
    file: String,
    code: Vec<String>,
}

fn sources_in(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

fn module_of(file: &str) -> Module {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments, string contents and test modules; also the names of
/// the child modules it declares for tests only.
fn code_of(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut code = Vec::new();
    let mut test_children = BTreeSet::new();
    let mut lines = text.lines().map(strip_comment_and_strings).peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().cloned().unwrap_or_default();
            let next = next.trim();
            if let Some(name) = next.strip_prefix("mod ").or(next.strip_prefix("pub mod ")) {
                if let Some(child) = name.strip_suffix(';') {
                    test_children.insert(child.trim().to_string());
                    lines.next();
                    code.push(String::new());
                    code.push(String::new());
                    continue;
                }
                // An inline test module: skip to its closing brace.
                let mut depth = 0i32;
                let mut opened = false;
                for inner in lines.by_ref() {
                    depth += braces(&inner);
                    opened |= inner.contains('{');
                    if opened && depth <= 0 {
                        break;
                    }
                }
                continue;
            }
        }
        code.push(line);
    }
    (code, test_children)
}

fn braces(line: &str) -> i32 {
    line.matches('{').count() as i32 - line.matches('}').count() as i32
}

/// A line with its comment removed and its string and char literals emptied.
fn strip_comment_and_strings(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal ('x', '\n', '{') is emptied; a lifetime is kept.
                let rest: String = chars.clone().take(3).collect();
                if let Some(escaped) = rest.strip_prefix('\\') {
                    let close = escaped.find('\'').map_or(0, |i| i + 2);
                    for _ in 0..close {
                        chars.next();
                    }
                    out.push_str("' '");
                } else if rest.chars().nth(1) == Some('\'') {
                    chars.next();
                    chars.next();
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn read_sources(files: &[(String, String)]) -> Vec<Source> {
    let mut test_only: BTreeSet<Module> = BTreeSet::new();
    let mut sources = Vec::new();
    for (file, text) in files {
        let module = module_of(file);
        let (code, test_children) = code_of(text);
        let folder: Module = if file.ends_with("mod.rs") || file == "lib.rs" {
            module.clone()
        } else {
            module[..module.len() - 1].to_vec()
        };
        for child in test_children {
            let mut m = folder.clone();
            m.push(child);
            test_only.insert(m);
        }
        sources.push(Source {
            module,
            file: file.clone(),
            code,
        });
    }
    sources.retain(|s| {
        !s.module.is_empty()
            && s.module != ["lib"]
            && s.module != ["main"]
            && !test_only.iter().any(|t| s.module.starts_with(t))
    });
    sources
}

/// A `use` tree without its renames (`a as b`) and its whitespace.
fn without_renames(tree: &str) -> String {
    let mut out = String::new();
    let mut words = tree.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            let alias = words.next().unwrap_or("");
            out.extend(
                alias
                    .chars()
                    .filter(|c| !(c.is_alphanumeric() || *c == '_')),
            );
        } else {
            out.push_str(word);
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}}`) into paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = without_renames(tree);
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.len().saturating_sub(1)];
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand_use(p)
                .into_iter()
                .map(move |e| format!("{prefix}{e}"))
        })
        .collect()
}

/// The paths a module's code names: `(path, is a public re-export)`.
fn paths_of(code: &[String]) -> Vec<(String, bool)> {
    let mut paths = Vec::new();
    let text = code.join("\n");
    let mut rest = text.as_str();
    // `use` statements, possibly over several lines.
    let mut outside_use = String::new();
    while let Some(at) = find_use(rest) {
        outside_use.push_str(&rest[..at]);
        let statement_start = at;
        let body_start = rest[at..].find("use ").unwrap() + at + 4;
        let end = rest[body_start..]
            .find(';')
            .map_or(rest.len(), |e| e + body_start);
        let public = rest[statement_start..body_start]
            .trim_start()
            .starts_with("pub");
        for path in expand_use(&rest[body_start..end]) {
            paths.push((path, public));
        }
        rest = &rest[end..];
    }
    outside_use.push_str(rest);
    // Inline paths: `crate::a::b`, `super::a`, `child::item`.
    let bytes: Vec<char> = outside_use.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        if starts_word && (bytes[i].is_ascii_lowercase() || bytes[i] == '_') {
            let mut j = i;
            while j < bytes.len()
                && (bytes[j].is_alphanumeric() || bytes[j] == '_' || bytes[j] == ':')
            {
                j += 1;
            }
            let word: String = bytes[i..j].iter().collect();
            if word.contains("::") && !(i > 0 && bytes[i - 1] == ':') {
                paths.push((word.trim_end_matches(':').to_string(), false));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

/// Where the next `use` or `pub use` / `pub(crate) use` statement starts in `text`.
fn find_use(text: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let after_pub = trimmed
            .strip_prefix("pub(crate) ")
            .or(trimmed.strip_prefix("pub(super) "))
            .or(trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        if after_pub.starts_with("use ") {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// The module a path names, if it is one of the crate's: the longest known prefix.
fn resolve(path: &str, from: &Source, modules: &BTreeSet<Module>) -> Option<Module> {
    let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut absolute: Module = match *segments.first()? {
        "crate" => Vec::new(),
        "super" | "self" => from.module.clone(),
        // A child module of this one, named without `crate::`.
        first => {
            let mut child = from.module.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            from.module.clone()
        }
    };
    let mut rest = if segments[0] == "crate" {
        &segments[1..]
    } else {
        &segments[..]
    };
    while let Some(&first) = rest.first() {
        match first {
            "super" => {
                absolute.pop();
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    absolute.extend(rest.iter().map(|s| s.to_string()));
    longest_module(&absolute, modules)
}

fn longest_module(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Every import edge between two of the crate's modules.
fn edges(sources: &[Source]) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for source in sources {
        let out = graph.entry(source.module.clone()).or_default();
        for (path, public) in paths_of(&source.code) {
            if public && source.file.ends_with("mod.rs") {
                continue;
            }
            if let Some(target) = resolve(&path, source, &modules) {
                // A module's own children and ancestors are its folder, not an import.
                if target != source.module && !target.starts_with(&source.module) {
                    out.insert(target);
                }
            }
        }
    }
    graph
}

fn rank(module: &Module) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(layer, _)| module.first().is_some_and(|m| m == layer))
        .map(|(_, rank)| *rank)
}

/// Imports that go up or sideways between layers, and modules in no layer.
fn layer_violations(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let mut found = Vec::new();
    for (from, targets) in graph {
        let Some(from_rank) = rank(from) else {
            found.push(format!("{} is in no layer", from.join("::")));
            continue;
        };
        for to in targets {
            if to[0] == from[0] {
                continue;
            }
            let to_rank = rank(to).unwrap_or(u8::MAX);
            if to_rank >= from_rank {
                found.push(format!("{} imports {}", from.join("::"), to.join("::")));
            }
        }
    }
    found
}

/// Groups of modules that import each other, directly or around a loop (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, m: &'a Module) {
            let i = self.index.len();
            self.index.insert(m, i);
            self.low.insert(m, i);
            self.stack.push(m);
            self.on_stack.insert(m);
            for next in self.graph.get(m).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[next].min(self.low[m]);
                    self.low.insert(m, low);
                } else if self.on_stack.contains(next) {
                    let low = self.index[next].min(self.low[m]);
                    self.low.insert(m, low);
                }
            }
            if self.low[m] == self.index[m] {
                let mut group = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    group.push(top.join("::"));
                    if top == m {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for m in graph.keys() {
        if !walk.index.contains_key(m) {
            walk.visit(m);
        }
    }
    walk.found
}

/// Functions longer than the limit: `(file, name, lines)`.
fn long_functions(source: &Source) -> Vec<(String, String, usize)> {
    let mut found = Vec::new();
    for (start, line) in source.code.iter().enumerate() {
        let Some(name) = function_name(line) else {
            continue;
        };
        let mut depth = 0;
        let mut opened = false;
        let mut end = start;
        for (i, l) in source.code.iter().enumerate().skip(start) {
            depth += braces(l);
            opened |= l.contains('{');
            end = i;
            if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                break;
            }
        }
        let lines = end - start + 1;
        if lines > MAX_FUNCTION_LINES {
            found.push((source.file.clone(), name, lines));
        }
    }
    found
}

fn function_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let qualifiers_only = words[..at]
        .iter()
        .all(|w| w.starts_with("pub") || ["async", "const", "unsafe", "extern"].contains(w));
    if !qualifiers_only {
        return None;
    }
    let name = words.get(at + 1)?;
    Some(name.split(['(', '<']).next().unwrap_or(name).to_string())
}

fn gateway_sources() -> Vec<Source> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    read_sources(&sources_in(&root))
}

#[test]
fn layers_import_only_downward() {
    let graph = edges(&gateway_sources());
    assert!(
        graph.len() > 30,
        "the check found too few modules to mean anything"
    );
    let violations = layer_violations(&graph);
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_modules_form_a_cycle() {
    let graph = edges(&gateway_sources());
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "modules importing each other:\n{}",
        found
            .iter()
            .map(|g| g.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn no_file_or_function_is_too_long() {
    let sources = gateway_sources();
    let long_files: Vec<String> = sources
        .iter()
        .filter(|s| s.code.len() > MAX_FILE_LINES)
        .map(|s| format!("{}: {} lines", s.file, s.code.len()))
        .collect();
    let long_functions: Vec<String> = sources
        .iter()
        .flat_map(long_functions)
        .map(|(file, name, lines)| format!("{file}: fn {name}, {lines} lines"))
        .collect();
    assert!(
        long_files.is_empty() && long_functions.is_empty(),
        "files over {MAX_FILE_LINES} lines outside tests:\n{}\nfunctions over \
         {MAX_FUNCTION_LINES} lines:\n{}",
        long_files.join("\n"),
        long_functions.join("\n")
    );
}

/// The check itself, on a small crate: an upward import, a sideways one and a cycle are found;
/// a re-export, a test module and a comment are not imports.
#[test]
fn the_check_finds_an_upward_import_and_a_cycle() {
    let crate_files = |extra: &str| {
        vec![
            (
                "lib.rs".to_string(),
                "pub mod http; pub mod store;".to_string(),
            ),
            (
                "http/mod.rs".to_string(),
                "pub mod a;\npub mod b;\npub use a::Thing;\n".to_string(),
            ),
            (
                "http/a.rs".to_string(),
                "use crate::store::Row;\n// see crate::http::b\n".to_string(),
            ),
            ("http/b.rs".to_string(), extra.to_string()),
            (
                "store/mod.rs".to_string(),
                "pub struct Row;\n#[cfg(test)]\nmod tests {\n    use crate::http::a;\n}\n"
                    .to_string(),
            ),
            (
                "store/rows.rs".to_string(),
                "fn f() { let s = \"crate::http::a\"; }\n".to_string(),
            ),
        ]
    };
    let clean = edges(&read_sources(&crate_files("use super::a::Thing;\n")));
    assert!(
        layer_violations(&clean).is_empty(),
        "{:?}",
        layer_violations(&clean)
    );
    assert!(cycles(&clean).is_empty(), "{:?}", cycles(&clean));
    assert!(clean[&vec!["http".to_string(), "a".to_string()]].contains(&vec!["store".to_string()]));

    let mut upward = crate_files("");
    upward[4].1 = "pub struct Row;\nfn f() { crate::http::b::g(); }\n".to_string();
    let found = layer_violations(&edges(&read_sources(&upward)));
    assert_eq!(found, vec!["store imports http::b".to_string()]);

    let mut grouped = crate_files("");
    grouped[5].1 = "use crate::{store, http::{a, b}};\n".to_string();
    let found = layer_violations(&edges(&read_sources(&grouped)));
    assert_eq!(
        found,
        vec!["store::rows imports http::a", "store::rows imports http::b"]
    );

    let mut cyclic = crate_files("use crate::http::a;\n");
    cyclic[2].1 = "fn f() { super::b::g(); }\n".to_string();
    let found = cycles(&edges(&read_sources(&cyclic)));
    assert_eq!(
        found,
        vec![vec!["http::a".to_string(), "http::b".to_string()]]
    );
}

/// The length check on a small file: a function of 121 lines is found, one of 120 is not.
#[test]
fn the_check_finds_a_long_function() {
    let body = |n: usize| {
        let mut f = "pub async fn long_one() {\n".to_string();
        f.push_str(&"    step();\n".repeat(n - 2));
        f.push_str("}\n");
        f
    };
    for (lines, found) in [(120, 0), (121, 1)] {
        let files = vec![("store/mod.rs".to_string(), body(lines))];
        let sources = read_sources(&files);
        assert_eq!(long_functions(&sources[0]).len(), found, "{lines} lines");
    }
}
