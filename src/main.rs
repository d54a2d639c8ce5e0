use std::process::ExitCode;

use clap::Parser;

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
