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

/// How long an apply that copies or boots may take on a loaded 2-core machine (the
/// harness's default deadline is for plain applies).
const SLOW: Duration = Duration::from_secs(300);

/// `apply DIR` under [`SLOW`].
fn slow_apply(env: &TestEnv, manifests: &Manifests) -> gitvisor_e2e::Outcome {
    gitvisor_e2e::run_command_within(env.gitvisor_command(["apply", manifests.path_str()]), SLOW)
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
    use std::io::Write as _;
    let chunk: Vec<u8> = (0..MIB.min(size)).map(|i| (i % 251) as u8 | 1).collect();
    let mut file = std::io::BufWriter::new(fs::File::create(path).expect("create source image"));
    let mut first = chunk.clone();
    first[..marker.len()].copy_from_slice(marker.as_bytes());
    file.write_all(&first).expect("write source image");
    for _ in 1..size.div_ceil(MIB) {
        file.write_all(&chunk).expect("write source image");
    }
    file.flush().expect("write source image");
}

/// Whether two files hold the same bytes (`cmp`).
fn same_bytes(a: &Path, b: &Path) -> bool {
    Command::new("cmp")
        .arg("-s")
        .args([a, b])
        .status()
        .expect("cmp runs")
        .success()
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
    let next = slow_apply(&env, &manifests).expect_code(0);
    assert_contains(&next.stdout, "Volume/v");
    assert!(!partial.exists());
    assert!(same_bytes(&path, &source), "the copy is complete");
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
    slow_apply(&env, &manifests).expect_code(0);
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
    slow_apply(&env, &manifests).expect_code(0);
    let cmdline = guard.cmdline("reader").expect("the guest runs").join(" ");
    assert_contains(&cmdline, "format=qcow2");
    let serial = guard.serial("reader");
    let boot = Duration::from_secs(240);
    let read = serial.wait_for("GV-READ", 0, boot);
    assert_contains(&read, "BASE-FOR-GUEST!!");
    serial.wait_for("GV-WROTE", 0, boot);
    manifests.remove("vm.yaml");
    slow_apply(&env, &manifests).expect_code(0);
    let clone: PathBuf = dir.join("guest-disk.qcow2");
    assert!(contents(&clone, "qcow2").starts_with(b"GV-GUEST-WROTE-THIS"));
    assert_eq!(sha256(&base), base_sum, "the base file is unchanged");
    assert!(contents(&base, "qcow2").starts_with(b"BASE-FOR-GUEST!!"));
}

/// A small HTTPS server for the URL scenarios, in the test's namespace: `/good/NAME`
/// serves the file with `Range` support; `/truncate/NAME` ends a whole-file answer half
/// way (a ranged one is served whole); `/stall/NAME` sends the headers and 64 KiB, then
/// nothing. Every request line and `Range` header is appended to `requests.log`.
const SERVER: &str = r#"
import http.server, os, ssl, sys, time
root, cert, key, log = sys.argv[1:5]
class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        mode, name = self.path.split('?')[0].strip('/').split('/', 1)
        rng = self.headers.get('Range')
        with open(log, 'a') as f: f.write(f"{self.path} range={rng}\n")
        data = open(os.path.join(root, name), 'rb').read()
        start = int(rng.split('=')[1].split('-')[0]) if rng else 0
        if rng:
            self.send_response(206)
            self.send_header('Content-Range', f"bytes {start}-{len(data)-1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if mode == 'truncate' and not rng:
            self.wfile.write(body[:len(body)//2]); self.wfile.flush()
            self.close_connection = True
            return
        if mode == 'stall':
            self.wfile.write(body[:65536]); self.wfile.flush(); time.sleep(600)
        self.wfile.write(body)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A test CA and a certificate for 127.0.0.1 signed by it, made with openssl.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=gitvisor e2e test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// The server, killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn images_from_a_url_are_verified_cached_resumed_and_never_wait_on_a_stalled_server() {
    let Some(env) = ready("file-vol-url") else {
        return;
    };
    for tool in ["python3", "openssl"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip(
                &gitvisor_e2e::current_test_name("file-vol-url"),
                &format!("{tool} is missing"),
            );
            return;
        }
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let served = scratch.path().join("served");
    fs::create_dir_all(&served).expect("served dir");
    source_image(&served.join("image.raw"), "FROM-THE-WEB", 8 * MIB);
    let digest = sha256(&served.join("image.raw"));
    let (ca, cert, key) = test_ca(scratch.path());
    fs::write(scratch.path().join("server.py"), SERVER).expect("write server");
    let log = scratch.path().join("requests.log");
    let status = Command::new("ip")
        .args(["-n", env.netns(), "link", "set", "lo", "up"])
        .status()
        .expect("ip runs");
    assert!(status.success());
    let mut child = Command::new("ip")
        .args(["netns", "exec", env.netns(), "python3"])
        .arg(scratch.path().join("server.py"))
        .args([&served, &cert, &key, &log])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("server stdout")),
        &mut port,
    )
    .expect("the server prints its port");
    let _server = Server(child);
    let base = format!("https://127.0.0.1:{}", port.trim());
    let dir = scratch.path().join("volumes");
    let manifests = Manifests::new();
    let from = |name: &str, url: &str, sha: &str| {
        manifests.write(
            &format!("{name}.yaml"),
            &volume(
                name,
                &[],
                &format!(
                    "  directory: {}\n  format: raw\n  size: 8MiB\n  source: {{url: \"{url}\"{sha}}}\n",
                    dir.display()
                ),
            ),
        );
    };
    let apply = |stall: &str| {
        let mut command = env.gitvisor_command(["apply", manifests.path_str()]);
        command
            .env("SSL_CERT_FILE", &ca)
            .env("GITVISOR_DOWNLOAD_STALL_TIMEOUT", stall);
        gitvisor_e2e::run_command(command)
    };
    let cache = env
        .state_dir()
        .join("images")
        .join(format!("sha256-{digest}"));
    let requests = || fs::read_to_string(&log).unwrap_or_default();

    // A good digest: downloaded once for two volumes, verified, cached, copied in.
    from(
        "web1",
        &format!("{base}/good/image.raw"),
        &format!(", sha256: {digest}"),
    );
    from(
        "web2",
        &format!("{base}/good/image.raw"),
        &format!(", sha256: {digest}"),
    );
    let good = apply("30s");
    assert_eq!(good.code, Some(0), "{good}");
    assert_eq!(sha256(&dir.join("web1.raw")), digest);
    assert_eq!(sha256(&dir.join("web2.raw")), digest);
    assert_eq!(sha256(&cache), digest);
    assert_eq!(
        requests().lines().count(),
        1,
        "downloaded once: {}",
        requests()
    );

    // A wrong digest: an error naming the URL and both digests, and no volume.
    let wrong = "0".repeat(64);
    from(
        "bad",
        &format!("{base}/good/image.raw?bad"),
        &format!(", sha256: {wrong}"),
    );
    let refused = apply("30s");
    assert_eq!(refused.code, Some(1), "{refused}");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert_contains(&said, &format!("{base}/good/image.raw?bad"));
    assert_contains(&said, &wrong);
    assert_contains(&said, &digest);
    assert!(!dir.join("bad.raw").exists());
    manifests.remove("bad.yaml");

    // A truncated download is resumed with a Range request and completes.
    fs::copy(served.join("image.raw"), served.join("other.raw")).expect("copy");
    let mut other = fs::read(served.join("other.raw")).expect("read");
    other[..12].copy_from_slice(b"SECOND-IMAGE");
    fs::write(served.join("other.raw"), &other).expect("write");
    let other_digest = sha256(&served.join("other.raw"));
    from(
        "cut",
        &format!("{base}/truncate/other.raw"),
        &format!(", sha256: {other_digest}"),
    );
    let mut resumed = apply("30s");
    if resumed.code != Some(0) {
        // The first apply failed on the cut transfer; the next resumes it.
        assert_contains(&format!("{resumed}"), "resumes from there");
        resumed = apply("30s");
    }
    assert_eq!(resumed.code, Some(0), "{resumed}");
    assert_eq!(sha256(&dir.join("cut.raw")), other_digest);
    assert!(
        requests().contains("/truncate/other.raw range=bytes=4194304-"),
        "resumed from half way: {}",
        requests()
    );

    // A server that stalls: the apply fails within its stall timeout, not never.
    fs::write(served.join("third.raw"), vec![3u8; 4 * MIB as usize]).expect("write");
    let third = sha256(&served.join("third.raw"));
    from(
        "slow",
        &format!("{base}/stall/third.raw"),
        &format!(", sha256: {third}"),
    );
    // (run_command's own deadline fails the test if apply waits on the server.)
    let stalled = apply("2s");
    assert_eq!(stalled.code, Some(1), "{stalled}");
    assert_contains(&stalled.stdout, "after 65536 bytes");
    assert!(!dir.join("slow.raw").exists());
}
