//! The `privacy-mailroom` binary: parses the command line, loads the config,
//! and maps failures to exit codes (0 ok, 2 usage/config error, 1 runtime).

// Lints for the shipped code (library and binary, not the integration tests,
// whose harness needs libc): no unsafe, no unwrap outside `#[cfg(test)]`
// (clippy.toml allows it in tests).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

use std::process::ExitCode;

use privacy_mailroom::cli::{self, Cli};

/// mimalloc instead of glibc's malloc for the daemon's own allocations.
/// Intake allocates and frees many small strings per request (the parsed
/// message, the template context, the composed reply); glibc's malloc and
/// free were about a quarter of intake's main thread, and mimalloc runs the
/// same burst in 12–15 % fewer instructions, for 2–3 MiB more peak memory
/// (docs/benchmark.md, "Then: a faster allocator"). SQLite's own memory still
/// comes from glibc (`MALLOC_ARENA_MAX` in the systemd unit).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
