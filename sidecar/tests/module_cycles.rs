//! The layering rule of issue 16: no `use` cycle between the top-level
//! modules of the sidecar, the node and the binary (`crate::x` paths,
//! re-exports through the crate root resolved to their module; test
//! modules and comments left out). The one cycle allowed is bindgen's own
//! (`bindings` maps `gpu` resources to `host_gpu`'s types, which implement
//! `bindings`' traits).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without its unit tests (the
/// `#[cfg(test)] mod tests` block, last by convention).
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Identifiers after each `crate::` (and in `crate::{a, b::c}` groups).
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let group = rest
            .strip_prefix('{')
            .map(|g| &g[..g.find('}').unwrap_or(g.len())]);
        let heads: Vec<&str> = match group {
            Some(g) => g.split(',').collect(),
            None => vec![rest],
        };
        for head in heads {
            let name: String = head
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn graph(src: &Path, root_file: &str) -> Graph {
    let root = code(&std::fs::read_to_string(src.join(root_file)).unwrap());
    let mut modules = BTreeSet::new();
    let mut reexports = BTreeMap::new();
    for line in root.lines().map(str::trim) {
        let line = line
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        if let Some(m) = line.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
            modules.insert(m.to_owned());
        }
        if let Some(u) = line.strip_prefix("use ").and_then(|u| u.strip_suffix(';'))
            && let Some((module, items)) = u.split_once("::")
        {
            for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                reexports.insert(item.trim().to_owned(), module.to_owned());
            }
        }
    }
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if !modules.contains(&module) {
            continue; // the crate root
        }
        for name in crate_paths(&code(&std::fs::read_to_string(&file).unwrap())) {
            let target = reexports.get(&name).cloned().unwrap_or(name);
            if target != module && modules.contains(&target) {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// Every pair of modules that reach each other.
fn cycles(graph: &Graph) -> Vec<(String, String)> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found = Vec::new();
    for a in graph.keys() {
        for b in reach(a) {
            if *a < b && reach(&b).contains(a) {
                found.push((a.clone(), b));
            }
        }
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_sidecar_node_and_binary_have_no_module_cycles() {
    let allowed = [("bindings".to_owned(), "host_gpu".to_owned())];
    for (krate, root) in [
        ("sidecar", "lib.rs"),
        ("node", "lib.rs"),
        ("cli", "main.rs"),
    ] {
        let graph = graph(&workspace().join(krate).join("src"), root);
        assert!(
            graph.len() > 3,
            "{krate}: the graph was not read: {graph:?}"
        );
        let found: Vec<_> = cycles(&graph)
            .into_iter()
            .filter(|pair| !allowed.contains(pair))
            .collect();
        assert!(
            found.is_empty(),
            "{krate}: modules in a cycle: {found:?}\n{graph:#?}"
        );
    }
}

#[test]
fn a_cycle_is_found_through_a_reexport() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::X;\n// crate::c is only a comment\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "use crate::{Thing, a::Y};\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    let graph = graph(src, "lib.rs");
    assert_eq!(cycles(&graph), [("a".to_owned(), "b".to_owned())]);
    assert!(
        !graph.contains_key("c"),
        "test modules do not count: {graph:?}"
    );
    assert!(
        !graph["a"].contains("c"),
        "comments do not count: {graph:?}"
    );
}
