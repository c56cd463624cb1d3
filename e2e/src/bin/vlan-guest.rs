//! Runs the VLAN end-to-end scenarios inside the test guest; see `gitvisor_e2e::vlans`.

fn main() -> std::process::ExitCode {
    gitvisor_e2e::vlans::guest::main()
}
