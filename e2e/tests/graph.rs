//! `gitvisor graph` on examples/homelab, in both formats. Reads manifests only, so it
//! needs neither root nor a namespace. Edges point from a dependency to its dependent.

use std::collections::{BTreeMap, BTreeSet};

use gitvisor_e2e::{example_dir, gitvisor_offline};

/// Every edge the homelab example implies: references and the explicit dependsOn.
const EXPECTED: &[(&str, &str)] = &[
    ("Volume/vm1-root", "VirtualMachine/vm1"),
    ("Bridge/br-lan", "VirtualMachine/vm1"),
    ("Bridge/br-lan", "Container/jellyfin"),
    ("Volume/media", "Container/jellyfin"),
    ("VirtualMachine/vm1", "Container/jellyfin"),
];

type Edges = BTreeSet<(String, String)>;

fn expected() -> Edges {
    EXPECTED
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn graph(format: &str) -> String {
    let homelab = example_dir("homelab");
    let path = homelab.to_str().expect("UTF-8 path");
    gitvisor_offline(["graph", path, "--format", format])
        .expect_code(0)
        .stdout
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

/// Edges of a DOT digraph: `"A" -> "B" [attrs];`.
fn dot_edges(dot: &str) -> Edges {
    dot.lines()
        .filter_map(|line| {
            let line = line.trim().trim_end_matches(';');
            let line = line.split('[').next().unwrap_or(line);
            let (from, to) = line.split_once("->")?;
            Some((unquote(from), unquote(to)))
        })
        .collect()
}

/// Edges of a mermaid flowchart, with node ids mapped back to their labels
/// (`id["Kind/name"]` declares a node, `a --> b` an edge).
fn mermaid_edges(mermaid: &str) -> Edges {
    let mut labels = BTreeMap::new();
    let mut raw = Vec::new();
    for line in mermaid.lines().map(str::trim) {
        if let Some((from, to)) = line.split_once("-->") {
            raw.push((from.trim().to_owned(), to.trim().to_owned()));
        } else if let Some((id, rest)) = line.split_once('[') {
            let label = rest.trim_end_matches(']').trim_matches('"');
            labels.insert(id.trim().to_owned(), label.to_owned());
        }
    }
    let name = |id: &String| labels.get(id).cloned().unwrap_or_else(|| id.clone());
    raw.iter().map(|(a, b)| (name(a), name(b))).collect()
}

#[test]
fn graph_dot_has_the_homelab_edges() {
    let dot = graph("dot");
    assert!(dot.trim_start().starts_with("digraph"), "not DOT:\n{dot}");
    let edges = dot_edges(&dot);
    let missing: Vec<_> = expected().difference(&edges).cloned().collect();
    assert!(missing.is_empty(), "missing edges {missing:?} in:\n{dot}");
    let extra: Vec<_> = edges.difference(&expected()).cloned().collect();
    assert!(extra.is_empty(), "unexpected edges {extra:?} in:\n{dot}");
}

#[test]
fn graph_mermaid_has_the_homelab_edges() {
    let mermaid = graph("mermaid");
    assert!(
        mermaid.trim_start().starts_with("flowchart") || mermaid.trim_start().starts_with("graph"),
        "not a mermaid flowchart:\n{mermaid}"
    );
    let edges = mermaid_edges(&mermaid);
    let missing: Vec<_> = expected().difference(&edges).cloned().collect();
    assert!(
        missing.is_empty(),
        "missing edges {missing:?} in:\n{mermaid}"
    );
    let extra: Vec<_> = edges.difference(&expected()).cloned().collect();
    assert!(
        extra.is_empty(),
        "unexpected edges {extra:?} in:\n{mermaid}"
    );
}

#[test]
fn graph_of_an_invalid_revision_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: br-x\n  dependsOn: [Bridge/nope]\nspec: {}\n",
    )
    .expect("write");
    let outcome = gitvisor_offline([
        "graph",
        dir.path().to_str().expect("UTF-8"),
        "--format",
        "dot",
    ]);
    assert_eq!(outcome.code, Some(1), "{outcome}");
    assert!(outcome.stderr.contains("bad.yaml:5:"), "{outcome}");
}
