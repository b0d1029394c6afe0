//! `chaos`: the standing adversarial suite, one subcommand per part.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use testmail::harness::ServerKind;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "The adversarial suite against a deployment of real programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Server {
    /// testmail's embedded server, in this process.
    Embedded,
    /// Postfix + Dovecot from `testmail/real-server.sh` (its REAL_* variables).
    Real,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send every kind of bad mail to running issuer and agent daemons and
    /// check that each is refused with a signed error or quarantined, no
    /// daemon stops, and no balance moves. Prints the table.
    #[command(after_help = "Example:\n  chaos hostile --server real --keep /tmp/hostile")]
    Hostile {
        #[arg(long, value_enum, default_value = "embedded")]
        server: Server,
        /// Keep the deployment (homes, logs, mail) in this folder.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// The folder holding issuer, agent and wallet (default: beside chaos).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Mails in the burst.
        #[arg(long, default_value_t = 1_000)]
        burst: usize,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Hostile {
            server,
            keep,
            bin_dir,
            burst,
        } => chaos::hostile::main(&chaos::hostile::Options {
            server: match server {
                Server::Embedded => ServerKind::Embedded,
                Server::Real => ServerKind::Real,
            },
            dir: keep,
            bins: bin_dir,
            burst,
        }),
    }
}
