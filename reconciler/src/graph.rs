//! The dependency graph (petgraph): nodes are resources, an edge `a → b` means `b` needs
//! `a` first. Edges come from references in specs plus `metadata.dependsOn`.
//!
//! The executor walks it in topological order for creates and updates, in reverse for
//! deletes, and uses it to block only the dependents of a failed resource. A cycle is an
//! error that names the cycle's path.
//!
//! A bridge port that names another declared Bridge is not an edge: the kernel refuses to
//! enslave a bridge to a bridge, so the validator rejects it (`crate::validate`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::manifest::{Diagnostic, LoadedResource};
use crate::model::{Resource, ResourceId};

#[derive(Debug, Clone, Default)]
pub struct DependencyGraph {
    graph: DiGraph<ResourceId, String>,
    nodes: BTreeMap<ResourceId, NodeIndex>,
}

/// A dependency cycle, as the list of resources around it (first repeated at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: Vec<ResourceId>,
    /// The field of `path[0]` that makes the first edge of the cycle.
    pub field: String,
}

impl Cycle {
    pub fn describe(&self) -> String {
        let chain: Vec<String> = self.path.iter().map(ToString::to_string).collect();
        format!("dependency cycle: {}", chain.join(" -> "))
    }

    pub fn diagnostic(&self, loaded: &[LoadedResource]) -> Diagnostic {
        let first = loaded.iter().find(|l| l.resource.id() == self.path[0]);
        match first {
            Some(item) => item.diagnostic(&self.field, self.describe()),
            None => Diagnostic {
                file: Default::default(),
                line: 0,
                column: 0,
                field: None,
                message: self.describe(),
            },
        }
    }
}

impl DependencyGraph {
    /// Builds the graph over `loaded`; references to resources outside the set are left to
    /// the validator (they are errors there).
    pub fn build(loaded: &[LoadedResource]) -> Result<Self, Cycle> {
        Self::from_resources(loaded.iter().map(|l| &l.resource))
    }

    pub fn from_resources<'a>(
        resources: impl Iterator<Item = &'a Resource>,
    ) -> Result<Self, Cycle> {
        let resources: Vec<&Resource> = resources.collect();
        let mut graph = DependencyGraph::default();
        for resource in &resources {
            let id = resource.id();
            let index = graph.graph.add_node(id.clone());
            graph.nodes.insert(id, index);
        }
        for resource in &resources {
            let dependent = graph.nodes[&resource.id()];
            for reference in resource.references() {
                if let Some(&dependency) = graph.nodes.get(&reference.target)
                    && graph.graph.find_edge(dependency, dependent).is_none()
                {
                    graph.graph.add_edge(dependency, dependent, reference.path);
                }
            }
        }
        match graph.find_cycle() {
            Some(cycle) => Err(cycle),
            None => Ok(graph),
        }
    }

    fn find_cycle(&self) -> Option<Cycle> {
        let mut components: Vec<Vec<NodeIndex>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|c| c.len() > 1 || self.graph.find_edge(c[0], c[0]).is_some())
            .collect();
        components
            .iter_mut()
            .for_each(|c| c.sort_by_key(|n| &self.graph[*n]));
        components.sort_by_key(|c| self.graph[c[0]].clone());
        let component = components.first()?;
        let members: BTreeSet<NodeIndex> = component.iter().copied().collect();
        // Walk "depends on" edges (dependent → dependency) inside the component from its
        // smallest member until a node repeats.
        let start = component[0];
        let mut path = vec![start];
        let mut fields = Vec::new();
        let mut current = start;
        loop {
            let edge = self
                .graph
                .edges_directed(current, petgraph::Direction::Incoming)
                .filter(|e| members.contains(&e.source()))
                .min_by_key(|e| &self.graph[e.source()])?;
            fields.push(edge.weight().clone());
            current = edge.source();
            if let Some(pos) = path.iter().position(|&n| n == current) {
                let mut ids: Vec<ResourceId> =
                    path[pos..].iter().map(|&n| self.graph[n].clone()).collect();
                ids.push(self.graph[current].clone());
                return Some(Cycle {
                    path: ids,
                    field: fields[pos].clone(),
                });
            }
            path.push(current);
        }
    }

    /// Resources in an order where every dependency comes before its dependents; ties
    /// are broken by id so the order is stable.
    pub fn topological_order(&self) -> Vec<ResourceId> {
        match toposort(&self.graph, None) {
            Ok(order) => {
                // Stable: process by depth level, sorted by id within a level.
                let mut depth: BTreeMap<NodeIndex, usize> = BTreeMap::new();
                for node in &order {
                    let d = self
                        .graph
                        .neighbors_directed(*node, petgraph::Direction::Incoming)
                        .map(|n| depth[&n] + 1)
                        .max()
                        .unwrap_or(0);
                    depth.insert(*node, d);
                }
                let mut ids: Vec<(usize, &ResourceId)> =
                    order.iter().map(|n| (depth[n], &self.graph[*n])).collect();
                ids.sort();
                ids.into_iter().map(|(_, id)| id.clone()).collect()
            }
            Err(_) => self.nodes.keys().cloned().collect(),
        }
    }

    /// Direct dependencies of `id` (what must exist before it).
    pub fn dependencies(&self, id: &ResourceId) -> Vec<ResourceId> {
        self.neighbors(id, petgraph::Direction::Incoming)
    }

    /// Direct dependents of `id`.
    pub fn dependents(&self, id: &ResourceId) -> Vec<ResourceId> {
        self.neighbors(id, petgraph::Direction::Outgoing)
    }

    /// Everything that depends on `id`, directly or through others.
    pub fn transitive_dependents(&self, id: &ResourceId) -> BTreeSet<ResourceId> {
        let mut seen = BTreeSet::new();
        let mut next = self.dependents(id);
        while let Some(dependent) = next.pop() {
            if seen.insert(dependent.clone()) {
                next.extend(self.dependents(&dependent));
            }
        }
        seen
    }

    fn neighbors(&self, id: &ResourceId, direction: petgraph::Direction) -> Vec<ResourceId> {
        let Some(&node) = self.nodes.get(id) else {
            return Vec::new();
        };
        let mut ids: Vec<ResourceId> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|n| self.graph[n].clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn sorted_edges(&self) -> Vec<(&ResourceId, &ResourceId)> {
        let mut edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| (&self.graph[e.source()], &self.graph[e.target()]))
            .collect();
        edges.sort();
        edges
    }

    /// Graphviz DOT; edges point from a dependency to its dependent.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph gitvisor {\n  rankdir=LR;\n  node [shape=box];\n");
        for id in self.nodes.keys() {
            let _ = writeln!(out, "  \"{id}\";");
        }
        for (from, to) in self.sorted_edges() {
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\";");
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart; node ids are sanitised, labels keep `Kind/name`.
    pub fn to_mermaid(&self) -> String {
        let node_id =
            |id: &ResourceId| format!("{}_{}", id.kind, id.name).replace(['.', '-', '/'], "_");
        let mut out = String::from("flowchart LR\n");
        for id in self.nodes.keys() {
            let _ = writeln!(out, "  {}[\"{id}\"]", node_id(id));
        }
        for (from, to) in self.sorted_edges() {
            let _ = writeln!(out, "  {} --> {}", node_id(from), node_id(to));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::bridge::BridgeSpec;
    use crate::model::{Kind, Metadata, Name, Spec};

    fn bridge(name: &str, depends_on: &[&str]) -> Resource {
        let mut metadata = Metadata::named(Name::parse(name).unwrap());
        metadata.depends_on = depends_on.iter().map(|d| d.parse().unwrap()).collect();
        let spec: BridgeSpec = serde_yaml::from_str("{}").unwrap();
        Resource::new(metadata, Spec::new(spec))
    }

    fn id(name: &str) -> ResourceId {
        ResourceId::new(Kind::Bridge, Name::parse(name).unwrap())
    }

    #[test]
    fn order_puts_dependencies_first_and_is_stable() {
        let resources = [
            bridge("z", &[]),
            bridge("c", &["Bridge/z"]),
            bridge("a", &["Bridge/c"]),
            bridge("b", &[]),
        ];
        let graph = DependencyGraph::from_resources(resources.iter()).unwrap();
        assert_eq!(
            graph.topological_order(),
            vec![id("b"), id("z"), id("c"), id("a")]
        );
        assert_eq!(graph.dependencies(&id("a")), vec![id("c")]);
        assert_eq!(graph.dependents(&id("z")), vec![id("c")]);
    }

    #[test]
    fn cycles_name_their_path() {
        let resources = [
            bridge("a", &["Bridge/b"]),
            bridge("b", &["Bridge/c"]),
            bridge("c", &["Bridge/a"]),
            bridge("d", &[]),
        ];
        let cycle = DependencyGraph::from_resources(resources.iter()).unwrap_err();
        assert_eq!(
            cycle.describe(),
            "dependency cycle: Bridge/a -> Bridge/b -> Bridge/c -> Bridge/a"
        );
        assert_eq!(cycle.field, "metadata.dependsOn[0]");
    }

    #[test]
    fn renders_dot_and_mermaid() {
        let resources = [bridge("a", &[]), bridge("b-1", &["Bridge/a"])];
        let graph = DependencyGraph::from_resources(resources.iter()).unwrap();
        assert!(graph.to_dot().contains("\"Bridge/a\" -> \"Bridge/b-1\";"));
        assert!(graph.to_mermaid().contains("Bridge_a --> Bridge_b_1"));
    }
}
