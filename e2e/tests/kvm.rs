//! Stock Linux on KVM through the real gitvisor: Debian's kernel on `hypervisor: builtin`
//! (gitvisor-vmm) and on `hypervisor: qemu` with KVM, inside one throwaway `-cpu max`
//! guest whose kernel has a working nested `/dev/kvm` (this machine's own hangs stock
//! kernels): see `gitvisor_e2e::kvm` for how and why.

use gitvisor_e2e::kvm::{GUEST_DEADLINE, SCENARIOS};
use gitvisor_e2e::vng::GuestRun;
use gitvisor_e2e::{current_test_name, gitvisor_bin};

#[test]
fn linux_on_kvm_scenarios_in_one_cpu_max_guest() {
    let test = current_test_name("linux_on_kvm_scenarios_in_one_cpu_max_guest");
    let Some(run) = GuestRun::prepare(
        &test,
        "kvm",
        &[
            ("ip", ".ci/deps/network.sh"),
            ("nft", ".ci/deps/network.sh"),
            ("dnsmasq", ".ci/deps/network.sh"),
            ("ping", ".ci/deps/vlan.sh"),
            ("busybox", ".ci/deps/container.sh"),
            ("nsenter", ".ci/deps/container.sh"),
        ],
    ) else {
        return;
    };
    let vmm = gitvisor_bin().with_file_name("gitvisor-vmm");
    assert!(
        vmm.is_file(),
        "{} does not exist; build it with `cargo build -p gitvisor -p gitvisor-vmm`",
        vmm.display()
    );
    let run = run.with_qemu_opts("-cpu max");
    let outcome = run.run(
        std::path::Path::new(env!("CARGO_BIN_EXE_kvm-guest")),
        gitvisor_bin(),
        "2G",
        GUEST_DEADLINE,
    );
    run.assert_all_passed(SCENARIOS, &outcome);
}
