//! `tmcs`: the service's command line, with the HTTPS relay transport.

fn main() -> std::process::ExitCode {
    tmcs::cli::main_with(tmcs_server::relay_transport)
}
