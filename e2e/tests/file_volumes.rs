//! File-backed Volumes (`spec.directory`) end to end on the host itself, no guest
//! kernel needed: the real gitvisor binary makes, grows, adopts and prunes disk image
//! files; an apply SIGKILLed in the middle of an image copy leaves no file under the
//! volume's name and the next apply finishes; ten copy-on-write clones of one base come
//! from one apply; a QEMU guest (TCG) reads the base's data through a clone, writes to
//! the clone, and the base file stays byte-identical.
//!
//! What the host has is read independently of gitvisor: `qemu-img info --output json`,
//! `qemu-img convert` to raw for the contents, the files' xattrs and checksums.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gitvisor_e2e::vms::{self, VmGuard, vm_manifest};
use gitvisor_e2e::{Manifests, TestEnv, assert_contains, resource_manifest, skip};
use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn ready(test: &str) -> Option<TestEnv> {
    let env = TestEnv::new(test)?;
    if Command::new("qemu-img").arg("--version").output().is_err() {
        skip(
            &gitvisor_e2e::current_test_name(test),
            "qemu-img is not installed",
        );
        return None;
    }
    Some(env)
}

fn volume(name: &str, metadata: &[&str], spec: &str) -> String {
    resource_manifest("Volume", name, metadata, spec)
}

/// `qemu-img info --output json` of `path`.
fn info(path: &Path) -> Value {
    let out = Command::new("qemu-img")
        .args(["info", "--output", "json", "-U"])
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img info {}: {out:?}",
        path.display()
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img json")
}

/// The disk `path` holds, as raw bytes.
fn contents(path: &Path, format: &str) -> Vec<u8> {
    let scratch = tempfile::tempdir().expect("temp dir");
    let raw = scratch.path().join("out.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-U", "-f", format, "-O", "raw"])
        .arg(path)
        .arg(&raw)
        .status()
        .expect("qemu-img runs");
    assert!(status.success());
    fs::read(raw).expect("read converted disk")
}

fn sha256(path: &Path) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).expect("read file")))
}

fn owner(path: &Path) -> Option<String> {
    xattr::get(path, "user.gitvisor.id")
        .expect("read xattr")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// A raw image of `size` bytes starting with `marker`, the rest a non-zero pattern (so a
/// copy has to write every byte).
fn source_image(path: &Path, marker: &str, size: u64) {
    let mut bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
    bytes[..marker.len()].copy_from_slice(marker.as_bytes());
    fs::write(path, bytes).expect("write source image");
}

#[test]
fn directory_volumes_are_made_grown_adopted_and_pruned() {
    let Some(env) = ready("file-vol-life") else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let source = scratch.path().join("source.raw");
    source_image(&source, "SOURCE-IMAGE-1234", 8 * MIB);
    let manifests = Manifests::new();
    let write = |a_size: &str, b_size: &str| {
        manifests.write(
            "a.yaml",
            &volume(
                "a",
                &[],
                &format!(
                    "  directory: {}\n  size: {a_size}\n  source: {}\n",
                    dir.display(),
                    source.display()
                ),
            ),
        );
        manifests.write(
            "b.yaml",
            &volume(
                "b",
                &[],
                &format!(
                    "  directory: {}\n  format: raw\n  size: {b_size}\n  reclaimPolicy: Delete\n",
                    dir.display()
                ),
            ),
        );
    };
    write("16MiB", "8MiB");
    // A revision is never empty: this one stays while the others are pruned.
    manifests.write(
        "keep.yaml",
        &volume(
            "keep",
            &[],
            &format!("  directory: {}\n  size: 1MiB\n", dir.display()),
        ),
    );
    env.apply(manifests.path()).expect_code(0);
    let a = dir.join("a.qcow2");
    let b = dir.join("b.raw");
    assert_eq!(info(&a)["format"], "qcow2");
    assert_eq!(info(&a)["virtual-size"], 16 * MIB);
    assert!(contents(&a, "qcow2").starts_with(b"SOURCE-IMAGE-1234"));
    assert_eq!(fs::metadata(&b).expect("b exists").len(), 8 * MIB);
    assert_eq!(owner(&a).as_deref(), Some("Volume/a"));
    assert_eq!(owner(&b).as_deref(), Some("Volume/b"));
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(0), "a second plan is clean\n{plan}");

    // Grow both; shrinking is refused in the plan and touches nothing.
    write("32MiB", "16MiB");
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(info(&a)["virtual-size"], 32 * MIB);
    assert_eq!(fs::metadata(&b).expect("b exists").len(), 16 * MIB);
    assert!(contents(&a, "qcow2").starts_with(b"SOURCE-IMAGE-1234"));
    write("8MiB", "16MiB");
    let refused = env.plan_detailed(manifests.path());
    assert_eq!(refused.code, Some(1), "{refused}");
    assert_contains(&refused.stdout, "shrinking is refused");
    env.apply(manifests.path()).expect_code(1);
    assert_eq!(info(&a)["virtual-size"], 32 * MIB);
    write("32MiB", "16MiB");

    // A file gitvisor did not make is a conflict, left byte-identical; adopted, marked.
    let c = dir.join("c.raw");
    fs::write(&c, vec![7u8; MIB as usize]).expect("write c");
    let before = sha256(&c);
    let c_spec = format!(
        "  directory: {}\n  format: raw\n  size: 1MiB\n",
        dir.display()
    );
    manifests.write("c.yaml", &volume("c", &[], &c_spec));
    let conflict = env.plan_detailed(manifests.path());
    assert_eq!(conflict.code, Some(1), "{conflict}");
    assert_contains(&conflict.stdout, "was not created by gitvisor");
    env.apply(manifests.path()).expect_code(1);
    assert_eq!(sha256(&c), before);
    assert_eq!(owner(&c), None);
    manifests.write(
        "c.yaml",
        &volume(
            "c",
            &["annotations: {gitvisor.dev/adopt: \"true\"}"],
            &c_spec,
        ),
    );
    env.apply(manifests.path()).expect_code(0);
    assert_eq!(sha256(&c), before);
    assert_eq!(owner(&c).as_deref(), Some("Volume/c"));

    // Prune: Retain (the default) forgets and keeps the data; Delete removes the file.
    manifests.remove("a.yaml");
    manifests.remove("b.yaml");
    manifests.remove("c.yaml");
    env.apply(manifests.path()).expect_code(0);
    assert!(a.exists(), "Retain keeps the file");
    assert_eq!(owner(&a), None, "a retained file loses gitvisor's marker");
    assert!(contents(&a, "qcow2").starts_with(b"SOURCE-IMAGE-1234"));
    assert!(!b.exists(), "Delete removes the file");
    assert!(c.exists());
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(0), "{plan}");
}

#[test]
fn an_apply_killed_in_the_middle_of_a_copy_is_finished_by_the_next() {
    let Some(env) = ready("file-vol-kill") else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let source = scratch.path().join("big.raw");
    source_image(&source, "BIG-SOURCE", 512 * MIB);
    let manifests = Manifests::new();
    manifests.write(
        "v.yaml",
        &volume(
            "v",
            &[],
            &format!(
                "  directory: {}\n  format: raw\n  size: 512MiB\n  source: {}\n",
                dir.display(),
                source.display()
            ),
        ),
    );
    let path = dir.join("v.raw");
    let partial = dir.join(".v.raw.partial");
    let mut child = env
        .gitvisor_command(["apply", manifests.path_str()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start apply");
    let started = Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(60) {
        let written = fs::metadata(&partial).map(|m| m.blocks()).unwrap_or(0);
        if written > 0 {
            // SIGKILL: `ip netns exec` has exec'd gitvisor; qemu-img dies with it.
            let _ = child.kill();
            killed = true;
            break;
        }
        if child.try_wait().expect("poll apply").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.wait();
    assert!(killed, "the copy finished before the test could kill it");
    assert!(
        !path.exists(),
        "no file under the volume's name after a crash mid-copy"
    );
    let next = env.apply(manifests.path()).expect_code(0);
    assert_contains(&next.stdout, "Volume/v");
    assert!(!partial.exists());
    assert_eq!(sha256(&path), sha256(&source), "the copy is complete");
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(0), "{plan}");
}

/// Ten clones of `base` under `dir`, `size` each.
fn clones(dir: &Path, count: usize) -> String {
    (0..count)
        .map(|i| {
            volume(
                &format!("clone{i}"),
                &[],
                &format!(
                    "  directory: {}\n  size: 64MiB\n  source: {{cloneOf: Volume/base}}\n",
                    dir.display()
                ),
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn base_manifest(dir: &Path, source: &Path, policy: &str) -> String {
    volume(
        "base",
        &[],
        &format!(
            "  directory: {}\n  size: 32MiB\n  source: {}\n  reclaimPolicy: {policy}\n",
            dir.display(),
            source.display()
        ),
    )
}

#[test]
fn ten_clones_of_one_base_in_one_apply_and_the_base_is_kept_while_used() {
    let Some(env) = ready("file-vol-clones") else {
        return;
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let source = scratch.path().join("base.raw");
    source_image(&source, "BASE-IMAGE-CONTENT", 32 * MIB);
    let manifests = Manifests::new();
    manifests.write("base.yaml", &base_manifest(&dir, &source, "Delete"));
    manifests.write("clones.yaml", &clones(&dir, 10));
    manifests.write(
        "keep.yaml",
        &volume(
            "keep",
            &[],
            &format!("  directory: {}\n  size: 1MiB\n", dir.display()),
        ),
    );
    let applied = env.apply(manifests.path()).expect_code(0);
    assert_contains(&applied.stdout, "12 created");
    let base = dir.join("base.qcow2");
    for i in 0..10 {
        let clone = dir.join(format!("clone{i}.qcow2"));
        let found = info(&clone);
        assert_eq!(found["format"], "qcow2");
        assert_eq!(found["virtual-size"], 64 * MIB);
        assert_eq!(
            found["backing-filename"].as_str(),
            Some(base.to_str().expect("utf-8 path"))
        );
        assert!(
            fs::metadata(&clone).expect("clone exists").len() < MIB,
            "a clone takes the space of what is written to it"
        );
        assert!(contents(&clone, "qcow2").starts_with(b"BASE-IMAGE-CONTENT"));
    }
    let plan = env.plan_detailed(manifests.path());
    assert_eq!(plan.code, Some(0), "{plan}");

    // The base cannot go while a declared clone uses it: the revision is rejected.
    manifests.remove("base.yaml");
    let rejected = env.plan_detailed(manifests.path());
    assert_ne!(rejected.code, Some(0), "{rejected}");
    assert_contains(&rejected.stderr, "spec.source.cloneOf");
    // Nor while a retained clone's file still names it as its backing file.
    manifests.remove("clones.yaml");
    manifests.write("base.yaml", &base_manifest(&dir, &source, "Delete"));
    env.apply(manifests.path()).expect_code(0);
    assert!(dir.join("clone0.qcow2").exists(), "clones are retained");
    manifests.remove("base.yaml");
    let refused = env.plan_detailed(manifests.path());
    assert_eq!(refused.code, Some(1), "{refused}");
    assert_contains(&refused.stdout, "is the backing file of");
    env.apply(manifests.path()).expect_code(1);
    assert!(base.exists());
}

#[test]
fn a_guest_writes_to_a_clone_and_the_base_is_unchanged() {
    let Some(env) = ready("file-vol-guest") else {
        return;
    };
    if let Some(why) = vms::missing_facility() {
        skip(&gitvisor_e2e::current_test_name("file-vol-guest"), &why);
        return;
    }
    let image = vms::guest_image().expect("cannot build the guest's initramfs");
    let guard = VmGuard::new(&env);
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("volumes");
    let source = scratch.path().join("base.raw");
    source_image(&source, "BASE-FOR-GUEST!!", 16 * MIB);
    let manifests = Manifests::new();
    manifests.write("base.yaml", &base_manifest(&dir, &source, "Retain"));
    manifests.write(
        "clone.yaml",
        &volume(
            "guest-disk",
            &[],
            &format!(
                "  directory: {}\n  size: 32MiB\n  source: {{cloneOf: Volume/base}}\n",
                dir.display()
            ),
        ),
    );
    env.apply(manifests.path()).expect_code(0);
    let base = dir.join("base.qcow2");
    let base_sum = sha256(&base);
    manifests.write(
        "vm.yaml",
        &vm_manifest(
            "reader",
            &format!(
                "cpus: 1\nmemory: 256MiB\naccel: tcg\nshutdownTimeout: 2s\n\
                 boot:\n  kernel: {}\n  initrd: {}\n  cmdline: console=ttyS0 quiet gv.write=disk0\n\
                 disks:\n  - volume: guest-disk\n",
                image.kernel.display(),
                image.initrd.display()
            ),
        ),
    );
    env.apply(manifests.path()).expect_code(0);
    let cmdline = guard.cmdline("reader").expect("the guest runs").join(" ");
    assert_contains(&cmdline, "format=qcow2");
    let serial = guard.serial("reader");
    let boot = Duration::from_secs(240);
    let read = serial.wait_for("GV-READ", 0, boot);
    assert_contains(&read, "BASE-FOR-GUEST!!");
    serial.wait_for("GV-WROTE", 0, boot);
    manifests.remove("vm.yaml");
    env.apply(manifests.path()).expect_code(0);
    let clone: PathBuf = dir.join("guest-disk.qcow2");
    assert!(contents(&clone, "qcow2").starts_with(b"GV-GUEST-WROTE-THIS"));
    assert_eq!(sha256(&base), base_sum, "the base file is unchanged");
    assert!(contents(&base, "qcow2").starts_with(b"BASE-FOR-GUEST!!"));
}
