//! The controller, `gitvisor run`, against the real kernel in a test namespace: the
//! directory watch, git polling over `file://` and `git://`, drift repair at resync,
//! bad revisions rejected whole, SIGTERM part-way through an apply, systemd's
//! `NOTIFY_SOCKET`, the API and its refusal of non-root clients, metrics through
//! `promtool`, a flood of unfinished requests on the metrics port, an `apply` beside a
//! running controller, and commit signatures.
//!
//! Every scenario proves which trigger did the work by switching the others off: the
//! watch and the poll tests run with a resync of an hour, so only the watch or the poll
//! can have applied the change; the drift test changes nothing the watch sees. Tests wait
//! for outcomes with generous deadlines and print how long they took; how fast the
//! controller reacts is measured by `bench/controller.sh`, not asserted here.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gitvisor_e2e::controller::{
    Controller, GitDaemon, GitRepo, MetricsFlood, api, api_status, have_git, open_descriptors,
    promtool_check, sample, scratch, wait_for,
};
use gitvisor_e2e::{Manifests, TestEnv, assert_contains, bridge_manifest, loud, nth_address};

const DEADLINE: Duration = Duration::from_secs(60);
/// Long enough that no resync happens during a test.
const NO_RESYNC: &str = "1h";

fn bridge(name: &str, i: usize) -> String {
    bridge_manifest(name, &[], &format!("  addresses: [{}]\n", nth_address(i)))
}

fn run_dir(env: &TestEnv) -> String {
    env.run_dir().display().to_string()
}

fn metrics(env: &TestEnv) -> String {
    let (code, body) = api(env.run_dir(), "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn a_saved_file_is_applied_by_the_watch_and_a_bad_one_is_rejected_whole() {
    let Some(env) = TestEnv::new("ctl-watch") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gvw-a", 1));
    let (controller, ready) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    // systemd's protocol: READY=1 and a STATUS= naming the revision, in one datagram.
    assert_contains(&ready, "STATUS=revision sha256:");
    assert!(env.expect_link("gvw-a").is_marked());

    // A save: only the watch can apply it (no resync for an hour, no poll for a dir).
    manifests.write("b.yaml", &bridge("gvw-b", 2));
    let took = wait_for("the watch to apply b.yaml", DEADLINE, || {
        env.link("gvw-b").is_some()
    });
    loud(&format!(
        "controller: file save applied in {took:?} (reported, not asserted)"
    ));
    // The STATUS= of the reconcile that applied b.yaml: a watch's event may have made a
    // reconcile of the first revision in between (its own apply changed links), which
    // sends its own STATUS=.
    let revision = |message: &str| {
        message
            .lines()
            .find_map(|l| l.strip_prefix("STATUS=revision "))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    let first = revision(&ready);
    let status = loop {
        let status = controller
            .notification(DEADLINE)
            .expect("a STATUS= after the reconcile");
        if revision(&status) != first {
            break status;
        }
    };
    assert_contains(&status, "STATUS=revision sha256:");

    // A bad file next to good ones: the whole revision is rejected, the host is kept.
    let applied = api_status(env.run_dir())["applied"]["id"].clone();
    manifests.write("bad.yaml", "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: gvw-c}\nspec: {mtu: lots}\n");
    manifests.write("c.yaml", &bridge("gvw-d", 3));
    wait_for("the bad revision to be rejected", DEADLINE, || {
        !api_status(env.run_dir())["rejected"].is_null()
    });
    let status = api_status(env.run_dir());
    assert_eq!(
        status["applied"]["id"], applied,
        "the applied revision is kept"
    );
    let errors = status["rejected"]["errors"].to_string();
    assert_contains(&errors, "bad.yaml:4:");
    assert!(
        env.link("gvw-d").is_none(),
        "nothing of a rejected revision is applied"
    );
    assert!(env.link("gvw-a").is_some() && env.link("gvw-b").is_some());
    let text = metrics(&env);
    assert_eq!(
        sample(&text, "gitvisor_revision_rejected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "gitvisor_revisions_rejected_total"),
        Some(1.0),
        "{text}"
    );
    // `gitvisor status` asks the controller, and says so.
    let out = env.gitvisor(["status"]).expect_code(0);
    assert_contains(&out.stdout, "Controller: running");
    assert_contains(&out.stdout, "Rejected revision");
    assert_contains(&out.stdout, "bad.yaml:4:");
    // Its JSON is the controller's snapshot, DHCP leases included (none here).
    let json = env
        .gitvisor(["status", "--output", "json"])
        .expect_code(0)
        .json();
    assert!(!json["rejected"].is_null(), "{json:#}");
    assert_eq!(json["dhcpLeases"], serde_json::json!({}), "{json:#}");
    let events = env.gitvisor(["events", "-n", "100"]).expect_code(0);
    assert_contains(&events.stdout, "rejected");

    // Fixing the file applies the revision and clears the rejection.
    manifests.remove("bad.yaml");
    wait_for("the fixed revision to be applied", DEADLINE, || {
        env.link("gvw-d").is_some()
    });
    wait_for("the rejection to clear", DEADLINE, || {
        api_status(env.run_dir())["rejected"].is_null()
    });
    assert_eq!(
        sample(&metrics(&env), "gitvisor_revision_rejected"),
        Some(0.0)
    );
    drop(controller);
}

/// With a controller running, `status` still shows the host as it is now: a change no
/// watch announces (a bridge's `forwarding` switch set by hand; a bridge deleted by hand
/// is put back at once, `tests/watches.rs`) reads `drifted` at once, not the snapshot's
/// `Ready` until the next resync (an hour away here).
#[test]
fn status_beside_a_controller_shows_the_host_now() {
    let Some(env) = TestEnv::new("ctl-live") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gvl-a", 1));
    manifests.write("b.yaml", &bridge("gvl-b", 2));
    let (mut controller, _) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    assert!(env.expect_link("gvl-a").is_marked());
    let flipped = Command::new("ip")
        .args(["netns", "exec", env.netns(), "sysctl", "-qw"])
        .arg("net.ipv4.conf.gvl-a.forwarding=1")
        .status()
        .expect("cannot run sysctl");
    assert!(flipped.success());

    let status = env.status_json();
    let resource = |name: &str| {
        status["resources"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("status lists {name}: {status:#}"))
    };
    assert!(
        status["pid"].is_number(),
        "the controller answered: {status:#}"
    );
    let changed = resource("gvl-a");
    assert_eq!(changed["state"], "Ready", "the snapshot: {changed:#}");
    assert_eq!(changed["observed"], "drifted", "{changed:#}");
    assert_eq!(resource("gvl-b")["observed"], "inSync", "{status:#}");

    let text = env.gitvisor(["status"]).expect_code(0).stdout;
    let header = text
        .lines()
        .find(|line| line.starts_with("KIND"))
        .unwrap_or_else(|| panic!("a resource table: {text}"));
    assert!(header.contains(" LIVE "), "{text}");
    let row = text
        .lines()
        .find(|line| line.contains("gvl-a"))
        .unwrap_or_else(|| panic!("a row for gvl-a: {text}"));
    assert!(row.contains("drifted"), "{text}");
    assert!(row.contains("Drifted: forwarding.gvl-a"), "{text}");
    assert!(controller.terminate().success());
}

#[test]
fn a_bridge_deleted_by_hand_is_recreated_at_the_next_resync() {
    let Some(env) = TestEnv::new("ctl-drift") else {
        return;
    };
    env.ip(["link", "set", "lo", "up"]);
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gvd-a", 1));
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let (mut controller, _) = Controller::start(
        &env,
        &[
            "--source",
            manifests.path_str(),
            "--resync",
            "1s",
            "--metrics-listen",
            &listen,
        ],
    );
    // `events -f` streams what happens from now on (after the history, so a follower
    // that connects late still sees the repair).
    let mut follower = env
        .gitvisor_command(["events", "-f", "-n", "500", "--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start gitvisor events -f");
    let stdout = follower.stdout.take().expect("piped stdout");
    let (lines, streamed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    env.ip(["link", "del", "gvd-a"]);
    let started = Instant::now();
    let repaired = loop {
        match streamed.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("drift repaired") => break line,
            Ok(_) => {}
            Err(_) => assert!(
                started.elapsed() < DEADLINE,
                "events -f streamed no drift repair"
            ),
        }
    };
    let _ = follower.kill();
    let _ = follower.wait();
    let event: serde_json::Value = serde_json::from_str(&repaired).expect("a JSON event");
    assert_eq!(event["level"], "Warning");
    wait_for("the resync to recreate gvd-a", DEADLINE, || {
        env.link("gvd-a").is_some_and(|l| l.is_marked())
    });
    wait_for("the drift repair to be counted", DEADLINE, || {
        sample(&metrics(&env), "gitvisor_drift_repairs_total").is_some_and(|n| n >= 1.0)
    });
    let events = env
        .gitvisor(["events", "-n", "100", "--output", "json"])
        .expect_code(0);
    assert_contains(&events.stdout, "drift repaired");
    for line in events.stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|err| panic!("events --output json: not JSON ({err}): {line}"));
    }

    // The opt-in TCP endpoint serves the same exposition; promtool accepts it.
    let fetched = Command::new("ip")
        .args(["netns", "exec", env.netns(), "bash", "-c"])
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
        ))
        .output()
        .expect("cannot run bash");
    let response = String::from_utf8_lossy(&fetched.stdout);
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert_contains(head, "200 OK");
    assert_contains(head, "text/plain; version=0.0.4");
    assert_contains(
        body,
        "gitvisor_resources{kind=\"Bridge\",state=\"Ready\"} 1",
    );
    if let Some(verdict) = promtool_check(body) {
        verdict.unwrap_or_else(|said| panic!("promtool check metrics failed:\n{said}\n{body}"));
    }
    let status = controller.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(
        !env.run_dir().join("controller.sock").exists(),
        "the API socket is removed on exit"
    );
}

#[test]
fn sigterm_during_an_apply_exits_cleanly_and_the_next_start_converges() {
    const COUNT: usize = 200;
    let Some(env) = TestEnv::new("ctl-term") else {
        return;
    };
    let manifests = Manifests::new();
    for i in 0..COUNT {
        manifests.write(&format!("gvt{i}.yaml"), &bridge(&format!("gvt{i}"), i));
    }
    let (mut monitor, links) = env.monitor_links();
    let mut controller = Controller::spawn(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while seen.len() < 20 {
        if let Ok(name) = links.recv_timeout(Duration::from_millis(5)) {
            seen.insert(name);
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no bridges appeared:\n{}",
            controller.log()
        );
    }
    let status = controller.terminate();
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(
        status.success(),
        "SIGTERM part-way is a clean stop: {status}\n{}",
        controller.log()
    );
    // Nothing is left half-made: every link is a declared bridge with the marker.
    for link in env.links().into_iter().filter(|l| l.name != "lo") {
        assert!(
            link.name.starts_with("gvt"),
            "unexpected link {}",
            link.name
        );
        assert!(link.is_marked(), "{} has no marker", link.name);
    }
    let made = env.links().len() - 1;
    loud(&format!(
        "controller: SIGTERM after {made} of {COUNT} bridges"
    ));

    let (controller, ready) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    assert_contains(&ready, &format!("{COUNT}/{COUNT} ready"));
    for i in 0..COUNT {
        assert!(env.expect_link(&format!("gvt{i}")).is_marked());
    }
    let status = api_status(env.run_dir());
    assert_eq!(status["lastReconcile"]["converged"], true, "{status}");
    drop(controller);
}

#[test]
fn a_commit_is_applied_within_one_poll_and_a_bad_commit_is_rejected() {
    let Some(env) = TestEnv::new("ctl-git") else {
        return;
    };
    if !have_git("a_commit_is_applied_within_one_poll_and_a_bad_commit_is_rejected") {
        return;
    }
    let repo = GitRepo::new();
    repo.write("hosts/a.yaml", &bridge("gvg-a", 1));
    repo.write("README.md", "not a manifest, outside --path\n");
    let first = repo.commit("a");
    let url = repo.url();
    let (controller, ready) = Controller::start(
        &env,
        &[
            "--source", &url, "--ref", "main", "--path", "hosts", "--poll", "1s", "--resync",
            NO_RESYNC,
        ],
    );
    assert_contains(&ready, &format!("STATUS=revision {first}"));
    assert!(env.expect_link("gvg-a").is_marked());

    // A new commit: only the poll can apply it.
    repo.write("hosts/b.yaml", &bridge("gvg-b", 2));
    let second = repo.commit("b");
    let took = wait_for("the poll to apply the commit", DEADLINE, || {
        env.link("gvg-b").is_some()
    });
    loud(&format!(
        "controller: commit applied {took:?} after it was made (poll 1s; reported, not asserted)"
    ));
    wait_for("the status to name the commit", DEADLINE, || {
        api_status(env.run_dir())["applied"]["id"] == second.as_str()
    });

    // A bad commit: rejected whole, the host stays at the second commit.
    repo.write("hosts/bad.yaml", "apiVersion: gitvisor.dev/v1alpha1\nkind: Bridge\nmetadata: {name: gvg-c, dependsOn: [Bridge/missing]}\nspec: {}\n");
    repo.write("hosts/c.yaml", &bridge("gvg-d", 3));
    let bad = repo.commit("bad");
    wait_for("the bad commit to be rejected", DEADLINE, || {
        api_status(env.run_dir())["rejected"]["revision"] == bad.as_str()
    });
    let status = api_status(env.run_dir());
    assert_eq!(status["applied"]["id"], second.as_str());
    assert_contains(&status["rejected"]["errors"].to_string(), "hosts/bad.yaml:");
    assert!(env.link("gvg-d").is_none());
    assert_eq!(
        sample(&metrics(&env), "gitvisor_revision_rejected"),
        Some(1.0)
    );
    // `gitvisor sync` reconciles now and reports the rejection: not converged.
    let sync = env.gitvisor(["sync"]).expect_code(1);
    assert_contains(&sync.stdout, &format!("newest revision {bad} rejected"));

    repo.write("hosts/bad.yaml", &bridge("gvg-c", 4));
    let fixed = repo.commit("fixed");
    wait_for("the fixed commit to be applied", DEADLINE, || {
        env.link("gvg-c").is_some() && env.link("gvg-d").is_some()
    });
    let sync = env.gitvisor(["sync", "--output", "json"]).expect_code(0);
    let outcome = sync.json();
    assert_eq!(outcome["revision"], fixed.as_str());
    assert_eq!(outcome["converged"], true);
    assert!(outcome["rejected"].is_null());
    drop(controller);
}

/// Decommissioning through git, visibly: a placeholder commit that declares nothing keeps
/// the host's bridges (the emptied-repository guard) and says so in status, events and
/// `gitvisor_prune_withheld`; an empty commit is rejected naming the repository root
/// (`.`), not an empty file name; committing a `PrunePolicy` deletes the bridges.
#[test]
fn an_emptied_repository_is_withheld_visibly_and_a_prune_policy_decommissions() {
    let Some(env) = TestEnv::new("ctl-decomm") else {
        return;
    };
    if !have_git("an_emptied_repository_is_withheld_visibly_and_a_prune_policy_decommissions") {
        return;
    }
    let repo = GitRepo::new();
    repo.write("a.yaml", &bridge("gvp-a", 1));
    repo.write("b.yaml", &bridge("gvp-b", 2));
    let first = repo.commit("two bridges");
    let url = repo.url();
    let (controller, ready) = Controller::start(
        &env,
        &[
            "--source", &url, "--ref", "main", "--poll", "1s", "--resync", NO_RESYNC,
        ],
    );
    assert_contains(&ready, &format!("STATUS=revision {first}"));
    assert_eq!(sample(&metrics(&env), "gitvisor_prune_withheld"), Some(0.0));

    // A placeholder that declares nothing: the bridges stay, and everything says why.
    repo.git(&["rm", "--quiet", "a.yaml", "b.yaml"]);
    repo.write("placeholder.yaml", "# this host is being retired\n");
    let placeholder = repo.commit("placeholder");
    wait_for("the placeholder commit to be applied", DEADLINE, || {
        api_status(env.run_dir())["applied"]["id"] == placeholder.as_str()
    });
    assert!(env.link("gvp-a").is_some() && env.link("gvp-b").is_some());
    let status = api_status(env.run_dir());
    assert_eq!(status["pruneWithheld"]["count"], 2, "{status:#}");
    assert_eq!(
        status["pruneWithheld"]["resources"],
        serde_json::json!(["Bridge/gvp-a", "Bridge/gvp-b"]),
        "{status:#}"
    );
    let body = metrics(&env);
    assert_eq!(sample(&body, "gitvisor_prune_withheld"), Some(2.0));
    if let Some(verdict) = promtool_check(&body) {
        verdict.unwrap_or_else(|said| panic!("promtool check metrics failed:\n{said}\n{body}"));
    }
    let text = env.gitvisor(["status"]).expect_code(0);
    assert_contains(&text.stdout, "Prune withheld: 2 resources kept");
    assert_contains(&text.stdout, "PrunePolicy with deleteUndeclared: true");
    // A sync applies the same revision again: still withheld, and still one event.
    let sync = env.gitvisor(["sync"]).expect_code(0);
    assert_contains(&sync.stdout, "prune withheld: 2 undeclared resources kept");
    let events = env.gitvisor(["events", "-n", "200"]).expect_code(0);
    assert_eq!(
        events
            .stdout
            .matches("prune withheld: 2 resources kept")
            .count(),
        1,
        "{}",
        events.stdout
    );

    // An empty commit: rejected whole, naming the repository root.
    repo.git(&["rm", "--quiet", "placeholder.yaml"]);
    let empty = repo.commit("empty");
    wait_for("the empty commit to be rejected", DEADLINE, || {
        api_status(env.run_dir())["rejected"]["revision"] == empty.as_str()
    });
    let errors = api_status(env.run_dir())["rejected"]["errors"].clone();
    let error = errors[0].as_str().unwrap_or_default();
    assert!(
        error.starts_with(".:1:1: no *.yaml or *.yml manifests found"),
        "{errors:#}"
    );
    assert!(env.link("gvp-a").is_some() && env.link("gvp-b").is_some());

    // The decommission, reviewed and committed like any change.
    repo.write(
        "decommission.yaml",
        "apiVersion: gitvisor.dev/v1alpha1\nkind: PrunePolicy\nmetadata: {name: retire}\nspec: {deleteUndeclared: true}\n",
    );
    let decommission = repo.commit("decommission");
    wait_for("the decommission to delete the bridges", DEADLINE, || {
        env.link("gvp-a").is_none() && env.link("gvp-b").is_none()
    });
    wait_for("the status to name the decommission", DEADLINE, || {
        api_status(env.run_dir())["applied"]["id"] == decommission.as_str()
    });
    let status = api_status(env.run_dir());
    assert!(status["pruneWithheld"].is_null(), "{status:#}");
    assert!(
        status["resources"].as_array().is_some_and(Vec::is_empty),
        "{status:#}"
    );
    assert_eq!(sample(&metrics(&env), "gitvisor_prune_withheld"), Some(0.0));
    drop(controller);
}

#[test]
fn a_commit_served_by_git_daemon_on_loopback_is_applied() {
    let Some(env) = TestEnv::new("ctl-gitd") else {
        return;
    };
    if !have_git("a_commit_served_by_git_daemon_on_loopback_is_applied") {
        return;
    }
    env.ip(["link", "set", "lo", "up"]);
    let repo = GitRepo::new();
    repo.write("a.yaml", &bridge("gvn-a", 1));
    repo.commit("a");
    let base = repo
        .path()
        .parent()
        .expect("the repo has a parent")
        .to_owned();
    let name = repo
        .path()
        .file_name()
        .expect("the repo has a name")
        .to_string_lossy()
        .into_owned();
    let port = 20_000 + (std::process::id() % 1000) as u16;
    let _daemon = GitDaemon::start(&env, &base, port);
    let url = format!("git://127.0.0.1:{port}/{name}");
    let (controller, _) = Controller::start(
        &env,
        &["--source", &url, "--poll", "1s", "--resync", NO_RESYNC],
    );
    assert!(env.expect_link("gvn-a").is_marked());
    repo.write("b.yaml", &bridge("gvn-b", 2));
    let commit = repo.commit("b");
    wait_for("the poll over git:// to apply the commit", DEADLINE, || {
        env.link("gvn-b").is_some()
    });
    wait_for("the status to name the commit", DEADLINE, || {
        api_status(env.run_dir())["applied"]["id"] == commit.as_str()
    });
    drop(controller);
}

#[test]
fn the_api_refuses_a_client_that_is_not_root() {
    let Some(env) = TestEnv::new("ctl-api") else {
        return;
    };
    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_setpriv {
        gitvisor_e2e::skip(
            "the_api_refuses_a_client_that_is_not_root",
            "setpriv not installed",
        );
        return;
    }
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gva-a", 1));
    let (controller, _) = Controller::start(&env, &["--source", manifests.path_str()]);
    let socket = env.run_dir().join("controller.sock");
    let mode = std::fs::metadata(&socket)
        .expect("the socket exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the socket is for its owner (root) only"
    );
    let as_nobody = || {
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(gitvisor_e2e::controller::binary())
            .args([
                "--run-dir",
                &run_dir(&env),
                "--state-dir",
                "/nonexistent",
                "status",
            ])
            .env("NO_COLOR", "1")
            .output()
            .expect("cannot run setpriv");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // The file mode refuses it (the run dir and the socket are root's alone)…
    let (code, stderr) = as_nobody();
    assert_eq!(code, Some(1), "{stderr}");
    assert_contains(&stderr, "for root only");
    // …and with the modes opened by hand, the peer credentials check still does.
    std::fs::set_permissions(env.run_dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod run dir");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let (code, stderr) = as_nobody();
    assert_eq!(code, Some(1), "{stderr}");
    assert_contains(&stderr, "for root only");
    wait_for("the controller to log the refusal", DEADLINE, || {
        controller
            .log()
            .contains("refused an API client that is not root")
    });
    // Root is answered.
    assert_eq!(api(env.run_dir(), "GET", "/v1/revision").0, 200);
    drop(controller);
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_applied() {
    let Some(env) = TestEnv::new("ctl-sign") else {
        return;
    };
    let test = "only_commits_signed_by_an_allowed_key_are_applied";
    if !have_git(test) {
        return;
    }
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        gitvisor_e2e::skip(test, "ssh-keygen not installed");
        return;
    }
    let keys = scratch();
    for name in ["allowed", "other"] {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(keys.path().join(name))
            .status()
            .expect("cannot run ssh-keygen");
        assert!(status.success());
    }
    let public = std::fs::read_to_string(keys.path().join("allowed.pub")).expect("public key");
    let signers = keys.path().join("allowed_signers");
    std::fs::write(&signers, format!("e2e@gitvisor.invalid {public}")).expect("allowed signers");
    let repo = GitRepo::new();
    let signed_commit = |message: &str, key: &str| {
        let key = keys.path().join(key).display().to_string();
        repo.git(&["add", "--all"]);
        repo.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={key}"),
            "commit",
            "--quiet",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        repo.git(&["rev-parse", "HEAD"]).trim().to_owned()
    };
    repo.write("a.yaml", &bridge("gvs-a", 1));
    let good = signed_commit("a", "allowed");
    let url = repo.url();
    let signers_arg = signers.display().to_string();
    let (controller, _) = Controller::start(
        &env,
        &[
            "--source",
            &url,
            "--poll",
            "1s",
            "--resync",
            NO_RESYNC,
            "--allowed-signers",
            &signers_arg,
        ],
    );
    assert!(env.expect_link("gvs-a").is_marked());
    assert_eq!(api_status(env.run_dir())["applied"]["id"], good.as_str());

    // Signed by a key not in the list: rejected, like a bad manifest.
    repo.write("b.yaml", &bridge("gvs-b", 2));
    let foreign = signed_commit("b", "other");
    wait_for("the foreign-signed commit to be rejected", DEADLINE, || {
        api_status(env.run_dir())["rejected"]["revision"] == foreign.as_str()
    });
    assert_contains(
        &api_status(env.run_dir())["rejected"]["errors"].to_string(),
        "not signed by an allowed key",
    );
    // Unsigned: rejected too.
    repo.write("c.yaml", &bridge("gvs-c", 3));
    let unsigned = repo.commit("c");
    wait_for("the unsigned commit to be rejected", DEADLINE, || {
        api_status(env.run_dir())["rejected"]["revision"] == unsigned.as_str()
    });
    assert!(env.link("gvs-b").is_none() && env.link("gvs-c").is_none());
    assert_eq!(api_status(env.run_dir())["applied"]["id"], good.as_str());
    // Signed by the allowed key again: applied, the rejection cleared.
    let signed = signed_commit("d", "allowed");
    wait_for("the signed commit to be applied", DEADLINE, || {
        env.link("gvs-c").is_some()
    });
    wait_for("the status to name it", DEADLINE, || {
        let status = api_status(env.run_dir());
        status["applied"]["id"] == signed.as_str() && status["rejected"].is_null()
    });
    drop(controller);
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let test = "the_unit_file_passes_systemd_analyze_verify";
    let unit = gitvisor_e2e::workspace_root().join("contrib/systemd/gitvisor.service");
    let text = std::fs::read_to_string(&unit).expect("contrib/systemd/gitvisor.service");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        gitvisor_e2e::skip(test, "systemd-analyze not installed; CI installs systemd");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = scratch();
    let copy = dir.path().join("gitvisor.service");
    let binary = gitvisor_e2e::controller::binary();
    std::fs::write(
        &copy,
        text.replace("/usr/bin/gitvisor", &binary.display().to_string()),
    )
    .expect("cannot write the unit copy");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("cannot run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert_eq!(said.trim(), "", "systemd-analyze verify warns:\n{said}");
}

#[test]
fn the_flake_parses_and_its_nixos_module_evaluates_to_the_shipped_unit() {
    let test = "the_flake_parses_and_its_nixos_module_evaluates_to_the_shipped_unit";
    let root = gitvisor_e2e::workspace_root();
    if Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_err()
    {
        gitvisor_e2e::skip(test, "nix-instantiate not installed; CI installs nix-bin");
        return;
    }
    let nix = |args: &[&str]| {
        let output = Command::new("nix-instantiate")
            .args(args)
            .current_dir(&root)
            .output()
            .expect("cannot run nix-instantiate");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "nix-instantiate {args:?} failed:\n{stderr}"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    nix(&["--parse", "flake.nix"]);
    let flake = root.join("flake.nix").display().to_string();
    let evaluated: serde_json::Value = serde_json::from_str(&nix(&[
        "--eval",
        "--strict",
        "--json",
        "--arg",
        "flakeFile",
        &flake,
        "e2e/nix/flake-eval.nix",
    ]))
    .expect("the evaluation is JSON");
    assert_eq!(evaluated["type"], "notify");
    assert_eq!(evaluated["package"], "gitvisor");
    assert_eq!(
        evaluated["execStart"],
        "/nix/store/x-gitvisor/bin/gitvisor --state-dir /var/lib/gitvisor --run-dir /run/gitvisor run"
    );
    assert_eq!(
        evaluated["environment"],
        serde_json::json!({
            "GITVISOR_SOURCE": "https://git.example.com/hosts.git",
            "GITVISOR_REF": "main",
            "GITVISOR_POLL": "30s",
            "GITVISOR_RESYNC": "5m",
            "GITVISOR_METRICS_LISTEN": "9464",
        })
    );
    // The module's unit is the shipped one: every [Service] setting of
    // contrib/systemd/gitvisor.service is set by the module too.
    let unit = std::fs::read_to_string(root.join("contrib/systemd/gitvisor.service"))
        .expect("contrib/systemd/gitvisor.service");
    let keys: BTreeSet<&str> = evaluated["serviceKeys"]
        .as_array()
        .expect("serviceKeys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    let service = unit
        .split("[Service]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [Service] section");
    for line in service
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let key = line.split('=').next().unwrap_or_default();
        if key == "EnvironmentFile" {
            continue; // the module sets the environment itself
        }
        assert!(keys.contains(key), "the NixOS module does not set {key}");
    }
    // ... and no other: a setting the unit leaves out on purpose stays out of the module.
    for key in &keys {
        assert!(
            service.lines().any(|l| l.starts_with(&format!("{key}="))),
            "the NixOS module sets {key}, which the unit does not"
        );
    }
    // The same capabilities.
    let module_caps: Vec<String> = evaluated["capabilityBoundingSet"]
        .as_array()
        .expect("capabilityBoundingSet")
        .iter()
        .filter_map(|c| c.as_str())
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    assert_eq!(
        module_caps,
        gitvisor_e2e::unit::ServiceSandbox::shipped().bounding_set(),
        "the NixOS module's CapabilityBoundingSet differs from the unit's"
    );
}

/// Under systemd (`JOURNAL_STREAM` set) the controller speaks journald's native protocol:
/// each log line is one datagram to `/run/systemd/journal/socket` with `MESSAGE`,
/// `PRIORITY` and the fields of the spans it happened in (`F_REVISION`, the revision
/// being applied; `F_ID`, the resource). A real datagram socket stands in for journald.
#[test]
fn under_systemd_logs_go_to_the_journal_with_structured_fields() {
    const JOURNAL: &str = "/run/systemd/journal/socket";
    let Some(env) = TestEnv::new("ctl-journal") else {
        return;
    };
    if std::path::Path::new(JOURNAL).exists() {
        gitvisor_e2e::skip(
            "under_systemd_logs_go_to_the_journal_with_structured_fields",
            "a real journald owns /run/systemd/journal/socket here",
        );
        return;
    }
    let made_dir = !std::path::Path::new("/run/systemd/journal").exists();
    std::fs::create_dir_all("/run/systemd/journal").expect("create the journal dir");
    let journal = std::os::unix::net::UnixDatagram::bind(JOURNAL).expect("bind the journal");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    struct Cleanup(bool);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/run/systemd/journal/socket");
            if self.0 {
                let _ = std::fs::remove_dir("/run/systemd/journal");
            }
        }
    }
    let _cleanup = Cleanup(made_dir);

    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gvj-a", 1));
    let mut controller = Controller::spawn_with_env(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
        &[("JOURNAL_STREAM", "1:1")],
    );
    controller.wait_ready();
    let mut entries = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        // The layer probes the socket with an empty datagram when it connects.
        if let Ok(n) = journal.recv(&mut buf) {
            if n == 0 {
                continue;
            }
            entries.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if entries
                .iter()
                .any(|e| e.contains("Bridge/gvj-a") && e.contains("F_REVISION"))
            {
                break;
            }
        }
    }
    controller.terminate();
    assert!(
        entries.iter().all(|e| e.contains("MESSAGE")
            && e.contains("PRIORITY")
            && e.contains("SYSLOG_IDENTIFIER")),
        "not journald entries: {entries:#?}"
    );
    let applied = entries
        .iter()
        .find(|e| e.contains("F_ID") && e.contains("Bridge/gvj-a") && e.contains("F_REVISION"))
        .unwrap_or_else(|| {
            panic!("no entry carries the resource and the revision as fields: {entries:#?}")
        });
    assert!(applied.contains("gitvisor"), "no identifier: {applied}");
}

#[test]
fn a_flood_on_the_metrics_port_starves_neither_the_api_nor_the_git_poll() {
    const FLOOD: usize = 1200;
    let Some(env) = TestEnv::new("ctl-flood") else {
        return;
    };
    let test = "a_flood_on_the_metrics_port_starves_neither_the_api_nor_the_git_poll";
    if !have_git(test) {
        return;
    }
    env.ip(["link", "set", "lo", "up"]);
    let repo = GitRepo::new();
    repo.write("a.yaml", &bridge("gvf-a", 1));
    repo.commit("a");
    let port = 21_000 + (std::process::id() % 1000) as u16;
    let listen = format!("127.0.0.1:{port}");
    // Under systemd's default soft limit for a service: 1024 descriptors.
    let inner = env.gitvisor_command([
        "run",
        "--source",
        &repo.url(),
        "--ref",
        "main",
        "--poll",
        "1s",
        "--resync",
        NO_RESYNC,
        "--metrics-listen",
        &listen,
    ]);
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -S -n 1024 && exec \"$@\"", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let mut controller = Controller::spawn_command(command);
    controller.wait_ready();
    let baseline = open_descriptors(controller.pid());

    // One slow client alone: its unfinished request is dropped at the request timeout.
    let slow = std::thread::spawn({
        let netns = env.netns().to_owned();
        move || {
            let started = Instant::now();
            let fetched = Command::new("ip")
                .args(["netns", "exec", &netns, "bash", "-c"])
                .arg(format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.1\\r\\n' >&3; cat <&3"
                ))
                .output()
                .expect("cannot run bash");
            (started.elapsed(), fetched)
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    let flood = MetricsFlood::open(&env, port, FLOOD);
    std::thread::sleep(Duration::from_secs(1));
    let held = open_descriptors(controller.pid());
    loud(&format!(
        "controller: {held} descriptors open with {FLOOD} unfinished metrics requests ({baseline} before)"
    ));
    assert!(
        held < baseline + 100,
        "{FLOOD} unfinished metrics requests hold {held} of the controller's descriptors ({baseline} before)"
    );

    let started = Instant::now();
    env.gitvisor(["status"]).expect_code(0);
    let answered = started.elapsed();
    loud(&format!(
        "controller: status answered in {answered:?} during the flood"
    ));
    assert!(
        answered < Duration::from_secs(5),
        "status took {answered:?} during the flood"
    );

    repo.write("b.yaml", &bridge("gvf-b", 2));
    let second = repo.commit("b");
    wait_for(
        "the poll to apply a commit during the flood",
        DEADLINE,
        || env.link("gvf-b").is_some(),
    );
    wait_for("the status to name the commit", DEADLINE, || {
        api_status(env.run_dir())["applied"]["id"] == second.as_str()
    });

    let (took, fetched) = slow.join().expect("the slow client");
    assert!(
        fetched.stdout.is_empty() && took < Duration::from_secs(8),
        "a request head left unfinished is dropped within the request timeout; took {took:?}, answered {:?}",
        String::from_utf8_lossy(&fetched.stdout)
    );
    let closed = flood
        .closed_by_server
        .load(std::sync::atomic::Ordering::Relaxed);
    loud(&format!("controller: closed {closed} flood connections"));
    drop(flood);

    // After the flood, a scrape is answered as before.
    let fetched = Command::new("ip")
        .args(["netns", "exec", env.netns(), "bash", "-c"])
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; cat <&3"
        ))
        .output()
        .expect("cannot run bash");
    assert_contains(&String::from_utf8_lossy(&fetched.stdout), "200 OK");
    let status = controller.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
}

#[test]
fn an_apply_beside_a_running_controller_is_refused_with_the_way_through_it() {
    let Some(env) = TestEnv::new("ctl-claim") else {
        return;
    };
    let manifests = Manifests::new();
    manifests.write("a.yaml", &bridge("gvc-a", 1));
    let (mut controller, _) = Controller::start(
        &env,
        &["--source", manifests.path_str(), "--resync", NO_RESYNC],
    );
    let other = Manifests::new();
    other.write("b.yaml", &bridge("gvc-b", 2));

    // Between two reconciles the store is not locked; the controller's claim still is.
    let refused = env.apply(other.path());
    assert_ne!(refused.code, Some(0), "{refused}");
    assert_contains(
        &refused.stderr,
        &format!("a controller (`gitvisor run`, pid {})", controller.pid()),
    );
    assert_contains(&refused.stderr, "gitvisor sync");
    assert!(
        env.link("gvc-b").is_none(),
        "the refused apply changed the host"
    );
    // Readers are not concerned.
    env.gitvisor(["plan", other.path_str()]).expect_code(0);
    // A second controller on the same state dir is refused too.
    let second = env
        .gitvisor(["run", "--source", other.path_str()])
        .expect_code(1);
    assert_contains(&second.stderr, "a controller (`gitvisor run`");

    // The controller keeps working: a save is applied, and `sync` goes through it.
    manifests.write("c.yaml", &bridge("gvc-c", 3));
    wait_for("the watch to apply c.yaml", DEADLINE, || {
        env.link("gvc-c").is_some()
    });
    env.gitvisor(["sync"]).expect_code(0);

    // Stopped, it no longer holds the state dir.
    let status = controller.terminate();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    env.apply(other.path()).expect_code(0);
    assert!(env.expect_link("gvc-b").is_marked());
}

#[test]
fn events_follow_says_the_controller_stopped_and_quiet_polls_keep_the_last_reconcile() {
    let Some(env) = TestEnv::new("ctl-follow") else {
        return;
    };
    if !have_git(
        "events_follow_says_the_controller_stopped_and_quiet_polls_keep_the_last_reconcile",
    ) {
        return;
    }
    let repo = GitRepo::new();
    repo.write("a.yaml", &bridge("gvf-a", 1));
    repo.commit("a");
    let url = repo.url();
    let (mut controller, _) = Controller::start(
        &env,
        &[
            "--source", &url, "--ref", "main", "--poll", "1s", "--resync", NO_RESYNC,
        ],
    );
    assert!(env.expect_link("gvf-a").is_marked());

    // The reconcile that created the bridge, as status tells it, is the one its event
    // tells: same time. Polls that find nothing new leave it as it was.
    let first = api_status(env.run_dir())["lastReconcile"].clone();
    let seconds = first["seconds"].as_f64().expect("lastReconcile.seconds");
    let events = env.gitvisor(["events", "-n", "100"]).expect_code(0);
    assert_contains(
        &events.stdout,
        &format!("1 changed, 0 not converged, 0 deferred, in {seconds:.2} s"),
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        api_status(env.run_dir())["lastReconcile"],
        first,
        "three quiet polls later, the last reconcile is still the one that applied"
    );
    let text = env.gitvisor(["status"]).expect_code(0);
    assert_contains(&text.stdout, &format!("{seconds:.2} s: 1 changed"));

    // `events -f` while the controller stops: it says so and exits 1.
    let mut follow = env
        .gitvisor_command(["events", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start gitvisor events -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("piped stdout")).lines();
    let first_line = lines.next().expect("an event").expect("a line");
    assert_contains(&first_line, "new revision");
    controller.terminate();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(follow.wait_with_output());
    });
    let output = exited
        .recv_timeout(DEADLINE)
        .expect("events -f ends when the controller stops")
        .expect("events -f's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_contains(&stderr, "the controller stopped");
    assert_contains(&stderr, "gitvisor events -f");
}
