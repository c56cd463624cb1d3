//! Crash safety (each step is idempotent, so a crash at any point is repaired by the next
//! run): `apply` of many bridges is killed with SIGKILL part-way through
//! (200 bridges with ~60 made; and 30 with the first one just made), and the next
//! `apply` must converge to exactly the declared state — no duplicates, no
//! leftovers, no bridge without its marker — and a plan after that must be clean.
//!
//! After an interrupted apply the read-only commands must tell the truth about it
//! (issue 5 item 1): `status` shows the last recorded revision, and `plan` exactly the
//! changes the next `apply` makes, change by change (kind, name, action, fields). Checked
//! at twelve kill points (SIGKILL and SIGTERM) of an apply of 300 bridges that creates,
//! updates and deletes, and after an apply whose store commit hit a full disk.
//!
//! Kills are timed from the kernel's side: `ip monitor link` streams link events while
//! gitvisor runs, and the process is killed once enough `gvk*` links have appeared, or
//! enough `gvq*` bridges have been deleted. That does not depend on how fast this machine
//! is.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use gitvisor_e2e::{Manifests, TestEnv, bridge_manifest, nth_address, status_states};
use serde_json::Value;

const PREFIX: &str = "gvk";

/// Declares `count` bridges, SIGKILLs `apply` once `kill_at` of them have appeared in
/// the kernel, then checks that the next `apply` converges exactly.
fn crash_and_repair(test: &str, count: usize, kill_at: usize) {
    let Some(env) = TestEnv::new(test) else {
        return;
    };
    let manifests = Manifests::new();
    for i in 0..count {
        let name = format!("{PREFIX}{i}");
        manifests.write(
            &format!("{name}.yaml"),
            &bridge_manifest(&name, &[], &format!("  addresses: [{}]\n", nth_address(i))),
        );
    }
    env.gitvisor(["validate", manifests.path_str()])
        .expect_code(0);

    let started = Instant::now();
    let (killed, seen) = env.apply_killed_after_links(manifests.path_str(), PREFIX, kill_at);
    assert!(
        killed,
        "apply of {count} bridges completed before the test could kill it part-way; \
         the crash was not exercised (saw {} bridges)",
        seen.len()
    );

    let halfway: Vec<_> = env
        .links()
        .into_iter()
        .filter(|l| l.name.starts_with(PREFIX))
        .collect();
    let marked = halfway.iter().filter(|l| l.is_marked()).count();
    let addressed = halfway.iter().filter(|l| !l.addresses.is_empty()).count();
    eprintln!(
        "killed after {:?}: {} of {count} bridges exist, {marked} marked, {addressed} with an address",
        started.elapsed(),
        halfway.len()
    );

    // The next run repairs everything.
    env.apply(manifests.path()).expect_code(0);

    let links = env.links();
    let mut names = BTreeSet::new();
    for link in &links {
        if link.name == "lo" {
            continue;
        }
        assert!(
            names.insert(link.name.clone()),
            "duplicate link name {}",
            link.name
        );
        let Some(i) = link
            .name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < count)
        else {
            panic!("leftover link that was never declared: {link:?}");
        };
        assert!(link.is_bridge(), "{link:?}");
        assert!(link.is_marked(), "bridge without the marker: {link:?}");
        assert!(link.is_up(), "bridge left down: {link:?}");
        assert_eq!(
            link.addresses,
            vec![nth_address(i)],
            "wrong addresses on {}",
            link.name
        );
    }
    assert_eq!(names.len(), count, "expected exactly {count} bridges");

    let outcome = env.plan_detailed(manifests.path());
    assert_eq!(
        outcome.code,
        Some(0),
        "plan after repair is not clean\n{outcome}"
    );

    let status = env.status_json();
    let states = status_states(&status);
    let ready = states
        .iter()
        .filter(|((kind, name), state)| {
            kind == "Bridge" && name.starts_with(PREFIX) && state.as_str() == "Ready"
        })
        .count();
    assert_eq!(
        ready, count,
        "status does not list every bridge Ready: {states:?}"
    );
}

/// The scenario of the brief: 200 bridges, killed once about 60 exist.
#[test]
fn sigkill_halfway_through_apply_is_repaired_by_the_next_apply() {
    crash_and_repair("crash-half", 200, 60);
}

/// Killed as soon as the first bridge appears: the narrowest window, between creating
/// a link and marking it (and recording it).
#[test]
fn sigkill_right_after_the_first_create_is_repaired() {
    crash_and_repair("crash-first", 30, 1);
}

// ---------------------------------------------------------------------------------------
// plan and status after an interrupted apply
// ---------------------------------------------------------------------------------------

const PLAN_PREFIX: &str = "gvq";
/// Revision A declares these bridges with MTU 1400 ...
const SET_A: Range<usize> = 0..300;
/// ... and revision B these with MTU 1450: applying B over A creates 30 bridges and
/// updates 270 (fast: the first phase of an apply), then deletes 30 (the last phase; the
/// kernel takes ~35 ms per bridge, long enough for the test to see each one go and kill
/// gitvisor between two of them).
const SET_B: Range<usize> = 30..330;

/// Makes the manifest dir declare exactly `set`, with `mtu`. The dir stays the same
/// path, so A and B are one source (an apply prunes what the previous one declared).
fn declare(manifests: &Manifests, set: Range<usize>, mtu: u32) {
    for i in SET_A.start..SET_B.end {
        let file = format!("{PLAN_PREFIX}{i}.yaml");
        if set.contains(&i) {
            manifests.write(
                &file,
                &bridge_manifest(
                    &format!("{PLAN_PREFIX}{i}"),
                    &[],
                    &format!("  mtu: {mtu}\n"),
                ),
            );
        } else if manifests.path().join(&file).exists() {
            manifests.remove(&file);
        }
    }
}

fn names(set: Range<usize>) -> BTreeSet<String> {
    set.map(|i| format!("{PLAN_PREFIX}{i}")).collect()
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Kill,
    Term,
}

/// Starts `ip -n NS -o monitor link` and streams the name of every link the kernel
/// reports deleted. (Other link events are no use as a clock here: IPv6 keeps sending
/// `RTM_NEWLINK` for a new bridge long after it was made.)
fn monitor_deletes(env: &TestEnv) -> (Child, Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["-n", env.netns(), "-o", "monitor", "link"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start `ip monitor link`");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // "Deleted 12: gvq3: <BROADCAST,…> …"
            let Some(rest) = line.strip_prefix("Deleted ") else {
                continue;
            };
            let Some(name) = rest.split_whitespace().nth(1) else {
                continue;
            };
            let name = name.trim_end_matches(':');
            if tx
                .send(name.split('@').next().unwrap_or(name).to_owned())
                .is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

/// Drains every delete reported so far: deletes a probe bridge (again, until the monitor,
/// which may subscribe late, reports it) and discards everything reported before it.
fn sync_deletes(env: &TestEnv, deletes: &Receiver<String>) {
    const PROBE: &str = "gv-sync-del";
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "`ip monitor link` never reported {PROBE} deleted"
        );
        env.ip(["link", "add", PROBE, "type", "bridge"]);
        env.ip(["link", "del", PROBE]);
        loop {
            match deletes.recv_timeout(Duration::from_millis(100)) {
                Ok(name) if name == PROBE => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` exited"),
            }
        }
    }
}

/// Starts `apply` of the manifest dir and sends `signal` to it once the kernel has
/// reported `deleted` of the bridges only A declares (0: at once). Returns how it ended
/// and whether the signal was sent before it exited.
fn apply_interrupted(
    env: &TestEnv,
    manifests: &Manifests,
    deletes: &Receiver<String>,
    deleted: usize,
    signal: Signal,
) -> (ExitStatus, bool) {
    let only_in_a: BTreeSet<String> = names(SET_A).difference(&names(SET_B)).cloned().collect();
    let mut child = env.spawn_apply(manifests.path_str());
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        match deletes.recv_timeout(Duration::from_millis(2)) {
            Ok(name) if only_in_a.contains(&name) => {
                seen.insert(name);
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("`ip monitor link` stopped"),
        }
        if seen.len() >= deleted {
            // `ip netns exec` execs gitvisor in place: this is gitvisor's own pid.
            match signal {
                Signal::Kill => child.kill().expect("cannot SIGKILL gitvisor"),
                Signal::Term => {
                    let sent = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status()
                        .expect("cannot run kill");
                    assert!(sent.success(), "kill -TERM failed");
                }
            }
            let status = child.wait().expect("cannot wait for gitvisor");
            return (status, true);
        }
        if let Some(status) = child.try_wait().expect("cannot wait for gitvisor") {
            return (status, false);
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "apply made no progress: {} bridges deleted after 90 s",
            seen.len()
        );
    }
}

/// The changes of a plan JSON object, by `(kind, name)`.
fn changes_by_id(plan: &Value) -> BTreeMap<(String, String), Value> {
    plan["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("plan without changes: {plan:#}"))
        .iter()
        .map(|change| {
            (
                (
                    change["kind"].as_str().unwrap_or("?").to_owned(),
                    change["name"].as_str().unwrap_or("?").to_owned(),
                ),
                change.clone(),
            )
        })
        .collect()
}

/// Panics, listing the differences, unless `plan` (from `plan --output json`) has exactly
/// the changes (kind, name, action, fields, reason, effect) of `applied` (the plan an
/// `apply --output json` made and carried out). Returns how many are not no-ops.
fn assert_same_changes(when: &str, plan: &Value, applied: &Value) -> usize {
    let planned = changes_by_id(plan);
    let carried_out = changes_by_id(applied);
    let mut differences = Vec::new();
    for (id, change) in &planned {
        match carried_out.get(id) {
            None => differences.push(format!("{id:?}: planned {change}, apply did not list it")),
            Some(other) if other != change => {
                differences.push(format!("{id:?}: planned {change}\n    apply made {other}"))
            }
            Some(_) => {}
        }
    }
    for (id, change) in &carried_out {
        if !planned.contains_key(id) {
            differences.push(format!("{id:?}: not planned, apply made {change}"));
        }
    }
    let total = differences.len();
    differences.truncate(10);
    assert!(
        differences.is_empty(),
        "{when}: plan and the next apply differ in {total} changes:\n  {}",
        differences.join("\n  ")
    );
    assert_eq!(plan["summary"], applied["summary"], "{when}: plan summary");
    planned.values().filter(|c| c["action"] != "noop").count()
}

/// `status --output json` after an interrupted apply shows a revision that was
/// recorded, A's or B's, with the resources of that revision. Returns which.
fn assert_status_is_a_recorded_state(
    when: &str,
    env: &TestEnv,
    rev_a: &Value,
    rev_b: &Value,
) -> &'static str {
    let outcome = env.gitvisor(["status", "--output", "json"]);
    assert_eq!(outcome.code, Some(0), "{when}: status failed\n{outcome}");
    let status = outcome.json();
    let last = &status["lastRevision"]["id"];
    // Resources with a recorded state are those of the recorded revision; `status` also
    // lists what it observes on the host beyond that (bridges the interrupted apply
    // created: owned, live, with no recorded state yet), which must be B's.
    let resources: BTreeSet<String> = status_states(&status)
        .into_iter()
        .filter(|(_, state)| state != "?")
        .map(|((_, name), _)| name)
        .collect();
    let observed_only: BTreeSet<String> = status_states(&status)
        .into_iter()
        .filter(|(_, state)| state == "?")
        .map(|((_, name), _)| name)
        .collect();
    assert!(
        observed_only.is_subset(&names(SET_B)),
        "{when}: status lists objects that no revision declared: {observed_only:?}"
    );
    if last == rev_a {
        assert_eq!(resources, names(SET_A), "{when}: status of revision A");
        "A"
    } else if last == rev_b {
        // A cancelled run (SIGTERM) records B with the deletes it did not reach still
        // listed (Progressing): those are A's bridges that are still on the host.
        let extra: BTreeSet<String> = resources.difference(&names(SET_B)).cloned().collect();
        assert!(
            names(SET_B).is_subset(&resources) && extra.is_subset(&names(SET_A)),
            "{when}: status of revision B lists {resources:?}"
        );
        "B"
    } else {
        panic!("{when}: status shows no recorded revision:\n{outcome}");
    }
}

#[test]
fn after_an_interrupted_apply_plan_shows_exactly_what_the_next_apply_does() {
    let Some(env) = TestEnv::new("crash-plan") else {
        return;
    };
    let manifests = Manifests::new();
    let (mut monitor, deletes) = monitor_deletes(&env);

    declare(&manifests, SET_B, 1450);
    let rev_b = env.plan_json(manifests.path())["revision"].clone();
    declare(&manifests, SET_A, 1400);
    let rev_a = env.plan_json(manifests.path())["revision"].clone();

    // Kill points: at once; then after 1 … 30 of the 30 deletes (all creates and updates
    // done by then); SIGTERM at two of them.
    let only_in_a = SET_B.start - SET_A.start;
    let mut rounds: Vec<(usize, Signal)> = [0, 1, 4, 8, 12, 16, 20, 24, 28, only_in_a]
        .into_iter()
        .map(|deleted| (deleted, Signal::Kill))
        .collect();
    rounds.push((6, Signal::Term));
    rounds.push((18, Signal::Term));

    let mut part_way = 0;
    for (deleted, signal) in rounds {
        declare(&manifests, SET_A, 1400);
        env.apply(manifests.path()).expect_code(0);
        declare(&manifests, SET_B, 1450);
        sync_deletes(&env, &deletes);
        let (exit, sent) = apply_interrupted(&env, &manifests, &deletes, deleted, signal);
        let when = format!(
            "{signal:?} after {deleted} of {only_in_a} deletes ({})",
            if sent {
                exit.to_string()
            } else {
                format!("exited first: {exit}")
            }
        );
        let left = env
            .link_names()
            .into_iter()
            .filter(|name| name.starts_with(PLAN_PREFIX) && !names(SET_B).contains(name))
            .count();

        let recorded = assert_status_is_a_recorded_state(&when, &env, &rev_a, &rev_b);
        let plan = env.gitvisor(["plan", manifests.path_str(), "--output", "json"]);
        assert!(
            matches!(plan.code, Some(0 | 2)),
            "{when}: plan failed\n{plan}"
        );
        assert!(
            !plan.stderr.contains("corrupt") && !plan.stderr.contains("damaged"),
            "{when}: an interrupted store is not damaged\n{plan}"
        );
        let applied = env.gitvisor(["apply", manifests.path_str(), "--output", "json"]);
        assert_eq!(applied.code, Some(0), "{when}: the next apply\n{applied}");
        let changes = assert_same_changes(&when, &plan.json(), &applied.json()["plan"]);
        eprintln!(
            "{when}: {left} of {only_in_a} bridges left to delete; status shows revision \
             {recorded}; plan = next apply = {changes} changes"
        );
        if sent && exit.code().is_none() && left > 0 && left < only_in_a {
            part_way += 1;
        }

        let clean = env.plan_detailed(manifests.path());
        assert_eq!(clean.code, Some(0), "{when}: plan after the apply\n{clean}");
        let bridges: BTreeSet<String> = env
            .link_names()
            .into_iter()
            .filter(|name| name.starts_with(PLAN_PREFIX))
            .collect();
        assert_eq!(
            bridges,
            names(SET_B),
            "{when}: bridges after the next apply"
        );
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(
        part_way >= 5,
        "only {part_way} applies were interrupted part-way through their deletes; \
         the crash was not exercised"
    );
}

/// A tmpfs mounted over a dir for as long as it lives (unmounted in `Drop`, also when
/// the test panics).
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `kib` KiB over `dir`, keeping the files that were there.
    fn mount(dir: &std::path::Path, kib: u64) -> SmallDisk {
        let saved = read_files(dir);
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("cannot run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            dir.display()
        );
        let disk = SmallDisk {
            dir: dir.to_path_buf(),
        };
        for (name, bytes) in saved {
            std::fs::write(dir.join(name), bytes).expect("copy the store onto the tmpfs");
        }
        disk
    }

    /// Makes room, as an operator would after the disk filled up.
    fn grow(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&self.dir)
            .status()
            .expect("cannot run mount");
        assert!(status.success(), "cannot grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn read_files(dir: &std::path::Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("read the state dir")
        .map(|entry| {
            let entry = entry.expect("entry");
            (
                entry.file_name(),
                std::fs::read(entry.path()).expect("read a state file"),
            )
        })
        .collect()
}

/// An apply whose store commit fails for a full disk changes the host and records
/// nothing of it; `status` still shows the last recorded revision and `plan` exactly the
/// changes the next apply (with room again) makes.
#[test]
fn after_an_apply_that_hit_a_full_disk_plan_shows_what_the_next_apply_does() {
    let Some(env) = TestEnv::new("crash-disk") else {
        return;
    };
    let manifests = Manifests::new();
    declare(&manifests, SET_B, 1450);
    let rev_b = env.plan_json(manifests.path())["revision"].clone();
    declare(&manifests, SET_A, 1400);
    let rev_a = env.plan_json(manifests.path())["revision"].clone();
    env.apply(manifests.path()).expect_code(0);

    let store = env.state_dir().join("state.redb");
    let size = std::fs::metadata(&store).expect("stat the store").len();
    // Room for the store as it is, not for what apply B writes.
    let disk = SmallDisk::mount(env.state_dir(), size / 1024 + 8);
    declare(&manifests, SET_B, 1450);
    let failed = env.apply(manifests.path());
    assert!(
        failed.code != Some(0) && failed.stderr.contains("No space left on device"),
        "the apply did not run out of disk; the case was not exercised\n{failed}"
    );

    let when = "after a full disk";
    assert_eq!(
        assert_status_is_a_recorded_state(when, &env, &rev_a, &rev_b),
        "A"
    );
    let plan = env.gitvisor(["plan", manifests.path_str(), "--output", "json"]);
    assert!(matches!(plan.code, Some(0 | 2)), "{when}: plan\n{plan}");
    disk.grow();
    let applied = env.gitvisor(["apply", manifests.path_str(), "--output", "json"]);
    assert_eq!(applied.code, Some(0), "{when}: the next apply\n{applied}");
    assert_same_changes(when, &plan.json(), &applied.json()["plan"]);
    assert_eq!(
        assert_status_is_a_recorded_state(when, &env, &rev_a, &rev_b),
        "B"
    );
    drop(disk);
}
