use std::process::ExitCode;

use clap::Parser;

/// See Cargo.toml: glibc malloc cost the server a tenth of its CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = tokenvault::cli::Cli::parse();
    match tokenvault::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tokenvault: {error:#}");
            ExitCode::FAILURE
        }
    }
}
