//! `demo`: the whole system in under a minute. A mail server, a JPY and a
//! USD issuer, an exchange agent and wallets, each the real program in a
//! process of its own, all in one folder; the demo runs them as a user
//! would and says what happens. Exits non-zero if any step fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use testmail::harness::ServerKind;

use demo::bench;
use demo::bins::Bins;
use demo::cast::{Server, Stage};
use demo::story::{self, Say};

#[derive(Debug, Parser)]
#[command(
    name = "demo",
    version,
    about = "E-money by email in under a minute: two issuers, an exchange agent and \
             three wallets, each a real program, on a mail server",
    long_about = "E-money by email in under a minute.\n\n\
        Starts a mail server, a JPY issuer, a USD issuer, an exchange agent and the \
        wallets of alice, bob and mallory, each the real program in a process of its \
        own, all in one folder, and narrates: accounts and licenses, withdrawals, alice \
        paying bob 700 JPY with change, alice exchanging 10,000 JPY for USD through \
        the agent (offer, signed offer, 1st payment, 2nd payment), deposits, and \
        mallory spending one note twice, named and revoked by the issuer. It ends \
        with both issuers' audits and a table of balances.\n\n\
        Exits 0 when every step did what it should, 1 when one did not (the folder \
        is then kept, with every program's log).",
    after_help = "Examples:
  cargo run --release -p demo                    # build everything, run the demo
  demo --keep /tmp/emoney                        # keep the mail, databases and logs
  demo --json > outcome.json                     # the outcome for scripts; narration on stderr
  eval \"$(testmail/real-server.sh env)\" && demo --server real   # on Postfix + Dovecot
  cargo run --release -p demo -- bench           # exchanges end to end, with figures

Every command the demo runs is written to commands.sh in its folder."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Which mail server to run on.
    #[arg(long, value_enum, default_value = "embedded", global = true)]
    server: Server,
    /// Keep everything in DIR (a new or empty folder) and print how to use
    /// the programs on it afterwards.
    #[arg(long, value_name = "DIR", global = true)]
    keep: Option<PathBuf>,
    /// The folder holding the issuer, agent and wallet programs (default:
    /// beside the demo's own executable).
    #[arg(long, value_name = "DIR", global = true)]
    bin_dir: Option<PathBuf>,
    /// Do not build the programs first (the demo runs `cargo build` when
    /// it was started by `cargo run`).
    #[arg(long, global = true)]
    no_build: bool,
    /// Print the outcome (balances, the exchange, the overspender, the
    /// audits; or the bench's figures) as JSON on stdout; the narration
    /// goes to stderr.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exchanges end to end through the mail server, timed, against the
    /// server's own capacity measured in the same run.
    #[command(
        long_about = "Exchanges end to end through the mail server, timed.\n\n\
            Sets up the same cast as the demo (two issuers and the agent, each a daemon) \
            with W wallets, then measures: one mail's delivery from SMTP to IMAP; the \
            agent's handling latency with IMAP IDLE and with polling; N exchanges by W \
            wallets at once (exchanges per second, each phase's p50 and p95 as the \
            wallets see them, mails per exchange); the mail server's raw capacity with \
            plain SMTP and IMAP clients and the same mails; and the daemons' memory \
            through the run. Every exchange must end done and both audits stay green, \
            or the bench fails (exit 1). docs/performance.md explains the figures.",
        after_help = "Examples:
  cargo run --release -p demo -- bench
  demo bench --exchanges 1000 --wallets 8
  demo bench --server real --json > e2e.json     # on Postfix + Dovecot"
    )]
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let say = Say::new(cli.json);
    match run(&cli, &say) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo failed: {e:#}");
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": format!("{e:#}") })
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The folder the demo works in: DIR of --keep, or a temp folder removed
/// at the end unless the demo fails.
enum Folder {
    Kept(PathBuf),
    Temp(tempfile::TempDir),
}

impl Folder {
    fn path(&self) -> &Path {
        match self {
            Folder::Kept(p) => p,
            Folder::Temp(t) => t.path(),
        }
    }
}

fn folder(keep: Option<&Path>) -> Result<Folder> {
    match keep {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .with_context(|| format!("cannot read {}", dir.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "{} is not empty; give --keep a new or empty folder",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let dir = dir
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", dir.display()))?;
            Ok(Folder::Kept(dir))
        }
        None => Ok(Folder::Temp(
            tempfile::Builder::new()
                .prefix("emoney-demo-")
                .tempdir()
                .context("cannot create a temp folder")?,
        )),
    }
}

fn run(cli: &Cli, say: &Say) -> Result<()> {
    let bins = Bins::find(cli.bin_dir.clone(), !cli.no_build)?;
    let folder = folder(cli.keep.as_deref())?;
    say.start_clock();
    let dir = folder.path().to_path_buf();
    let kind = cli.server.kind();
    say.plain("E-money by email: two issuers, an exchange agent and three wallets.");
    say.plain(&format!("Everything lives in {}.", dir.display()));
    let stage = Stage::new(bins, dir.clone(), kind)?;
    say.plain(&match kind {
        ServerKind::Embedded => format!(
            "Mail: testmail, the embedded server, SMTP {} and IMAP {}, its store in mail/.",
            stage.server.smtp_addr(),
            stage.server.imap_addr()
        ),
        ServerKind::Real => format!(
            "Mail: Postfix (SMTP {}) and Dovecot (IMAP {}).",
            stage.server.smtp_addr(),
            stage.server.imap_addr()
        ),
    });
    let told = match &cli.command {
        None => story::tell(&stage, say),
        Some(Command::Bench(args)) => bench::run(&stage, say, args),
    };
    let outcome = match told {
        Ok(o) => o,
        Err(e) => {
            let kept = match folder {
                Folder::Temp(t) => t.keep(),
                Folder::Kept(p) => p,
            };
            // The programs' logs and the transcript stay for a post-mortem.
            let _ = stage.write_env();
            return Err(anyhow::anyhow!(
                "{e:#}\n\nThe demo's folder is kept for a look: {} (each program's log in logs/, every command run in commands.sh).",
                kept.display()
            ));
        }
    };
    say.plain(&format!(
        "\nEvery step did what it should, in {:.1} s.",
        say.elapsed().as_secs_f64()
    ));
    if cli.command.is_some() {
        if let Folder::Kept(dir) = &folder {
            stage.write_env()?;
            say.plain(&format!(
                "Kept in {}: mail/, every program's home, logs/, commands.sh.",
                dir.display()
            ));
        }
        if cli.json {
            println!("{outcome:#}");
        }
        return Ok(());
    }
    if let Folder::Kept(dir) = &folder {
        let env = stage.write_env()?;
        say.plain(&format!(
            "\nKept in {dir}: mail/ (the mail store), issuer-jpy/ issuer-usd/ fx/ alice/ bob/\n\
             mallory/ mallory-copy/ (each program's home: database and TOML settings), logs/,\n\
             commands.sh (every command the demo ran). To look around:\n\
             \x20  . {env}\n\
             \x20  WALLET_HOME=$DEMO/alice wallet history\n\
             \x20  ISSUER_HOME=$DEMO/issuer-jpy issuer report\n\
             \x20  AGENT_HOME=$DEMO/fx agent status\n\
             {serve}",
            dir = dir.display(),
            env = env.display(),
            serve = match kind {
                ServerKind::Embedded =>
                    "Commands that read mail (wallet sync, the daemons) need the mail server:\n\
                     \x20  serve_mail &        # defined by env.sh; the same ports as before",
                ServerKind::Real =>
                    "The mailboxes are pool accounts of the real servers: the next test run\n\
                     empties them.",
            }
        ));
    }
    if cli.json {
        println!("{outcome:#}");
    }
    Ok(())
}
