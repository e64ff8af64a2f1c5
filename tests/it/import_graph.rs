//! The module graph between the connection edge and the shard core, read from the source.
//!
//! `runtime` is the only module that knows listeners, sessions and shards together; a session
//! uses the shard (and net's stream); the shard reaches connections only through `conn_sink`,
//! so it never imports session or net; net knows sockets and is handed its protocols. A cycle
//! between them means a feature (TLS, HTTP, auth) cannot be added to one without the others.
//!
//! Every `crate::a` and `use crate::{a, ..}` path in `src/**.rs`, and `super::` paths that climb
//! to the crate root, count as an edge from the file's top-level module to `a`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that must not exist (from, to).
const FORBIDDEN: [(&str, &str); 30] = [
    ("shard", "session"),
    ("shard", "net"),
    ("shard", "runtime"),
    ("net", "session"),
    ("net", "shard"),
    ("net", "runtime"),
    ("session", "runtime"),
    ("conn_sink", "session"),
    ("conn_sink", "shard"),
    // Management is a room behind the shard's doors: nothing below it may know it.
    ("shard", "management"),
    ("session", "management"),
    ("broker", "management"),
    ("auth", "management"),
    // ringmqctl talks HTTP only: it works against any broker with RabbitMQ's management API.
    ("ctl", "management"),
    ("ctl", "shard"),
    ("ctl", "session"),
    ("ctl", "broker"),
    ("ctl", "net"),
    ("ctl", "runtime"),
    ("ctl", "storage"),
    // The cluster is a capability behind one door: the shard proposes through it and is handed
    // committed changes back through `cluster::StateMachine`; it knows no shard, session,
    // listener, runtime or management, and talks to its peers over its own sockets.
    ("cluster", "shard"),
    ("cluster", "session"),
    ("cluster", "net"),
    ("cluster", "runtime"),
    ("cluster", "management"),
    // A shovel is a client of brokers over sockets: it never reaches into this one's core.
    ("shovel", "shard"),
    ("shovel", "session"),
    ("shovel", "broker"),
    ("shovel", "management"),
    ("shovel", "storage"),
];
/// The modules among which no cycle may exist.
const EDGE_MODULES: [&str; 5] = ["net", "session", "shard", "runtime", "conn_sink"];

#[test]
fn net_session_and_shard_form_no_cycle() {
    let graph = import_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let forbidden: Vec<String> = FORBIDDEN
        .iter()
        .filter(|(from, to)| {
            graph
                .get(*from)
                .is_some_and(|targets| targets.contains(*to))
        })
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "forbidden imports: {forbidden:?}\ngraph: {graph:#?}"
    );
    let cycle = find_cycle(&graph, &EDGE_MODULES);
    assert!(cycle.is_none(), "import cycle: {cycle:?}");
}

/// The web UI is built-in files behind one door: it names nothing of the broker (no shard,
/// session or backend; only the API's `Response`), and only the API's request handler calls it.
#[test]
fn the_web_ui_has_one_door() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let ui = src.join("management").join("ui");
    for file in rust_files(&ui) {
        let source = std::fs::read_to_string(&file).expect("readable source");
        let mut crate_modules = BTreeSet::new();
        collect_targets(&source, 2, &mut crate_modules);
        assert!(
            crate_modules.is_empty(),
            "{} names {crate_modules:?}",
            file.display()
        );
        let mut siblings = BTreeSet::new();
        collect_targets(&source, 1, &mut siblings);
        siblings.remove("api");
        assert!(
            siblings.is_empty(),
            "{} names management's {siblings:?}",
            file.display()
        );
    }
    let callers: Vec<PathBuf> = rust_files(&src)
        .into_iter()
        .filter(|file| !file.starts_with(&ui))
        .filter(|file| {
            std::fs::read_to_string(file)
                .expect("readable source")
                .lines()
                .any(|line| line.split("//").next().unwrap_or("").contains("ui::"))
        })
        .collect();
    assert_eq!(callers, vec![src.join("management").join("api.rs")]);
}

#[test]
fn the_reader_sees_every_form_of_path() {
    let source = "use crate::shard::Shard;\nuse crate::{limits, net::SharedStream};\n\
                  // crate::session in a comment\nfn f() { crate::broker::x(); }\n\
                  use super::super::config;\n";
    let mut targets = BTreeSet::new();
    collect_targets(source, 2, &mut targets);
    let expected: BTreeSet<String> = ["shard", "limits", "net", "broker", "config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(targets, expected);
}

#[test]
fn a_cycle_is_found() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph
        .entry("net".into())
        .or_default()
        .insert("shard".into());
    graph
        .entry("shard".into())
        .or_default()
        .insert("session".into());
    graph
        .entry("session".into())
        .or_default()
        .insert("net".into());
    assert!(find_cycle(&graph, &EDGE_MODULES).is_some());
    graph.get_mut("session").unwrap().clear();
    assert!(find_cycle(&graph, &EDGE_MODULES).is_none());
}

/// Top-level module -> top-level modules it names.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).expect("under src");
        let module_path = module_path(relative);
        let Some(top) = module_path.first().cloned() else {
            continue; // lib.rs, main.rs: the crate root wires everything
        };
        let source = std::fs::read_to_string(&file).expect("readable source");
        let targets = graph.entry(top.clone()).or_default();
        collect_targets(&source, module_path.len(), targets);
        targets.remove(&top);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `shard/mesh.rs` -> [shard, mesh]; `shard/mod.rs` -> [shard]; `lib.rs` -> [].
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// Adds the top-level modules named by `crate::` paths, and by `super::` paths climbing
/// `depth` levels (to the crate root), in `source` outside line comments.
fn collect_targets(source: &str, depth: usize, targets: &mut BTreeSet<String>) {
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let preceded_by_ident = code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
            if !preceded_by_ident {
                targets_after(&code[at + "crate::".len()..], targets);
            }
        }
        let supers = "super::".repeat(depth);
        if depth > 0 {
            for (at, _) in code.match_indices(supers.as_str()) {
                let rest = &code[at + supers.len()..];
                if !rest.starts_with("super::") {
                    targets_after(rest, targets);
                }
            }
        }
    }
}

/// The module name at the start of `rest`, or each name of a `{a, b::c}` group.
fn targets_after(rest: &str, targets: &mut BTreeSet<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut level = 0usize;
        let mut start_of_item = true;
        for (index, c) in group.char_indices() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => break,
                '}' => level -= 1,
                ',' if level == 0 => start_of_item = true,
                c if start_of_item && !c.is_whitespace() => {
                    start_of_item = false;
                    push_ident(&group[index..], targets);
                }
                _ => {}
            }
        }
        return;
    }
    push_ident(rest, targets);
}

fn push_ident(text: &str, targets: &mut BTreeSet<String>) {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !ident.is_empty() && ident != "self" {
        targets.insert(ident);
    }
}

/// A cycle through `modules` (edges between them only), as the list of modules on it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>, modules: &[&str]) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        modules: &[&str],
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if modules.contains(&next.as_str()) {
                if let Some(cycle) = visit(next, graph, modules, stack, done) {
                    return Some(cycle);
                }
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    modules
        .iter()
        .find_map(|module| visit(module, graph, modules, &mut Vec::new(), &mut done))
}
