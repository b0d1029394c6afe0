//! `agent`: the exchange agent's command line (see `agent --help`). A thin
//! layer over the `agent` library. Exit codes: 0 done, 1 failed (the
//! message says what to do), 2 bad usage (from clap).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agent: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
