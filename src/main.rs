//! The `privacy-mailroom` binary: parses the command line, loads the config,
//! and maps failures to exit codes (0 ok, 2 usage/config error, 1 runtime).

// Lints for the shipped code (library and binary, not the integration tests,
// whose harness needs libc): no unsafe, no unwrap outside `#[cfg(test)]`
// (clippy.toml allows it in tests).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use std::process::ExitCode;

use privacy_mailroom::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::parse_with_table_help() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    privacy_mailroom::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
