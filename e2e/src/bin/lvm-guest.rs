//! Runs the LVM end-to-end scenarios inside the test guest; see `gitvisor_e2e::lvm`.

fn main() -> std::process::ExitCode {
    gitvisor_e2e::lvm::guest::main()
}
