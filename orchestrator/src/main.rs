//! The `lifeboat` binary: parse arguments and hand over to `cli`.

fn main() -> std::process::ExitCode {
    lifeboat_orchestrator::cli::main()
}
