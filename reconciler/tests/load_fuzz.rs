//! Property tests: random and mutated YAML fed to the loader never panics and always
//! yields either a revision or diagnostics with a position inside the file.

use gitvisor::load::load_revision;
use proptest::prelude::*;

const SEED: &str = "\
apiVersion: gitvisor.dev/v1alpha1
kind: VirtualMachine
metadata:
  name: vm1
  dependsOn: [Bridge/br0]
spec:
  memory: 512MiB
  boot: {kernel: /k, cmdline: console=ttyS0}
  disks: [{path: /img}]
  networks: [{bridge: br0, mac: '52:54:00:00:00:01'}]
---
apiVersion: gitvisor.dev/v1alpha1
kind: Bridge
metadata: {name: br0}
spec: {mtu: 1500, addresses: [10.0.0.1/24, 'fd00::1/64'], ports: [eth0]}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Volume
metadata: {name: v1}
spec: {volumeGroup: vg0, size: 1.5GiB, reclaimPolicy: Delete}
---
apiVersion: gitvisor.dev/v1alpha1
kind: Container
metadata: {name: c1}
spec: {image: /img, env: {A: b}, mounts: [{target: /data, volume: v1}], resources: {cpus: 0.5}}
";

fn check(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), text).unwrap();
    let lines = text.lines().count().max(1);
    if let Err(errors) = load_revision(dir.path(), "h") {
        assert!(!errors.diagnostics.is_empty());
        for d in &errors.diagnostics {
            assert!(
                d.line >= 1 && d.line <= lines + 1,
                "{d} outside a {lines}-line file"
            );
            assert!(!d.message.is_empty());
        }
    }
}

#[test]
fn the_seed_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), SEED).unwrap();
    load_revision(dir.path(), "h").unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn yamlish_text_never_panics(text in "([a-zA-Z:\\-\\[\\]{}, '\"#|>&*!]|\n|  ){0,300}") {
        check(&text);
    }

    #[test]
    fn mutated_manifests_never_panic(
        cut in 0usize..SEED.len(),
        len in 0usize..20,
        insert in "[ -~\n]{0,12}",
    ) {
        let mut text = SEED.to_owned();
        let start = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        check(&text);
    }
}
