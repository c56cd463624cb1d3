//! The Volume driver end to end, on real LVM inside one throwaway guest (the host
//! kernel has no device-mapper): see `gitvisor_e2e::lvm` for how and why.

use gitvisor_e2e::lvm::{GuestRun, SCENARIOS};
use gitvisor_e2e::{current_test_name, gitvisor_bin, loud};

#[test]
fn lvm_scenarios_in_one_guest_boot() {
    let test = current_test_name("lvm_scenarios_in_one_guest_boot");
    let Some(run) = GuestRun::prepare(&test) else {
        return;
    };
    run.make_images();
    let outcome = run.run(
        std::path::Path::new(env!("CARGO_BIN_EXE_lvm-guest")),
        gitvisor_bin(),
    );
    for line in run.log().lines().filter(|l| l.contains(" in ")) {
        loud(&format!("lvm guest: {line}"));
    }
    let results = run.results();
    let mut failures = Vec::new();
    for name in SCENARIOS {
        match results.iter().find(|r| r.name == *name) {
            Some(result) if result.ok => loud(&format!("lvm guest: ok: {name}")),
            Some(result) => failures.push(format!("FAILED: {name}\n{}", result.detail)),
            None => failures.push(format!("NOT RUN: {name}")),
        }
    }
    for result in results
        .iter()
        .filter(|r| !SCENARIOS.contains(&r.name.as_str()))
    {
        if !result.ok {
            failures.push(format!("FAILED: {}\n{}", result.name, result.detail));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- guest log ---\n{}\n--- vng ---\n{outcome}",
        failures.join("\n\n"),
        run.log()
    );
}
