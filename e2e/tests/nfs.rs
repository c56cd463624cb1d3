//! The NfsMount kind end to end (mount over a gitvisor bridge, drift, a mount that is not
//! gitvisor's, a dead server, repair, a container mounting a share, a volume on the share,
//! prune), on the real NFS client and server inside one throwaway guest (the host kernel
//! has neither): see `gitvisor_e2e::nfs` for how and why.

use gitvisor_e2e::nfs::{GUEST_DEADLINE, SCENARIOS};
use gitvisor_e2e::vng::GuestRun;
use gitvisor_e2e::{current_test_name, gitvisor_bin};

#[test]
fn nfs_scenarios_in_one_guest_boot() {
    let test = current_test_name("nfs_scenarios_in_one_guest_boot");
    let Some(run) = GuestRun::prepare(
        &test,
        "nfs",
        &[
            ("mount.nfs", ".ci/deps/nfs.sh"),
            ("rpc.nfsd", ".ci/deps/nfs.sh"),
            ("exportfs", ".ci/deps/nfs.sh"),
            ("rpc.mountd", ".ci/deps/nfs.sh"),
            ("nsenter", ".ci/deps/container.sh"),
            ("runc", ".ci/deps/container.sh"),
            ("busybox", ".ci/deps/container.sh"),
            ("qemu-img", ".ci/deps/volume.sh"),
            ("mkfs.ext4", ".ci/deps/volume.sh"),
        ],
    ) else {
        return;
    };
    let outcome = run.run(
        std::path::Path::new(env!("CARGO_BIN_EXE_nfs-guest")),
        gitvisor_bin(),
        "2G",
        GUEST_DEADLINE,
    );
    run.assert_all_passed(SCENARIOS, &outcome);
}
