//! The VM driver against the fake host: exact request sequences, convergence (a second
//! plan after apply is all no-op), restarts, stop with and without a cooperative guest,
//! pause and resume, a guest that died, prune and ownership, one observe per plan, a
//! create interrupted at every request, a cancel mid-create.

use crate::model::Spec;
use std::path::Path;
use std::sync::Arc;

use super::fake::{FakeDir, FakeHost, bridge};
use super::monitor::Control;
use super::nic::{tap_alias, tap_name, temporary_tap_name};
use super::record::RunRecord;
use super::seam::{HostError, RecordRead, RunFile, VmRequest};
use super::*;
use crate::contract::{Action, CancelToken, Effect, FailureClass, Interrupted};
use crate::drivers::bridge::LinkRequest;
use crate::model::{ADOPT_ANNOTATION, Kind, Metadata, Name, ResourceId};

fn roots() -> super::VmRoots {
    super::VmRoots::new(Path::new("/run/gitvisor"), Path::new("/var/lib/gitvisor"))
}

fn declared(name: &str, spec: &str) -> Arc<Resource> {
    let spec: VirtualMachineSpec = serde_yaml::from_str(spec).expect("test spec parses");
    Arc::new(Resource::new(
        Metadata::named(Name::parse(name).expect("valid")),
        Spec::new(spec),
    ))
}

fn id(name: &str) -> ResourceId {
    ResourceId::new(Kind::VirtualMachine, Name::parse(name).expect("valid"))
}

fn owning(names: &[&str]) -> PlanContext {
    PlanContext::new(names.iter().map(|name| id(name)))
}

/// Where the tests' builtin backend finds gitvisor-vmm.
const VMM: &str = "/usr/libexec/gitvisor/gitvisor-vmm";

fn backends(vmm: BuiltinBackend) -> Backends {
    Backends::new(vec![Arc::new(QemuBackend::default()), Arc::new(vmm)])
}

fn driver(fake: &Arc<FakeHost>) -> VmDriver {
    VmDriver::new(
        fake.clone(),
        roots(),
        backends(BuiltinBackend::with_program(VMM)),
    )
}

const WEB: &str = "memory: 256MiB\naccel: tcg\nboot: {kernel: /boot/vmlinuz, cmdline: console=ttyS0}\n\
                   disks: [{path: /images/web.img}]\nnetworks: [{bridge: br0}]\n\
                   cloudInit: {userData: \"#cloud-config\\n\"}\nshutdownTimeout: 5s";

fn web(extra: &str) -> Arc<Resource> {
    declared("web", &format!("{WEB}\n{extra}"))
}

fn host() -> Arc<FakeHost> {
    Arc::new(FakeHost::new(vec![bridge(1, "br0"), bridge(2, "br1")]))
}

async fn plan_one(driver: &VmDriver, vm: &Arc<Resource>, context: &PlanContext) -> Change {
    let mut changes = driver
        .plan(std::slice::from_ref(vm), context)
        .await
        .expect("plan");
    assert_eq!(changes.len(), 1, "{changes:?}");
    changes.remove(0)
}

async fn apply(driver: &VmDriver, change: &Change) -> Result<(), DriverError> {
    driver
        .apply(change, &StepContext::detached(change.id.clone()))
        .await
}

/// Plans and applies `vm` as owned, and expects the next plan to be a no-op.
async fn converge(driver: &VmDriver, vm: &Arc<Resource>) {
    let context = owning(&["web"]);
    let change = plan_one(driver, vm, &context).await;
    apply(driver, &change).await.expect("apply");
    let again = plan_one(driver, vm, &context).await;
    assert_eq!(
        again.action,
        Action::NoOp,
        "{:?} {:?}",
        again.fields,
        again.reasons
    );
}

fn process_argv(fake: &FakeHost, vm: &str) -> Vec<String> {
    fake.dir(vm)
        .and_then(|d| d.process)
        .map(|p| p.argv)
        .expect("a running process")
}

fn record_of(fake: &FakeHost, vm: &str) -> RunRecord {
    match fake.dir(vm).expect("run dir").record {
        RecordRead::Present(record) => *record,
        other => panic!("no record: {other:?}"),
    }
}

#[tokio::test]
async fn a_create_makes_the_run_dir_taps_seed_and_launches_in_that_order() {
    let fake = host();
    let driver = driver(&fake);
    let vm = web("");
    let change = plan_one(&driver, &vm, &owning(&[])).await;
    assert_eq!(change.action, Action::Create);
    apply(&driver, &change).await.unwrap();
    let tap = tap_name("web", 0);
    let requests = fake.requests();
    let names: Vec<String> = requests.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "create the run dir of web".to_owned(),
            format!("create tap {}", temporary_tap_name("web", 0)),
            format!("mark link #3 as {}", tap_alias("web", 0)),
            format!("rename link #3 to {tap}"),
            "enslave link #3 to bridge #1".to_owned(),
            "set link #3 up".to_owned(),
            format!("write seed.img ({} bytes)", 1 << 20),
            "launch qemu-system-x86_64".to_owned(),
        ]
    );
    let link = fake.link(&tap).expect("the tap");
    assert_eq!(link.alias.as_deref(), Some(tap_alias("web", 0).as_str()));
    assert_eq!((link.master, link.up), (Some(1), true));
    let record = record_of(&fake, "web");
    assert_eq!(
        record.argv,
        process_argv(&fake, "web"),
        "the record names what runs"
    );
    assert!(record.argv.join(" ").contains(&format!("ifname={tap}")));
    assert!(
        fake.dir("web")
            .unwrap()
            .files
            .contains_key(RunFile::Seed.file_name())
    );
    let again = plan_one(&driver, &vm, &owning(&["web"])).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);
    // `status` shows a VM in sync with its power state, process and uptime.
    let pid = fake.dir("web").unwrap().process.map(|p| p.pid).unwrap();
    fake.set_started(
        "web",
        std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600),
    );
    let again = plan_one(&driver, &vm, &owning(&["web"])).await;
    let note = again.reason().unwrap_or_default();
    assert!(
        note.starts_with(&format!("power: running (pid {pid}, up 3h")) && note.ends_with(')'),
        "{note}"
    );
}

#[tokio::test]
async fn plan_observes_once_however_many_vms() {
    let fake = host();
    let driver = driver(&fake);
    let vms: Vec<_> = (0..50).map(|i| declared(&format!("vm{i}"), WEB)).collect();
    let changes = driver.plan(&vms, &owning(&[])).await.unwrap();
    assert_eq!(changes.len(), 50);
    assert!(changes.iter().all(|c| c.action == Action::Create));
    assert_eq!(fake.observes(), 1);
    assert!(fake.requests().is_empty(), "plan changes nothing");
}

#[tokio::test]
async fn a_memory_change_is_planned_as_a_restart_and_applied_as_stop_then_start() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    let first = process_argv(&fake, "web");
    let bigger = declared("web", &WEB.replace("256MiB", "512MiB"));
    let change = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1, "{:?}", change.fields);
    assert_eq!(change.fields[0].path, "memory");
    assert_eq!(change.fields[0].effect, Effect::Restart);
    assert!(change.reasons[0].starts_with("restarts the guest: ACPI powerdown (up to 5s"));
    fake.clear_requests();
    apply(&driver, &change).await.unwrap();
    let kinds: Vec<String> = fake.requests().iter().map(ToString::to_string).collect();
    assert_eq!(
        kinds,
        [
            "ACPI powerdown",
            "wait up to 5s for process 1000 to end",
            "write the run record",
            &format!("write seed.img ({} bytes)", 1 << 20),
            "launch qemu-system-x86_64",
        ]
    );
    let second = process_argv(&fake, "web");
    assert!(second.contains(&"512M".to_owned()) && first.contains(&"256M".to_owned()));
    converge(&driver, &bigger).await;
}

#[tokio::test]
async fn every_hardware_field_is_a_restart_and_none_is_ignored() {
    let edits = [
        ("cpus", "cpus: 2"),
        ("memory", "memory: 300MiB"),
        ("boot", "boot: {kernel: /boot/other}"),
        ("disks", "disks: [{path: /images/web.img, readOnly: true}]"),
        ("networks", "networks: [{bridge: br1}]"),
        ("cloudInit", "cloudInit: {userData: x}"),
        ("console", "console: {socket: false}"),
        ("cdrom", "cdrom: /iso/x.iso"),
        ("graphics", "graphics: vnc"),
        ("accel", "accel: auto"),
    ];
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    for (field, edit) in edits {
        let key = edit.split(':').next().unwrap();
        let spec: String = WEB
            .lines()
            .filter(|line| !line.starts_with(&format!("{key}:")))
            .chain([edit])
            .collect::<Vec<_>>()
            .join("\n");
        let change = plan_one(&driver, &declared("web", &spec), &owning(&["web"])).await;
        let paths: Vec<(&str, Effect)> = change
            .fields
            .iter()
            .map(|f| (f.path.as_str(), f.effect))
            .collect();
        if field == "networks" {
            // The tap moves to the new bridge too.
            assert_eq!(
                paths,
                [(field, Effect::Restart), ("networks[0].tap", Effect::Hot)]
            );
        } else {
            assert_eq!(paths, [(field, Effect::Restart)], "{edit}");
        }
    }
    let timeout = plan_one(
        &driver,
        &declared("web", &WEB.replace("5s", "9s")),
        &owning(&["web"]),
    )
    .await;
    assert_eq!(timeout.fields[0].path, "shutdownTimeout");
    assert_eq!(timeout.fields[0].effect, Effect::Hot);
}

#[tokio::test]
async fn a_nics_published_ports_are_its_bridges_rules_and_never_restart_the_guest() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    let published = declared(
        "web",
        &WEB.replace(
            "networks: [{bridge: br0}]",
            "networks: [{bridge: br0, mac: '52:54:00:00:00:10', publish: [{hostPort: 8080, port: 80}]}]",
        ),
    );
    let with_mac = declared(
        "web",
        &WEB.replace(
            "networks: [{bridge: br0}]",
            "networks: [{bridge: br0, mac: '52:54:00:00:00:10'}]",
        ),
    );
    converge(&driver, &with_mac).await;
    fake.clear_requests();
    let change = plan_one(&driver, &published, &owning(&["web"])).await;
    assert_eq!(change.action, Action::NoOp, "{:?}", change.fields);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn stopped_powers_off_and_a_deaf_guest_is_stopped_hard_after_the_timeout() {
    for deaf in [false, true] {
        let fake = host();
        if deaf {
            fake.ignore_powerdown();
        }
        let driver = driver(&fake);
        converge(&driver, &web("")).await;
        let stopped = web("state: Stopped");
        let change = plan_one(&driver, &stopped, &owning(&["web"])).await;
        assert_eq!(change.fields[0].path, "state");
        assert_eq!(change.fields[0].old, "Running");
        fake.clear_requests();
        apply(&driver, &change).await.unwrap();
        let sent: Vec<String> = fake.requests().iter().map(ToString::to_string).collect();
        let mut expected = vec!["ACPI powerdown", "wait up to 5s for process 1000 to end"];
        if deaf {
            expected.extend(["quit", "wait up to 10s for process 1000 to end"]);
        }
        expected.push("write the run record");
        assert_eq!(sent, expected, "deaf guest: {deaf}");
        assert!(fake.dir("web").unwrap().process.is_none());
        assert!(
            fake.link(&tap_name("web", 0)).is_some(),
            "a stopped VM keeps its tap"
        );
        converge(&driver, &stopped).await;
        let again = plan_one(&driver, &stopped, &owning(&["web"])).await;
        assert_eq!(again.action, Action::NoOp);
        assert_eq!(again.reason().as_deref(), Some("power: stopped"));
    }
}

#[tokio::test]
async fn paused_pauses_and_running_resumes_the_same_process() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    fake.clear_requests();
    converge(&driver, &web("state: Paused")).await;
    assert!(fake.dir("web").unwrap().process.unwrap().paused);
    converge(&driver, &web("state: Running")).await;
    let controls: Vec<Control> = fake
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            VmRequest::Control { command, .. } => Some(command),
            _ => None,
        })
        .collect();
    assert_eq!(controls, [Control::Pause, Control::Resume]);
    assert_eq!(
        fake.dir("web").unwrap().process.unwrap().pid,
        1000,
        "never relaunched"
    );
}

#[tokio::test]
async fn a_vm_declared_paused_starts_with_its_cpus_stopped() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("state: Paused")).await;
    let process = fake.dir("web").unwrap().process.unwrap();
    assert!(process.paused && process.argv.contains(&"-S".to_owned()));
}

#[tokio::test]
async fn a_guest_that_died_is_reported_and_started_again() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    fake.end_process("web");
    let change = plan_one(&driver, &web(""), &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    assert!(
        change.reasons[0].starts_with("its process ended although it should run"),
        "{:?}",
        change.reasons
    );
    apply(&driver, &change).await.unwrap();
    assert_eq!(fake.dir("web").unwrap().process.unwrap().pid, 1001);
    converge(&driver, &web("")).await;
    // Declared Stopped after it ended on its own: only the record changes, and says so.
    fake.end_process("web");
    let change = plan_one(&driver, &web("state: Stopped"), &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields.len(), 1, "{:?}", change.fields);
    assert_eq!(
        (change.fields[0].path.as_str(), change.fields[0].effect),
        ("state", Effect::Hot)
    );
    converge(&driver, &web("state: Stopped")).await;
}

#[tokio::test]
async fn a_guest_whose_kernel_panicked_or_prints_nothing_says_so_from_its_console() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    // It ended after a panic (a missing module: no root file system): the plan's state
    // field and its reason carry the kernel's last words, which `status` shows.
    fake.set_console(
        "web",
        "[    0.00] Linux version 6.1.0-57-amd64\n\
         [    1.21] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n\
         [    1.30] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---\n",
    );
    fake.end_process("web");
    let change = plan_one(&driver, &web(""), &owning(&["web"])).await;
    let words = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)";
    let state = change.fields.iter().find(|f| f.path == "state").unwrap();
    assert_eq!(
        state.old,
        format!("Stopped (the guest's console ended with: {words})")
    );
    assert!(
        change.reasons[0].contains(&format!("its console ended with: {words}")),
        "{:?}",
        change.reasons
    );
    apply(&driver, &change).await.unwrap();
    // Running for longer than the limit with nothing on its console: the note says so.
    fake.set_console("web", "");
    fake.set_started(
        "web",
        std::time::SystemTime::now() - super::console::SILENT_AFTER * 2,
    );
    let noop = plan_one(&driver, &web(""), &owning(&["web"])).await;
    assert_eq!(noop.action, Action::NoOp);
    let note = noop.reason().unwrap_or_default();
    assert!(
        note.contains("; console: the guest has printed nothing on its console in 4m"),
        "{note}"
    );
    // Once it prints, the note is the usual one.
    fake.set_console("web", "[    0.00] Linux version 6.1.0-57-amd64\n");
    let noop = plan_one(&driver, &web(""), &owning(&["web"])).await;
    assert!(!noop.reason().unwrap_or_default().contains("console"));
}

#[tokio::test]
async fn a_tap_released_from_its_bridge_is_reattached_without_a_restart() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    // The bridge was deleted and made again (a new index): the tap lost its master.
    fake.remove_link("br0");
    fake.add_link(bridge(9, "br0"));
    let mut tap = fake.link(&tap_name("web", 0)).unwrap();
    fake.remove_link(&tap.name);
    tap.master = None;
    fake.add_link(tap);
    let change = plan_one(&driver, &web(""), &owning(&["web"])).await;
    assert_eq!(change.fields.len(), 1);
    assert_eq!(change.fields[0].path, "networks[0].tap");
    assert_eq!(change.fields[0].effect, Effect::Hot);
    fake.clear_requests();
    apply(&driver, &change).await.unwrap();
    assert_eq!(
        fake.requests(),
        [VmRequest::Link(LinkRequest::SetMaster {
            port_index: 3,
            master: Some(9)
        })]
    );
    converge(&driver, &web("")).await;
}

#[tokio::test]
async fn prune_stops_the_guest_and_removes_its_taps_then_its_run_dir() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    let changes = driver.plan(&[], &owning(&["web"])).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].action, Action::Delete);
    fake.clear_requests();
    apply(&driver, &changes[0]).await.unwrap();
    let sent: Vec<String> = fake.requests().iter().map(ToString::to_string).collect();
    assert_eq!(
        sent,
        [
            "ACPI powerdown",
            "wait up to 5s for process 1000 to end",
            "delete link #3",
            "remove run dir web",
        ]
    );
    assert!(fake.dir_names().is_empty());
    assert!(fake.link(&tap_name("web", 0)).is_none());
    assert!(
        driver
            .plan(&[], &owning(&["web"]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn only_a_vm_with_record_and_store_record_is_ours() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    // A lost store: the VM is neither changed nor pruned, and conflicts when declared.
    assert!(driver.plan(&[], &owning(&[])).await.unwrap().is_empty());
    let change = plan_one(&driver, &web(""), &owning(&[])).await;
    assert_eq!(change.action, Action::Conflict);
    assert!(change.reasons[0].contains("has no record of creating it"));
    // Adopting it takes it over as it is.
    let mut adopting = (*web("")).clone();
    adopting
        .metadata
        .annotations
        .insert(ADOPT_ANNOTATION.into(), "true".into());
    let adopted = plan_one(&driver, &Arc::new(adopting), &owning(&[])).await;
    assert_eq!(adopted.action, Action::Update);
    // A run dir gitvisor did not write is a conflict, never adopted, never pruned.
    fake.insert_dir(
        "other",
        FakeDir {
            record: RecordRead::Missing,
            files: Default::default(),
            process: None,
        },
    );
    let other = declared("other", WEB);
    let change = plan_one(&driver, &other, &owning(&["other"])).await;
    assert_eq!(change.action, Action::Conflict);
    assert!(
        driver
            .plan(&[], &owning(&["other"]))
            .await
            .unwrap()
            .iter()
            .all(|c| c.id != id("other"))
    );
}

#[tokio::test]
async fn a_foreign_link_under_the_tap_name_fails_the_create_before_anything() {
    let fake = host();
    let mut squatter = bridge(7, &tap_name("web", 0));
    squatter.alias = None;
    squatter.kind = None;
    fake.add_link(squatter);
    let driver = driver(&fake);
    let change = plan_one(&driver, &web(""), &owning(&["web"])).await;
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r.contains("holds the name of this VM's tap"))
    );
    let error = apply(&driver, &change).await.unwrap_err();
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(fake.requests().is_empty());
}

const MICRO: &str = "hypervisor: builtin\nmemory: 128MiB\nboot: {kernel: /boot/vmlinux, cmdline: quiet}\n\
                     disks: [{path: /images/micro.img}]\nnetworks: [{bridge: br0}]\n\
                     cloudInit: {metaData: \"instance-id: micro\"}\nshutdownTimeout: 5s";

fn micro(extra: &str) -> Arc<Resource> {
    declared("web", &format!("{MICRO}\n{extra}"))
}

/// A host with KVM, as the builtin VMM needs.
fn kvm_host() -> Arc<FakeHost> {
    let fake = host();
    fake.set_facts(super::launch::HostFacts {
        kvm: true,
        ..Default::default()
    });
    fake
}

fn sent(fake: &FakeHost) -> Vec<String> {
    fake.requests().iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn builtin_is_created_restarted_stopped_and_pruned_like_qemu() {
    let fake = kvm_host();
    let driver = driver(&fake);
    let change = plan_one(&driver, &micro(""), &owning(&[])).await;
    assert_eq!(change.action, Action::Create, "{:?}", change.reasons);
    apply(&driver, &change).await.unwrap();
    let tap = tap_name("web", 0);
    assert_eq!(
        sent(&fake),
        [
            "create the run dir of web".to_owned(),
            format!("create tap {}", temporary_tap_name("web", 0)),
            format!("mark link #3 as {}", tap_alias("web", 0)),
            format!("rename link #3 to {tap}"),
            "enslave link #3 to bridge #1".to_owned(),
            "set link #3 up".to_owned(),
            format!("write seed.img ({} bytes)", 1 << 20),
            format!("launch {VMM}"),
        ]
    );
    let argv = process_argv(&fake, "web");
    assert_eq!(
        record_of(&fake, "web").argv,
        argv,
        "the record names what runs"
    );
    let text = argv.join(" ");
    for expected in [
        "--kernel /boot/vmlinux",
        "--memory 128",
        "--disk path=/images/micro.img,id=disk0",
        "--disk path=/run/gitvisor/vm/web/seed.img,readonly=on,id=cidata",
        &format!("--net tap={tap},mac="),
        "--api-socket /run/gitvisor/vm/web/api.sock",
        "--pid-file /run/gitvisor/vm/web/pid",
        "--daemonize",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in\n{text}");
    }
    let link = fake.link(&tap).expect("the tap");
    assert_eq!((link.master, link.up), (Some(1), true));
    let again = plan_one(&driver, &micro(""), &owning(&["web"])).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);

    // A memory change restarts it: ACPI power button, the wait, a new launch.
    let bigger = declared("web", &MICRO.replace("128MiB", "256MiB"));
    let change = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    assert_eq!(change.fields[0].path, "memory");
    assert_eq!(change.fields[0].effect, Effect::Restart);
    assert!(
        change.reasons[0].starts_with("restarts the guest: ACPI power button (up to 5s"),
        "{:?}",
        change.reasons
    );
    fake.clear_requests();
    apply(&driver, &change).await.unwrap();
    assert_eq!(
        sent(&fake),
        [
            "ACPI power button",
            "wait up to 5s for process 1000 to end",
            "write the run record",
            &format!("write seed.img ({} bytes)", 1 << 20),
            &format!("launch {VMM}"),
        ]
    );
    assert!(
        process_argv(&fake, "web")
            .join(" ")
            .contains("--memory 256")
    );
    converge(&driver, &bigger).await;

    // Stopped, by a guest that ignores ACPI power button: `stop` after the timeout.
    fake.ignore_powerdown();
    let stopped = declared(
        "web",
        &format!("{}\nstate: Stopped", MICRO.replace("128MiB", "256MiB")),
    );
    let change = plan_one(&driver, &stopped, &owning(&["web"])).await;
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r.starts_with("stops the guest: ACPI power button, up to 5s")),
        "{:?}",
        change.reasons
    );
    fake.clear_requests();
    apply(&driver, &change).await.unwrap();
    assert_eq!(
        sent(&fake),
        [
            "ACPI power button",
            "wait up to 5s for process 1001 to end",
            "stop",
            "wait up to 10s for process 1001 to end",
            "write the run record",
        ]
    );
    assert!(fake.dir("web").unwrap().process.is_none());
    converge(&driver, &stopped).await;

    // Pruned: its tap and run dir go.
    let changes = driver.plan(&[], &owning(&["web"])).await.unwrap();
    assert_eq!(changes[0].action, Action::Delete);
    fake.clear_requests();
    apply(&driver, &changes[0]).await.unwrap();
    assert_eq!(
        sent(&fake),
        [
            "delete link #3".to_owned(),
            "remove run dir web".to_owned(),
            format!(
                "remove kernel cache {}",
                super::kernel_cache::cache_dir_name("/boot/vmlinux")
            ),
        ]
    );
    assert!(fake.dir_names().is_empty());
    assert!(fake.kernel_caches().is_empty());
}

#[tokio::test]
async fn builtin_without_kvm_or_its_binary_plans_why_and_apply_touches_nothing() {
    for (kvm, vmm, expected) in [
        (
            false,
            BuiltinBackend::with_program(VMM),
            "/dev/kvm cannot be opened",
        ),
        (
            true,
            BuiltinBackend::missing(
                "gitvisor-vmm (the builtin hypervisor) was found neither at /usr/bin/gitvisor-vmm nor on PATH",
            ),
            "gitvisor-vmm (the builtin hypervisor) was found neither",
        ),
    ] {
        let fake = host();
        fake.set_facts(super::launch::HostFacts {
            kvm,
            ..Default::default()
        });
        let driver = VmDriver::new(fake.clone(), roots(), backends(vmm));
        let change = plan_one(&driver, &micro(""), &owning(&[])).await;
        assert_eq!(change.action, Action::Create);
        assert!(
            change
                .reasons
                .iter()
                .any(|r| r.starts_with("apply will fail: ") && r.contains(expected)),
            "{:?}",
            change.reasons
        );
        let error = apply(&driver, &change).await.unwrap_err();
        assert_eq!(error.class(), FailureClass::NeedsUser);
        assert!(crate::contract::chain(&error).contains(expected));
        assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    }
}

#[tokio::test]
async fn a_guest_larger_than_the_hosts_ram_and_swap_plans_why_unless_overcommitted() {
    let fake = host();
    fake.set_facts(super::launch::HostFacts {
        kvm: true,
        memory: Some(24 << 30),
        ..Default::default()
    });
    let driver = driver(&fake);
    let huge = declared("web", &MICRO.replace("128MiB", "1TiB"));
    let change = plan_one(&driver, &huge, &owning(&[])).await;
    assert_eq!(change.action, Action::Create);
    let expected = "memory: 1TiB is more than this host can back (24GiB of RAM and swap together)";
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r.starts_with("apply will fail: ") && r.contains(expected)),
        "{:?}",
        change.reasons
    );
    let error = apply(&driver, &change).await.unwrap_err();
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(crate::contract::chain(&error).contains(expected));
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // The annotation lets it through, and gitvisor-vmm is told so.
    let mut overcommitted = (*huge).clone();
    overcommitted.metadata.annotations.insert(
        crate::model::OVERCOMMIT_ANNOTATION.to_owned(),
        "true".to_owned(),
    );
    let change = plan_one(&driver, &Arc::new(overcommitted), &owning(&[])).await;
    assert!(
        !change.reasons.iter().any(|r| r.contains("apply will fail")),
        "{:?}",
        change.reasons
    );
    apply(&driver, &change).await.unwrap();
    let argv = process_argv(&fake, "web");
    assert!(argv.iter().any(|arg| arg == "--overcommit"), "{argv:?}");
}

#[tokio::test]
async fn builtin_plans_what_gitvisor_vmm_cannot_do_as_unsupported() {
    let fake = kvm_host();
    let driver = driver(&fake);
    let paused = plan_one(
        &driver,
        &micro("state: Paused\ngraphics: vnc"),
        &owning(&[]),
    )
    .await;
    assert_eq!(paused.action, Action::Unsupported);
    assert_eq!(paused.reasons.len(), 2, "{:?}", paused.reasons);
    assert!(paused.reasons[0].starts_with("spec.state: hypervisor: builtin cannot pause"));
    assert!(paused.reasons[1].starts_with("spec.graphics: "));
    assert!(fake.requests().is_empty());
    let only_qemu = VmDriver::new(
        fake.clone(),
        roots(),
        Backends::new(vec![Arc::new(QemuBackend::default())]),
    );
    let change = plan_one(&only_qemu, &micro(""), &owning(&[])).await;
    assert_eq!(change.action, Action::Unsupported);
    assert_eq!(
        change.reasons,
        ["hypervisor: builtin is not in this build (it has: qemu)"]
    );
}

#[tokio::test]
async fn a_vm_moved_between_hypervisors_is_stopped_by_the_one_that_runs_it() {
    let fake = kvm_host();
    let driver = driver(&fake);
    let qemu = declared("web", &MICRO.replace("hypervisor: builtin\n", ""));
    converge(&driver, &qemu).await;
    let change = plan_one(&driver, &micro(""), &owning(&["web"])).await;
    assert_eq!(change.fields[0].path, "hypervisor");
    assert_eq!(change.fields[0].effect, Effect::Restart);
    fake.clear_requests();
    apply(&driver, &change).await.unwrap();
    let requests = fake.requests();
    assert!(matches!(
        requests[0],
        VmRequest::Control {
            hypervisor: crate::drivers::vm::Hypervisor::Qemu,
            command: Control::Powerdown,
            ..
        }
    ));
    assert_eq!(process_argv(&fake, "web")[0], VMM);
    converge(&driver, &micro("")).await;
}

fn uefi_host() -> Arc<FakeHost> {
    let fake = host();
    fake.set_facts(super::launch::HostFacts {
        kvm: false,
        uefi: Some(super::launch::UefiFirmware {
            code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
            vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
        }),
        memory: None,
    });
    fake
}

fn uefi_vm(memory: &str, state: &str) -> Arc<Resource> {
    declared(
        "web",
        &format!(
            "memory: {memory}\nboot: {{firmware: uefi}}\naccel: tcg\ndisks: [{{path: /a.img}}]\nstate: {state}"
        ),
    )
}

const NVRAM: &str = super::paths::NVRAM_FILE;
const TEMPLATE: &[u8] = b"/usr/share/OVMF/OVMF_VARS_4M.fd";

#[tokio::test]
async fn uefi_gets_its_own_variable_store_under_the_state_dir_once() {
    let fake = uefi_host();
    let driver = driver(&fake);
    converge(&driver, &uefi_vm("256MiB", "Running")).await;
    let keeps = |fake: &FakeHost| {
        fake.requests()
            .iter()
            .filter(|r| matches!(r, VmRequest::KeepNvram { .. }))
            .count()
    };
    assert_eq!(keeps(&fake), 1);
    assert_eq!(fake.data_dir("web").unwrap()[NVRAM], TEMPLATE);
    assert!(!fake.dir("web").unwrap().files.contains_key(NVRAM));
    assert!(
        process_argv(&fake, "web").iter().any(
            |a| a.contains("if=pflash") && a.ends_with("/var/lib/gitvisor/vm/web/OVMF_VARS.fd")
        ),
        "QEMU opens the store in the data dir: {:?}",
        process_argv(&fake, "web")
    );
    // A restart keeps the VM's own store.
    converge(&driver, &uefi_vm("512MiB", "Running")).await;
    assert_eq!(keeps(&fake), 2);
    assert_eq!(fake.data_dir("web").unwrap()[NVRAM], TEMPLATE);
}

#[tokio::test]
async fn the_variable_store_survives_a_host_reboot_and_goes_only_with_a_prune() {
    let fake = uefi_host();
    let driver = driver(&fake);
    converge(&driver, &uefi_vm("256MiB", "Running")).await;
    // What the guest wrote (a boot entry) must survive.
    fake.set_nvram("web", b"boot entries".to_vec());
    fake.reboot();
    let vm = uefi_vm("256MiB", "Running");
    let after = plan_one(&driver, &vm, &owning(&["web"])).await;
    assert_eq!(after.action, Action::Create, "{:?}", after.reasons);
    apply(&driver, &after).await.unwrap();
    assert_eq!(fake.data_dir("web").unwrap()[NVRAM], b"boot entries");
    assert!(fake.dir("web").unwrap().process.is_some());

    // Undeclared after another reboot: only the data dir is left, and a prune removes it.
    fake.reboot();
    assert!(driver.plan(&[], &owning(&[])).await.unwrap().is_empty());
    let changes = driver.plan(&[], &owning(&["web"])).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].action, Action::Delete);
    fake.clear_requests();
    apply(&driver, &changes[0]).await.unwrap();
    assert_eq!(
        fake.requests(),
        [VmRequest::RemoveDataDir { vm: "web".into() }]
    );
    assert_eq!(fake.data_dir("web"), None);
    assert!(
        driver
            .plan(&[], &owning(&["web"]))
            .await
            .unwrap()
            .is_empty()
    );

    // A running VM pruned: stopped, then its run dir and its data dir go.
    converge(&driver, &uefi_vm("256MiB", "Running")).await;
    let changes = driver.plan(&[], &owning(&["web"])).await.unwrap();
    apply(&driver, &changes[0]).await.unwrap();
    assert_eq!(fake.dir("web"), None);
    assert_eq!(fake.data_dir("web"), None);
}

#[tokio::test]
async fn a_variable_store_left_in_the_run_dir_moves_to_the_state_dir_at_the_next_start() {
    let fake = uefi_host();
    let driver = driver(&fake);
    // A VM an earlier version created: stopped, its store in the run dir.
    converge(&driver, &uefi_vm("256MiB", "Stopped")).await;
    let mut dir = fake.dir("web").unwrap();
    dir.files.insert(NVRAM, b"old boot entries".to_vec());
    fake.insert_dir("web", dir);
    assert_eq!(fake.data_dir("web"), None);
    converge(&driver, &uefi_vm("256MiB", "Running")).await;
    assert_eq!(fake.data_dir("web").unwrap()[NVRAM], b"old boot entries");
    assert!(
        !fake.dir("web").unwrap().files.contains_key(NVRAM),
        "moved, not copied"
    );
}

/// A create that fails at request `k`, for every `k`: the next plan and apply converge
/// to exactly one marked, enslaved tap and one running process, and nothing unmarked
/// holds the tap's name.
#[tokio::test]
async fn a_create_interrupted_at_any_request_is_finished_by_the_next_run() {
    let vm = web("");
    let total = {
        let fake = host();
        let change = plan_one(&driver(&fake), &vm, &owning(&[])).await;
        apply(&driver(&fake), &change).await.unwrap();
        fake.requests().len()
    };
    for k in 0..total {
        let fake = host();
        let driver = driver(&fake);
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        {
            let counter = counter.clone();
            fake.fail_when(
                move |_| counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == k,
                HostError::new("injected", FailureClass::Transient),
            );
        }
        let change = plan_one(&driver, &vm, &owning(&["web"])).await;
        assert!(apply(&driver, &change).await.is_err(), "request {k} failed");
        converge(&driver, &vm).await;
        let taps: Vec<_> = fake
            .links()
            .into_iter()
            .filter(|l| l.kind != Some(crate::drivers::bridge::LinkKind::Bridge))
            .collect();
        assert_eq!(taps.len(), 1, "after a failure at request {k}: {taps:?}");
        assert_eq!(taps[0].name, tap_name("web", 0));
        assert_eq!(taps[0].alias.as_deref(), Some(tap_alias("web", 0).as_str()));
        assert_eq!(taps[0].master, Some(1));
        assert!(fake.dir("web").unwrap().process.is_some());
        assert_eq!(fake.dir_names(), ["web"]);
    }
}

#[tokio::test]
async fn a_cancel_during_a_tap_create_finishes_marking_it_and_stops() {
    let fake = host();
    let cancel = CancelToken::new();
    {
        let cancel = cancel.clone();
        fake.on_request(move |request| {
            if matches!(request, VmRequest::CreateTap { .. }) {
                cancel.cancel();
            }
        });
    }
    let driver = driver(&fake);
    let change = plan_one(&driver, &web(""), &owning(&["web"])).await;
    let step = StepContext::new(change.id.clone(), cancel, DEFAULT_STEP_BUDGET, None);
    let error = driver.apply(&change, &step).await.unwrap_err();
    assert_eq!(error.interruption(), Some(&Interrupted::Cancelled));
    assert!(
        error
            .chain()
            .starts_with("vm web: stopped before enslave link #3"),
        "{}",
        error.chain()
    );
    let tap = fake
        .link(&tap_name("web", 0))
        .expect("renamed to its final name");
    assert_eq!(tap.alias.as_deref(), Some(tap_alias("web", 0).as_str()));
    converge(&driver, &web("")).await;
}

use crate::contract::DEFAULT_STEP_BUDGET;

/// A lease line of dnsmasq's file for `mac`, expiring at `expires` (0: never).
fn lease(mac: &str, address: &str, expires: u64) -> crate::drivers::network::Lease {
    crate::drivers::network::parse_leases(&format!("{expires} {mac} {address} guest *")).remove(0)
}

#[tokio::test]
async fn status_shows_the_addresses_leased_to_the_vms_nics() {
    let fake = host();
    let driver = driver(&fake);
    let vm = web("");
    converge(&driver, &vm).await;
    let mac = super::nic::mac_address("web", 0, None).to_string();
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    fake.set_leases(
        [
            (
                "br0".to_owned(),
                vec![
                    lease("52:54:00:aa:bb:cc", "10.0.0.9", soon),
                    lease(&mac.to_uppercase(), "10.0.0.10", soon),
                    lease(&mac, "10.0.0.11", 1),
                ],
            ),
            // The same MAC on a bridge the NIC is not on: a stale lease, not its address.
            ("br1".to_owned(), vec![lease(&mac, "10.1.0.10", 0)]),
        ]
        .into(),
    );
    let noop = plan_one(&driver, &vm, &owning(&["web"])).await;
    assert_eq!(noop.action, Action::NoOp);
    let note = noop.reason().unwrap_or_default();
    assert!(note.starts_with("power: running (pid "), "{note}");
    assert!(note.ends_with("; address: 10.0.0.10 on br0"), "{note}");
    assert_eq!(
        fake.observes(),
        3,
        "the leases come with the one batch observe"
    );

    // A second NIC on br1, whose lease is now the NIC's.
    let two = web("");
    let Some(mut spec) = two.spec.get::<VirtualMachineSpec>().cloned() else {
        unreachable!()
    };
    spec.networks
        .push(serde_yaml::from_str("bridge: br1").unwrap());
    let mac1 = super::nic::mac_address("web", 1, None).to_string();
    fake.set_leases(
        [
            ("br0".to_owned(), vec![lease(&mac, "10.0.0.10", 0)]),
            ("br1".to_owned(), vec![lease(&mac1, "10.1.0.7", 0)]),
        ]
        .into(),
    );
    let two = Arc::new(Resource::new(two.metadata.clone(), Spec::new(spec)));
    converge(&driver, &two).await;
    let note = plan_one(&driver, &two, &owning(&["web"]))
        .await
        .reason()
        .unwrap_or_default();
    assert!(
        note.ends_with("; addresses: 10.0.0.10 on br0, 10.1.0.7 on br1"),
        "{note}"
    );
}

/// Where the tests' manifests are.
const MANIFEST: &str = "/srv/manifests/web.yaml";

/// `web` as a manifest file declares it, with `boot` written out one field a line; the
/// resource places its fields as the loader's would.
fn web_from_file(initrd: &str, memory: &str) -> Arc<Resource> {
    let yaml = format!(
        "apiVersion: gitvisor.dev/v1alpha1\nkind: VirtualMachine\nmetadata:\n  name: web\nspec:\n  \
         memory: {memory}\n  accel: tcg\n  boot:\n    kernel: /boot/vmlinuz\n    initrd: {initrd}\n  \
         disks: [{{path: /images/web.img}}]\n  networks: [{{bridge: br0}}]\n  shutdownTimeout: 5s\n"
    );
    let document: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("test YAML");
    let spec: VirtualMachineSpec =
        serde_yaml::from_value(document["spec"].clone()).expect("test spec parses");
    let mut resource = Resource::new(
        Metadata::named(Name::parse("web").expect("valid")),
        Spec::new(spec),
    );
    resource.origin = crate::manifest::test_origin(std::path::Path::new(MANIFEST), &yaml);
    Arc::new(resource)
}

#[tokio::test]
async fn a_missing_initrd_is_refused_at_plan_with_file_line_and_field_and_the_guest_runs_on() {
    let fake = host();
    fake.put_file("/boot/initrd.img", false);
    let driver = driver(&fake);
    let context = owning(&["web"]);

    // Created without the initrd: refused, nothing touched.
    let missing = web_from_file("/boot/missing.img", "256MiB");
    let change = plan_one(&driver, &missing, &context).await;
    assert_eq!(change.action, Action::Unsupported, "{:?}", change.reasons);
    let expected = format!(
        "{MANIFEST}:10:13: spec.boot.initrd: /boot/missing.img does not exist on this host"
    );
    assert!(
        change.reasons[0].starts_with(&expected),
        "{:?}",
        change.reasons
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // Running with a good initrd, a revision that restarts it onto a missing one is
    // refused at plan: the plan stops nothing, and says the guest keeps running.
    converge(&driver, &web_from_file("/boot/initrd.img", "256MiB")).await;
    let pid = fake.dir("web").and_then(|d| d.process).unwrap().pid;
    let missing = web_from_file("/boot/missing.img", "512MiB");
    let change = plan_one(&driver, &missing, &context).await;
    assert_eq!(change.action, Action::Unsupported, "{:?}", change.reasons);
    assert!(
        change.reasons[0].starts_with(&expected),
        "{:?}",
        change.reasons
    );
    assert!(
        change
            .reasons
            .iter()
            .any(|r| r.contains("keeps running on its previous configuration")),
        "{:?}",
        change.reasons
    );
    fake.clear_requests();
    let error = apply(&driver, &change).await;
    assert!(error.is_ok(), "an unsupported change is not applied");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(fake.dir("web").and_then(|d| d.process).unwrap().pid, pid);

    // A qcow2 image declared raw is refused on the field that makes it raw.
    fake.put_file("/images/web.img", true);
    let change = plan_one(
        &driver,
        &web_from_file("/boot/initrd.img", "512MiB"),
        &context,
    )
    .await;
    assert_eq!(change.action, Action::Unsupported, "{:?}", change.reasons);
    assert!(
        change.reasons[0].contains(":11:")
            && change.reasons[0].contains("spec.disks[0].path: /images/web.img is a qcow2 image"),
        "{:?}",
        change.reasons
    );
}

#[tokio::test]
async fn a_file_gone_between_plan_and_apply_stops_nothing() {
    let fake = host();
    fake.put_file("/boot/initrd.img", false);
    let driver = driver(&fake);
    let with_initrd = WEB.replace(
        "boot: {kernel: /boot/vmlinuz, cmdline: console=ttyS0}",
        "boot: {kernel: /boot/vmlinuz, initrd: /boot/initrd.img}",
    );
    converge(&driver, &declared("web", &with_initrd)).await;
    let pid = fake.dir("web").and_then(|d| d.process).unwrap().pid;
    let bigger = declared("web", &with_initrd.replace("256MiB", "512MiB"));
    let change = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update, "{:?}", change.reasons);
    fake.remove_file("/boot/initrd.img");
    fake.clear_requests();
    let error = apply(&driver, &change).await.unwrap_err();
    let chain = crate::contract::chain(&error);
    assert!(
        chain.contains("spec.boot.initrd: /boot/initrd.img does not exist on this host"),
        "{chain}"
    );
    assert_eq!(error.class(), FailureClass::NeedsUser);
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(fake.dir("web").and_then(|d| d.process).unwrap().pid, pid);
}

#[tokio::test]
async fn a_restart_whose_new_launch_fails_runs_the_previous_configuration_again() {
    let fake = host();
    let driver = driver(&fake);
    converge(&driver, &web("")).await;
    let before = record_of(&fake, "web");
    let bigger = declared("web", &WEB.replace("256MiB", "512MiB"));
    let change = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    // QEMU refuses the new command line (say, more memory than it can map now).
    fake.fail_when(
        |request| matches!(request, VmRequest::Launch { argv, .. } if argv.iter().any(|a| a == "512M")),
        HostError::new(
            "qemu-system-x86_64 failed (exit status: 1): cannot set up guest memory 'pc.ram'",
            FailureClass::NeedsUser,
        ),
    );
    fake.clear_requests();
    let error = apply(&driver, &change).await.unwrap_err();
    let chain = crate::contract::chain(&error);
    assert!(
        chain.contains("the new configuration did not start; the guest runs again on its previous configuration")
            && chain.contains("cannot set up guest memory"),
        "{chain}"
    );
    assert_eq!(error.class(), FailureClass::NeedsUser);
    let kinds: Vec<String> = fake.requests().iter().map(ToString::to_string).collect();
    assert_eq!(
        kinds,
        [
            "ACPI powerdown",
            "wait up to 5s for process 1000 to end",
            "write the run record",
            &format!("write seed.img ({} bytes)", 1 << 20),
            "launch qemu-system-x86_64",
            "write the run record",
            &format!("write seed.img ({} bytes)", 1 << 20),
            "launch qemu-system-x86_64",
        ]
    );
    // The previous configuration runs, under its own record: the next plan tries the
    // new one again, as a restart of a running guest.
    assert_eq!(record_of(&fake, "web"), before);
    assert_eq!(process_argv(&fake, "web"), before.argv);
    let again = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(again.action, Action::Update);
    assert!(
        again
            .reasons
            .iter()
            .any(|r| r.starts_with("restarts the guest"))
    );
}

/// Where the tests' builtin guests keep `/boot/vmlinux` decompressed.
fn vmlinux_cache() -> String {
    format!(
        "/var/lib/gitvisor/vmm-kernels/{}",
        super::kernel_cache::cache_dir_name("/boot/vmlinux")
    )
}

#[tokio::test]
async fn a_builtin_guest_boots_through_a_kernel_cache_under_the_state_dir_collected_at_prune() {
    let fake = kvm_host();
    let driver = driver(&fake);
    let cached = super::kernel_cache::cache_dir_name("/boot/vmlinux");
    // Left by a VM pruned by an earlier gitvisor: no declared VM boots its kernel.
    let gone = super::kernel_cache::cache_dir_name("/boot/gone");
    fake.put_kernel_cache(&gone);
    let change = plan_one(&driver, &micro(""), &owning(&[])).await;
    assert_eq!(change.action, Action::Create, "{:?}", change.reasons);
    apply(&driver, &change).await.unwrap();
    let text = process_argv(&fake, "web").join(" ");
    let expected = format!("--kernel /boot/vmlinux --kernel-cache {}", vmlinux_cache());
    assert!(text.contains(&expected), "{expected}\nnot in\n{text}");
    assert_eq!(
        sent(&fake).last().map(String::as_str),
        Some(format!("remove kernel cache {gone}").as_str()),
        "the stale directory goes with the first change after the plan that found it"
    );
    assert_eq!(fake.kernel_caches(), std::slice::from_ref(&cached));
    converge(&driver, &micro("")).await;

    // A second guest of the same kernel shares the directory; pruning one keeps it.
    let other = declared("other", MICRO);
    let context = owning(&["web"]);
    let changes = driver
        .plan(&[micro(""), other.clone()], &context)
        .await
        .unwrap();
    assert_eq!(changes[1].action, Action::Create);
    apply(&driver, &changes[1]).await.unwrap();
    assert!(process_argv(&fake, "other").join(" ").contains(&expected));
    let changes = driver
        .plan(std::slice::from_ref(&other), &owning(&["web", "other"]))
        .await
        .unwrap();
    let prune = changes.iter().find(|c| c.action == Action::Delete).unwrap();
    fake.clear_requests();
    apply(&driver, prune).await.unwrap();
    assert!(
        !sent(&fake)
            .iter()
            .any(|r| r.starts_with("remove kernel cache")),
        "{:?}",
        sent(&fake)
    );
    assert_eq!(fake.kernel_caches(), std::slice::from_ref(&cached));

    // The last guest booting it pruned: the directory goes too.
    let changes = driver.plan(&[], &owning(&["other"])).await.unwrap();
    fake.clear_requests();
    apply(&driver, &changes[0]).await.unwrap();
    assert_eq!(
        sent(&fake).last().map(String::as_str),
        Some(format!("remove kernel cache {cached}").as_str())
    );
    assert!(fake.kernel_caches().is_empty());
}

#[tokio::test]
async fn a_builtin_guest_launched_without_the_kernel_cache_runs_on_until_its_next_restart() {
    let fake = kvm_host();
    let driver = driver(&fake);
    converge(&driver, &micro("")).await;
    // As an earlier gitvisor launched it: no --kernel-cache in the record or the process.
    let mut dir = fake.dir("web").unwrap();
    let without = |argv: &[String]| -> Vec<String> {
        let at = argv.iter().position(|a| a == "--kernel-cache").unwrap();
        [&argv[..at], &argv[at + 2..]].concat()
    };
    let old = without(&process_argv(&fake, "web"));
    let RecordRead::Present(record) = &mut dir.record else {
        panic!("a record")
    };
    record.argv = old.clone();
    dir.process.as_mut().unwrap().argv = old;
    fake.insert_dir("web", dir);
    let again = plan_one(&driver, &micro(""), &owning(&["web"])).await;
    assert_eq!(again.action, Action::NoOp, "{:?}", again.fields);

    // Its next restart (a memory change) launches it with the cache.
    let bigger = declared("web", &MICRO.replace("128MiB", "256MiB"));
    let change = plan_one(&driver, &bigger, &owning(&["web"])).await;
    assert_eq!(change.action, Action::Update);
    apply(&driver, &change).await.unwrap();
    let text = process_argv(&fake, "web").join(" ");
    assert!(
        text.contains(&format!("--kernel-cache {}", vmlinux_cache())),
        "{text}"
    );
}
