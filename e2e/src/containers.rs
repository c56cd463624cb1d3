//! End-to-end helpers for containers: real runc, real overlayfs, real images.
//!
//! # Why not [`TestEnv`](crate::TestEnv)
//!
//! `ip netns exec` gives the command a mount namespace of its own with a fresh `/sys`,
//! in which `/sys/fs/cgroup` is empty, so runc could not make cgroups. Container tests
//! run gitvisor with `nsenter --net=/run/netns/NS` instead: the test's network
//! namespace, the host's mounts. Everything gitvisor makes outside the namespace is
//! removed by [`ContainerEnv`]'s `Drop`, even when the test fails: every container
//! under the test's runtime root (`runc delete --force`, which also removes its cgroup),
//! the overlay mounts under the test's run dir, and the directories.
//!
//! # Images
//!
//! [`TestImages::get`] builds, once per test process, from Debian's `busybox-static`:
//! a plain root file system directory; an OCI image layout made with `umoci` (tags `v1`
//! and `v2`, which differ in their default command); a docker-archive made from it with
//! `skopeo`; and the hostile ones the image store must refuse (a layer with a `../`
//! entry, a layer whose bytes do not match their digest), written by hand.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::{Netns, Outcome, TEST_HOST, gitvisor_bin, is_root, loud, run_command, skip};

/// The commands the busybox root file system links.
const APPLETS: &[&str] = &[
    "sh", "sleep", "ping", "cat", "ip", "echo", "ls", "true", "false", "kill", "ps", "grep",
    "touch", "wget", "nc", "id", "env", "test", "mkdir", "head", "yes", "tr", "nslookup", "stat",
];

/// Tools container tests need on the host; a missing one is a loud skip.
const TOOLS: &[(&str, &str)] = &[
    ("runc", "runc"),
    ("umoci", "umoci"),
    ("skopeo", "skopeo"),
    ("busybox", "busybox-static"),
    ("nsenter", "util-linux"),
];

/// Whether a program is on `PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs `program args`, panicking with its output unless it succeeds.
#[track_caller]
pub fn must<I, S>(program: &str, args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run_command(command).expect_code(0)
}

/// The images the tests use, built once per process.
#[derive(Debug)]
pub struct TestImages {
    _dir: TempDir,
    /// A busybox root file system directory.
    pub rootfs: PathBuf,
    /// An OCI image layout with tags `v1` (cmd prints "image v1" and sleeps) and `v2`.
    pub layout: PathBuf,
    /// A docker-archive tarball of `v1`.
    pub docker_archive: PathBuf,
    /// An OCI layout whose only layer has a `../escape` entry.
    pub hostile: PathBuf,
    /// A copy of `layout` whose layer blob bytes no longer match their digest.
    pub corrupt: PathBuf,
}

impl TestImages {
    /// The images, or `None` (after a loud skip) when a tool is missing.
    /// Tests running at the same time share one set; it is deleted when the last of
    /// them ends.
    pub fn get(test: &str) -> Option<Arc<TestImages>> {
        for (tool, package) in TOOLS {
            if !have(tool) {
                skip(
                    test,
                    &format!("needs {tool} (Debian: apt install {package})"),
                );
                return None;
            }
        }
        static IMAGES: Mutex<Weak<TestImages>> = Mutex::new(Weak::new());
        let mut shared = IMAGES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(images) = shared.upgrade() {
            return Some(images);
        }
        let images = Arc::new(TestImages::build());
        *shared = Arc::downgrade(&images);
        Some(images)
    }

    fn build() -> TestImages {
        let dir = tempfile::Builder::new()
            .prefix("gv-e2e-images-")
            .tempdir()
            .expect("cannot create a directory for the test images");
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);

        // An OCI layout from umoci: new image, unpack, add busybox, repack, set config.
        let layout = dir.path().join("layout");
        let layout_str = layout.to_str().expect("utf-8 path");
        must("umoci", ["init", "--layout", layout_str]);
        must("umoci", ["new", "--image", &format!("{layout_str}:v1")]);
        let bundle = dir.path().join("bundle");
        let bundle_str = bundle.to_str().expect("utf-8 path");
        must(
            "umoci",
            ["unpack", "--image", &format!("{layout_str}:v1"), bundle_str],
        );
        busybox_rootfs(&bundle.join("rootfs"));
        must(
            "umoci",
            ["repack", "--image", &format!("{layout_str}:v1"), bundle_str],
        );
        for (tag, text) in [("v1", "image v1"), ("v2", "image v2")] {
            let mut args: Vec<String> = vec![
                "config".into(),
                "--image".into(),
                format!("{layout_str}:v1"),
                "--tag".into(),
                tag.into(),
                "--config.env".into(),
                format!("IMAGE_TAG={tag}"),
            ];
            for part in ["sh", "-c", &format!("echo {text}; exec sleep 100000")] {
                args.push("--config.cmd".into());
                args.push(part.into());
            }
            must("umoci", &args);
        }
        must("umoci", ["gc", "--layout", layout_str]);

        let docker_archive = dir.path().join("app-docker.tar");
        must(
            "skopeo",
            [
                "copy".to_owned(),
                format!("oci:{layout_str}:v1"),
                format!("docker-archive:{}:app:v1", docker_archive.display()),
            ],
        );

        let hostile = dir.path().join("hostile");
        hostile_layout(&hostile);
        let corrupt = dir.path().join("corrupt");
        must(
            "cp",
            [OsStr::new("-a"), layout.as_os_str(), corrupt.as_os_str()],
        );
        corrupt_largest_blob(&corrupt);
        TestImages {
            _dir: dir,
            rootfs,
            layout,
            docker_archive,
            hostile,
            corrupt,
        }
    }
}

/// A root file system with busybox-static and its applets, and the directories a
/// runtime mounts over.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("create bin");
    fs::copy(which("busybox"), bin.join("busybox")).expect("copy busybox");
    for applet in APPLETS {
        let link = bin.join(applet);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).expect("link applet");
        }
    }
    for dir in ["proc", "sys", "dev", "tmp", "etc", "data"] {
        fs::create_dir_all(root.join(dir)).expect("create directory");
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n",
    )
    .expect("write passwd");
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").expect("write group");
}

fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A tar entry with exactly this name (tar writers refuse `../`).
fn raw_tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{:0width$o}\0", value, width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], data.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

/// An OCI layout, correct in every digest, whose one layer writes `../escape`.
fn hostile_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs");
    let mut layer = Vec::new();
    raw_tar_entry(&mut layer, "ok.txt", b"fine\n");
    raw_tar_entry(&mut layer, "../escape", b"gotcha\n");
    layer.extend(std::iter::repeat_n(0u8, 1024));
    let layer_digest = sha256(&layer);
    fs::write(blobs.join(&layer_digest), &layer).expect("write layer");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = sha256(&config);
    fs::write(blobs.join(&config_digest), &config).expect("write config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = sha256(&manifest);
    fs::write(blobs.join(&manifest_digest), &manifest).expect("write manifest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len()}],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("write index");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
}

/// Flips a byte in the middle of the layout's largest blob (its busybox layer).
fn corrupt_largest_blob(layout: &Path) {
    let blobs = layout.join("blobs/sha256");
    let largest = fs::read_dir(&blobs)
        .expect("read blobs")
        .flatten()
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a blob")
        .path();
    let mut bytes = fs::read(&largest).expect("read blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&largest, bytes).expect("write blob");
}

/// One container test's world: a network namespace, a state dir and a run dir, and
/// gitvisor run in the namespace with the host's mounts.
#[derive(Debug)]
pub struct ContainerEnv {
    netns: Netns,
    state_dir: TempDir,
    run_dir: TempDir,
    images: Arc<TestImages>,
}

impl ContainerEnv {
    /// A fresh environment, or `None` after a loud skip (not root, or a tool missing).
    pub fn new(test: &str) -> Option<(ContainerEnv, Arc<TestImages>)> {
        let name = crate::current_test_name(test);
        if !is_root() {
            skip(&name, "needs root");
            return None;
        }
        let images = TestImages::get(&name)?;
        let _ = gitvisor_bin();
        let dir = |what: &str| {
            tempfile::Builder::new()
                .prefix(&format!("gv-e2e-{what}-"))
                .tempdir()
                .expect("cannot create a temporary directory")
        };
        Some((
            ContainerEnv {
                netns: Netns::create(test),
                state_dir: dir("cstate"),
                run_dir: dir("crun"),
                images: Arc::clone(&images),
            },
            images,
        ))
    }

    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    pub fn images(&self) -> &TestImages {
        &self.images
    }

    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// gitvisor's runtime root for this test.
    pub fn runc_root(&self) -> PathBuf {
        self.run_dir.path().join("runc")
    }

    /// The bundle directory of container `name`.
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.run_dir.path().join("containers").join(name)
    }

    /// `nsenter --net=/run/netns/NS gitvisor --state-dir … ARGS`, not started.
    pub fn gitvisor_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns()))
            .arg(gitvisor_bin())
            .arg("--state-dir")
            .arg(self.state_dir.path())
            .arg("--run-dir")
            .arg(self.run_dir.path())
            .args(["--host", TEST_HOST])
            .args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GITVISOR_") {
                command.env_remove(&key);
            }
        }
        command.env("NO_COLOR", "1");
        command
    }

    pub fn gitvisor<I, S>(&self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.gitvisor_command(args))
    }

    /// `apply PATH`, expecting `code`.
    #[track_caller]
    pub fn apply(&self, path: &Path, code: i32) -> Outcome {
        self.gitvisor([OsStr::new("apply"), path.as_os_str()])
            .expect_code(code)
    }

    /// `plan PATH --output json`.
    #[track_caller]
    pub fn plan_json(&self, path: &Path) -> Value {
        self.gitvisor([
            OsStr::new("plan"),
            path.as_os_str(),
            OsStr::new("--output"),
            OsStr::new("json"),
        ])
        .expect_code(0)
        .json()
    }

    /// `runc list` under the test's root, by id: (status, pid).
    pub fn containers(&self) -> Vec<(String, String, u64)> {
        let root = self.runc_root();
        if !root.is_dir() {
            return Vec::new();
        }
        let listing = must(
            "runc",
            [
                OsStr::new("--root"),
                root.as_os_str(),
                OsStr::new("list"),
                OsStr::new("--format"),
                OsStr::new("json"),
            ],
        );
        let entries: Value = serde_json::from_str(listing.stdout.trim()).expect("runc list JSON");
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["id"].as_str().unwrap_or_default().to_owned(),
                            e["status"].as_str().unwrap_or_default().to_owned(),
                            e["pid"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The status and init pid of container `name`.
    pub fn container(&self, name: &str) -> Option<(String, u64)> {
        self.containers()
            .into_iter()
            .find(|(id, _, _)| id == name)
            .map(|(_, status, pid)| (status, pid))
    }

    /// The memory limit in container `name`'s cgroup (the path its bundle's config.json
    /// gives), as the kernel reports it.
    pub fn memory_limit(&self, name: &str) -> String {
        let config: Value = serde_json::from_slice(
            &fs::read(self.bundle(name).join("config.json")).expect("the bundle's config.json"),
        )
        .expect("config.json parses");
        let group = config["linux"]["cgroupsPath"]
            .as_str()
            .expect("a cgroups path")
            .trim_start_matches('/')
            .to_owned();
        let root = Path::new("/sys/fs/cgroup");
        fs::read_to_string(
            root.join("memory")
                .join(&group)
                .join("memory.limit_in_bytes"),
        )
        .or_else(|_| fs::read_to_string(root.join(&group).join("memory.max")))
        .expect("the container's memory cgroup")
        .trim()
        .to_owned()
    }

    /// `runc exec NAME ARGS` (inside the container).
    pub fn exec(&self, name: &str, args: &[&str]) -> Outcome {
        let mut command = Command::new("runc");
        command
            .arg("--root")
            .arg(self.runc_root())
            .args(["exec", name])
            .args(args);
        run_command(command)
    }

    /// Waits until `condition` holds, up to `within`; panics with `what` otherwise. For
    /// events the test causes (a process dying), never to measure time.
    #[track_caller]
    pub fn wait_for(&self, what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !condition() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A Container manifest.
    pub fn container_manifest(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: gitvisor.dev/v1alpha1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n{spec}"
        )
    }
}

impl Drop for ContainerEnv {
    fn drop(&mut self) {
        let root = self.runc_root();
        if root.is_dir() {
            for (id, _, _) in self.containers() {
                let mut command = Command::new("runc");
                command
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force", &id]);
                let outcome = run_command(command);
                if outcome.code != Some(0) {
                    loud(&format!(
                        "warning: could not delete container {id}\n{outcome}"
                    ));
                }
            }
        }
        // Overlay mounts under the run dir, deepest first.
        let run_dir = self.run_dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&run_dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let outcome = run_command({
                let mut command = Command::new("umount");
                command.args(["-l", point]);
                command
            });
            if outcome.code != Some(0) {
                loud(&format!("warning: could not unmount {point}\n{outcome}"));
            }
        }
    }
}

/// A `docker-registry` (the CNCF distribution registry, from Debian) serving plain HTTP
/// on 127.0.0.1:5000 inside a test's network namespace, with its storage in a temporary
/// directory; stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Registry {
    child: std::process::Child,
    _dir: TempDir,
}

/// Where [`Registry`] listens, inside the namespace.
pub const REGISTRY_ADDRESS: &str = "127.0.0.1:5000";

impl Registry {
    /// Starts the registry in `env`'s namespace (bringing its loopback up), or `None`
    /// after a loud skip when `docker-registry` is not installed.
    pub fn start(env: &ContainerEnv, test: &str) -> Option<Registry> {
        if !have("docker-registry") {
            skip(
                test,
                "needs docker-registry (Debian: apt install docker-registry)",
            );
            return None;
        }
        must("ip", ["-n", env.netns(), "link", "set", "lo", "up"]);
        let dir = tempfile::Builder::new()
            .prefix("gv-e2e-registry-")
            .tempdir()
            .expect("cannot create a directory for the registry");
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY_ADDRESS}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write the registry's config");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", env.netns()))
            .arg("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start docker-registry");
        Some(Registry { child, _dir: dir })
    }

    /// Pushes `source` (a skopeo reference, e.g. `oci:/path:v1`) to
    /// `127.0.0.1:5000/REPOSITORY`, retrying while the registry starts; answers the
    /// pushed manifest's digest.
    pub fn push(&self, env: &ContainerEnv, source: &str, repository: &str) -> String {
        let digest_file = self._dir.path().join("digest");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net=/run/netns/{}", env.netns()))
                .args(["skopeo", "copy", "--dest-tls-verify=false", "--digestfile"])
                .arg(&digest_file)
                .arg(source)
                .arg(format!("docker://{REGISTRY_ADDRESS}/{repository}"));
            let outcome = run_command(command);
            if outcome.code == Some(0) {
                return fs::read_to_string(&digest_file)
                    .expect("skopeo wrote the digest")
                    .trim()
                    .to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "cannot push to the registry\n{outcome}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
