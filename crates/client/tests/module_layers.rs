//! The module-cycle check: each crate's modules must depend on each other one way only.
//!
//! `cargo-modules` can require an acyclic module graph, but it builds rust-analyzer, which
//! takes longer than the whole test suite here; this reads what the graph is made of instead:
//! every `crate::...` path in each top-level module's code (comments left out: a doc link is
//! not a dependency), with a name re-exported by `lib.rs` resolved to the module it comes
//! from. A circle fails the test, listing its modules.
#![allow(clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file, without its comments (line comments and doc comments; block comments
/// are not used in these crates).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal (a URL) cuts the line short, which at worst
            // drops a path from the graph; no `crate::` path appears after one here.
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segments after each `crate::` in `code`: `crate::a::b` gives `a`,
/// `crate::{a::X, b}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // Not part of a longer name (`elasticache_crate::`).
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Top-level items of the group only (a nested group starts with its module).
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let name: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// The names `lib.rs` re-exports, each with the module it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in lib.split(';') {
        let statement = statement.trim();
        let Some(path) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let module: String = path.chars().take_while(|&c| is_ident(c)).collect();
        let items = path[module.len()..].trim_start_matches("::");
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',') {
            // `a as b` is known as `b`.
            let name = item.split(" as ").last().unwrap_or_default().trim();
            let name: String = name.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                names.insert(name, module.clone());
            }
        }
    }
    names
}

/// The module graph of the crate whose sources are in `src`: each top-level module (a file
/// `src/x.rs` or a directory `src/x/`) and the modules its code names.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    sources(src, &mut files);
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let exported = reexports(&code(&lib));
    let module_of = |file: &Path| -> Option<String> {
        let relative = file.strip_prefix(src).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        let name = first.trim_end_matches(".rs");
        (name != "lib" && name != "main").then(|| name.to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let edges = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code(&text)) {
            let target = if modules.contains(&name) {
                Some(name)
            } else {
                exported.get(&name).cloned()
            };
            if let Some(target) = target.filter(|t| *t != module) {
                edges.insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, node: &'g str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for target in graph.get(node).into_iter().flatten() {
            let target = target.as_str();
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.to_owned());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

/// Fails listing every circle of the crate at `crates/<name>`, with each module's edges
/// inside it (what to cut).
fn assert_acyclic(name: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src");
    assert!(src.join("lib.rs").exists(), "no crate at {}", src.display());
    let graph = graph(&src);
    let found = circles(&graph);
    if found.is_empty() {
        return;
    }
    let mut report = format!("crates/{name} has module circles:\n");
    for circle in &found {
        report += &format!("  {} modules: {}\n", circle.len(), circle.join(", "));
        for module in circle {
            let inside: Vec<&str> = graph[module]
                .iter()
                .filter(|t| circle.contains(t))
                .map(String::as_str)
                .collect();
            report += &format!("    {module} -> {}\n", inside.join(", "));
        }
    }
    panic!("{report}");
}

#[test]
fn the_client_crate_has_no_module_circle() {
    assert_acyclic("client");
}

#[test]
fn the_protocol_crate_has_no_module_circle() {
    assert_acyclic("proto");
}

#[test]
fn the_bindings_crate_has_no_module_circle() {
    assert_acyclic("python");
}

#[test]
fn a_circle_is_found_and_a_one_way_graph_passes() {
    let source = "use crate::{a::X, b};\nlet y = crate::c::f(); // crate::d::g\nnotcrate::e";
    assert_eq!(crate_paths(&code(source)), ["a", "b", "c"]);
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert!(circles(&graph).is_empty());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circles(&graph), [vec!["a", "b", "c"]]);
}
