//! The hostile-mail corpus and its runner.
//!
//! A deployment of the demo's cast ([`deploy`]) does real business first,
//! so that there are real old requests to replay and real keys to steal
//! ([`loot`]). Then every kind of bad mail a stranger could send
//! ([`corpus`]) goes through SMTP to the issuers' and the agent's real
//! mailboxes while their daemons run, one category at a time. For each,
//! the runner waits until the daemons have filed every mail and sent every
//! reply they queued (read from their outboxes), then checks that:
//!
//! - every daemon still runs;
//! - protocol-looking mail got a signed error reply (verified with the
//!   daemon's key) with one of the expected codes; mail that is not
//!   protocol mail was filed in `Rejected` with no reply at all;
//! - nobody's money changed (every issuer account, the agent's float per
//!   currency, every wallet's balance) and both issuers' audits pass.

pub mod corpus;
pub mod deploy;
pub mod forge;
pub mod loot;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt as _;
use mailer::crypto::PublicKey;
use mailer::envelope::Signed;
use mailer::messages::{DepositOutcome, ErrorCode, Message, Offer, QuoteAmount, QuoteRequest};
use mailer::money::{Amount, Currency};
use testmail::harness::{Account, ServerKind};

use deploy::{read_only, Deployment, Snapshot};

/// Which daemon a mail is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    IssuerJpy,
    IssuerUsd,
    Agent,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::IssuerJpy => "issuer-jpy",
            Target::IssuerUsd => "issuer-usd",
            Target::Agent => "agent",
        }
    }
}

/// What a daemon must do with one mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Not protocol mail: filed in `Rejected`, never answered.
    Quarantine,
    /// One signed error reply to the sender, with one of these codes.
    Error(Vec<ErrorCode>),
    /// Filed, never answered (an error reply; a mail seen before).
    NoReply,
    /// The reply stored the first time, of this kind, signed by the daemon
    /// and naming the request (or a signed `Replay` error).
    SameReply(&'static str),
    /// A deposit credited with nothing: a signed receipt whose every note
    /// is refused with one of these codes (or a signed error with one).
    Refused(Vec<ErrorCode>),
    /// The From is forged to be a daemon: nothing comes to the stranger;
    /// the error goes to that daemon, which files it unanswered (no loop).
    Reflected,
}

/// One hostile mail.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Target,
    pub raw: Vec<u8>,
    pub expect: Expect,
}

/// One category of the corpus: its mails are sent together.
#[derive(Clone, Debug)]
pub struct Case {
    pub category: String,
    pub mails: Vec<Mail>,
}

/// What the runner saw for one category.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub category: String,
    /// The daemons it was sent to.
    pub targets: String,
    pub sent: usize,
    /// Mails the mail server refused at SMTP (they never reached a daemon),
    /// with its answer.
    pub refused_by_server: usize,
    pub server_answer: Option<String>,
    /// Replies to the stranger, and the codes (or reply kinds) they carried.
    pub replies: usize,
    pub codes: BTreeSet<String>,
    /// Mails the daemons filed in `Rejected`.
    pub quarantined: usize,
    /// Mails the daemons queued to anyone but the stranger (to a forged
    /// From).
    pub reflected: usize,
    pub alive: bool,
    /// The sum of absolute differences of every balance, before and after.
    pub value_changed: u64,
    pub audits_ok: bool,
    pub seconds: f64,
    /// Everything that was not as it must be.
    pub problems: Vec<String>,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub server: ServerKind,
    pub rows: Vec<Row>,
    pub setup_seconds: f64,
    pub corpus_seconds: f64,
    /// The deployment-wide value-conservation check after the corpus.
    pub conservation: crate::conservation::Report,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.rows.iter().all(Row::ok) && self.conservation.is_ok()
    }

    /// The table, in Markdown.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| category | target | sent | replies (codes) | quarantined | alive | value changed |"
        );
        let _ = writeln!(t, "| --- | --- | ---: | --- | ---: | --- | ---: |");
        for r in &self.rows {
            let mut replies = format!("{}", r.replies);
            if !r.codes.is_empty() {
                let codes: Vec<&str> = r.codes.iter().map(String::as_str).collect();
                replies.push_str(&format!(" ({})", codes.join(", ")));
            }
            if r.reflected > 0 {
                replies.push_str(&format!("; {} to the forged From", r.reflected));
            }
            let mut sent = r.sent.to_string();
            if r.refused_by_server > 0 {
                sent.push_str(&format!(
                    " ({} refused by the server: {})",
                    r.refused_by_server,
                    r.server_answer.as_deref().unwrap_or("")
                ));
            }
            let _ = writeln!(
                t,
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                r.category,
                if r.ok() { "" } else { " **FAILED**" },
                r.targets,
                sent,
                replies,
                r.quarantined,
                if r.alive { "yes" } else { "NO" },
                r.value_changed
            );
        }
        for r in self.rows.iter().filter(|r| !r.ok()) {
            let _ = writeln!(t, "\n{}:\n  - {}", r.category, r.problems.join("\n  - "));
        }
        t
    }
}

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub server: ServerKind,
    /// Where the deployment lives (kept); a temp folder if `None`.
    pub dir: Option<PathBuf>,
    /// Where issuer, agent and wallet are (beside this program if `None`).
    pub bins: Option<PathBuf>,
    /// Mails in the burst.
    pub burst: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            server: ServerKind::Embedded,
            dir: None,
            bins: None,
            burst: 1_000,
        }
    }
}

/// One daemon as the runner sees it.
struct Watched {
    target: Target,
    address: String,
    account: Arc<Account>,
    db: PathBuf,
    key: PublicKey,
}

/// Sets the deployment up, sends the corpus, and reports.
pub fn run(opts: &Options) -> Result<Report> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("chaos-hostile-")
                .tempdir()
                .context("cannot make a temp folder")?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bins = demo::bins::Bins::find(opts.bins.clone(), opts.bins.is_none())?;
    let started = Instant::now();
    let mut d = Deployment::start(bins, dir.clone(), opts.server)?;
    let loot = loot::Loot::take(&d)?;
    let expired = expired_offer(&mut d, &loot)?;
    let setup_seconds = started.elapsed().as_secs_f64();

    let world = corpus::World {
        stranger: &d.attacker.address,
        jpy: d.jpy.party.address(),
        usd: d.usd.party.address(),
        agent: d.agent.party.address(),
        loot: &loot,
        expired_offer: &expired,
    };
    let mut cases = corpus::corpus(&world)?;
    if let Some(last) = cases.last_mut() {
        if last.category.starts_with("burst") {
            *last = corpus::burst(&world, &corpus::stranger_key(), opts.burst)?;
        }
    }
    let watch = |target, party: &demo::cast::Party, db, key| Watched {
        target,
        address: party.address().to_string(),
        account: Arc::clone(&party.account),
        db,
        key,
    };
    let watched = vec![
        watch(
            Target::IssuerJpy,
            &d.jpy.party,
            d.issuer_db(&d.jpy),
            loot.jpy_key,
        ),
        watch(
            Target::IssuerUsd,
            &d.usd.party,
            d.issuer_db(&d.usd),
            loot.usd_key,
        ),
        watch(Target::Agent, &d.agent.party, d.agent_db(), loot.agent_key),
    ];
    sync_wallets(&d)?;
    let corpus_started = Instant::now();
    let mut before = d.snapshot()?;
    let mut rows = Vec::new();
    for case in &cases {
        let row = run_case(&mut d, &watched, case, &before)?;
        eprintln!(
            "hostile: {} -> {} repl{}, {} quarantined, {}",
            row.category,
            row.replies,
            if row.replies == 1 { "y" } else { "ies" },
            row.quarantined,
            if row.ok() { "ok" } else { "FAILED" }
        );
        let failed_hard = !row.alive;
        rows.push(row);
        before = d.snapshot()?;
        if failed_hard {
            break;
        }
    }
    // The wallets read whatever came to them meanwhile: had a daemon paid
    // anyone, it would show now.
    sync_wallets(&d)?;
    let last = d.snapshot()?;
    let drift = last.changed_since(&before);
    if drift != 0 {
        if let Some(r) = rows.last_mut() {
            r.value_changed += drift;
            r.problems.push(format!(
                "after the wallets synced, balances moved: {}",
                last.diff(&before).join("; ")
            ));
        }
    }
    // Across the whole deployment, note by note: nothing the corpus did
    // created or lost value anywhere, mail still unread included.
    let conservation = d.conservation()?;
    let report = Report {
        server: opts.server,
        rows,
        setup_seconds,
        corpus_seconds: corpus_started.elapsed().as_secs_f64(),
        conservation,
    };
    Ok(report)
}

/// Every wallet reads its mailbox once.
fn sync_wallets(d: &Deployment) -> Result<()> {
    for w in d.wallets() {
        w.poll(&d.stage, &["sync"])?;
    }
    Ok(())
}

/// An offer the agent made the stranger, whose D1 has passed: the agent's
/// operator shortens the offer time to a second for one quote, then sets
/// it back.
fn expired_offer(d: &mut Deployment, loot: &loot::Loot) -> Result<Signed<Offer>> {
    let stage = &d.stage;
    let agent = &d.agent.party;
    agent.run(
        stage,
        &["deadlines", "--offer-secs", "1", "--request-secs", "60"],
    )?;
    let card = corpus::stranger_card();
    let quote = forge::sign(
        QuoteRequest {
            request_id: mailer::crypto::Id::random(),
            from: Currency::JPY,
            to: Currency::USD,
            amount: QuoteAmount::Pay(Amount::new(1_000)),
        },
        &card.auth,
    )?;
    let raw = forge::protocol_mail(&d.attacker.address, agent.address(), vec![quote])?;
    stage.rt.block_on(
        stage
            .server
            .send_raw(&d.attacker.address, agent.address(), &raw),
    )?;
    let got = stage
        .rt
        .block_on(
            stage
                .server
                .wait_for(&d.attacker, "INBOX", 1, Duration::from_secs(60)),
        )
        .context("the agent did not answer the stranger's quote request")?;
    agent.run(
        stage,
        &[
            "deadlines",
            "--offer-secs",
            &agent::home::OFFER_SECS.to_string(),
            "--request-secs",
            &agent::home::REQUEST_SECS.to_string(),
        ],
    )?;
    stage.rt.block_on(stage.server.empty(&d.attacker))?;
    let offer = got
        .iter()
        .flat_map(|m| corpus::envelopes_of(m))
        .find_map(|m| match m {
            Message::Offer(o) => Some(o),
            _ => None,
        })
        .context("the agent's answer to the quote request is not an offer")?;
    offer
        .verify_signer(&loot.agent_key)
        .context("the offer is not signed by the agent")?;
    let d1 = offer.unverified().terms.d1;
    deploy::wait("the stranger's offer to expire", 30, || {
        Ok(mailer::clock::now() > d1)
    })?;
    Ok(offer)
}

const FOLDERS: [&str; 3] = ["INBOX", "Processed", "Rejected"];

/// A daemon's outbox rows after `after`: (recipient, state).
fn outbox_since(db: &Path, after: i64) -> Result<Vec<(String, String)>> {
    let conn = read_only(db)?;
    let mut stmt =
        conn.prepare("SELECT recipient, state FROM mail_outbox WHERE id > ?1 ORDER BY id")?;
    let rows = stmt.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn outbox_top(db: &Path) -> Result<i64> {
    Ok(
        read_only(db)?.query_row("SELECT COALESCE(MAX(id), 0) FROM mail_outbox", [], |r| {
            r.get(0)
        })?,
    )
}

fn run_case(
    d: &mut Deployment,
    watched: &[Watched],
    case: &Case,
    before: &Snapshot,
) -> Result<Row> {
    let started = Instant::now();
    let stranger = d.attacker.address.clone();
    let server = &d.stage.server;
    let rt = &d.stage.rt;
    let mut row = Row {
        category: case.category.clone(),
        sent: case.mails.len(),
        alive: true,
        ..Row::default()
    };
    let targets: BTreeSet<Target> = case.mails.iter().map(|m| m.to).collect();
    row.targets = targets
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ");

    let mut base_counts = Vec::new();
    let mut base_top = Vec::new();
    for w in watched {
        base_counts.push(rt.block_on(server.counts(&w.account, &FOLDERS))?);
        base_top.push(outbox_top(&w.db)?);
    }
    rt.block_on(server.empty(&d.attacker))?;

    // Send, eight at a time.
    let addr_of = |t: Target| {
        watched
            .iter()
            .find(|w| w.target == t)
            .map(|w| w.address.clone())
            .unwrap_or_default()
    };
    let results: Vec<(usize, std::result::Result<(), String>)> = rt.block_on(async {
        futures::stream::iter(case.mails.iter().enumerate())
            .map(|(i, m)| {
                let to = addr_of(m.to);
                let stranger = stranger.clone();
                async move {
                    let r = server
                        .send_raw(&stranger, &to, &m.raw)
                        .await
                        .map_err(|e| e.to_string());
                    (i, r)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await
    });
    let mut delivered = vec![true; case.mails.len()];
    for (i, r) in results {
        if let Err(e) = r {
            delivered[i] = false;
            row.refused_by_server += 1;
            row.server_answer
                .get_or_insert(e.chars().take(120).collect());
        }
    }
    let mut delivered_to: BTreeMap<Target, usize> = BTreeMap::new();
    for (m, ok) in case.mails.iter().zip(&delivered) {
        if *ok {
            *delivered_to.entry(m.to).or_default() += 1;
        }
    }

    // Wait until each daemon filed all it got, and every reply queued is
    // sent and, if to the stranger, delivered.
    let timeout = Duration::from_secs(60 + case.mails.len() as u64 / 10);
    let deadline = Instant::now() + timeout;
    let (counts, rows_by_daemon) = loop {
        let alive = d
            .jpy
            .daemon
            .check()
            .and_then(|()| d.usd.daemon.check())
            .and_then(|()| d.agent.daemon.check());
        if let Err(e) = alive {
            row.alive = false;
            row.problems.push(format!("a daemon stopped: {e:#}"));
            return Ok(row);
        }
        // Counts first: a daemon commits the replies it queues before it
        // files the mail, so what is filed now has its replies in the
        // outbox read after.
        let mut counts = Vec::new();
        let mut missing = Vec::new();
        for (i, w) in watched.iter().enumerate() {
            let c = rt.block_on(server.counts(&w.account, &FOLDERS))?;
            let filed = (c[1] + c[2]).saturating_sub(base_counts[i][1] + base_counts[i][2]);
            counts.push((c, filed));
        }
        let mut rows_by_daemon = Vec::new();
        let mut pending = 0;
        let mut to_addr: BTreeMap<String, usize> = BTreeMap::new();
        for (w, top) in watched.iter().zip(&base_top) {
            let rows = outbox_since(&w.db, *top)?;
            for (to, state) in &rows {
                pending += usize::from(state == "pending");
                *to_addr.entry(to.clone()).or_default() += 1;
            }
            rows_by_daemon.push(rows);
        }
        for (w, (c, filed)) in watched.iter().zip(&counts) {
            let want = delivered_to.get(&w.target).copied().unwrap_or(0)
                + to_addr.get(&w.address).copied().unwrap_or(0);
            if c[0] > 0 || *filed < want {
                missing.push(format!(
                    "{} has filed {filed} of {want} mails, {} still in INBOX",
                    w.target.name(),
                    c[0]
                ));
            }
        }
        let counts: Vec<Vec<usize>> = counts.into_iter().map(|(c, _)| c).collect();
        let to_stranger = to_addr.get(&stranger).copied().unwrap_or(0);
        let got = rt.block_on(server.counts(&d.attacker, &["INBOX"]))?[0];
        if got < to_stranger {
            missing.push(format!(
                "the stranger has {got} of the {to_stranger} replies sent to it"
            ));
        }
        if pending > 0 {
            missing.push(format!(
                "{pending} replies still queued in the daemons' outboxes"
            ));
        }
        if missing.is_empty() {
            break (counts, rows_by_daemon);
        }
        if Instant::now() >= deadline {
            row.problems.push(format!(
                "timed out after {} s: {}",
                timeout.as_secs(),
                missing.join("; ")
            ));
            break (counts, rows_by_daemon);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for (i, w) in watched.iter().enumerate() {
        let rejected = counts[i][2].saturating_sub(base_counts[i][2]);
        row.quarantined += rejected;
        let quarantine = case
            .mails
            .iter()
            .zip(&delivered)
            .filter(|(m, ok)| **ok && m.to == w.target && m.expect == Expect::Quarantine)
            .count();
        if rejected < quarantine {
            row.problems.push(format!(
                "{} filed {rejected} mails in Rejected; {quarantine} are not protocol mail",
                w.target.name()
            ));
        }
    }
    let daemon_addrs: BTreeSet<&str> = watched.iter().map(|w| w.address.as_str()).collect();
    for rows in &rows_by_daemon {
        for (to, _) in rows {
            if *to != stranger {
                row.reflected += 1;
                if !daemon_addrs.contains(to.as_str()) {
                    row.problems
                        .push(format!("a daemon sent mail to {to}, who sent nothing"));
                }
            }
        }
    }
    let reflect_ok = case.mails.iter().all(|m| m.expect == Expect::Reflected);
    if row.reflected > 0 && !reflect_ok {
        row.problems.push(format!(
            "{} mails went to others than the sender",
            row.reflected
        ));
    }

    // The replies, each matched to the mail it answers.
    let replies = rt.block_on(server.messages(&d.attacker, "INBOX"))?;
    let ids: Vec<Option<String>> = case
        .mails
        .iter()
        .map(|m| {
            mailer::mime::read_headers(&m.raw)
                .message_id
                .map(|i| i.as_str().to_string())
        })
        .collect();
    let mut per_mail: Vec<Vec<Vec<Message>>> = vec![Vec::new(); case.mails.len()];
    for raw in &replies {
        row.replies += 1;
        let h = mailer::mime::read_headers(raw);
        let parent = h.in_reply_to.map(|i| i.as_str().to_string());
        let Some(i) = parent.and_then(|p| ids.iter().position(|x| x.as_deref() == Some(&p))) else {
            row.problems.push(format!(
                "a reply to no mail of this category (In-Reply-To {:?}, From {:?})",
                mailer::mime::read_headers(raw).in_reply_to,
                h.from
            ));
            continue;
        };
        let key = watched
            .iter()
            .find(|w| w.target == case.mails[i].to)
            .map(|w| w.key);
        let msgs = corpus::envelopes_of(raw);
        if msgs.is_empty() {
            row.problems
                .push("a reply with no readable envelope".into());
        }
        for m in &msgs {
            if key.is_none_or(|k| m.envelope().verify_signer(&k).is_err()) {
                row.problems.push(format!(
                    "a {} reply not signed by the daemon's key",
                    m.kind()
                ));
            }
        }
        per_mail[i].push(msgs);
    }
    for (i, m) in case.mails.iter().enumerate() {
        if !delivered[i] {
            continue;
        }
        check_mail(&mut row, i, m, &per_mail[i]);
    }

    row.alive = d.check_daemons().is_ok();
    if !row.alive {
        row.problems.push("a daemon stopped".into());
    }
    let after = d.snapshot()?;
    row.value_changed = after.changed_since(before);
    if row.value_changed != 0 {
        row.problems
            .push(format!("value changed: {}", after.diff(before).join("; ")));
    }
    row.audits_ok = after.audits_ok();
    if !row.audits_ok {
        row.problems
            .push(format!("an audit failed: {:?}", after.audits));
    }
    row.seconds = started.elapsed().as_secs_f64();
    Ok(row)
}

/// Checks the replies to mail `i` against what it expects.
fn check_mail(row: &mut Row, i: usize, m: &Mail, replies: &[Vec<Message>]) {
    let name = format!("mail {} to {}", i + 1, m.to.name());
    let mut codes = Vec::new();
    for msgs in replies {
        for msg in msgs {
            match msg {
                Message::Error(e) => codes.push(e.unverified().code),
                Message::DepositReceipt(r) => {
                    let r = r.unverified();
                    if !r.credited.is_zero() {
                        row.problems
                            .push(format!("{name}: the issuer credited {:?}", r.credited));
                    }
                    for res in &r.results {
                        codes.push(match &res.result {
                            DepositOutcome::Refused { code, .. } => *code,
                            DepositOutcome::Overspent { .. } => ErrorCode::Overspent,
                            DepositOutcome::AlreadyCredited => ErrorCode::AlreadyDeposited,
                            DepositOutcome::Credited => {
                                row.problems.push(format!("{name}: a note was credited"));
                                ErrorCode::Internal
                            }
                        });
                    }
                    row.codes.insert("deposit-receipt".into());
                }
                other => {
                    row.codes.insert(other.kind().to_string());
                }
            }
        }
    }
    for c in &codes {
        row.codes.insert(format!("E{}", c.number()));
    }
    let n = replies.len();
    match &m.expect {
        Expect::Quarantine | Expect::NoReply | Expect::Reflected => {
            if n > 0 {
                row.problems
                    .push(format!("{name}: answered ({n} replies) but must not be"));
            }
        }
        Expect::Error(allowed) | Expect::Refused(allowed) => {
            if n != 1 {
                row.problems
                    .push(format!("{name}: {n} replies, expected one signed refusal"));
            }
            if codes.is_empty() && n > 0 {
                row.problems
                    .push(format!("{name}: the reply carries no error code"));
            }
            for c in &codes {
                if !allowed.contains(c) {
                    row.problems
                        .push(format!("{name}: code {c}, expected one of {allowed:?}"));
                }
            }
        }
        Expect::SameReply(kind) => {
            let ok = replies.iter().flatten().all(|msg| match msg {
                Message::Error(e) => e.unverified().code == ErrorCode::Replay,
                other => other.kind() == *kind,
            });
            if n == 0 || !ok {
                row.problems.push(format!(
                    "{name}: expected the stored {kind} again (or a Replay error), got {n} replies of kinds {:?}",
                    replies.iter().flatten().map(|m| m.kind().to_string()).collect::<Vec<_>>()
                ));
            }
        }
    }
}

/// `chaos hostile`: the runner with its table on stdout.
pub fn main(opts: &Options) -> Result<bool> {
    let report = run(opts)?;
    println!(
        "Hostile mail against running daemons ({} server): setup {:.0} s, corpus {:.0} s.\n",
        match report.server {
            ServerKind::Embedded => "embedded",
            ServerKind::Real => "real",
        },
        report.setup_seconds,
        report.corpus_seconds
    );
    print!("{}", report.table());
    print!(
        "\nAcross the deployment, after the corpus:\n{}",
        report.conservation
    );
    if !report.ok() {
        bail!("some categories failed (see the table)");
    }
    Ok(true)
}
