//! The loader's promises: strict documents, every error with file:line:col and field,
//! all errors of a revision together, and the revision rejected whole.

use std::path::Path;

use gitvisor::load::{Diagnostic, load_revision};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn errors(dir: &Path) -> Vec<Diagnostic> {
    load_revision(dir, "host1")
        .expect_err("revision should be rejected")
        .diagnostics
}

const GOOD: &str = "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: br0
spec:
  addresses: [10.0.0.1/24]
";

#[test]
fn a_good_revision_loads() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    let revision = load_revision(dir.path(), "host1").unwrap();
    assert_eq!(revision.resources.len(), 1);
    assert!(revision.id.starts_with("sha256:"));
}

#[test]
fn unknown_field_names_file_line_column_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &format!("{GOOD}  mtuu: 9000\n"));
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert!(e.file.ends_with("a.yaml"));
    assert_eq!((e.line, e.column), (7, 3), "{e}");
    assert_eq!(e.field.as_deref(), Some("spec.mtuu"));
    assert!(e.message.contains("unknown field `mtuu`"), "{e}");
}

#[test]
fn positions_are_file_positions_in_later_documents() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{GOOD}---\n# second\napiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: br1\nspec:\n  addresses: [10.0.0.300/24]\n"
    );
    write(dir.path(), "a.yaml", &text);
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, 14, "{}", errs[0]);
    assert_eq!(errs[0].field.as_deref(), Some("spec.addresses[0]"));
    assert!(errs[0].message.contains("invalid CIDR"), "{}", errs[0]);
}

#[test]
fn bad_sizes_names_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "v.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Volume\nmetadata:\n  name: v1\nspec:\n  volumeGroup: vg0\n  size: 12XB\n",
    );
    write(
        dir.path(),
        "n.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: Br_0\nspec: {}\n",
    );
    write(
        dir.path(),
        "k.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Router\nmetadata:\n  name: r\nspec: {}\n",
    );
    let errs = errors(dir.path());
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{text:#?}");
    assert!(
        text.iter()
            .any(|t| t.contains("k.yaml:2:7: kind: unknown kind \"Router\"")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("n.yaml:4:9: metadata.name: invalid name")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("v.yaml:7:9: spec.size: invalid size")),
        "{text:#?}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: [br0\nspec: {}\n",
    );
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1);
    assert!(errs[0].line >= 4, "{}", errs[0]);
}

#[test]
fn duplicates_dangling_references_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    write(dir.path(), "b.yaml", GOOD);
    write(
        dir.path(),
        "vm.yaml",
        "\
apiVersion: gitvisor.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: vm1
spec:
  memory: 512MiB
  boot: {kernel: /boot/vmlinuz}
  disks:
    - volume: missing-vol
  networks:
    - bridge: br0
    - bridge: nope
",
    );
    write(
        dir.path(),
        "long.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: this-name-is-too-long\nspec: {}\n",
    );
    let text: Vec<String> = errors(dir.path()).iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text.iter().any(|t| t.contains(
            "b.yaml:4:9: metadata.name: duplicate Bridge/br0 for host host1: already declared at"
        )),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("vm.yaml:9:15: spec.disks[0].volume: references Volume/missing-vol which is not declared")), "{text:#?}");
    assert!(
        text.iter()
            .any(|t| t.contains("vm.yaml:12:15: spec.networks[1].bridge: references Bridge/nope")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains(
            "long.yaml:4:9: metadata.name: a Bridge name is an interface name: at most 15"
        )),
        "{text:#?}"
    );
}

#[test]
fn cycles_print_their_path() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: a
  dependsOn: [Bridge/b]
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: b
  dependsOn: [Bridge/a]
spec: {}
",
    );
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .message
            .contains("dependency cycle: Bridge/a -> Bridge/b -> Bridge/a"),
        "{}",
        errs[0]
    );
    assert_eq!((errs[0].line, errs[0].column), (5, 15), "{}", errs[0]);
}

#[test]
fn host_selection() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.yaml",
        "\
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: only-nuc
  host: nuc*
spec: {}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata:
  name: everywhere
spec: {}
",
    );
    assert_eq!(
        load_revision(dir.path(), "nuc1").unwrap().resources.len(),
        2
    );
    assert_eq!(load_revision(dir.path(), "pi").unwrap().resources.len(), 1);
}

#[test]
fn examples_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for example in ["quickstart", "homelab"] {
        if let Err(errors) = load_revision(&root.join(example), "host1") {
            panic!("examples/{example}: {errors}");
        }
    }
}

#[test]
fn an_empty_directory_is_refused_but_a_comment_only_file_is_an_empty_revision() {
    let dir = tempfile::tempdir().unwrap();
    let errs = errors(dir.path());
    assert!(
        errs[0]
            .message
            .contains("no *.yaml or *.yml manifests found"),
        "{errs:?}"
    );
    write(
        dir.path(),
        "empty.yaml",
        "# everything removed on purpose\n",
    );
    assert!(
        load_revision(dir.path(), "host1")
            .unwrap()
            .resources
            .is_empty()
    );
}

#[test]
fn a_document_that_is_not_a_mapping_has_no_field() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "just a string\n");
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, None);
    assert!(
        errs[0]
            .to_string()
            .ends_with("a.yaml:1:1: expected a mapping with apiVersion, kind, metadata and spec"),
        "{}",
        errs[0]
    );
}

#[test]
fn positions_stay_exact_deep_in_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let count = 3000;
    let mut text = String::new();
    for i in 0..count {
        text.push_str(&format!(
            "---\napiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: br-{i}\nspec:\n  mtu: 1500\n"
        ));
    }
    // Each document is 7 lines; the last one's `mtu` value is on line 7 * count.
    text.push_str("  stpp: true\n");
    text = text.replacen("  mtu: 1500\n", "  mtu: x\n", 1);
    write(dir.path(), "many.yaml", &text);
    let text: Vec<String> = errors(dir.path()).iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(
        text[0].ends_with("many.yaml:7:8: spec.mtu: invalid type: string \"x\", expected u32"),
        "{text:#?}"
    );
    let last = 7 * count + 1;
    assert!(
        text[1].contains(&format!(
            "many.yaml:{last}:3: spec.stpp: unknown field `stpp`"
        )),
        "{text:#?}"
    );
}

#[test]
fn several_paths_form_one_revision() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    write(first.path(), "a.yaml", GOOD);
    write(second.path(), "b.yaml", GOOD);
    let errs = gitvisor::load::load_paths(&[first.path(), second.path()], "host1")
        .expect_err("the same bridge in both paths is a duplicate")
        .diagnostics;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.starts_with("duplicate Bridge/br0"),
        "{}",
        errs[0]
    );
    write(
        second.path(),
        "b.yaml",
        &GOOD.replace("br0", "br1").replace(".1/", ".2/"),
    );
    let revision = gitvisor::load::load_paths(&[first.path(), second.path()], "host1").unwrap();
    assert_eq!(revision.resources.len(), 2);
}

#[test]
fn a_document_with_many_labels_loads_and_is_not_called_an_alias_bomb() {
    let dir = tempfile::tempdir().unwrap();
    let labels: String = (0..100_000).map(|i| format!("    l{i}: v\n")).collect();
    write(
        dir.path(),
        "a.yaml",
        &GOOD.replace(
            "  name: br0\n",
            &format!("  name: br0\n  labels:\n{labels}"),
        ),
    );
    match load_revision(dir.path(), "host1") {
        Ok(revision) => assert_eq!(revision.resources[0].metadata.labels.len(), 100_000),
        Err(errors) => panic!("{}", errors.diagnostics[0]),
    }
}

#[test]
fn a_10_mb_name_is_not_echoed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let name = "a".repeat(10_000_000);
    write(dir.path(), "a.yaml", &GOOD.replace("br0", &name));
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let message = errs[0].to_string();
    assert!(message.len() < 400, "{} bytes echoed", message.len());
    assert!(message.contains("… (10000000 bytes)"), "{message}");
}

/// `kind: PrunePolicy` is read strictly, like a resource, but is no resource: the one that
/// applies to the host is the revision's `prune_policy`; one for another host is not; a
/// second for the same host is an error naming the first.
#[test]
fn a_prune_policy_is_a_strict_setting_of_the_revision_not_a_resource() {
    const POLICY: &str = "apiVersion: gitvisor.dev/v1alpha1\nkind: PrunePolicy\nmetadata:\n  name: NAME\nHOSTspec:\n  deleteUndeclared: true\n";
    let policy = |name: &str, host: &str| POLICY.replace("NAME", name).replace("HOST", host);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", GOOD);
    write(dir.path(), "p.yaml", &policy("retire", "  host: other\n"));
    let revision = load_revision(dir.path(), "host1").unwrap();
    assert!(revision.prune_policy.is_none());
    assert_eq!(revision.resources.len(), 1);

    write(dir.path(), "p.yaml", &policy("retire", "  host: host*\n"));
    let revision = load_revision(dir.path(), "host1").unwrap();
    let chosen = revision.prune_policy.expect("the policy applies to host1");
    assert!(chosen.spec.delete_undeclared);
    assert_eq!(chosen.metadata.name.to_string(), "retire");
    assert_eq!(revision.resources.len(), 1);

    write(dir.path(), "q.yaml", &policy("again", ""));
    let errs = errors(dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    let text = errs[0].to_string();
    assert!(text.contains("q.yaml:1:1: a second PrunePolicy"), "{text}");
    assert!(text.contains("PrunePolicy/retire ("), "{text}");

    std::fs::remove_file(dir.path().join("q.yaml")).unwrap();
    write(
        dir.path(),
        "p.yaml",
        &POLICY
            .replace("NAME", "retire")
            .replace("HOST", "")
            .replace("deleteUndeclared", "pruneAll"),
    );
    let errs = errors(dir.path());
    assert!(
        errs.iter().any(|e| e
            .to_string()
            .contains("p.yaml:6:3: spec.pruneAll: unknown field")),
        "{errs:?}"
    );
}

#[test]
fn an_empty_directory_says_how_to_decommission_instead() {
    let dir = tempfile::tempdir().unwrap();
    let errs = errors(dir.path());
    assert_eq!(errs[0].file, dir.path());
    assert!(
        errs[0]
            .message
            .contains("declare a PrunePolicy with deleteUndeclared: true"),
        "{errs:?}"
    );
}
