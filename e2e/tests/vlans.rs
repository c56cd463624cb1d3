//! Bridge VLANs end to end (ports on VLANs, VLAN sub-interfaces, a VM tap's and a
//! container veth's VLANs, repair, prune), on the real kernel inside one throwaway guest
//! (the host kernel has neither bridge VLAN filtering nor 802.1Q): see
//! `gitvisor_e2e::vlans` for how and why.

use gitvisor_e2e::vlans::{GUEST_DEADLINE, SCENARIOS};
use gitvisor_e2e::vng::GuestRun;
use gitvisor_e2e::{current_test_name, gitvisor_bin};

#[test]
fn vlan_scenarios_in_one_guest_boot() {
    let test = current_test_name("vlan_scenarios_in_one_guest_boot");
    let Some(run) = GuestRun::prepare(
        &test,
        "vlan",
        &[
            ("ip", ".ci/deps/network.sh"),
            ("bridge", ".ci/deps/network.sh"),
            ("ping", ".ci/deps/vlan.sh"),
            ("runc", ".ci/deps/container.sh"),
            ("busybox", ".ci/deps/container.sh"),
            ("nsenter", ".ci/deps/container.sh"),
        ],
    ) else {
        return;
    };
    let outcome = run.run(
        std::path::Path::new(env!("CARGO_BIN_EXE_vlan-guest")),
        gitvisor_bin(),
        "2G",
        GUEST_DEADLINE,
    );
    run.assert_all_passed(SCENARIOS, &outcome);
}
