//! The seeded fault campaign: many concurrent exchanges and transfers by
//! real wallet processes, while the agent, the issuers and the wallets are
//! killed with `kill -9` and restarted at random moments, and the mail
//! server drops connections, delivers some mails twice, delays others and
//! refuses some. At the end every exchange must be completed exactly once
//! or have expired (with the 1st payment refunded if it was made), every
//! transfer must be done, no command may have failed for a reason of its
//! own, and value must be conserved across the whole deployment
//! ([`crate::conservation`]).
//!
//! Everything random comes from one seed: what each wallet does (its list
//! of exchanges and transfers, their amounts and payees) and the list of
//! chaos events (which party is killed, for how long, which fault, at what
//! point of the run's progress). The same seed replays the same plan; the
//! moments inside a command at which a kill lands depend on timing and so
//! vary a little from run to run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use demo::cast::{not_interrupted, Daemon, Party, Stage};
use demo::story::{self, Agent, Float, Issuer, Say};
use serde_json::{json, Value};
use testmail::SmtpStage;

use crate::conservation;

/// What to run: sizes and the seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    /// Wallets, each a process at a time, all at once.
    pub wallets: usize,
    /// Exchanges of JPY for USD, over all wallets.
    pub exchanges: usize,
    /// Payments from one wallet to another, over all wallets.
    pub transfers: usize,
    /// `kill -9` of the agent, an issuer or a wallet command.
    pub kills: usize,
    /// Mail server faults (embedded server only).
    pub faults: usize,
    /// The agent's D1: an offer must be paid within this many seconds.
    pub offer_secs: u64,
}

impl Plan {
    /// The size CI runs.
    pub fn ci(seed: u64) -> Plan {
        Plan {
            seed,
            wallets: 8,
            exchanges: 200,
            transfers: 40,
            kills: 20,
            faults: 16,
            offer_secs: 12,
        }
    }
}

/// SplitMix64: a fixed generator, so that a seed replays the same plan
/// with any version of any crate.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the bias is below 2^-40 for our sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// One thing a wallet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `wallet exchange AMOUNT JPY --to USD`.
    Exchange { jpy: u64 },
    /// `wallet send AMOUNT JPY --to` the wallet with this index.
    Send { jpy: u64, to: usize },
}

/// Who is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Agent,
    /// 0: JPY, 1: USD.
    Issuer(usize),
    /// Whichever wallet command is running; the number picks among them.
    Wallet(u64),
}

/// One chaos event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `kill -9`, then restarted after `down_ms` (daemons).
    Kill { target: Target, down_ms: u64 },
    /// The next `n` IMAP FETCHes that return mail are cut halfway.
    DropFetches(u32),
    /// The next `n` mails are delivered twice.
    Duplicate(u32),
    /// Mail is delivered `ms` late for `for_ms`.
    Delay { ms: u64, for_ms: u64 },
    /// Every IMAP connection in IDLE is dropped.
    DropIdle,
    /// The next `n` SMTP transactions get `451` at the end of DATA.
    RefuseSmtp(u32),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Kill { target, down_ms } => {
                let who = match target {
                    Target::Agent => "the agent".to_string(),
                    Target::Issuer(0) => "the JPY issuer".to_string(),
                    Target::Issuer(_) => "the USD issuer".to_string(),
                    Target::Wallet(_) => "a running wallet command".to_string(),
                };
                match target {
                    Target::Wallet(_) => write!(f, "kill -9 {who}"),
                    _ => write!(f, "kill -9 {who}, restarted after {down_ms} ms"),
                }
            }
            Action::DropFetches(n) => write!(f, "cut the next {n} IMAP fetches halfway"),
            Action::Duplicate(n) => write!(f, "deliver the next {n} mails twice"),
            Action::Delay { ms, for_ms } => {
                write!(f, "deliver mail {ms} ms late for {for_ms} ms")
            }
            Action::DropIdle => write!(f, "drop every IMAP connection in IDLE"),
            Action::RefuseSmtp(n) => write!(f, "refuse the next {n} SMTP mails with 451"),
        }
    }
}

/// A chaos event, fired once `after_ops` wallet operations have finished
/// and `jitter_ms` more have passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub after_ops: usize,
    pub jitter_ms: u64,
    pub action: Action,
}

/// What each wallet does, and the chaos events: all from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub ops: Vec<Vec<Op>>,
    pub events: Vec<Event>,
}

/// The amounts, in JPY.
const EXCHANGE_JPY: [u64; 3] = [100, 200, 300];
const SEND_JPY: [u64; 3] = [100, 300, 700];

/// The plan's schedule (pure: the same plan gives the same schedule).
pub fn schedule(plan: &Plan) -> Schedule {
    let mut rng = Rng(plan.seed);
    let w = plan.wallets.max(1);
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); w];
    for i in 0..plan.exchanges {
        let jpy = EXCHANGE_JPY[rng.below(EXCHANGE_JPY.len() as u64) as usize];
        ops[i % w].push(Op::Exchange { jpy });
    }
    if w > 1 {
        for i in 0..plan.transfers {
            let from = i % w;
            let mut to = rng.below(w as u64 - 1) as usize;
            if to >= from {
                to += 1;
            }
            let jpy = SEND_JPY[rng.below(SEND_JPY.len() as u64) as usize];
            let at = rng.below(ops[from].len() as u64 + 1) as usize;
            ops[from].insert(at, Op::Send { jpy, to });
        }
    }
    let total: usize = ops.iter().map(Vec::len).sum();
    let mut events = Vec::new();
    // Kills: half of them wallet commands, the rest the daemons; one of
    // the agent's is an outage longer than D1, so that some exchanges
    // expire and their 1st payments come back.
    let outage = plan.kills >= 4;
    for k in 0..plan.kills {
        let target = if outage && k == plan.kills / 2 {
            Target::Agent
        } else {
            match rng.below(10) {
                0..=4 => Target::Wallet(rng.next()),
                5..=7 => Target::Agent,
                _ => Target::Issuer(rng.below(2) as usize),
            }
        };
        let down_ms = if outage && k == plan.kills / 2 {
            (plan.offer_secs + 3) * 1000
        } else {
            rng.between(0, 1500)
        };
        events.push(Event {
            // Wallet commands run until the last op; the kills land in the
            // first 90% of the run.
            after_ops: rng.below((total as u64 * 9 / 10).max(1)) as usize,
            jitter_ms: rng.below(1000),
            action: Action::Kill { target, down_ms },
        });
    }
    for _ in 0..plan.faults {
        let action = match rng.below(5) {
            0 => Action::DropFetches(rng.between(1, 3) as u32),
            1 => Action::Duplicate(rng.between(1, 5) as u32),
            2 => Action::Delay {
                ms: rng.between(200, 3000),
                for_ms: rng.between(500, 3000),
            },
            3 => Action::DropIdle,
            _ => Action::RefuseSmtp(rng.between(1, 3) as u32),
        };
        events.push(Event {
            after_ops: rng.below(total as u64) as usize,
            jitter_ms: rng.below(1000),
            action,
        });
    }
    events.sort_by_key(|e| e.after_ops);
    Schedule { ops, events }
}

/// What the campaign saw and checked.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub seconds: f64,
    pub exchanges: BTreeMap<String, usize>,
    pub agent_trades: BTreeMap<String, usize>,
    pub transfers: usize,
    pub kills: BTreeMap<String, usize>,
    pub faults: BTreeMap<String, usize>,
    /// Wallet commands that ended with an exit code other than 0 or 4
    /// (a timeout, after which `wallet sync` goes on), with the reason.
    pub failed_commands: Vec<String>,
    /// The embedded server's counters (the real servers have none).
    pub mail: Option<testmail::Stats>,
    pub conservation: conservation::Report,
    pub log: Vec<String>,
}

impl Report {
    /// Exchanges that ended, in any way.
    pub fn ended(&self) -> usize {
        self.exchanges.values().sum()
    }

    /// `kill -9`s that landed.
    pub fn kills_landed(&self) -> usize {
        self.kills.values().sum()
    }

    /// Every check green for `plan`: no command failed for a reason of its
    /// own, every planned exchange ended, value conserved, and most of the
    /// kills landed (a wallet kill needs a wallet command running then).
    pub fn is_ok(&self, plan: &Plan) -> bool {
        self.failed_commands.is_empty()
            && self.conservation.is_ok()
            && self.ended() == plan.exchanges
            && self.transfers == plan.transfers
            && self.kills_landed() * 4 >= plan.kills * 3
    }

    pub fn json(&self) -> Value {
        json!({
            "seed": self.seed,
            "seconds": self.seconds,
            "exchanges": self.exchanges,
            "agent_trades": self.agent_trades,
            "transfers": self.transfers,
            "kills": self.kills,
            "faults": self.faults,
            "failed_commands": self.failed_commands,
            "mail": self.mail.map(|m| json!({
                "accepted": m.mails_accepted,
                "refused": m.mails_refused,
                "delivered": m.messages_delivered,
                "imap_connections_dropped": m.imap_connections_dropped,
            })),
            "conserved": self.conservation.is_ok(),
            "conservation": self.conservation.to_string(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} ({:.1} s)", self.seed, self.seconds)?;
        let list = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "exchanges (wallets): {}", list(&self.exchanges))?;
        writeln!(f, "trades (agent):      {}", list(&self.agent_trades))?;
        writeln!(f, "transfers done:      {}", self.transfers)?;
        writeln!(f, "kill -9:             {}", list(&self.kills))?;
        writeln!(f, "mail faults:         {}", list(&self.faults))?;
        match &self.mail {
            Some(m) => writeln!(
                f,
                "mail server:         {} accepted, {} refused, {} delivered, {} IMAP connections cut",
                m.mails_accepted, m.mails_refused, m.messages_delivered, m.imap_connections_dropped
            )?,
            None => writeln!(f, "mail server:         real (no fault hooks, no counters)")?,
        }
        for c in &self.failed_commands {
            writeln!(f, "failed command: {c}")?;
        }
        write!(f, "{}", self.conservation)
    }
}

/// The deployment under fire.
struct Cast {
    issuers: Vec<Mutex<Issuer>>,
    agent: Mutex<Agent>,
    agent_flags: Vec<String>,
    wallets: Vec<Party>,
    /// The command each wallet runs now, if any.
    running: Vec<Mutex<Option<Child>>>,
    /// Set by the chaos thread when it kills that wallet's command.
    killed: Vec<AtomicBool>,
}

const ISSUER_FLAGS: [&str; 3] = ["run", "--poll-ms", "100"];

/// Runs the campaign on `stage`; its report, or an error saying what
/// broke (the seed is in `say`'s first line, to replay it).
pub fn run(stage: &Stage, say: &Say, plan: &Plan) -> Result<Report> {
    ensure!(plan.wallets >= 2, "the campaign needs at least 2 wallets");
    let started = Instant::now();
    let schedule = schedule(plan);
    say.step(&format!(
        "Fault campaign, seed {} ({} wallets, {} exchanges, {} transfers, {} kills, {} mail faults)",
        plan.seed, plan.wallets, plan.exchanges, plan.transfers, plan.kills, plan.faults
    ));
    let faults = stage.server.faults().cloned();
    if faults.is_none() && plan.faults > 0 {
        say.line("The real servers have no fault hooks: the mail faults are left out.");
    }
    let cast = set_up(stage, say, plan, &schedule)?;
    let mut log = Vec::new();
    let mut kills: BTreeMap<String, usize> = BTreeMap::new();
    let mut fault_counts: BTreeMap<String, usize> = BTreeMap::new();
    let done = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let outcomes = std::thread::scope(|scope| -> Result<Vec<Worked>> {
        let workers: Vec<_> = schedule
            .ops
            .iter()
            .enumerate()
            .map(|(i, ops)| {
                let (cast, done, finished) = (&cast, &done, &finished);
                scope.spawn(move || {
                    let r = work(stage, cast, i, ops, done);
                    finished.fetch_add(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        let chaos = (|| -> Result<()> {
            for event in &schedule.events {
                while done.load(Ordering::SeqCst) < event.after_ops
                    && finished.load(Ordering::SeqCst) < cast.wallets.len()
                {
                    not_interrupted()?;
                    check_daemons(&cast)?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(event.jitter_ms));
                let at = started.elapsed().as_secs_f64();
                let what = fire(stage, &cast, faults.as_ref(), &event.action)?;
                if let Some(what) = what {
                    log.push(format!("{at:7.1} s  {what}"));
                    let key = match &event.action {
                        Action::Kill { target, .. } => {
                            *kills.entry(kill_key(*target)).or_default() += 1;
                            continue;
                        }
                        Action::DropFetches(_) => "fetches cut",
                        Action::Duplicate(_) => "deliveries doubled",
                        Action::Delay { .. } => "delays",
                        Action::DropIdle => "IDLE connections dropped",
                        Action::RefuseSmtp(_) => "SMTP refusals",
                    };
                    *fault_counts.entry(key.to_string()).or_default() += 1;
                }
            }
            Ok(())
        })();
        let mut outcomes = Vec::new();
        for w in workers {
            match w.join() {
                Ok(r) => outcomes.push(r?),
                Err(_) => bail!("a wallet worker panicked"),
            }
        }
        chaos?;
        Ok(outcomes)
    })?;
    for l in &log {
        say.line(l);
    }
    if let Some(f) = &faults {
        f.clear();
    }
    let mut failed_commands = Vec::new();
    let mut seen_killed = 0;
    for o in &outcomes {
        failed_commands.extend(o.failed.iter().cloned());
        seen_killed += o.killed;
    }
    // Every wallet command the chaos thread killed ended killed, as its
    // worker saw it; a difference is a command that died otherwise.
    let sent = kills
        .get(&kill_key(Target::Wallet(0)))
        .copied()
        .unwrap_or(0);
    if seen_killed != sent {
        failed_commands.push(format!(
            "{sent} wallet commands were killed, but the wallets saw {seen_killed} killed"
        ));
    }
    say.line(&format!(
        "All {} operations ran in {:.1} s; settling: every wallet syncs until nothing is pending.",
        schedule.ops.iter().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64()
    ));
    settle(stage, &cast, plan)?;
    let (exchanges, agent_trades) = check_exchanges(stage, &cast)?;
    let transfers = check_transfers(stage, &cast)?;
    let conservation = conserved(stage, &cast)?;
    let report = Report {
        seed: plan.seed,
        seconds: started.elapsed().as_secs_f64(),
        exchanges,
        agent_trades,
        transfers,
        kills,
        faults: fault_counts,
        failed_commands,
        mail: faults.as_ref().map(|f| f.stats()),
        conservation,
        log,
    };
    Ok(report)
}

fn kill_key(t: Target) -> String {
    match t {
        Target::Agent => "agent".into(),
        Target::Issuer(0) => "JPY issuer".into(),
        Target::Issuer(_) => "USD issuer".into(),
        Target::Wallet(_) => "wallet commands".into(),
    }
}

/// Two issuers, the agent with a float for the whole run, and the
/// wallets, each with enough yen for what it will do.
fn set_up(stage: &Stage, say: &Say, plan: &Plan, schedule: &Schedule) -> Result<Cast> {
    let jpy = story::issuer(stage, say, "JPY")?;
    let usd = story::issuer(stage, say, "USD")?;
    let total_jpy: u64 = schedule
        .ops
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Exchange { jpy } => *jpy,
            Op::Send { .. } => 0,
        })
        .sum();
    // About 0.67 USD per 100 JPY; the agent starts with all the USD it
    // will pay, so that the campaign tests crashes, not the float upkeep.
    let usd_needed = total_jpy.div_ceil(100) + 20;
    let float = Float {
        jpy_paid_in: 100_000,
        usd_paid_in: usd_needed + 100,
        jpy_float: 10_000,
        usd_float: usd_needed,
    };
    let agent_flags: Vec<String> = ["run", "--tick-ms", "500"].map(String::from).to_vec();
    let agent = story::agent(
        stage,
        say,
        &jpy,
        &usd,
        &float,
        &agent_flags[1..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    agent.party.run(
        stage,
        &[
            "deadlines",
            "--offer-secs",
            &plan.offer_secs.to_string(),
            "--request-secs",
            "600",
        ],
    )?;
    // The yen it takes above 20,000 go back to the JPY issuer as it runs,
    // so that clearing is under fire too.
    agent.party.run(
        stage,
        &["float", "limits", "JPY", "--low", "5000", "--high", "20000"],
    )?;
    let mut wallets = Vec::new();
    for (i, ops) in schedule.ops.iter().enumerate() {
        let need: u64 = ops
            .iter()
            .map(|op| match op {
                Op::Exchange { jpy } | Op::Send { jpy, .. } => *jpy,
            })
            .sum();
        let w = story::wallet(stage, &format!("w{i}"), &[(&jpy, need + 1_000), (&usd, 0)])?;
        w.run(
            stage,
            &["agent", "add", agent.party.address(), "--key", &agent.key],
        )?;
        wallets.push(w);
    }
    let mut jpy = jpy;
    let mut usd = usd;
    {
        let all: Vec<&Party> = wallets.iter().collect();
        let mut daemons = [&mut jpy.daemon, &mut usd.daemon];
        story::settle(stage, &all, &mut daemons, "the wallets' licenses")?;
        for (w, ops) in wallets.iter().zip(&schedule.ops) {
            let need: u64 = ops
                .iter()
                .map(|op| match op {
                    Op::Exchange { jpy } | Op::Send { jpy, .. } => *jpy,
                })
                .sum();
            w.run(stage, &["withdraw", &(need + 1_000).to_string(), "JPY"])?;
        }
        story::settle(stage, &all, &mut daemons, "the wallets' withdrawals")?;
    }
    say.line(&format!(
        "{} wallets hold the yen for their plans; the agent's float is {} and {}.",
        wallets.len(),
        story::money(float.jpy_float, "JPY"),
        story::money(float.usd_float * 100, "USD"),
    ));
    let n = wallets.len();
    Ok(Cast {
        issuers: vec![Mutex::new(jpy), Mutex::new(usd)],
        agent: Mutex::new(agent),
        agent_flags,
        wallets,
        running: (0..n).map(|_| Mutex::new(None)).collect(),
        killed: (0..n).map(|_| AtomicBool::new(false)).collect(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error if a daemon stopped by itself (not killed by the campaign).
fn check_daemons(cast: &Cast) -> Result<()> {
    for i in &cast.issuers {
        lock(i).daemon.check()?;
    }
    lock(&cast.agent).daemon.check()
}

/// Fires one event; what was done, or `None` if there was nothing to do
/// it to (no wallet command running, no fault hooks).
fn fire(
    stage: &Stage,
    cast: &Cast,
    faults: Option<&testmail::Faults>,
    action: &Action,
) -> Result<Option<String>> {
    let restart = |daemon: &mut Daemon, party: &Party, flags: &[&str], down_ms: u64| {
        daemon.kill();
        std::thread::sleep(Duration::from_millis(down_ms));
        party.spawn(stage, flags)
    };
    match action {
        Action::Kill { target, down_ms } => match target {
            Target::Agent => {
                let mut a = lock(&cast.agent);
                let a = &mut *a;
                let flags: Vec<&str> = cast.agent_flags.iter().map(String::as_str).collect();
                a.daemon = restart(&mut a.daemon, &a.party, &flags, *down_ms)?;
            }
            Target::Issuer(n) => {
                let mut i = lock(&cast.issuers[*n]);
                let i = &mut *i;
                i.daemon = restart(&mut i.daemon, &i.party, &ISSUER_FLAGS, *down_ms)?;
            }
            Target::Wallet(pick) => {
                // Whichever wallet runs a command now; wait a little for one.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let n = cast.wallets.len() as u64;
                    for k in 0..n {
                        let w = ((pick + k) % n) as usize;
                        let mut slot = lock(&cast.running[w]);
                        if let Some(child) = slot.as_mut() {
                            if child.try_wait()?.is_none() {
                                cast.killed[w].store(true, Ordering::SeqCst);
                                // kill(2) with SIGKILL; the worker reaps it.
                                child.kill().context("cannot kill a wallet command")?;
                                return Ok(Some(format!(
                                    "kill -9 {}'s command",
                                    cast.wallets[w].role
                                )));
                            }
                        }
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        },
        other => {
            let Some(f) = faults else { return Ok(None) };
            match other {
                Action::DropFetches(n) => f.drop_connections_mid_fetch(*n),
                Action::Duplicate(n) => f.duplicate_next_deliveries(*n),
                Action::Delay { ms, for_ms } => {
                    f.delay_deliveries(Duration::from_millis(*ms));
                    std::thread::sleep(Duration::from_millis(*for_ms));
                    f.delay_deliveries(Duration::ZERO);
                }
                Action::DropIdle => f.drop_idle_connections(),
                Action::RefuseSmtp(n) => f.refuse_smtp(*n, 451, SmtpStage::EndOfData)?,
                Action::Kill { .. } => {}
            }
        }
    }
    Ok(Some(action.to_string()))
}

/// What one wallet's worker saw.
#[derive(Debug, Default)]
struct Worked {
    killed: usize,
    failed: Vec<String>,
}

/// How a command ended.
enum Ended {
    /// Its exit code, and what it printed.
    Exit(i32, String),
    Killed,
}

/// Runs one wallet command that the chaos thread may kill.
fn killable(stage: &Stage, cast: &Cast, w: usize, args: &[&str], log: &Path) -> Result<Ended> {
    let party = &cast.wallets[w];
    let from = std::fs::metadata(log).map_or(0, |m| m.len());
    {
        let mut slot = lock(&cast.running[w]);
        cast.killed[w].store(false, Ordering::SeqCst);
        *slot = Some(party.start_logged(stage, args, log)?);
    }
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let mut slot = lock(&cast.running[w]);
        let status: Option<ExitStatus> = match slot.as_mut() {
            Some(child) => child.try_wait()?,
            None => bail!("{}'s command vanished", party.role),
        };
        if let Some(status) = status {
            *slot = None;
            if cast.killed[w].swap(false, Ordering::SeqCst) {
                return Ok(Ended::Killed);
            }
            return match status.code() {
                Some(c) => Ok(Ended::Exit(c, printed_since(log, from))),
                None => bail!(
                    "{}'s command `wallet {}` died of a signal the campaign did not send ({status}); see {}",
                    party.role,
                    args.join(" "),
                    log.display()
                ),
            };
        }
    }
}

/// How many operations of `kind` the wallet's history holds.
fn ops_of_kind(stage: &Stage, party: &Party, kind: &str) -> Result<usize> {
    let h = party.json(stage, &["history"])?;
    Ok(h.as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == kind)
        .count())
}

/// Whether `wallet exchange` said its exchange ended refunded, expired,
/// or failed because D1 passed before it could pay (an agent down).
fn ended_unexchanged(printed: &str) -> bool {
    printed.lines().any(|l| {
        l.starts_with("Exchange ")
            && (l.contains(" refunded: ")
                || l.contains(" expired: ")
                || (l.contains(" failed: ") && l.contains("D1") && l.contains("has passed")))
    })
}

/// What a log file got after its first `from` bytes.
fn printed_since(log: &Path, from: u64) -> String {
    let all = std::fs::read(log).unwrap_or_default();
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(all.len());
    String::from_utf8_lossy(&all[from..]).trim().to_string()
}

/// One wallet's plan, each operation followed by a sync; a killed command
/// is followed by syncs until one completes.
fn work(stage: &Stage, cast: &Cast, w: usize, ops: &[Op], done: &AtomicUsize) -> Result<Worked> {
    let party = &cast.wallets[w];
    let log = stage.dir.join("logs").join(format!("{}.log", party.role));
    let agent = lock(&cast.agent).party.address().to_string();
    let mut worked = Worked::default();
    for op in ops {
        not_interrupted()?;
        let args: Vec<String> = match op {
            Op::Exchange { jpy } => [
                "exchange",
                &jpy.to_string(),
                "JPY",
                "--to",
                "USD",
                "--agent",
                &agent,
                "--yes",
                "--poll",
                "0.1",
                "--timeout",
                "60",
            ]
            .map(String::from)
            .to_vec(),
            Op::Send { jpy, to } => [
                "send",
                &jpy.to_string(),
                "JPY",
                "--to",
                cast.wallets[*to].address(),
            ]
            .map(String::from)
            .to_vec(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kind = match op {
            Op::Exchange { .. } => "exchange",
            Op::Send { .. } => "send",
        };
        let before = ops_of_kind(stage, party, kind)?;
        let mut ended = killable(stage, cast, w, &args, &log)?;
        // Killed before it recorded anything: the user runs it again.
        while let Ended::Killed = ended {
            if ops_of_kind(stage, party, kind)? > before {
                break;
            }
            worked.killed += 1;
            ended = killable(stage, cast, w, &args, &log)?;
        }
        loop {
            match ended {
                Ended::Killed => worked.killed += 1,
                // 4: gave up waiting; `wallet sync` goes on with it.
                Ended::Exit(0 | 4, _) => break,
                // An exchange that ended without exchanging (an agent down
                // past D1) exits 1; the final checks see it through.
                Ended::Exit(1, ref printed) if ended_unexchanged(printed) => break,
                Ended::Exit(code, printed) => {
                    worked.failed.push(format!(
                        "{}: `wallet {}` exited {code}: {printed}",
                        party.role,
                        args.join(" "),
                    ));
                    break;
                }
            }
            ended = killable(stage, cast, w, &["sync"], &log)?;
            if let Ended::Exit(0, _) = ended {
                break;
            }
        }
        if let Ended::Killed = killable(stage, cast, w, &["sync"], &log)? {
            worked.killed += 1;
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    Ok(worked)
}

/// Faults off, every daemon up; then every wallet syncs until nothing is
/// pending and the agent has no open trade (an unpaid offer waits for
/// D1, a late payment for its refund).
fn settle(stage: &Stage, cast: &Cast, plan: &Plan) -> Result<()> {
    check_daemons(cast)?;
    let secs = plan.offer_secs * 2 + 240;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        not_interrupted()?;
        for w in &cast.wallets {
            w.poll(stage, &["sync"])?;
        }
        check_daemons(cast)?;
        let mut open = Vec::new();
        for w in &cast.wallets {
            let p = w.json(stage, &["pending"])?;
            if let Some(a) = p.as_array() {
                if !a.is_empty() {
                    open.push(format!("{}: {} pending", w.role, a.len()));
                }
            }
        }
        let status = lock(&cast.agent).status(stage)?;
        let trades = status["open"].as_array().map_or(0, Vec::len);
        if trades > 0 {
            open.push(format!("the agent: {trades} open trades"));
        }
        let unsent = status["unsent_mail"].as_u64().unwrap_or(0);
        if unsent > 0 {
            open.push(format!("the agent: {unsent} mails unsent"));
        }
        if open.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "after {secs} s of settling, still open: {}",
                open.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every wallet's exchanges ended, each as the agent's trade of the same
/// TrID ended: done = delivered (completed exactly once: conservation
/// would see a second A2), refunded = refunded, expired = expired or
/// never signed. Counts per end state, the wallets' and the agent's.
fn check_exchanges(
    stage: &Stage,
    cast: &Cast,
) -> Result<(BTreeMap<String, usize>, BTreeMap<String, usize>)> {
    let agent_db = lock(&cast.agent).party.home.join("agent.db");
    let trades = agent_trades(&agent_db)?;
    let mut wallet_states: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for w in &cast.wallets {
        let all = w.json(stage, &["exchange", "status"])?;
        for x in all.as_array().into_iter().flatten() {
            let state = x["state"].as_str().unwrap_or("?").to_string();
            *wallet_states.entry(state.clone()).or_default() += 1;
            if x["done"] != true {
                problems.push(format!("{}: exchange #{} still {state}", w.role, x["op"]));
                continue;
            }
            let Some(tr) = x["tr_id"].as_str() else {
                // Never got an offer: nothing was paid.
                if state != "failed" && state != "expired" {
                    problems.push(format!(
                        "{}: exchange #{} {state} without a TrID",
                        w.role, x["op"]
                    ));
                }
                continue;
            };
            let agent_state = trades.get(tr).map(String::as_str).unwrap_or("none");
            let fits = match state.as_str() {
                "done" => agent_state == "delivered",
                "refunded" => agent_state == "refunded",
                "expired" | "failed" => {
                    matches!(agent_state, "expired" | "offered" | "signed" | "none")
                }
                _ => false,
            };
            if !fits {
                problems.push(format!(
                    "{}: exchange {tr} is {state} for the wallet but {agent_state} for the agent",
                    w.role
                ));
            }
        }
    }
    ensure!(problems.is_empty(), "exchanges:\n{}", problems.join("\n"));
    let mut agent_states: BTreeMap<String, usize> = BTreeMap::new();
    for s in trades.values() {
        *agent_states.entry(s.clone()).or_default() += 1;
    }
    Ok((wallet_states, agent_states))
}

/// The agent's trades, TrID (hex) to state, read from its database.
fn agent_trades(db: &Path) -> Result<BTreeMap<String, String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", db.display()))?;
    let mut stmt = conn.prepare("SELECT lower(hex(tr_id)), state FROM trades")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut m = BTreeMap::new();
    for r in rows {
        let (k, v) = r?;
        m.insert(k, v);
    }
    Ok(m)
}

/// Every send in every wallet's history ended done; how many.
fn check_transfers(stage: &Stage, cast: &Cast) -> Result<usize> {
    let mut done = 0;
    let mut problems = Vec::new();
    for w in &cast.wallets {
        let h = w.json(stage, &["history"])?;
        for op in h.as_array().into_iter().flatten() {
            if op["kind"] != "send" {
                continue;
            }
            if op["state"] == "done" {
                done += 1;
            } else {
                problems.push(format!("{}: {op}", w.role));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "transfers not done:\n{}",
        problems.join("\n")
    );
    Ok(done)
}

/// The conservation checker over every home and the mail still unread.
fn conserved(stage: &Stage, cast: &Cast) -> Result<conservation::Report> {
    let issuers: Vec<_> = cast.issuers.iter().map(lock).collect();
    let agent = lock(&cast.agent);
    let mut parties: Vec<&Party> = issuers.iter().map(|i| &i.party).collect();
    parties.push(&agent.party);
    parties.extend(cast.wallets.iter());
    conservation::check_cast(stage, &parties)
}

/// A seed from the clock, for a run that was not given one.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Rng(t.as_nanos() as u64 ^ u64::from(std::process::id())).next()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = schedule(&Plan::ci(7));
        assert_eq!(a, schedule(&Plan::ci(7)));
        assert_ne!(a, schedule(&Plan::ci(8)));
        assert_eq!(a.ops.iter().flatten().count(), 240);
        assert_eq!(a.events.len(), 36);
        assert!(a
            .events
            .windows(2)
            .all(|e| e[0].after_ops <= e[1].after_ops));
    }

    #[test]
    fn the_plan_has_an_agent_outage_longer_than_d1() {
        let plan = Plan::ci(1);
        let s = schedule(&plan);
        assert!(s.events.iter().any(|e| matches!(
            e.action,
            Action::Kill { target: Target::Agent, down_ms } if down_ms > plan.offer_secs * 1000
        )));
    }

    #[test]
    fn nobody_pays_himself() {
        let s = schedule(&Plan::ci(3));
        for (i, ops) in s.ops.iter().enumerate() {
            for op in ops {
                if let Op::Send { to, .. } = op {
                    assert_ne!(*to, i);
                }
            }
        }
    }
}
