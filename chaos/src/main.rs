//! `chaos`: the adversarial suite as a program, for runs longer than CI's
//! and for replaying a seed. Parses flags, then hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use demo::bins::Bins;
use demo::cast::{Server, Stage};
use demo::story::Say;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    version,
    about = "The adversarial suite: crashes, mail faults and hostile mail against a whole deployment",
    after_help = "Examples:
  cargo run --release -p chaos -- campaign                      # CI's size, a fresh seed
  chaos campaign --seed 1234                                   # replay a seed
  chaos campaign --exchanges 2000 --transfers 400 --kills 200 --faults 160 --keep /tmp/campaign
  chaos hostile --server real                                  # hostile mail against the daemons

Exit codes: 0 every check green, 1 a check failed or the run broke, 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exchanges and transfers by many wallets while the agent, the issuers
    /// and wallet commands are killed with kill -9 and the mail server
    /// drops, doubles, delays and refuses mail; then every exchange must
    /// have ended exactly once and value must be conserved.
    #[command(after_help = "Examples:
  chaos campaign
  chaos campaign --seed 1234 --json > campaign.json
  chaos campaign --exchanges 2000 --transfers 400 --kills 200 --faults 160

The seed is printed first; the same seed replays the same plan (what each
wallet does, which party is killed when, which mail fault).")]
    Campaign(CampaignArgs),
    /// Send every kind of bad mail to running issuer and agent daemons and
    /// check that each is refused with a signed error or quarantined, no
    /// daemon stops, and no balance moves. Prints the table.
    #[command(after_help = "Examples:
  chaos hostile
  chaos hostile --server real --keep /tmp/hostile")]
    Hostile(HostileArgs),
}

/// Where a run happens: the mail server, its folder, the programs.
#[derive(Debug, Args)]
struct Place {
    /// Which mail server to run on.
    #[arg(long, value_enum, default_value = "embedded")]
    server: Server,
    /// Keep everything (mail store, homes, logs) in this folder.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// The folder holding issuer, agent and wallet (default: beside chaos).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct HostileArgs {
    #[command(flatten)]
    place: Place,
    /// Mails in the burst.
    #[arg(long, default_value_t = 1_000)]
    burst: usize,
}

#[derive(Debug, Args)]
struct Common {
    #[command(flatten)]
    place: Place,
    /// Do not build the programs first (under cargo they are built).
    #[arg(long)]
    no_build: bool,
    /// The outcome as JSON on stdout (the narration stays on stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CampaignArgs {
    #[command(flatten)]
    common: Common,
    /// The seed (default: a fresh one, printed).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 8)]
    wallets: usize,
    #[arg(long, default_value_t = 200)]
    exchanges: usize,
    #[arg(long, default_value_t = 40)]
    transfers: usize,
    /// kill -9 of the agent, an issuer or a wallet command.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Mail server faults (embedded server only).
    #[arg(long, default_value_t = 16)]
    faults: usize,
    /// The agent's D1, in seconds.
    #[arg(long, default_value_t = 12)]
    offer_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The folder a run works in: kept where asked, else a temporary one that
/// is kept only if the run fails.
fn stage(common: &Common) -> Result<(Stage, Option<tempfile::TempDir>)> {
    let bins = Bins::find(common.place.bin_dir.clone(), !common.no_build)?;
    let (dir, temp) = match &common.place.keep {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("chaos-")
                .tempdir()
                .context("cannot create a temp folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    Ok((Stage::new(bins, dir, common.place.server.kind())?, temp))
}

fn run(cli: &Cli) -> Result<bool> {
    match &cli.command {
        Command::Campaign(a) => campaign(a),
        Command::Hostile(h) => chaos::hostile::main(&chaos::hostile::Options {
            server: h.place.server.kind(),
            dir: h.place.keep.clone(),
            bins: h.place.bin_dir.clone(),
            burst: h.burst,
        }),
    }
}

fn campaign(a: &CampaignArgs) -> Result<bool> {
    let seed = a.seed.unwrap_or_else(chaos::campaign::fresh_seed);
    eprintln!("fault campaign seed {seed} (replay: chaos campaign --seed {seed})");
    let say = Say::new(true);
    say.start_clock();
    let (stage, temp) = stage(&a.common)?;
    let plan = chaos::campaign::Plan {
        seed,
        wallets: a.wallets,
        exchanges: a.exchanges,
        transfers: a.transfers,
        kills: a.kills,
        faults: a.faults,
        offer_secs: a.offer_secs,
    };
    let outcome = chaos::campaign::run(&stage, &say, &plan);
    let keep = |temp: Option<tempfile::TempDir>| -> PathBuf {
        match temp {
            Some(t) => t.keep(),
            None => stage.dir.clone(),
        }
    };
    match outcome {
        Ok(report) => {
            let ok = report.is_ok(&plan);
            eprintln!("{report}");
            if a.common.json {
                println!("{:#}", report.json());
            }
            if !ok {
                eprintln!(
                    "chaos: the campaign with seed {seed} found problems; its folder is kept: {}",
                    keep(temp).display()
                );
            }
            Ok(ok)
        }
        Err(e) => Err(e.context(format!(
            "the campaign with seed {seed} broke; its folder is kept: {}",
            keep(temp).display()
        ))),
    }
}
