fn main() -> std::process::ExitCode {
    tmcs::cli::main()
}
