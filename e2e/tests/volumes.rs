//! The Volume driver end to end, on real LVM inside one throwaway guest (the host
//! kernel has no device-mapper): see `gitvisor_e2e::lvm` for how and why.

use gitvisor_e2e::lvm::{GuestRun, SCENARIOS};
use gitvisor_e2e::{current_test_name, gitvisor_bin};

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
    run.assert_all_passed(SCENARIOS, &outcome);
}
