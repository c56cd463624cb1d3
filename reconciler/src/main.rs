fn main() -> std::process::ExitCode {
    gitvisor::cli::main()
}
