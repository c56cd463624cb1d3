//! Containers end to end: the real gitvisor binary, real runc, overlayfs and cgroups, in
//! a network namespace per test (see `gitvisor_e2e::containers` for why `nsenter`).
//!
//! What the host has is read independently of gitvisor: `runc list`/`runc exec` under
//! the test's runtime root, `ip -n NS`, the cgroup file system.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use gitvisor_e2e::containers::ContainerEnv;
use gitvisor_e2e::controller::Controller;
use gitvisor_e2e::{Manifests, assert_contains, bridge_manifest, change};

const BRIDGE: &str = "br-ctr";

fn bridge() -> String {
    bridge_manifest(BRIDGE, &[], "  addresses: [10.77.0.1/24]\n")
}

fn pid_of(env: &ContainerEnv, name: &str) -> u64 {
    let (status, pid) = env.container(name).expect("the container exists");
    assert_eq!(status, "running", "{name} should run");
    pid
}

/// One container on a managed bridge: it pings the bridge's address, sees its env and
/// command, a read-only hostPath mount, and its memory limit is in its cgroup. A
/// second plan is clean; `gitvisor logs` shows its output.
#[test]
fn a_container_on_a_bridge_with_env_mount_and_memory_limit() {
    let Some((env, images)) = ContainerEnv::new("ctr_basic") else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    fs::write(shared.path().join("hello.txt"), "from the host\n").unwrap();
    let manifests = Manifests::new();
    manifests.write("bridge.yaml", &bridge());
    manifests.write(
        "web.yaml",
        &ContainerEnv::container_manifest(
            "web",
            &format!(
                "  image: {}\n  command: [sh, -c, 'echo greeting=$GREETING; exec sleep 100000']\n  env: {{GREETING: hello-e2e}}\n  mounts:\n  - {{target: /data, hostPath: {}, readOnly: true}}\n  resources: {{memory: 48MiB, pids: 64}}\n  network: {{bridge: {BRIDGE}, address: 10.77.0.2/24, gateway: 10.77.0.1}}\n  stopTimeout: 1s\n",
                images.rootfs.display(),
                shared.path().display()
            ),
        ),
    );
    env.apply(manifests.path(), 0);
    let pid = pid_of(&env, "web");

    env.exec("web", &["ping", "-c", "1", "-W", "5", "10.77.0.1"])
        .expect_code(0);
    let route = env.exec("web", &["ip", "route"]).expect_code(0);
    assert_contains(&route.stdout, "default via 10.77.0.1");
    let data = env.exec("web", &["cat", "/data/hello.txt"]).expect_code(0);
    assert_eq!(data.stdout, "from the host\n");
    // Read-only: writing fails inside.
    let write = env.exec("web", &["touch", "/data/new"]);
    assert_ne!(write.code, Some(0), "a readOnly mount must refuse writes");
    assert_eq!(
        env.exec("web", &["sh", "-c", "echo $GREETING"])
            .expect_code(0)
            .stdout,
        "hello-e2e\n"
    );
    assert_eq!(env.memory_limit("web"), (48u64 << 20).to_string());
    // The veth's host end is on the bridge and marked.
    let links = env_links(&env);
    let veth = links
        .iter()
        .find(|l| l["ifalias"] == "gitvisor:container/web")
        .expect("a veth marked for the container");
    assert_eq!(veth["master"], BRIDGE);

    let logs = env.gitvisor(["logs", "web"]).expect_code(0);
    assert_contains(&logs.stdout, "greeting=hello-e2e");
    let plan = env.plan_json(manifests.path());
    assert_eq!(change(&plan, "Container", "web")["action"], "noop");
    assert_eq!(
        pid_of(&env, "web"),
        pid,
        "a no-op plan leaves the process alone"
    );
}

fn env_links(env: &ContainerEnv) -> Vec<serde_json::Value> {
    let mut command = std::process::Command::new("ip");
    command.args(["-n", env.netns(), "-d", "-j", "link", "show"]);
    let out = gitvisor_e2e::run_command(command).expect_code(0);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The lifecycle on an OCI layout made with umoci: killed → restarted (exit code and
/// restart count in status); `state: Stopped` stops it; back to Running starts it; an
/// image change (a docker-archive of the same image) replaces it; pruning removes the
/// container and its veth.
#[test]
fn restart_stop_replace_and_prune() {
    let Some((env, images)) = ContainerEnv::new("ctr_life") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("bridge.yaml", &bridge());
    let spec = |image: &str, state: &str| {
        ContainerEnv::container_manifest(
            "app",
            &format!(
                "  image: {image}\n  state: {state}\n  stopTimeout: 1s\n  network: {{bridge: {BRIDGE}, address: 10.77.0.3/24}}\n"
            ),
        )
    };
    let layout_v1 = format!("{}:v1", images.layout.display());
    manifests.write("app.yaml", &spec(&layout_v1, "Running"));
    env.apply(manifests.path(), 0);
    let first = pid_of(&env, "app");
    let logs = env.gitvisor(["logs", "app"]).expect_code(0);
    assert_contains(&logs.stdout, "image v1");
    assert_eq!(
        env.exec("app", &["sh", "-c", "echo $IMAGE_TAG"])
            .expect_code(0)
            .stdout,
        "v1\n"
    );

    // Killed from outside: the next apply restarts it (restartPolicy Always).
    nix_kill(first);
    env.wait_for("the container to stop", Duration::from_secs(30), || {
        env.container("app")
            .is_some_and(|(status, _)| status == "stopped")
    });
    let plan = env.plan_json(manifests.path());
    let restart = change(&plan, "Container", "app");
    assert_eq!(restart["action"], "update");
    assert_contains(restart["reason"].as_str().unwrap(), "exited with code 137");
    env.apply(manifests.path(), 0);
    let second = pid_of(&env, "app");
    assert_ne!(first, second);
    let status = env
        .gitvisor(["status", "--output", "json"])
        .expect_code(0)
        .json();
    let app = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "app")
        .unwrap()
        .clone();
    let note = app["liveNote"].as_str().unwrap_or_default();
    assert_contains(note, "1 restart");
    assert_contains(note, "last exit code 137");

    // Stopped, then Running again.
    manifests.write("app.yaml", &spec(&layout_v1, "Stopped"));
    env.apply(manifests.path(), 0);
    let (status, _) = env.container("app").unwrap();
    assert_eq!(status, "stopped");
    manifests.write("app.yaml", &spec(&layout_v1, "Running"));
    env.apply(manifests.path(), 0);
    pid_of(&env, "app");

    // Another image: replaced.
    let archive = images.docker_archive.display().to_string();
    manifests.write("app.yaml", &spec(&archive, "Running"));
    let plan = env.plan_json(manifests.path());
    assert_eq!(change(&plan, "Container", "app")["action"], "replace");
    env.apply(manifests.path(), 0);
    pid_of(&env, "app");
    assert_eq!(
        env.exec("app", &["sh", "-c", "echo $IMAGE_TAG"])
            .expect_code(0)
            .stdout,
        "v1\n"
    );

    // Pruned: container, bundle and veth gone; the bridge stays.
    manifests.remove("app.yaml");
    env.gitvisor([
        std::ffi::OsStr::new("apply"),
        manifests.path().as_os_str(),
        std::ffi::OsStr::new("--prune"),
    ])
    .expect_code(0);
    assert!(env.container("app").is_none());
    assert!(!env.bundle("app").exists());
    assert!(
        !env_links(&env)
            .iter()
            .any(|l| l["ifalias"] == "gitvisor:container/app"),
        "the veth went with the container"
    );
    assert!(env_links(&env).iter().any(|l| l["ifname"] == BRIDGE));
}

fn nix_kill(pid: u64) {
    gitvisor_e2e::containers::must("kill", ["-KILL", &pid.to_string()]);
}

/// gitvisor is not the containers' parent: killed with SIGKILL in the middle of an apply
/// of several containers, the ones it started keep running, and the next apply (a new
/// gitvisor process) finds them in one list, finishes the rest, and plans clean.
#[test]
fn killed_mid_apply_then_restarted_still_manages_its_containers() {
    let Some((env, images)) = ContainerEnv::new("ctr_crash") else {
        return;
    };
    const COUNT: usize = 6;
    let manifests = Manifests::new();
    for i in 0..COUNT {
        manifests.write(
            &format!("c{i}.yaml"),
            &ContainerEnv::container_manifest(
                &format!("c{i}"),
                &format!(
                    "  image: {}\n  command: [sleep, '100000']\n",
                    images.rootfs.display()
                ),
            ),
        );
    }
    let mut child = env
        .gitvisor_command([
            std::ffi::OsStr::new("apply"),
            manifests.path().as_os_str(),
            std::ffi::OsStr::new("--concurrency"),
            std::ffi::OsStr::new("1"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the runtime has the first container (seen from runc's side).
    let mut killed = false;
    env.wait_for(
        "the first container or the end of apply",
        Duration::from_secs(60),
        || {
            if !env.containers().is_empty() {
                // nsenter execs gitvisor in place: this is gitvisor's pid.
                let _ = child.kill();
                killed = true;
                return true;
            }
            child.try_wait().unwrap().is_some()
        },
    );
    let _ = child.wait();
    assert!(killed, "apply finished before it could be killed part-way");
    let survivors = env.containers();
    assert!(
        survivors.len() < COUNT,
        "the kill came after every container was made: {survivors:?}"
    );

    env.apply(manifests.path(), 0);
    let after = env.containers();
    assert_eq!(after.len(), COUNT, "{after:?}");
    assert!(
        after.iter().all(|(_, status, _)| status == "running"),
        "{after:?}"
    );
    let pids: Vec<u64> = after.iter().map(|(_, _, pid)| *pid).collect();

    // Another gitvisor process, nothing declared differently: nothing to do, and the
    // containers it did not start are still its own.
    let plan = env.plan_json(manifests.path());
    for i in 0..COUNT {
        assert_eq!(
            change(&plan, "Container", &format!("c{i}"))["action"],
            "noop"
        );
    }
    let again: Vec<u64> = env.containers().iter().map(|(_, _, pid)| *pid).collect();
    assert_eq!(pids, again);
}

/// Images the store must refuse: a layer with a `../` entry, a layer whose bytes do not
/// match its digest. The apply fails saying why; no container is made, nothing escapes.
#[test]
fn hostile_and_corrupt_images_are_rejected() {
    let Some((env, images)) = ContainerEnv::new("ctr_reject") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "bad.yaml",
        &ContainerEnv::container_manifest(
            "bad",
            &format!("  image: {}\n  command: [sh]\n", images.hostile.display()),
        ),
    );
    let outcome = env.apply(manifests.path(), 1);
    let text = format!("{}{}", outcome.stdout, outcome.stderr);
    assert_contains(&text, "\"../escape\" is rejected");
    assert!(env.container("bad").is_none());
    let parent = images.hostile.parent().unwrap();
    assert!(!parent.join("escape").exists());
    assert!(
        !env.state_dir()
            .join("containers/images/layers/escape")
            .exists()
    );

    manifests.write(
        "bad.yaml",
        &ContainerEnv::container_manifest(
            "bad",
            &format!("  image: {}:v1\n", images.corrupt.display()),
        ),
    );
    let outcome = env.apply(manifests.path(), 1);
    let text = format!("{}{}", outcome.stdout, outcome.stderr);
    assert_contains(&text, "should have digest");
    assert!(env.container("bad").is_none());
    let layers = env.state_dir().join("containers/images/layers/sha256");
    let unpacked = fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0);
    assert_eq!(unpacked, 0, "nothing unverified is kept in the store");
}

/// A health check that fails: the supervisor marks the container unhealthy and stops it;
/// the next apply restarts it (restartPolicy OnFailure), with the reason in the plan.
#[test]
fn a_failing_health_check_restarts_the_container() {
    let Some((env, images)) = ContainerEnv::new("ctr_health") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "sick.yaml",
        &ContainerEnv::container_manifest(
            "sick",
            &format!(
                "  image: {}\n  command: [sleep, '100000']\n  restartPolicy: OnFailure\n  healthCheck: {{command: [test, -e, /tmp/healthy], interval: 200ms, timeout: 5s, retries: 2}}\n",
                images.rootfs.display()
            ),
        ),
    );
    env.apply(manifests.path(), 0);
    // It may already be stopped: the check fails from the start.
    assert!(env.container("sick").is_some());
    // runc reports it stopped a moment before its supervisor records the exit.
    env.wait_for(
        "the unhealthy container to be stopped and its exit recorded",
        Duration::from_secs(60),
        || {
            env.container("sick")
                .is_some_and(|(status, _)| status == "stopped")
                && env.bundle("sick").join("exit.json").exists()
        },
    );
    let health: serde_json::Value =
        serde_json::from_slice(&fs::read(env.bundle("sick").join("health.json")).unwrap()).unwrap();
    assert_eq!(health["status"], "unhealthy");
    let plan = env.plan_json(manifests.path());
    let sick = change(&plan, "Container", "sick");
    assert_eq!(sick["action"], "update");
    assert_contains(sick["reason"].as_str().unwrap(), "was stopped as unhealthy");
    env.apply(manifests.path(), 0);
    // Restarted (and, its check failing still, soon stopped again).
    let restarts = fs::read_to_string(env.bundle("sick").join("restarts")).unwrap();
    assert_eq!(restarts.trim(), "1");
    assert!(env.container("sick").is_some());
}

/// A container as a different user, resolved from the image's /etc/passwd, with a
/// working directory; the files it writes land in its writable layer, not the image.
/// Without `network` it has its own namespace with only loopback, up.
#[test]
fn user_and_working_dir_from_the_declaration() {
    let Some((env, images)) = ContainerEnv::new("ctr_user") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "u.yaml",
        &ContainerEnv::container_manifest(
            "u",
            &format!(
                "  image: {}\n  command: [sh, -c, 'id -u > /tmp/uid; exec sleep 100000']\n  user: app\n  workingDir: /tmp\n",
                images.rootfs.display()
            ),
        ),
    );
    env.apply(manifests.path(), 0);
    pid_of(&env, "u");
    env.wait_for(
        "the container to write its uid",
        Duration::from_secs(30),
        || env.exec("u", &["cat", "/tmp/uid"]).code == Some(0),
    );
    assert_eq!(env.exec("u", &["cat", "/tmp/uid"]).stdout, "1000\n");
    assert_eq!(env.exec("u", &["sh", "-c", "pwd"]).stdout, "/tmp\n");
    // No `network`: an isolated namespace with loopback only, and loopback up.
    let links = env.exec("u", &["ip", "-o", "link"]).expect_code(0).stdout;
    assert_eq!(links.lines().count(), 1, "{links}");
    assert_contains(&links, "lo: <LOOPBACK,UP");
    assert!(
        !images.rootfs.join("tmp/uid").exists(),
        "the image's directory is a read-only lower layer"
    );
}

/// A real registry on loopback (Debian's docker-registry) holding an image pushed with
/// skopeo: pulled by tag and by digest over plain HTTP (declared insecure), the layers
/// fetched once and shared; without the declaration gitvisor insists on HTTPS.
#[test]
fn pulled_from_a_registry_by_tag_and_by_digest() {
    let Some((env, images)) = ContainerEnv::new("ctr_registry") else {
        return;
    };
    let Some(registry) = gitvisor_e2e::containers::Registry::start(&env, "ctr_registry") else {
        return;
    };
    let source = format!("oci:{}:v1", images.layout.display());
    let digest = registry.push(&env, &source, "team/app:v1");
    let address = gitvisor_e2e::containers::REGISTRY_ADDRESS;
    let manifests = Manifests::new();
    manifests.write(
        "tagged.yaml",
        &ContainerEnv::container_manifest("tagged", &format!("  image: {address}/team/app:v1\n")),
    );
    manifests.write(
        "pinned.yaml",
        &ContainerEnv::container_manifest(
            "pinned",
            &format!("  image: {address}/team/app@{digest}\n"),
        ),
    );

    // Not declared insecure: HTTPS only, which this registry does not speak.
    let refused = env.gitvisor([std::ffi::OsStr::new("apply"), manifests.path().as_os_str()]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert_contains(
        &refused.stdout,
        &format!("GET https://{address}/v2/team/app/manifests/"),
    );
    assert!(env.container("tagged").is_none());

    let mut apply =
        env.gitvisor_command([std::ffi::OsStr::new("apply"), manifests.path().as_os_str()]);
    apply.env("GITVISOR_INSECURE_REGISTRIES", address);
    gitvisor_e2e::run_command(apply).expect_code(0);
    pid_of(&env, "tagged");
    pid_of(&env, "pinned");
    assert_contains(
        &env.gitvisor(["logs", "pinned"]).expect_code(0).stdout,
        "image v1",
    );
    // One image, pulled once: its layer is unpacked once in the store.
    let layers = env.state_dir().join("containers/images/layers/sha256");
    assert_eq!(fs::read_dir(&layers).unwrap().count(), 1);
    let plan = env.plan_json(manifests.path());
    assert_eq!(change(&plan, "Container", "tagged")["action"], "noop");
    assert_eq!(change(&plan, "Container", "pinned")["action"], "noop");
}

/// `gitvisor logs -f` follows what the container writes, and the log is rotated past
/// 10 MiB (the supervisor keeps writing to a fresh file; `logs` prints both).
#[test]
fn logs_follow_and_rotate() {
    use std::io::BufRead;
    let Some((env, images)) = ContainerEnv::new("ctr_logs") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write(
        "chatty.yaml",
        &ContainerEnv::container_manifest(
            "chatty",
            &format!(
                "  image: {}\n  command: [sh, -c, 'echo first; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done']\n  stopTimeout: 1s\n",
                images.rootfs.display()
            ),
        ),
    );
    env.apply(manifests.path(), 0);
    let mut follower = env
        .gitvisor_command(["logs", "chatty", "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // Lines written after `logs -f` started arrive: wait for a tick well past the start.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l == "tick 20") {
        assert!(
            std::time::Instant::now() < deadline,
            "logs -f printed only {seen:?}"
        );
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen[0], "first");

    // 11 MiB more from inside the container: the log rotates.
    let mut big = std::process::Command::new("runc");
    big.arg("--root")
        .arg(env.runc_root())
        .args(["exec", "chatty", "sh", "-c", "i=0; while [ $i -lt 11 ]; do yes xxxxxxxxxxxxxxx | head -c 1048576 > /proc/1/fd/1; i=$((i+1)); done"]);
    gitvisor_e2e::run_command(big).expect_code(0);
    let logs = env.state_dir().join("containers/logs");
    env.wait_for("the log to rotate", Duration::from_secs(60), || {
        logs.join("chatty.log.1").exists()
    });
    let all = env.gitvisor(["logs", "chatty"]).expect_code(0).stdout;
    assert!(
        all.starts_with("first\n"),
        "the rotated file is printed first"
    );
}

/// The events of `gitvisor events` (from the running controller's API) about container
/// `name`, as (level, message).
fn container_events(env: &ContainerEnv, name: &str) -> Vec<(String, String)> {
    let resource = format!("Container/{name}");
    env.gitvisor(["events", "-n", "500", "--output", "json"])
        .expect_code(0)
        .stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|err| panic!("events --output json: not JSON ({err}): {line}"))
        })
        .filter(|event| event["resource"] == resource.as_str())
        .map(|event| {
            (
                event["level"].as_str().unwrap_or_default().to_owned(),
                event["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits for an event about `name` whose message contains every one of `parts`.
#[track_caller]
fn wait_for_event(env: &ContainerEnv, name: &str, parts: &[&str]) -> (String, String) {
    let mut found = None;
    env.wait_for(
        &format!("an event about {name} saying {parts:?}"),
        Duration::from_secs(90),
        || {
            found = container_events(env, name)
                .into_iter()
                .find(|(_, message)| parts.iter().all(|part| message.contains(part)));
            found.is_some()
        },
    );
    found.expect("the event was found")
}

/// The controller watches its containers between reconciles (the resync is an hour
/// away here, so nothing below waits for it):
/// - a failing health check shows as events: the verdict, the unhealthy stop, and the
///   restart the controller makes at once under `restartPolicy: OnFailure`, then the
///   next one when its backoff ends;
/// - a container under `Never` that exits stays down, and the event and `status` say so;
/// - a container whose supervisor AND process are SIGKILLed (nobody records its exit)
///   is restarted by the controller, with an event saying so.
///
/// The controller runs with `NOTIFY_SOCKET` set, as under systemd: runc must not see it
/// (it would make every `runc run --detach` wait for the container's own `READY=1`).
#[test]
fn the_controller_reports_health_and_restarts_dead_containers_before_the_resync() {
    let Some((env, images)) = ContainerEnv::new("ctr_ctl") else {
        return;
    };
    let rootfs = images.rootfs.display().to_string();
    let manifests = Manifests::new();
    manifests.write(
        "sick.yaml",
        &ContainerEnv::container_manifest(
            "sick",
            &format!(
                "  image: {rootfs}\n  command: [sleep, '100000']\n  restartPolicy: OnFailure\n  healthCheck: {{command: [test, -e, /tmp/healthy], interval: 300ms, timeout: 5s, retries: 2}}\n"
            ),
        ),
    );
    manifests.write(
        "once.yaml",
        &ContainerEnv::container_manifest(
            "once",
            &format!(
                "  image: {rootfs}\n  command: [sh, -c, 'until test -e /go; do sleep 0.1; done; exit 3']\n  restartPolicy: Never\n"
            ),
        ),
    );
    manifests.write(
        "app.yaml",
        &ContainerEnv::container_manifest(
            "app",
            &format!("  image: {rootfs}\n  command: [sleep, '100000']\n"),
        ),
    );
    let mut controller = Controller::spawn_command(env.gitvisor_command([
        "run",
        "--source",
        manifests.path_str(),
        "--resync",
        "1h",
    ]));
    controller.wait_ready();

    // The health check fails from the start: unhealthy, stopped, restarted at once.
    let (level, _) = wait_for_event(&env, "sick", &["health starting → unhealthy"]);
    assert_eq!(level, "Warning");
    wait_for_event(
        &env,
        "sick",
        &[
            "was stopped as unhealthy (exit code 137)",
            "restartPolicy OnFailure: the controller restarts it",
        ],
    );
    // Told with its pid when it is seen running, without when it died again before the
    // controller's next look (its checks fail from the start, and looks come between
    // reconciles).
    wait_for_event(&env, "sick", &["running again (restart 1"]);
    // Failing again: the second restart waits for its backoff (1 s after the exit;
    // the event says how long is left, or "now" on a machine slow enough to look
    // later), then comes by itself.
    wait_for_event(&env, "sick", &["restart 2)"]);
    wait_for_event(&env, "sick", &["running again (restart 2"]);

    // Never: the exit is told, and the container stays down.
    env.exec("once", &["touch", "/go"]).expect_code(0);
    let (level, _) = wait_for_event(
        &env,
        "once",
        &["exited with code 3; restartPolicy Never leaves it stopped"],
    );
    assert_eq!(level, "Warning");
    assert_eq!(
        env.container("once").map(|(status, _)| status).as_deref(),
        Some("stopped")
    );
    let status = env
        .gitvisor(["status", "--output", "json"])
        .expect_code(0)
        .json();
    let once = status["resources"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"] == "once"))
        .unwrap_or_else(|| panic!("the controller's status lists once: {status}"));
    assert_contains(
        once["live"].as_str().unwrap_or_default(),
        "exited with code 3; restartPolicy Never leaves it stopped",
    );

    // Supervisor and process killed: nobody records the exit; the controller restarts it.
    let pid = pid_of(&env, "app");
    let supervisor = fs::read_to_string(env.bundle("app").join("supervisor.pid"))
        .expect("the supervisor records its pid")
        .trim()
        .to_owned();
    let killed = std::time::Instant::now();
    gitvisor_e2e::containers::must("kill", ["-KILL", &supervisor]);
    nix_kill(pid);
    let (level, _) = wait_for_event(
        &env,
        "app",
        &[
            "its exit was not recorded (its supervisor is gone)",
            "restartPolicy Always: the controller restarts it now (restart 1)",
        ],
    );
    assert_eq!(level, "Warning");
    wait_for_event(&env, "app", &["running again (restart 1, pid "]);
    // The goal is a second (the resync is an hour away); asserted generously for slow
    // machines, the time printed.
    let restarted = killed.elapsed();
    eprintln!(
        "containers: a killed container was running again {restarted:?} after the kill (goal: 1 s)"
    );
    assert!(
        restarted < std::time::Duration::from_secs(10),
        "restarted only {restarted:?} after the kill"
    );
    let new_pid = pid_of(&env, "app");
    assert_ne!(new_pid, pid);
    assert_eq!(
        fs::read_to_string(env.bundle("app").join("restarts"))
            .unwrap()
            .trim(),
        "1"
    );
    // Supervised again: the new supervisor records its pid.
    let again = fs::read_to_string(env.bundle("app").join("supervisor.pid")).unwrap();
    assert_ne!(again.trim(), supervisor);
    assert!(
        std::path::Path::new(&format!("/proc/{}", again.trim())).exists(),
        "the new supervisor runs"
    );

    // Restarts under the restart policy are not drift: nobody changed the host.
    let events = env.gitvisor(["events", "-n", "500"]).expect_code(0).stdout;
    assert!(!events.contains("drift repaired"), "{events}");

    let stopped = controller.terminate();
    assert!(stopped.success(), "SIGTERM is a clean stop: {stopped}");
}

/// The size of a process's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// A container under `memory: 32MiB` printing 200 MB without a newline: its supervisor
/// (which runs outside the container's cgroup) stays small, the line is logged in
/// pieces marked as continued, every log file stays within the 10 MiB rotation size and
/// at most 3 rotated generations are kept; a prune removes the logs.
#[test]
fn a_flood_without_newlines_keeps_the_supervisor_small_and_the_logs_bounded() {
    let Some((env, images)) = ContainerEnv::new("ctr_flood") else {
        return;
    };
    let manifests = Manifests::new();
    // What stays declared when the container is pruned.
    manifests.write("bridge.yaml", &bridge());
    manifests.write(
        "flood.yaml",
        &ContainerEnv::container_manifest(
            "flood",
            &format!(
                "  image: {}\n  command: [sh, -c, 'yes | tr -d \"\\n\" | head -c 200000000; echo; echo flood-done; exec sleep 100000']\n  resources: {{memory: 32MiB}}\n  stopTimeout: 1s\n",
                images.rootfs.display()
            ),
        ),
    );
    env.apply(manifests.path(), 0);
    let logs = env.state_dir().join("containers/logs");
    let log = logs.join("flood.log");
    env.wait_for(
        "the container to finish its flood",
        Duration::from_secs(300),
        || {
            fs::read(&log)
                .map(|bytes| bytes.ends_with(b"flood-done\n"))
                .unwrap_or(false)
        },
    );
    let supervisor: u32 = fs::read_to_string(env.bundle("flood").join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let peak = peak_rss_kib(supervisor);
    eprintln!("the supervisor's peak resident memory: {peak} KiB");
    assert!(
        peak < 64 << 10,
        "the supervisor grew to {peak} KiB while logging 200 MB"
    );
    let mut total = 0;
    for entry in fs::read_dir(&logs).unwrap() {
        let entry = entry.unwrap();
        let size = entry.metadata().unwrap().len();
        assert!(
            size <= 10 << 20,
            "{} has {size} bytes, past the 10 MiB rotation size",
            entry.path().display()
        );
        total += size;
    }
    assert!(logs.join("flood.log.3").exists(), "the log was rotated");
    assert!(!logs.join("flood.log.4").exists(), "3 generations are kept");
    assert!(total <= 40 << 20, "{total} bytes of logs");
    let oldest = fs::read(logs.join("flood.log.3")).unwrap();
    let first_piece = oldest.split(|b| *b == b'\n').next().unwrap();
    assert_eq!(first_piece.len(), (16 << 10) + 1, "a piece and its marker");
    assert!(
        first_piece.ends_with(b"y\\"),
        "a piece is marked as continued"
    );

    // Pruned: its logs go with it.
    manifests.remove("flood.yaml");
    env.gitvisor([
        std::ffi::OsStr::new("apply"),
        manifests.path().as_os_str(),
        std::ffi::OsStr::new("--prune"),
    ])
    .expect_code(0);
    assert!(env.container("flood").is_none());
    let left: Vec<_> = fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "logs left after the prune: {left:?}");
}

/// What is left of container `name` on the host: its bundle, writable layer, log files
/// and mounts under the run dir, and the cgroup directories of `scope`
/// (`gitvisor/<hash>`, as its config.json named it) under any hierarchy.
fn leftovers(env: &ContainerEnv, name: &str, scope: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    let bundle = env.bundle(name);
    if bundle.exists() {
        left.push(format!("the bundle {}", bundle.display()));
    }
    let writable = env.state_dir().join("containers/rw").join(name);
    if writable.exists() {
        left.push(format!("the writable layer {}", writable.display()));
    }
    if let Ok(entries) = fs::read_dir(env.state_dir().join("containers/logs")) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}.log")) {
                left.push(format!("the log file {file}"));
            }
        }
    }
    let bundle = bundle.to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    for point in mounts.lines().filter_map(|line| line.split(' ').nth(4)) {
        if point.starts_with(&bundle) {
            left.push(format!("the mount {point}"));
        }
    }
    if let Some(scope) = scope {
        let root = std::path::Path::new("/sys/fs/cgroup");
        let mut hierarchies = vec![root.to_path_buf()];
        hierarchies.extend(fs::read_dir(root).unwrap().flatten().map(|e| e.path()));
        for hierarchy in hierarchies {
            let dir = hierarchy.join(scope);
            if dir.exists() {
                left.push(format!("the cgroup {}", dir.display()));
            }
        }
    }
    left
}

/// A container whose create failed (a command the image lacks: runc never lists it) and
/// that is then removed from the manifests is still found: the plan deletes it, and the
/// prune leaves no bundle, writable layer, mount or log. A running container's prune
/// leaves no cgroup directory of gitvisor's under any hierarchy.
#[test]
fn a_failed_create_then_pruned_and_a_pruned_container_leave_nothing() {
    let Some((env, images)) = ContainerEnv::new("ctr_failed_prune") else {
        return;
    };
    let manifests = Manifests::new();
    let image = images.rootfs.display().to_string();
    manifests.write("bridge.yaml", &bridge());
    manifests.write(
        "keep.yaml",
        &ContainerEnv::container_manifest(
            "keep",
            &format!("  image: {image}\n  command: [sleep, '100000']\n  stopTimeout: 1s\n"),
        ),
    );
    manifests.write(
        "nocmd.yaml",
        &ContainerEnv::container_manifest(
            "nocmd",
            &format!("  image: {image}\n  command: [/nonexistent]\n"),
        ),
    );
    env.apply(manifests.path(), 1);
    assert!(
        env.container("nocmd").is_none(),
        "runc has no such container"
    );
    assert!(
        !leftovers(&env, "nocmd", None).is_empty(),
        "the failed create left its files (what this test is about)"
    );

    manifests.remove("nocmd.yaml");
    let plan = env.plan_json(manifests.path());
    assert_eq!(
        change(&plan, "Container", "nocmd")["action"],
        "delete",
        "{plan:#}"
    );
    let prune = |env: &ContainerEnv| {
        env.gitvisor([
            std::ffi::OsStr::new("apply"),
            manifests.path().as_os_str(),
            std::ffi::OsStr::new("--prune"),
        ])
        .expect_code(0)
    };
    prune(&env);
    let left = leftovers(&env, "nocmd", None);
    assert!(left.is_empty(), "the pruned failed create left {left:#?}");

    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(env.bundle("keep").join("config.json")).unwrap()).unwrap();
    let group = config["linux"]["cgroupsPath"].as_str().unwrap().to_owned();
    let scope = group
        .trim_start_matches('/')
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned();
    manifests.remove("keep.yaml");
    prune(&env);
    assert!(env.container("keep").is_none());
    let left = leftovers(&env, "keep", Some(&scope));
    assert!(left.is_empty(), "the pruned container left {left:#?}");
}

/// The processes whose command line is exactly `args`, on the whole host.
fn processes_running(args: &[&str]) -> usize {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
        .count()
}

/// Health checks that print 1 MiB (more than a pipe holds) or leave a process in the
/// background pass: their output is read while they run and only its end kept, and
/// their process group is ended after them, so nothing they started piles up.
#[test]
fn health_checks_that_print_a_lot_or_leave_a_background_process_pass() {
    let Some((env, images)) = ContainerEnv::new("ctr_chatty_check") else {
        return;
    };
    let manifests = Manifests::new();
    let container = |name: &str, check: &str| {
        ContainerEnv::container_manifest(
            name,
            &format!(
                "  image: {}\n  command: [sleep, '100000']\n  stopTimeout: 1s\n  healthCheck: {{command: [sh, -c, '{check}'], interval: 300ms, timeout: 5s, retries: 1}}\n",
                images.rootfs.display()
            ),
        )
    };
    manifests.write(
        "loud.yaml",
        &container("loud", "yes | head -c 1048576; echo; echo all-good"),
    );
    manifests.write(
        "lingers.yaml",
        &container("lingers", "sleep 4242 & echo started"),
    );
    env.apply(manifests.path(), 0);
    let health = |name: &str| -> serde_json::Value {
        fs::read(env.bundle(name).join("health.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    };
    for name in ["loud", "lingers"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while health(name)["status"] != "healthy" {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}'s check did not pass: {}",
                health(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A few more checks of `lingers`: what each left in the background was ended.
    std::thread::sleep(Duration::from_secs(2));
    let left = processes_running(&["sleep", "4242"]);
    assert!(
        left <= 1,
        "{left} background processes of past checks still run"
    );
    assert_eq!(health("loud")["status"], "healthy");
    assert_eq!(health("lingers")["status"], "healthy");
}

/// A create that fails after the root file system was mounted leaves nothing mounted:
/// a user the image lacks (refused by gitvisor) and a command the image lacks (refused
/// by runc). Both need the user: retrying cannot help until the manifest changes.
#[test]
fn a_failed_create_leaves_nothing_mounted_and_runcs_refusal_needs_the_user() {
    let Some((env, images)) = ContainerEnv::new("ctr_failed_create") else {
        return;
    };
    let manifests = Manifests::new();
    let image = images.rootfs.display().to_string();
    manifests.write(
        "nouser.yaml",
        &ContainerEnv::container_manifest(
            "nouser",
            &format!("  image: {image}\n  command: [sleep, '100000']\n  user: nosuchuser\n"),
        ),
    );
    manifests.write(
        "nocmd.yaml",
        &ContainerEnv::container_manifest(
            "nocmd",
            &format!("  image: {image}\n  command: [/nonexistent]\n"),
        ),
    );
    let outcome = env
        .gitvisor([
            std::ffi::OsStr::new("apply"),
            manifests.path().as_os_str(),
            std::ffi::OsStr::new("--output"),
            std::ffi::OsStr::new("json"),
        ])
        .expect_code(1);
    let report = outcome.json();
    let results = report["report"]["results"].as_array().unwrap();
    let mut wrong = Vec::new();
    for name in ["nouser", "nocmd"] {
        let result = results
            .iter()
            .find(|r| r["id"].to_string().contains(name))
            .unwrap_or_else(|| panic!("no result for {name}: {report}"));
        if result["class"] != "needsUser" {
            wrong.push(format!("{name} failed as {}: {result}", result["class"]));
        }
        let bundle = env.bundle(name).to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&bundle))
            .collect();
        if !left.is_empty() {
            wrong.push(format!("{name}'s failed create left {left:?} mounted"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// `command` run by `sh` under `umask 077`, as a root shell with that umask runs it.
fn under_umask_077(command: std::process::Command) -> std::process::Command {
    let mut wrapped = std::process::Command::new("sh");
    wrapped
        .args(["-c", "umask 077 && exec \"$@\"", "sh"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

const DNS_BRIDGE: &str = "br-dns";

/// Applied under `umask 077`, a container running as a non-root user still starts and
/// reads its root file system and the name-service files gitvisor gives it: `/etc/hosts`
/// with its own name, `/etc/hostname`, and a `/etc/resolv.conf` naming the bridge's
/// address, where gitvisor's dnsmasq (the bridge has `dhcp:`) answers for the other
/// container by name. A second plan is clean; the bridge losing `dhcp:` rewrites
/// resolv.conf in the running container (the host's servers), without a restart.
#[test]
fn under_umask_077_a_non_root_container_reads_its_files_and_resolves_names_through_the_bridges_dnsmasq()
 {
    let Some((env, images)) = ContainerEnv::new("ctr_dns") else {
        return;
    };
    let _leftovers = KillNamespaceProcesses(env.netns().to_owned());
    let image = images.rootfs.display().to_string();
    let bridge = |dhcp: bool| {
        let dhcp = if dhcp {
            "  dhcp: {range: 10.78.0.100-10.78.0.150, domain: lab}\n"
        } else {
            ""
        };
        bridge_manifest(
            DNS_BRIDGE,
            &[],
            &format!("  addresses: [10.78.0.1/24]\n{dhcp}"),
        )
    };
    let container = |name: &str, address: &str| {
        ContainerEnv::container_manifest(
            name,
            &format!(
                "  image: {image}\n  command: [sleep, '100000']\n  user: app\n  network: {{bridge: {DNS_BRIDGE}, address: {address}/24, gateway: 10.78.0.1}}\n  stopTimeout: 1s\n"
            ),
        )
    };
    let manifests = Manifests::new();
    manifests.write("bridge.yaml", &bridge(true));
    manifests.write("web.yaml", &container("web", "10.78.0.2"));
    manifests.write("db.yaml", &container("db", "10.78.0.3"));
    let apply = env.gitvisor_command([std::ffi::OsStr::new("apply"), manifests.path().as_os_str()]);
    gitvisor_e2e::run_command(under_umask_077(apply)).expect_code(0);
    let pid = pid_of(&env, "web");

    // The container's user (uid 1000) reads its root and its files.
    assert_eq!(
        env.exec("web", &["id", "-u"]).expect_code(0).stdout,
        "1000\n"
    );
    let root_mode = env.exec("web", &["stat", "-c", "%a", "/"]).expect_code(0);
    assert_eq!(root_mode.stdout, "755\n");
    env.exec("web", &["ls", "/bin/busybox"]).expect_code(0);
    let hosts = env
        .exec("web", &["cat", "/etc/hosts"])
        .expect_code(0)
        .stdout;
    assert_contains(&hosts, "127.0.0.1\tlocalhost\n");
    assert_contains(&hosts, "10.78.0.2\tweb.lab web\n");
    assert_eq!(
        env.exec("web", &["cat", "/etc/hostname"])
            .expect_code(0)
            .stdout,
        "web\n"
    );
    let resolv = env
        .exec("web", &["cat", "/etc/resolv.conf"])
        .expect_code(0)
        .stdout;
    assert_contains(&resolv, "nameserver 10.78.0.1\n");
    assert_contains(&resolv, "search lab\n");
    // The bridge's dnsmasq answers for the other container, asked the way the
    // container's resolver asks (the server from resolv.conf).
    let mut answer = env.exec("web", &["nslookup", "db"]);
    for _ in 0..50 {
        if answer.stdout.contains("10.78.0.3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        answer = env.exec("web", &["nslookup", "db"]);
    }
    assert_contains(&answer.stdout, "10.78.0.3");
    // The image is untouched: the files are the bundle's, bind-mounted.
    assert!(!images.rootfs.join("etc/hosts").exists());
    let plan = env.plan_json(manifests.path());
    assert_eq!(change(&plan, "Container", "web")["action"], "noop");

    // The bridge stops serving DNS: the host's resolver configuration, in place.
    manifests.write("bridge.yaml", &bridge(false));
    let plan = env.plan_json(manifests.path());
    let web = change(&plan, "Container", "web");
    assert_eq!(web["action"], "update", "{web:#}");
    assert_contains(&web.to_string(), "/etc/resolv.conf");
    env.apply(manifests.path(), 0);
    let resolv = env
        .exec("web", &["cat", "/etc/resolv.conf"])
        .expect_code(0)
        .stdout;
    assert!(!resolv.contains("nameserver 10.78.0.1"), "{resolv}");
    assert_contains(&resolv, "from the host's resolver configuration");
    assert_eq!(
        pid_of(&env, "web"),
        pid,
        "rewritten in place, not restarted"
    );
    let plan = env.plan_json(manifests.path());
    assert_eq!(change(&plan, "Container", "web")["action"], "noop");
}

/// Kills what the test's gitvisor left in its namespace (dnsmasq), also when the test
/// fails; runc's containers are `ContainerEnv`'s.
struct KillNamespaceProcesses(String);

impl Drop for KillNamespaceProcesses {
    fn drop(&mut self) {
        for pid in gitvisor_e2e::network::namespace_pids(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

/// `gitvisor exec`: runs in the managed container as its user and exits with the
/// command's status; stdin only with `-i`; `-t` gives the command a terminal (under a
/// pty, as `script` provides one); refuses an unknown name, a container without
/// gitvisor's marker under its runtime root, and one that is not running, each saying
/// so.
#[test]
fn exec_runs_in_a_managed_container_passes_its_status_and_refuses_what_it_cannot() {
    let Some((env, images)) = ContainerEnv::new("ctr_exec") else {
        return;
    };
    let image = images.rootfs.display().to_string();
    let manifests = Manifests::new();
    let web = |state: &str| {
        ContainerEnv::container_manifest(
            "web",
            &format!(
                "  image: {image}\n  command: [sleep, '100000']\n  state: {state}\n  stopTimeout: 1s\n"
            ),
        )
    };
    manifests.write("web.yaml", &web("Running"));
    env.apply(manifests.path(), 0);
    pid_of(&env, "web");
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        env.gitvisor(all)
    };

    assert_eq!(
        exec(&["web", "--", "cat", "/etc/hostname"])
            .expect_code(0)
            .stdout,
        "web\n"
    );
    exec(&["web", "--", "sh", "-c", "exit 7"]).expect_code(7);
    // Without -i stdin reads nothing; with -i it is the caller's.
    let mut piped = env.gitvisor_command(["exec", "-i", "web", "--", "cat"]);
    piped.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = piped.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through stdin\n");
    assert_eq!(
        exec(&["web", "--", "cat"]).expect_code(0).stdout,
        "",
        "stdin is not attached without -i"
    );
    // -t under a pseudo-terminal: the command's stdin is a terminal.
    let tty_line = env
        .gitvisor_command([
            "exec",
            "-t",
            "web",
            "--",
            "sh",
            "-c",
            "test -t 0 && echo tty",
        ])
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let mut script = std::process::Command::new("script");
    script.args([
        "-qec",
        &format!("nsenter {}", shell_words(&tty_line)),
        "/dev/null",
    ]);
    script.env("NO_COLOR", "1");
    let tty = gitvisor_e2e::run_command(script).expect_code(0);
    assert_contains(&tty.stdout, "tty");

    // -t without a terminal (a new session has no controlling terminal): said plainly.
    let mut detached = std::process::Command::new("setsid");
    detached.args(["-w", "nsenter"]).args(&tty_line);
    detached.stdin(Stdio::null());
    let no_tty = gitvisor_e2e::run_command(detached).expect_code(1);
    assert_contains(&no_tty.stderr, "-t needs a terminal");

    // Refusals.
    let unknown = exec(&["nosuch", "--", "true"]).expect_code(1);
    assert_contains(&unknown.stderr, "no container nosuch managed by gitvisor");
    let mut foreign = std::process::Command::new("runc");
    let bundle = tempfile::tempdir().unwrap();
    let foreign_rootfs = bundle.path().join("rootfs");
    gitvisor_e2e::containers::busybox_rootfs(&foreign_rootfs);
    let spec = std::process::Command::new("runc")
        .current_dir(bundle.path())
        .args(["spec"])
        .status()
        .unwrap();
    assert!(spec.success());
    let config = bundle.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    json["process"]["terminal"] = false.into();
    json["process"]["args"] = serde_json::json!(["sleep", "100000"]);
    fs::write(&config, json.to_string()).unwrap();
    foreign
        .arg("--root")
        .arg(env.runc_root())
        .args(["run", "--detach", "--bundle"])
        .arg(bundle.path())
        .arg("stranger")
        .stdin(Stdio::null());
    gitvisor_e2e::run_command(foreign).expect_code(0);
    let stranger = exec(&["stranger", "--", "true"]).expect_code(1);
    assert_contains(&stranger.stderr, "does not carry gitvisor's marker");

    manifests.write("web.yaml", &web("Stopped"));
    env.apply(manifests.path(), 0);
    let stopped = exec(&["web", "--", "true"]).expect_code(1);
    assert_contains(&stopped.stderr, "container web is stopped, not running");
}

/// `args` quoted for `sh`.
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An image archive that does not exist is refused at plan, at the manifest's line and
/// field, and apply leaves the running container as it is (issue 17 item 2).
#[test]
fn a_missing_image_archive_is_refused_at_plan_and_the_container_runs_on() {
    let Some((env, images)) = ContainerEnv::new("ctr_noimage") else {
        return;
    };
    let missing = tempfile::tempdir().unwrap().path().join("app.tar");
    let manifests = Manifests::new();
    let write = |image: &std::path::Path| {
        manifests.write(
            "web.yaml",
            &ContainerEnv::container_manifest(
                "web",
                &format!(
                    "  image: {}\n  command: [sleep, '100000']\n  stopTimeout: 1s\n",
                    image.display()
                ),
            ),
        );
    };
    write(&images.rootfs);
    env.apply(manifests.path(), 0);
    let pid = pid_of(&env, "web");

    write(&missing);
    let plan = env.gitvisor(["plan", manifests.path_str()]);
    assert_eq!(plan.code, Some(1), "{plan}");
    let expected = format!(
        "web.yaml:6:10: spec.image: {} does not exist on this host",
        missing.display()
    );
    assert_contains(&plan.stdout, &expected);
    let apply = env.apply(manifests.path(), 1);
    assert_contains(&format!("{}{}", apply.stdout, apply.stderr), &expected);
    assert_eq!(pid_of(&env, "web"), pid, "the container was not touched");
}

/// A host port another process already listens on is refused at plan, at the
/// `hostPort` that publishes it; once that listener is gone the same revision plans
/// (issue 17 item 2). The listener is a plain TCP socket in the test's namespace.
#[test]
fn a_published_port_another_process_listens_on_is_refused_at_plan() {
    let Some((env, images)) = ContainerEnv::new("ctr_porttaken") else {
        return;
    };
    let network = format!(
        "  network: {{bridge: {BRIDGE}, address: 10.77.0.2/24, gateway: 10.77.0.1, publish: [{{hostPort: 8080, port: 80}}]}}"
    );
    let manifests = Manifests::new();
    manifests.write(
        "bridge.yaml",
        &bridge_manifest(BRIDGE, &[], "  addresses: [10.77.0.1/24]\n  nat: true\n"),
    );
    manifests.write(
        "web.yaml",
        &ContainerEnv::container_manifest(
            "web",
            &format!(
                "  image: {}\n  command: [sleep, '100000']\n{network}\n  stopTimeout: 1s\n",
                images.rootfs.display()
            ),
        ),
    );
    /// Kills the listener when the test ends, passed or not.
    struct Listener(std::process::Child);
    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let listener = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", env.netns()))
        .args([
            "python3",
            "-c",
            "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 8080))\ns.listen()\ntime.sleep(300)",
        ])
        .stdin(Stdio::null())
        .spawn()
        .map(Listener)
        .expect("python3 listens");
    env.wait_for("the listener", Duration::from_secs(20), || {
        env.gitvisor(["plan", manifests.path_str()])
            .stdout
            .contains("is already taken on this host")
    });
    let plan = env.gitvisor(["plan", manifests.path_str()]);
    let column = network.find("8080").unwrap() + 1;
    assert_eq!(plan.code, Some(1), "{plan}");
    assert_contains(
        &format!("{plan}"),
        &format!(
            "web.yaml:8:{column}: spec.network.publish[0].hostPort: tcp *:8080 is already taken on this host by a socket gitvisor did not open (tcp 0.0.0.0:8080)"
        ),
    );
    env.apply(manifests.path(), 1);
    assert!(env.container("web").is_none(), "nothing was created");
    drop(listener);
    env.apply(manifests.path(), 0);
    pid_of(&env, "web");
}
