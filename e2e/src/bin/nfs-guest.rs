//! Runs the NFS end-to-end scenarios inside the test guest; see `gitvisor_e2e::nfs`.

fn main() -> std::process::ExitCode {
    gitvisor_e2e::nfs::guest::main()
}
