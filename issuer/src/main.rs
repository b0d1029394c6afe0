//! `issuer`: the command line of an issuer (see `issuer --help`).
//!
//! A thin layer over the `issuer` library: each subcommand is one file of
//! [`cli`]. Exit codes: 0 done, 1 failed (the message says what to do),
//! 2 bad usage (from clap), 3 the audit found problems.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("issuer: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
