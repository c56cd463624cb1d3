//! Container images end to end, beyond the common case of `containers.rs`: an image of
//! many layers runs (the overlay mount of its root file system is not limited by the
//! length of the layers' paths), an archive cannot hand a host file to a container
//! through a symlink, and an `apply` stuck on a registry that stalls in the middle of a
//! download stops on SIGTERM.
//!
//! What the host has is read independently of gitvisor: `runc exec` under the test's
//! runtime root; the registry is a small Python server in the test's namespace.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitvisor_e2e::containers::{ContainerEnv, busybox_rootfs, must};
use gitvisor_e2e::{Manifests, assert_contains, skip};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// An OCI layout under `dir` of `count` uncompressed layers: busybox at the bottom, then
/// layers that each add `/layers/N` and overwrite `/top` with `N`.
fn layered_layout(dir: &Path, count: usize) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("create blobs");
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for n in 0..count {
        let content = dir.join(format!("content-{n}"));
        if n == 0 {
            busybox_rootfs(&content);
        } else {
            fs::create_dir_all(content.join("layers")).expect("create layer dir");
            fs::write(content.join("layers").join(n.to_string()), n.to_string())
                .expect("write layer file");
        }
        fs::write(content.join("top"), n.to_string()).expect("write top");
        let bytes = tar_of(&content, &dir.join(format!("layer-{n}.tar")));
        let digest = sha256(&bytes);
        fs::write(blobs.join(&digest), &bytes).expect("write layer blob");
        diff_ids.push(format!("sha256:{digest}"));
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{digest}"),
            "size": bytes.len(),
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh", "-c", "echo deep image; exec sleep 100000"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let config_digest = sha256(&config);
    fs::write(blobs.join(&config_digest), &config).expect("write config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = sha256(&manifest);
    fs::write(blobs.join(&manifest_digest), &manifest).expect("write manifest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len()}],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("write index");
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    layout
}

/// 40 layers: more than fit in one page of overlay options as store paths (about 33).
/// The container runs, sees every layer, and the top layer wins.
#[test]
fn an_image_of_40_layers_runs() {
    let Some((env, _images)) = ContainerEnv::new("img_deep") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = layered_layout(dir.path(), 40);
    let manifests = Manifests::new();
    manifests.write(
        "deep.yaml",
        &ContainerEnv::container_manifest("deep", &format!("  image: {}\n", layout.display())),
    );
    env.apply(manifests.path(), 0);
    let (status, _) = env.container("deep").expect("the container exists");
    assert_eq!(status, "running");
    let seen = env
        .exec("deep", &["sh", "-c", "cat /top; echo; ls /layers | wc -l"])
        .expect_code(0);
    assert_eq!(
        seen.stdout.split_whitespace().collect::<Vec<_>>(),
        ["39", "39"],
        "{seen}"
    );
}

/// A registry that serves manifests and configs, and stalls halfway through every layer
/// blob (writing `marker` when it does): Python's http.server on 127.0.0.1:5001 in the
/// test's namespace.
const STALLING_REGISTRY: &str = r#"
import http.server, os, sys, time
root, manifest, layers, marker = sys.argv[1], sys.argv[2], set(sys.argv[3].split(",")), sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        name = manifest if "/manifests/" in self.path else self.path.rsplit("sha256:", 1)[-1]
        body = open(os.path.join(root, name), "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if name in layers:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            open(marker, "w").close()
            time.sleep(3600)
        else:
            self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 5001), Handler).serve_forever()
"#;

/// Kills the child when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `apply` pulling from a registry that stalls mid-download: SIGTERM stops it promptly
/// (the import is given up, the process exits without waiting for the stalled read).
#[test]
fn sigterm_stops_an_apply_stalled_on_a_registry_download() {
    let Some((env, images)) = ContainerEnv::new("img_stall") else {
        return;
    };
    let python = "python3";
    if Command::new(python).arg("--version").output().is_err() {
        skip("img_stall", "needs python3");
        return;
    }
    // The v1 manifest of the test layout, and its layers.
    let blobs = images.layout.join("blobs/sha256");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(images.layout.join("index.json")).expect("index"))
            .expect("index json");
    let manifest_hex = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .expect("a v1 manifest")["digest"]
        .as_str()
        .expect("digest")[7..]
        .to_owned();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blobs.join(&manifest_hex)).expect("manifest"))
            .expect("manifest json");
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| &l["digest"].as_str().expect("digest")[7..])
        .collect();

    must("ip", ["-n", env.netns(), "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let marker = dir.path().join("stalled");
    let _registry = Killed(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", env.netns()))
            .args([python, "-c", STALLING_REGISTRY])
            .arg(&blobs)
            .arg(&manifest_hex)
            .arg(layers.join(","))
            .arg(&marker)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the registry"),
    );

    let manifests = Manifests::new();
    manifests.write(
        "stalled.yaml",
        &ContainerEnv::container_manifest("stalled", "  image: 127.0.0.1:5001/team/app:v1\n"),
    );
    let wait_for = |what: &str, within: Duration, condition: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + within;
        while !condition() {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The registry may take a moment to listen: apply until a download stalls.
    let mut apply = None;
    wait_for("a download to stall", Duration::from_secs(60), &mut || {
        if marker.exists() {
            return true;
        }
        let running = apply
            .as_mut()
            .is_some_and(|a: &mut Killed| a.0.try_wait().ok().flatten().is_none());
        if !running {
            let mut command =
                env.gitvisor_command([std::ffi::OsStr::new("apply"), manifests.path().as_os_str()]);
            command
                .env("GITVISOR_INSECURE_REGISTRIES", "127.0.0.1:5001")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            apply = Some(Killed(command.spawn().expect("start apply")));
        }
        false
    });
    let mut apply = apply.expect("apply runs");
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(apply.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM apply");
    let signalled = Instant::now();
    let mut status = None;
    wait_for(
        "apply to exit after SIGTERM",
        Duration::from_secs(15),
        &mut || {
            status = apply.0.try_wait().ok().flatten();
            status.is_some()
        },
    );
    let took = signalled.elapsed();
    eprintln!("apply exited {took:?} after SIGTERM");
    let mut output = String::new();
    for stream in [
        apply
            .0
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
        apply
            .0
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut stream = stream;
        let _ = stream.read_to_string(&mut output);
    }
    let status = status.expect("exited");
    assert!(!status.success(), "{status}\n{output}");
    assert_contains(&output, "cancelled");
    assert!(took < Duration::from_secs(10), "{took:?}\n{output}");
    assert!(env.container("stalled").is_none());
}

/// `tar --numeric-owner -C content -cf tar .`, answering the tar's bytes.
fn tar_of(content: &Path, tar: &Path) -> Vec<u8> {
    must(
        "tar",
        [
            "--numeric-owner".as_ref(),
            "-C".as_ref(),
            content.as_os_str(),
            "-cf".as_ref(),
            tar.as_os_str(),
            ".".as_ref(),
        ],
    );
    fs::read(tar).expect("read tar")
}

/// A docker-archive whose second layer is a symlink to a tar on the host (whose diff id
/// its config names): refused, naming the entry, and no container runs with the host's
/// file in it.
#[test]
fn an_archive_member_linking_to_a_host_file_is_refused() {
    let Some((env, _images)) = ContainerEnv::new("img_link") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let base = tar_of(&rootfs, &dir.path().join("base.tar"));
    let secret_dir = dir.path().join("secret");
    fs::create_dir(&secret_dir).expect("create secret dir");
    fs::write(secret_dir.join("secret"), "host secret\n").expect("write secret");
    let host_tar = dir.path().join("host-secret.tar");
    let secret = tar_of(&secret_dir, &host_tar);

    let archive = dir.path().join("archive");
    fs::create_dir(&archive).expect("create archive dir");
    fs::write(archive.join("layer.tar"), &base).expect("write layer");
    std::os::unix::fs::symlink(&host_tar, archive.join("l2.tar")).expect("link l2.tar");
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh", "-c", "cat /secret; exec sleep 100000"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&base)), format!("sha256:{}", sha256(&secret))]},
    });
    fs::write(
        archive.join("cfg.json"),
        serde_json::to_vec(&config).expect("config json"),
    )
    .expect("write config");
    let manifest = serde_json::json!([{"Config": "cfg.json", "RepoTags": ["app:v1"], "Layers": ["layer.tar", "l2.tar"]}]);
    fs::write(
        archive.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("manifest json"),
    )
    .expect("write manifest");
    let image = dir.path().join("image.tar");
    tar_of(&archive, &image);

    let manifests = Manifests::new();
    manifests.write(
        "linked.yaml",
        &ContainerEnv::container_manifest("linked", &format!("  image: {}\n", image.display())),
    );
    let outcome = env.apply(manifests.path(), 1);
    let text = format!("{}{}", outcome.stdout, outcome.stderr);
    assert_contains(&text, "\"l2.tar\"");
    assert_contains(&text, "leads outside the image");
    assert!(env.container("linked").is_none());
}

/// The layer directories container `name`'s bundle records (`image.json`).
fn layers_of(env: &ContainerEnv, name: &str) -> Vec<std::path::PathBuf> {
    let record: serde_json::Value = serde_json::from_slice(
        &fs::read(env.bundle(name).join("image.json")).expect("the bundle records its image"),
    )
    .expect("image.json parses");
    record["lowers"]
        .as_array()
        .expect("lowers")
        .iter()
        .map(|l| std::path::PathBuf::from(l.as_str().expect("a path")))
        .collect()
}

/// `gitvisor image prune` removes the layers of an image no container uses any more (its
/// container was pruned) and keeps those of a running container; `--dry-run` removes
/// nothing; both report the bytes; the kept container still runs and plans clean.
#[test]
fn image_prune_removes_an_unused_image_and_keeps_one_in_use() {
    let Some((env, images)) = ContainerEnv::new("img_prune") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let deep = layered_layout(dir.path(), 3);
    let manifests = Manifests::new();
    manifests.write(
        "keep.yaml",
        &ContainerEnv::container_manifest(
            "keep",
            &format!("  image: {}:v1\n", images.layout.display()),
        ),
    );
    manifests.write(
        "gone.yaml",
        &ContainerEnv::container_manifest("gone", &format!("  image: {}\n", deep.display())),
    );
    env.apply(manifests.path(), 0);
    let kept = layers_of(&env, "keep");
    let unused: Vec<_> = layers_of(&env, "gone")
        .into_iter()
        .filter(|l| !kept.contains(l))
        .collect();
    assert!(!unused.is_empty(), "the two images share every layer");

    manifests.remove("gone.yaml");
    env.gitvisor([
        std::ffi::OsStr::new("apply"),
        manifests.path().as_os_str(),
        std::ffi::OsStr::new("--prune"),
    ])
    .expect_code(0);
    let prune = |extra: &[&str]| {
        let mut args = vec!["image", "prune", "--output", "json"];
        args.extend_from_slice(extra);
        env.gitvisor(args).expect_code(0).json()
    };
    let dry = prune(&["--dry-run"]);
    assert_eq!(dry["dryRun"], true, "{dry:#}");
    assert!(dry["bytesFreed"].as_u64().unwrap() > 0, "{dry:#}");
    assert!(
        unused.iter().all(|l| l.is_dir()),
        "a dry run removes nothing"
    );

    let report = prune(&[]);
    let removed: Vec<&str> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "layer")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for layer in &unused {
        let hex = layer.file_name().unwrap().to_str().unwrap();
        assert!(removed.contains(&hex), "{hex} not in {report:#}");
        assert!(!layer.exists(), "{} is still there", layer.display());
    }
    for layer in &kept {
        assert!(
            layer.is_dir(),
            "{} of the running container went",
            layer.display()
        );
    }
    assert!(report["bytesFreed"].as_u64().unwrap() > 0, "{report:#}");
    eprintln!(
        "image prune removed {} items, {} bytes",
        report["removed"].as_array().unwrap().len(),
        report["bytesFreed"]
    );
    assert_eq!(
        report["bytesFreed"], dry["bytesFreed"],
        "the dry run said the same"
    );
    env.exec("keep", &["true"]).expect_code(0);

    // Text: one line a removal, then the total; nothing left to remove.
    let text = env.gitvisor(["image", "prune"]).expect_code(0);
    assert_contains(
        &text.stdout,
        "removed 0 items, 0 bytes freed; 1 layer in use kept",
    );
}
