//! `demo bench`: exchanges end to end through a running mail server, every
//! party the real program in its own process, set against what the mail
//! server itself can do, measured in the same run with plain clients.
//!
//! 1. The cast: a JPY and a USD issuer, the agent `fx` with a float sized
//!    for the run, and W wallets with the yen they will exchange.
//! 2. Handling latency, per way the agent reads its mailbox (IMAP IDLE,
//!    polling every 250 ms, the default, and every 1 s and 100 ms): a wallet asks for an
//!    offer (`wallet exchange --no-wait`) and the bench times from the
//!    request's arrival in the agent's INBOX to the offer's arrival in the
//!    wallet's (each seen by its UIDNEXT, asked every 5 ms). One mail's
//!    delivery (SMTP to IMAP, measured alone) taken off leaves the
//!    agent's part: from the request visible to the offer accepted by SMTP.
//! 3. The load: W wallets each run `wallet exchange AMOUNT JPY --to USD
//!    --yes` one after another, the agent in its default mode. Each
//!    phase is timed from the wallet's own progress lines (what it waits
//!    for next), the whole from the command's start to its "done". Mail
//!    per exchange is counted in every mailbox before and after.
//! 4. The raw capacity: as many mails as the load took, of the same mean
//!    size, from W concurrent plain SMTP clients, until IMAP shows them.
//! 5. The daemons' resident memory, sampled through the load.
//!
//! Every exchange must end done and both issuers' audits stay green, or
//! the bench fails (exit 1).

use std::io::{BufRead as _, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};
use testmail::harness::{Account, ServerKind};

use crate::cast::{not_interrupted, Party, Stage};
use crate::story::{self, Agent, Float, Issuer, Say};

/// What `demo bench` is asked to do.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// How many exchanges to run in all.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub exchanges: usize,
    /// How many wallets exchange at once (each one exchange after another).
    #[arg(long, default_value_t = 4, value_name = "W")]
    pub wallets: usize,
    /// Yen paid in each exchange.
    #[arg(long, default_value_t = 100, value_name = "JPY")]
    pub amount: u64,
    /// The wallets' `--poll` while they wait for mail, in seconds.
    #[arg(long, default_value = "0.05", value_name = "S")]
    pub poll: String,
    /// Offers asked for per agent mode to time its handling.
    #[arg(long, default_value_t = 20, value_name = "K")]
    pub probes: usize,
}

/// One exchange as its wallet saw it: when each line came, from the
/// command's start.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    accepted: Option<Duration>,
    paid: Option<Duration>,
    done: Option<Duration>,
}

impl Seen {
    /// Notes what `line` says the exchange now waits for, at `at`.
    fn note(&mut self, line: &str, at: Duration) {
        let slot = if line.starts_with("Exchange ") && line.contains(" done: ") {
            &mut self.done
        } else if line.contains("'s signed offer") {
            &mut self.accepted
        } else if line.contains("second payment of") {
            &mut self.paid
        } else {
            return;
        };
        slot.get_or_insert(at);
    }

    /// (negotiation, signed offer, 2nd payment, whole), when all were seen.
    /// The negotiation is timed from the command's start: with a quick
    /// agent the offer is in before the wallet first says it waits for it.
    fn phases(&self) -> Option<[Duration; 4]> {
        let (b, c, d) = (self.accepted?, self.paid?, self.done?);
        Some([b, c.saturating_sub(b), d.saturating_sub(c), d])
    }
}

/// The p-th quantile (0..=1) of `v`, in milliseconds.
fn quantile_ms(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i].as_secs_f64() * 1000.0
}

fn p50_p95(v: &[Duration]) -> Value {
    json!({ "p50_ms": quantile_ms(v, 0.5), "p95_ms": quantile_ms(v, 0.95), "n": v.len() })
}

/// Resident memory of process `pid`: (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A program's output lines, each with when it came.
type Lines = Vec<(Duration, String)>;

/// Runs `party`'s program with `args`, reading its output as it comes;
/// each line with the time it came, from the start; the exit code.
fn timed_run(stage: &Stage, party: &Party, args: &[&str]) -> Result<(Option<i32>, Lines)> {
    let started = Instant::now();
    let mut child = party.start_piped(stage, args)?;
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send((started.elapsed(), line)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut lines: Lines = rx.iter().collect();
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().context("cannot wait for the wallet")?;
    lines.sort_by_key(|(t, _)| *t);
    Ok((status.code(), lines))
}

/// The mail held in every mailbox of the run, read once per mailbox.
#[derive(Debug, Clone, Copy, Default)]
struct MailCount {
    mails: usize,
    bytes: u64,
    /// Of `mails`, those in the wallets' mailboxes.
    to_wallets: usize,
}

fn count_mail(stage: &Stage, daemons: &[&Account], wallets: &[&Account]) -> Result<MailCount> {
    let mut c = MailCount::default();
    for (a, is_wallet) in daemons
        .iter()
        .map(|a| (a, false))
        .chain(wallets.iter().map(|a| (a, true)))
    {
        let sizes = stage
            .rt
            .block_on(stage.server.message_sizes(a))
            .with_context(|| format!("cannot count the mail of {}", a.address))?;
        c.mails += sizes.len();
        c.bytes += sizes.iter().map(|&s| u64::from(s)).sum::<u64>();
        if is_wallet {
            c.to_wallets += sizes.len();
        }
    }
    Ok(c)
}

/// The agent's ways of reading its mailbox that the probes compare, with
/// the flags of `agent run` for each, and its polling period in ms (the
/// probes start at spread-out moments of it, so as not to fall in step
/// with the agent's polls).
const MODES: [(&str, &[&str], u64); 4] = [
    ("polling every 250 ms (default)", &[], 250),
    ("IMAP IDLE (--idle)", &["--idle"], 0),
    ("polling every 1 s", &["--poll-ms", "1000"], 1000),
    ("polling every 100 ms", &["--poll-ms", "100"], 100),
];

fn restart_agent(stage: &Stage, agent: &mut Agent, flags: &[&str]) -> Result<()> {
    agent.daemon.stop();
    let mut run = vec!["run"];
    run.extend_from_slice(flags);
    agent.daemon = agent.party.spawn(stage, &run)?;
    Ok(())
}

/// Times `probes` offers asked for by `probe` (see the module
/// documentation): from the request's arrival in the agent's INBOX to the
/// offer's arrival in the wallet's, both seen by their UIDNEXT while the
/// wallet's command runs.
fn probe_round_trips(
    stage: &Stage,
    probe: &Party,
    agent: &mut Agent,
    amount: u64,
    probes: usize,
    period_ms: u64,
) -> Result<Vec<Duration>> {
    let (mut to_agent, mut to_probe) = stage.rt.block_on(async {
        Ok::<_, testmail::harness::HarnessError>((
            stage.server.inbox_watch(&agent.party.account).await?,
            stage.server.inbox_watch(&probe.account).await?,
        ))
    })?;
    let amount = amount.to_string();
    let args = [
        "exchange",
        amount.as_str(),
        "JPY",
        "--to",
        "USD",
        "--agent",
        agent.party.address(),
        "--no-wait",
    ];
    let mut out = Vec::with_capacity(probes);
    // The first offer also waits for the agent's first login: not counted.
    for i in 0..=probes {
        agent.daemon.check()?;
        // Spread over the period by the golden ratio: evenly, in any number.
        let phase = (i as f64 * 0.618_033_988_75).fract();
        std::thread::sleep(Duration::from_secs_f64(phase * period_ms as f64 / 1000.0));
        let (a0, p0) = stage.rt.block_on(async {
            Ok::<_, testmail::harness::HarnessError>((
                to_agent.next_uid().await?,
                to_probe.next_uid().await?,
            ))
        })?;
        let failed = AtomicBool::new(false);
        let timed = std::thread::scope(|scope| -> Result<Duration> {
            let command = scope.spawn(|| {
                let r = probe.poll(stage, &args);
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                r
            });
            let timed = stage.rt.block_on(async {
                let limit = Duration::from_secs(60);
                let failed = || failed.load(Ordering::SeqCst);
                to_agent.wait_past_unless(a0, limit, failed).await?;
                let request_in = Instant::now();
                to_probe.wait_past_unless(p0, limit, failed).await?;
                Ok::<_, testmail::harness::HarnessError>(request_in.elapsed())
            });
            command
                .join()
                .map_err(|_| anyhow::anyhow!("the probe's command thread panicked"))??;
            timed.with_context(|| format!("the agent's offer for probe {i}"))
        })?;
        if i > 0 {
            out.push(timed);
        }
    }
    Ok(out)
}

/// The whole bench; its figures as JSON.
pub fn run(stage: &Stage, say: &Say, args: &BenchArgs) -> Result<Value> {
    ensure!(args.wallets > 0, "--wallets must be at least 1");
    ensure!(
        args.exchanges >= args.wallets,
        "--exchanges must be at least --wallets"
    );
    ensure!(
        args.amount >= 10,
        "--amount must be at least 10 JPY (the agent's smallest trade)"
    );
    let per_wallet = args.exchanges.div_ceil(args.wallets);
    let exchanges = per_wallet * args.wallets;
    let server = match stage.server.kind() {
        ServerKind::Embedded => "testmail (embedded)",
        ServerKind::Real => "Postfix + Dovecot",
    };

    say.step(&format!(
        "The cast: two issuers, the agent, {} wallets",
        args.wallets
    ));
    let mut jpy = story::issuer(stage, say, "JPY")?;
    let mut usd = story::issuer(stage, say, "USD")?;
    // A2 is under 1 USD for each 100 JPY at the demo's price. The agent
    // starts with a fifth of the USD it will pay and keeps its float
    // between limits as it would in service: it withdraws USD and
    // deposits the yen it takes, so the issuers clear notes through the
    // run too.
    let usd_needed = (exchanges as u64 * args.amount).div_ceil(100) + 10;
    let float = Float {
        jpy_paid_in: 1_000_000,
        usd_paid_in: usd_needed + 1_000,
        jpy_float: 100_000,
        usd_float: usd_needed / 5 + 10,
    };
    let mut agent = story::agent(stage, say, &jpy, &usd, &float, &["--tick-ms", "1000"])?;
    let usd_low = (usd_needed / 10 + 5).to_string();
    let usd_high = (usd_needed / 2 + 20).to_string();
    let jpy_high = (100_000 + exchanges as u64 * args.amount / 5).to_string();
    for (currency, low, high) in [
        ("USD", usd_low.as_str(), usd_high.as_str()),
        ("JPY", "10000", jpy_high.as_str()),
    ] {
        agent.party.run(
            stage,
            &["float", "limits", currency, "--low", low, "--high", high],
        )?;
    }
    let per_wallet_jpy = per_wallet as u64 * args.amount;
    let mut wallets = Vec::with_capacity(args.wallets);
    for i in 1..=args.wallets {
        let w = story::wallet(
            stage,
            &format!("w{i}"),
            &[(&jpy, per_wallet_jpy), (&usd, 0)],
        )?;
        w.run(
            stage,
            &["agent", "add", agent.party.address(), "--key", &agent.key],
        )?;
        wallets.push(w);
    }
    // Each probe's offer is left to expire, and may hold its notes until then.
    let probe_jpy = ((args.probes as u64 + 1) * MODES.len() as u64 + 1) * args.amount;
    let probe = story::wallet(stage, "probe", &[(&jpy, probe_jpy), (&usd, 0)])?;
    probe.run(
        stage,
        &["agent", "add", agent.party.address(), "--key", &agent.key],
    )?;
    let mut all: Vec<&Party> = wallets.iter().collect();
    all.push(&probe);
    let mut issuers = [&mut jpy.daemon, &mut usd.daemon];
    story::settle(
        stage,
        &all,
        &mut issuers,
        "the wallets' enrollments and licenses",
    )?;
    for w in &wallets {
        w.run(stage, &["withdraw", &per_wallet_jpy.to_string(), "JPY"])?;
    }
    probe.run(stage, &["withdraw", &probe_jpy.to_string(), "JPY"])?;
    story::settle(stage, &all, &mut issuers, "the wallets' withdrawals")?;
    say.line(&format!(
        "{} wallets hold {} each; the agent's float is {} and {}.",
        args.wallets,
        story::money(per_wallet_jpy, "JPY"),
        story::money(float.jpy_float, "JPY"),
        story::money(float.usd_float * 100, "USD"),
    ));

    say.step("One mail, SMTP to IMAP, alone");
    let delivery = stage.rt.block_on(stage.server.delivery_latencies(
        "bench@example.test",
        &probe.account,
        args.probes.max(5),
        4096,
    ))?;
    say.line(&format!(
        "p50 {:.1} ms, p95 {:.1} ms over {} mails of 4 KiB.",
        quantile_ms(&delivery, 0.5),
        quantile_ms(&delivery, 0.95),
        delivery.len()
    ));

    say.step("The agent's handling latency, per way of reading its mailbox");
    let mut modes = Vec::new();
    let d50 = quantile_ms(&delivery, 0.5);
    for (name, flags, period) in MODES {
        restart_agent(stage, &mut agent, &[flags, &["--tick-ms", "1000"]].concat())?;
        let rt = probe_round_trips(stage, &probe, &mut agent, args.amount, args.probes, period)?;
        let (r50, r95) = (quantile_ms(&rt, 0.5), quantile_ms(&rt, 0.95));
        say.line(&format!(
            "{name}: request in the agent's INBOX to offer in the wallet's: p50 {r50:.0} ms, p95 {r95:.0} ms; less one delivery, the agent's part is about {:.0} ms (p95 {:.0} ms).",
            r50 - d50,
            r95 - d50
        ));
        modes.push(json!({
            "mode": name,
            "flags": flags,
            "round_trip": p50_p95(&rt),
            "agent_estimate_p50_ms": r50 - d50,
            "agent_estimate_p95_ms": r95 - d50,
        }));
    }
    restart_agent(stage, &mut agent, &["--tick-ms", "1000"])?;

    say.step(&format!(
        "{exchanges} exchanges of {} JPY by {} wallets at once",
        args.amount, args.wallets
    ));
    let daemon_accounts: Vec<&Account> = vec![
        jpy.party.account.as_ref(),
        usd.party.account.as_ref(),
        agent.party.account.as_ref(),
    ];
    let wallet_accounts: Vec<&Account> = wallets.iter().map(|w| w.account.as_ref()).collect();
    let before = count_mail(stage, &daemon_accounts, &wallet_accounts)?;
    let pids = [
        ("agent", agent.daemon.pid()),
        ("JPY issuer", jpy.daemon.pid()),
        ("USD issuer", usd.daemon.pid()),
    ];
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let (results, memory) = std::thread::scope(|scope| -> Result<_> {
        let sampling = Arc::new(AtomicUsize::new(1));
        let sampler = {
            let done = Arc::clone(&done);
            let sampling = Arc::clone(&sampling);
            scope.spawn(move || {
                let mut samples: Vec<(usize, [u64; 3])> = Vec::new();
                while sampling.load(Ordering::SeqCst) == 1 {
                    let mut rss = [0u64; 3];
                    for (slot, (_, pid)) in rss.iter_mut().zip(pids) {
                        *slot = rss_kib(pid).map_or(0, |(r, _)| r);
                    }
                    samples.push((done.load(Ordering::SeqCst), rss));
                    std::thread::sleep(Duration::from_millis(250));
                }
                samples
            })
        };
        let workers: Vec<_> = wallets
            .iter()
            .map(|w| {
                let done = Arc::clone(&done);
                let amount = args.amount.to_string();
                let agent_address = agent.party.address().to_string();
                let poll = args.poll.clone();
                scope.spawn(move || -> Result<Vec<Seen>> {
                    let cmd = [
                        "exchange", &amount, "JPY", "--to", "USD", "--agent", &agent_address,
                        "--yes", "--poll", &poll, "--timeout", "120",
                    ];
                    stage.record(&format!(
                        "# {}: {per_wallet} times, one after the other: WALLET_HOME=$DEMO/{} wallet {}",
                        w.role,
                        w.role,
                        cmd.join(" ")
                    ));
                    let mut seen = Vec::with_capacity(per_wallet);
                    for _ in 0..per_wallet {
                        not_interrupted()?;
                        let (code, lines) = timed_run(stage, w, &cmd)?;
                        let mut s = Seen::default();
                        for (at, line) in &lines {
                            s.note(line, *at);
                        }
                        if code != Some(0) || s.done.is_none() {
                            let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
                            bail!(
                                "{}'s exchange did not end done (exit {code:?}):\n{}",
                                w.role,
                                text.join("\n")
                            );
                        }
                        seen.push(s);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(seen)
                })
            })
            .collect();
        let mut results = Vec::new();
        let mut failure = None;
        for h in workers {
            match h.join() {
                Ok(Ok(s)) => results.extend(s),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(anyhow::anyhow!("a wallet's thread panicked"))),
            }
        }
        sampling.store(0, Ordering::SeqCst);
        let memory = sampler.join().unwrap_or_default();
        match failure {
            Some(e) => Err(e),
            None => Ok((results, memory)),
        }
    })?;
    let elapsed = started.elapsed();
    agent.daemon.check()?;
    jpy.daemon.check()?;
    usd.daemon.check()?;
    let after = count_mail(stage, &daemon_accounts, &wallet_accounts)?;
    let mails = after.mails.saturating_sub(before.mails);
    let mail_bytes = after.bytes.saturating_sub(before.bytes);
    let per_exchange = mails as f64 / exchanges as f64;
    // Each exchange is three requests to the agent and three answers to a
    // wallet; the rest is the agent's float upkeep with the issuers.
    let protocol_per_exchange =
        2.0 * after.to_wallets.saturating_sub(before.to_wallets) as f64 / exchanges as f64;
    let mean_size = if mails > 0 {
        (mail_bytes / mails as u64) as usize
    } else {
        4096
    };
    let rate = exchanges as f64 / elapsed.as_secs_f64();
    let mut phases: [Vec<Duration>; 4] = Default::default();
    for s in &results {
        if let Some(p) = s.phases() {
            for (v, d) in phases.iter_mut().zip(p) {
                v.push(d);
            }
        }
    }
    ensure!(
        phases[3].len() == exchanges,
        "only {} of {exchanges} exchanges showed every phase in their wallet's progress",
        phases[3].len()
    );
    say.line(&format!(
        "{exchanges} exchanges in {:.1} s: {rate:.2} exchanges/s; {mails} mails ({per_exchange:.2} per exchange, {mean_size} bytes each on average).",
        elapsed.as_secs_f64()
    ));

    say.step("The mail server alone, with plain clients");
    let raw_accounts: Vec<Account> = (1..=args.wallets)
        .map(|i| stage.rt.block_on(stage.server.account(&format!("raw{i}"))))
        .collect::<Result<_, _>>()
        .context("cannot get mailboxes for the raw measurement")?;
    let raw_refs: Vec<&Account> = raw_accounts.iter().collect();
    let raw = stage.rt.block_on(stage.server.raw_capacity(
        "bench@example.test",
        &raw_refs,
        mails.max(100),
        args.wallets,
        mean_size,
    ))?;
    let ratio = rate * per_exchange / raw.per_sec();
    say.line(&format!(
        "{} mails of {} bytes from {} senders in {:.1} s: {:.1} mails/s.",
        raw.mails,
        raw.size,
        raw.senders,
        raw.elapsed.as_secs_f64(),
        raw.per_sec()
    ));

    say.step("The books");
    for i in [&jpy, &usd] {
        audit_green(stage, i)?;
    }
    say.line("Both issuers' audits are green; every exchange ended done.");

    let names = [
        "negotiation: command start -> offer in, accepted",
        "signed offer: acceptance -> signed offer (1st payment sent)",
        "2nd payment: 1st payment + request -> 2nd payment",
        "whole exchange: command start -> done",
    ];
    let memory_rows = memory_table(&memory, exchanges);
    let peaks: Vec<Value> = pids
        .iter()
        .map(|(name, pid)| json!({ "daemon": name, "vmhwm_kib": rss_kib(*pid).map(|(_, h)| h) }))
        .collect();
    let report = json!({
        "server": server,
        "wallets": args.wallets,
        "exchanges": exchanges,
        "amount_jpy": args.amount,
        "wallet_poll_s": args.poll,
        "elapsed_s": elapsed.as_secs_f64(),
        "exchanges_per_s": rate,
        "mails": mails,
        "mails_per_exchange": per_exchange,
        "exchange_mails_per_exchange": protocol_per_exchange,
        "mean_mail_bytes": mean_size,
        "raw": {
            "mails": raw.mails, "senders": raw.senders, "size": raw.size,
            "elapsed_s": raw.elapsed.as_secs_f64(), "mails_per_s": raw.per_sec(),
        },
        "ratio": ratio,
        "delivery": p50_p95(&delivery),
        "phases": names.iter().zip(&phases).map(|(n, v)| json!({ "phase": n, "latency": p50_p95(v) })).collect::<Vec<_>>(),
        "agent_modes": modes,
        "memory": memory_rows,
        "peak": peaks,
    });
    print_table(say, &report, &names, &phases);
    Ok(report)
}

fn audit_green(stage: &Stage, issuer: &Issuer) -> Result<()> {
    let (code, out, err) = issuer.party.run_status(stage, &["audit", "--json"])?;
    let report: Value = serde_json::from_str(&out)
        .with_context(|| format!("the {} audit printed no JSON: {err}", issuer.currency))?;
    ensure!(
        code == Some(0) && report["ok"] == true,
        "the {} issuer's audit is not green: {report}",
        issuer.currency
    );
    Ok(())
}

/// The daemons' resident memory at each tenth of the run (the first
/// sample at or after it), in MiB.
fn memory_table(samples: &[(usize, [u64; 3])], exchanges: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    for tenth in 0..=10 {
        let at = exchanges * tenth / 10;
        if let Some((n, rss)) = samples.iter().find(|(n, _)| *n >= at) {
            if rows
                .last()
                .is_some_and(|r: &Value| r["exchanges_done"] == *n)
            {
                continue;
            }
            rows.push(json!({
                "exchanges_done": n,
                "agent_mib": rss[0] as f64 / 1024.0,
                "jpy_issuer_mib": rss[1] as f64 / 1024.0,
                "usd_issuer_mib": rss[2] as f64 / 1024.0,
            }));
        }
    }
    rows
}

fn print_table(say: &Say, r: &Value, names: &[&str; 4], phases: &[Vec<Duration>; 4]) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut t = String::new();
    t.push_str(&format!(
        "\nEnd to end on {}: {} exchanges of {} JPY by {} wallets (wallet --poll {} s)\n\n",
        r["server"].as_str().unwrap_or(""),
        r["exchanges"],
        r["amount_jpy"],
        r["wallets"],
        r["wallet_poll_s"].as_str().unwrap_or("")
    ));
    t.push_str(
        "| phase (as the wallet sees it)                               | p50 ms | p95 ms |\n",
    );
    t.push_str(
        "|-------------------------------------------------------------|-------:|-------:|\n",
    );
    for (n, v) in names.iter().zip(phases) {
        t.push_str(&format!(
            "| {n:<59} | {:>6.0} | {:>6.0} |\n",
            quantile_ms(v, 0.5),
            quantile_ms(v, 0.95)
        ));
    }
    t.push_str(&format!(
        "\nExchanges: {:.2}/s; mails per exchange: {:.2} ({:.2} between wallet and agent, the rest the agent's float upkeep with the issuers; {} bytes on average)\n",
        f(&r["exchanges_per_s"]),
        f(&r["mails_per_exchange"]),
        f(&r["exchange_mails_per_exchange"]),
        r["mean_mail_bytes"]
    ));
    t.push_str(&format!(
        "Raw mail server: {:.1} mails/s ({} mails of {} bytes, {} senders); one mail SMTP -> IMAP p50 {:.1} ms, p95 {:.1} ms\n",
        f(&r["raw"]["mails_per_s"]),
        r["raw"]["mails"],
        r["raw"]["size"],
        r["raw"]["senders"],
        f(&r["delivery"]["p50_ms"]),
        f(&r["delivery"]["p95_ms"])
    ));
    let ratio = f(&r["ratio"]);
    t.push_str(&format!(
        "ratio = exchanges/s x mails per exchange / raw mails/s = {ratio:.2} (goal >= 0.8: {})\n",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    ));
    t.push_str("\n| agent reads its mailbox by     | request in -> offer in p50 ms | p95 ms | less 1 delivery p50 ms | p95 ms |\n");
    t.push_str("|--------------------------------|-----------------------------:|-------:|-----------------------:|-------:|\n");
    for m in r["agent_modes"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "| {:<30} | {:>28.0} | {:>6.0} | {:>22.0} | {:>6.0} |\n",
            m["mode"].as_str().unwrap_or(""),
            f(&m["round_trip"]["p50_ms"]),
            f(&m["round_trip"]["p95_ms"]),
            f(&m["agent_estimate_p50_ms"]),
            f(&m["agent_estimate_p95_ms"])
        ));
    }
    t.push_str("\n| exchanges done | agent MiB | JPY issuer MiB | USD issuer MiB |\n");
    t.push_str("|---------------:|----------:|---------------:|---------------:|\n");
    for m in r["memory"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "| {:>14} | {:>9.1} | {:>14.1} | {:>14.1} |\n",
            m["exchanges_done"].as_u64().unwrap_or(0),
            f(&m["agent_mib"]),
            f(&m["jpy_issuer_mib"]),
            f(&m["usd_issuer_mib"])
        ));
    }
    let peaks: Vec<String> = r["peak"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {:.1} MiB",
                p["daemon"].as_str().unwrap_or(""),
                p["vmhwm_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0
            )
        })
        .collect();
    t.push_str(&format!("Peak (VmHWM): {}\n", peaks.join(", ")));
    say.plain(&t);
}
