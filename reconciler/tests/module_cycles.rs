//! No import cycles between the crate's top-level modules.
//!
//! A cycle (`load → validate → load`, `plan → drivers → plan`) means neither side can be
//! understood, tested or changed without the other, and a new driver would have to touch
//! engine code. This test reads the sources under `src/`, collects every `crate::<module>`
//! path that code (not a comment) names in each top-level module, including grouped
//! `use crate::{a::X, b}` imports, and fails naming the cycle if the modules do not form
//! a directed acyclic graph. Test code counts: a unit test that needs a module above its
//! own is a dependency too.
//!
//! [`INTENDED`] lists edges that are deliberately left out of the check; it is empty,
//! and an entry needs a comment saying why the cycle is worth having.
//!
//! A second rule keeps the engine kind-neutral: the engine's folders ([`ENGINE`]) reach a
//! driver only through the registration and the contract (`crate::drivers::registry`,
//! the `crate::drivers::{Driver, Drivers, ...}` re-exports, `crate::drivers::probe`), never
//! through a kind's folder (`crate::drivers::network`, `crate::drivers::vm`, ...). A kind
//! is one folder plus its registration line; an engine module that names a kind's folder
//! is a place a new kind would have to edit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges `(from, to)` excluded from the cycle check on purpose.
const INTENDED: &[(&str, &str)] = &[];

/// The engine's folders, which must not name a kind's driver folder.
const ENGINE: &[&str] = &["cli", "daemon", "validate", "plan", "execute", "reconcile"];

/// Engine files allowed to name a kind's folder, each with why: none.
const KIND_PATH_ALLOWED: &[&str] = &[];

type ModuleGraph = BTreeMap<String, BTreeSet<String>>;

/// Every `.rs` file below `path` (or `path` itself when it is a file).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).expect("read a source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The code of `text` without its comments (`//` to the end of the line).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules that `code` names through `crate::`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        // `gitvisor_crate::x` or `my_crate::x` are not this crate.
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        first_level_names(&code[at + "crate::".len()..], &mut found);
    }
    found
}

/// The names at the first level of the path `rest` (what follows `crate::`): `load` of
/// `load::Revision`, `a` and `b` of `{a::X, b}`.
fn first_level_names(rest: &str, found: &mut BTreeSet<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        // `crate::{a::X, b, c::{D, E}}`: the names at the group's first level.
        let mut depth = 0usize;
        let mut expect_name = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => expect_name = true,
                c if expect_name && depth == 0 && is_ident(c) => {
                    let name: String = group[i..].chars().take_while(|&c| is_ident(c)).collect();
                    found.insert(name);
                    expect_name = false;
                }
                _ => {}
            }
        }
    } else {
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
}

/// Top-level module → the other top-level modules its code names.
fn module_graph(src: &Path) -> ModuleGraph {
    let mut graph = ModuleGraph::new();
    for entry in std::fs::read_dir(src).expect("read src/") {
        let path = entry.expect("directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.is_file() && path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        // The crate root and the binary's entry point declare modules, they are no module.
        if stem == "lib" || stem == "main" {
            continue;
        }
        let mut uses = BTreeSet::new();
        for file in rust_files(&path) {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            uses.extend(crate_paths(&code(&text)));
        }
        uses.remove(stem);
        graph.entry(stem.to_owned()).or_default().extend(uses);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        // `crate::SomeType` re-exported at the root, or a macro: not a module edge.
        uses.retain(|m| modules.contains(m));
    }
    for (from, to) in INTENDED {
        if let Some(uses) = graph.get_mut(*from) {
            uses.remove(*to);
        }
    }
    graph
}

/// A cycle of `graph`, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &ModuleGraph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &ModuleGraph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

/// The folders of `src/drivers/`: each is a kind's driver (or a seam one uses); the
/// files there (`registry.rs`, `probe.rs`, ...) are the kind-neutral part.
fn kind_folders(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src.join("drivers"))
        .expect("read src/drivers")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .filter_map(|path| path.file_name()?.to_str().map(String::from))
        .collect()
}

/// The names that `code` reaches through a `drivers::` path: `crate::drivers::vm::X`,
/// `super::drivers::vm`, `crate::{drivers::vm::X}`, `drivers::{vm::X, network}` (after a
/// `use crate::drivers;`), at the first level below `drivers`.
fn driver_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("drivers::") {
        // `my_drivers::x` is another path.
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        first_level_names(&code[at + "drivers::".len()..], &mut found);
    }
    found
}

/// `(file, kind folder)` for every engine file naming a kind's folder.
fn engine_paths_into_kinds(src: &Path) -> Vec<(String, String)> {
    let kinds = kind_folders(src);
    let mut found = Vec::new();
    for folder in ENGINE {
        for file in rust_files(&src.join(folder)) {
            let relative = file
                .strip_prefix(src)
                .expect("below src/")
                .to_string_lossy()
                .into_owned();
            if KIND_PATH_ALLOWED.contains(&relative.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for name in driver_paths(&code(&text)) {
                if kinds.contains(&name) {
                    found.push((relative.clone(), name));
                }
            }
        }
    }
    found
}

#[test]
fn the_engine_names_no_kind_folder_of_drivers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let kinds = kind_folders(&src);
    // The scan sees the drivers: if these are missing, it read nothing useful.
    for kind in ["network", "container", "vm", "volume"] {
        assert!(kinds.contains(kind), "kind folder {kind} not in {kinds:?}");
    }
    let found = engine_paths_into_kinds(&src);
    assert!(
        found.is_empty(),
        "engine files naming a kind's driver folder (reach it through the registration or \
         the contract instead):\n{}",
        found
            .iter()
            .map(|(file, kind)| format!("  src/{file}: crate::drivers::{kind}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_kind_scan_sees_plain_grouped_and_short_paths_but_not_comments() {
    let text = "use crate::drivers::vm::paths::VmRoots;\n\
                use crate::drivers::{registry, network::{Leases, read_leases}};\n\
                use crate::{model::Kind, drivers::container::logs};\n\
                let x = drivers::volume::f(); // crate::drivers::bridge in a comment\n\
                use crate::drivers::Drivers;\n\
                use my_drivers::probe::X;\n";
    let found = driver_paths(&code(text));
    let expected: BTreeSet<String> = [
        "vm",
        "registry",
        "network",
        "container",
        "volume",
        "Drivers",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn the_top_level_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    // The scan sees the engine: if these are missing, it read nothing useful.
    for module in [
        "load", "validate", "graph", "plan", "execute", "contract", "drivers",
    ] {
        assert!(
            graph.contains_key(module),
            "module {module} not found in {graph:?}"
        );
    }
    assert!(graph["load"].contains("validate"), "{graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {}\n(every module's uses: {graph:#?})",
            cycle.join(" → ")
        );
    }
}

#[test]
fn the_scan_sees_plain_grouped_and_nested_paths_but_not_comments() {
    let text = "use crate::load::Revision;\n\
                use crate::{graph::DependencyGraph, model::{Kind, Name}, state};\n\
                let x = crate::plan::make_plan(); // crate::execute in a comment\n\
                /// [`crate::cli`] in a doc comment\n\
                use other_crate::reconcile::X;\n";
    let found = crate_paths(&code(text));
    let expected: BTreeSet<String> = ["load", "graph", "model", "state", "plan"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_cycle_is_found_and_named() {
    let graph: ModuleGraph = [
        ("load", vec!["validate", "model"]),
        ("validate", vec!["manifest", "load"]),
        ("manifest", vec!["model"]),
        ("model", vec![]),
    ]
    .into_iter()
    .map(|(m, uses)| (m.to_owned(), uses.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["load".into(), "validate".into(), "load".into()])
    );
    let mut fixed = graph.clone();
    fixed.get_mut("validate").unwrap().remove("load");
    assert_eq!(find_cycle(&fixed), None);
}
