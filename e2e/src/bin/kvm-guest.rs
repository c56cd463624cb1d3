//! Runs the KVM end-to-end scenarios inside the `-cpu max` test guest; see
//! `gitvisor_e2e::kvm`.

fn main() -> std::process::ExitCode {
    gitvisor_e2e::kvm::guest::main()
}
