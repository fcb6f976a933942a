//! `observe`: see `observe --help` and observe-cli/README.md.
fn main() -> std::process::ExitCode {
    observe_cli::main_with_args(std::env::args_os())
}
