//! The issuer's clearing benchmark (docs/performance.md, "Clearing
//! (issuer)"). Prints figures, asserts none about time.
//!
//! ```text
//! cargo bench -p issuer --bench clearing -- [--quick] [--notes N] [--links 1,3,8]
//!     [--preload 1000000] [--batch-notes 64]
//! ```
//!
//! 1. Raw ed25519 verifications per second on one core (`mailer::crypto`),
//!    measured in this run over 20,000 distinct (key, message, signature)
//!    triples; and batch verification (`verify_batch`, 256 at a time) per
//!    signature, for reference.
//! 2. Clearing through the issuer's real path: deposits of `--batch-notes`
//!    notes (64, the protocol's limit) handed to `issuer::handle_mail` as
//!    the daemon's watcher does (mail key, IMMEDIATE transaction, inbox
//!    record, one commit per deposit; WAL, `synchronous = FULL`), for notes
//!    of L links: L - 1 payments card to card, then the deposit link. Each
//!    note costs 1 + L signature verifications, so
//!    `ratio = notes/s * (1 + L) / raw verifications/s` is the share of the
//!    time spent verifying signatures one by one (the deposit handler
//!    verifies them in one batch, so it can exceed 1; the same against the
//!    raw batch rate is printed too). The raw rate is measured
//!    at the start and at the end of the run; the ratio takes the faster
//!    (a neighbour's load on a shared machine only ever slows it).
//! 3. The same clearing (L = 1) with `--preload` made-up states already
//!    stored, against none.
//!
//! `--pragma STMT` (repeatable) runs `PRAGMA STMT` on the issuer's
//! connection before anything else, for experiments (e.g.
//! `--pragma cache_size=-262144`); without it the settings are the
//! daemon's.
//!
//! Every deposit receipt is checked: every note credited, or the benchmark
//! fails (exit 1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark

#[path = "../tests/support/rig.rs"]
mod rig;

use std::collections::HashMap;
use std::hint::black_box;
use std::process::exit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mailer::crypto::{digest, verify_batch, Challenge, Digest, PublicKey, SecretKey, Signature};
use mailer::envelope::{signing_input, Body, Signed};
use mailer::imap::Disposition;
use mailer::license::CardSecret;
use mailer::messages::{Deposit, DepositOutcome, DepositReceipt, ErrorReply};
use mailer::mime::parse_mail;
use mailer::money::Amount;
use mailer::note::{Link, Note};
use mailer::testkit::{card, key, NOW};

use rig::{Rig, MAX_NOTES, NOTE_VALUE};

const USAGE: &str = "usage: cargo bench -p issuer --bench clearing -- [--quick] [--notes N] \
                     [--links 1,3,8] [--preload 1000000] [--batch-notes 64] [--pragma STMT]...";
/// Distinct (key, message, signature) triples for the raw measurement.
const RAW_TRIPLES: usize = 20_000;
const BATCH: usize = 256;

fn fail(msg: &str) -> ! {
    eprintln!("clearing benchmark FAILED: {msg}");
    exit(1)
}

#[derive(Debug)]
struct Args {
    notes: Option<usize>,
    links: Vec<usize>,
    preload: u64,
    batch_notes: usize,
    quick: bool,
    pragmas: Vec<String>,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            notes: None,
            links: vec![1, 3, 8],
            preload: 1_000_000,
            batch_notes: MAX_NOTES,
            quick: false,
            pragmas: Vec::new(),
        };
        let mut preload = None;
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
            };
            match flag.as_str() {
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                "--quick" => a.quick = true,
                "--pragma" => a.pragmas.push(value()),
                "--notes" => a.notes = Some(number(&flag, &value()) as usize),
                "--preload" => preload = Some(number(&flag, &value())),
                "--batch-notes" => a.batch_notes = number(&flag, &value()) as usize,
                "--links" => {
                    a.links = value()
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| number(&flag, s) as usize)
                        .collect()
                }
                "--help" | "-h" => {
                    println!("{USAGE}");
                    exit(0)
                }
                _ => usage(&format!("unknown argument {arg:?}")),
            }
        }
        a.preload = preload.unwrap_or(if a.quick { 100_000 } else { 1_000_000 });
        if a.links.is_empty()
            || a.links
                .iter()
                .any(|&l| l == 0 || l > mailer::limits::MAX_CHAIN)
        {
            usage(&format!(
                "--links takes link counts from 1 to {}",
                mailer::limits::MAX_CHAIN
            ));
        }
        if a.batch_notes == 0 || a.batch_notes > MAX_NOTES {
            usage(&format!("--batch-notes takes 1 to {MAX_NOTES}"));
        }
        if a.notes == Some(0) {
            usage("--notes takes at least 1");
        }
        a
    }

    /// Notes cleared in the run with `links` links per note.
    fn notes_for(&self, links: usize) -> usize {
        match (self.notes, self.quick, links) {
            (Some(n), _, _) => n,
            (None, true, _) => 5_000,
            (None, false, 1) => 100_000,
            (None, false, _) => 20_000,
        }
    }

    fn verify_time(&self) -> Duration {
        Duration::from_millis(if self.quick { 500 } else { 2_000 })
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}");
    exit(2)
}

fn number(flag: &str, s: &str) -> u64 {
    s.trim()
        .replace('_', "")
        .parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: {s:?} is not a number")))
}

// ---------------------------------------------------------------- raw

struct Triple {
    key: PublicKey,
    msg: Vec<u8>,
    sig: Signature,
}

/// The length of what a link's signature covers, so the raw messages cost
/// what the notes' do to hash.
fn link_signing_len() -> usize {
    let link = Signed::sign(
        Link {
            parent: Digest([7; 32]),
            payee: key(2).public(),
            amount: Amount::new(NOTE_VALUE),
            challenge: Challenge([9; 32]),
            signed_at: NOW,
        },
        &key(3),
    )
    .unwrap();
    let env = link.envelope();
    signing_input(env.kind(), env.body()).len()
}

fn raw_triples(n: usize, msg_len: usize) -> Vec<Triple> {
    let make = |i: usize| {
        let seed = digest(&[b"clearing-bench-key", &(i as u64).to_be_bytes()]).0;
        let secret = SecretKey::from_seed(seed);
        let mut msg = Vec::with_capacity(msg_len + 32);
        let mut j = 0u64;
        while msg.len() < msg_len {
            msg.extend_from_slice(&digest(&[b"clearing-bench-msg", &seed, &j.to_be_bytes()]).0);
            j += 1;
        }
        msg.truncate(msg_len);
        let sig = secret.sign(&msg);
        Triple {
            key: secret.public(),
            msg,
            sig,
        }
    };
    let half = n.div_ceil(2);
    std::thread::scope(|s| {
        let a = s.spawn(|| (0..half).map(make).collect::<Vec<_>>());
        let b = s.spawn(|| (half..n).map(make).collect::<Vec<_>>());
        let mut v = a.join().unwrap();
        v.extend(b.join().unwrap());
        v
    })
}

/// Single verifications per second, over the triples again and again for
/// about `time`.
fn verify_rate(triples: &[Triple], time: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for t in triples {
            if black_box(&t.key).verify(&t.msg, &t.sig).is_err() {
                fail("a raw signature does not verify");
            }
            n += 1;
            if n % 512 == 0 && start.elapsed() >= time {
                return n as f64 / start.elapsed().as_secs_f64();
            }
        }
    }
}

/// Signatures per second verified in batches of `BATCH`.
fn batch_rate(triples: &[Triple], time: Duration) -> f64 {
    let batches: Vec<Vec<(&PublicKey, &[u8], &Signature)>> = triples
        .chunks(BATCH)
        .map(|c| c.iter().map(|t| (&t.key, &t.msg[..], &t.sig)).collect())
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for b in &batches {
            if verify_batch(black_box(b)).is_err() {
                fail("a raw batch does not verify");
            }
            n += b.len() as u64;
            if start.elapsed() >= time {
                return n as f64 / start.elapsed().as_secs_f64();
            }
        }
    }
}

// ---------------------------------------------------------------- clearing

struct Run {
    links: usize,
    notes: usize,
    preload: u64,
    states_before: u64,
    deposits: usize,
    secs: f64,
    /// Per-deposit times, sorted.
    per_deposit: Vec<Duration>,
    /// The clearing thread's CPU time in user and kernel mode while
    /// clearing, if the system tells.
    cpu: Option<(f64, f64)>,
    /// Bytes the clearing thread read and wrote through system calls
    /// (SQLite's page reads, WAL appends, checkpoints), if the system tells.
    io: Option<(u64, u64)>,
}

impl Run {
    fn notes_per_sec(&self) -> f64 {
        self.notes as f64 / self.secs
    }
    fn sigs_per_note(&self) -> usize {
        1 + self.links
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        let i = ((self.per_deposit.len() as f64 - 1.0) * p).round() as usize;
        self.per_deposit
            .get(i)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

/// What one deposit should come back as.
struct Expected {
    notes: usize,
    value: u64,
    seen: bool,
}

/// Pays `note` (held by `cards[0]`) from card to card, then to the issuer
/// against the account's deposit challenge, each time its whole value.
fn pay_through(note: &Note, cards: &[CardSecret], issuer: PublicKey, deposit: Challenge) -> Note {
    let mut n = note.clone();
    for (k, c) in cards.iter().enumerate() {
        let (payee, challenge) = match cards.get(k + 1) {
            Some(next) => (next.payment.public(), Challenge::random()),
            None => (issuer, deposit),
        };
        n = n
            .pay(&c.payment, payee, n.held(), challenge, NOW)
            .unwrap_or_else(|e| fail(&format!("cannot sign a payment: {e}")));
    }
    n
}

fn clear(links: usize, notes: usize, preload: u64, args: &Args) -> Run {
    let tag = format!("[L={links}, {notes} notes, {preload} preloaded]");
    let setup = Instant::now();
    let mut rig = Rig::new();
    for p in &args.pragmas {
        if let Err(e) = rig.conn.execute_batch(&format!("PRAGMA {p};")) {
            fail(&format!("PRAGMA {p}: {e}"));
        }
    }
    if preload > 0 {
        eprintln!("{tag} storing {preload} made-up states...");
        let t = Instant::now();
        rig.preload(preload);
        eprintln!("{tag}   done in {:.1} s", t.elapsed().as_secs_f64());
    }
    let account = key(30);
    let cards: Vec<CardSecret> = (0..links).map(|k| card(31 + k as u8)).collect();
    rig.open_enrolled_account("bench", &account, Amount::new(NOTE_VALUE * notes as u64));
    for c in &cards {
        rig.license(c);
    }
    eprintln!("{tag} withdrawing {notes} notes...");
    let step = (notes / 5).max(1);
    let mut next = step;
    let withdrawn = rig.withdraw(&account, &cards[0].keys(), notes, |n| {
        if n >= next || n == notes {
            eprintln!("{tag}   {n} withdrawn");
            next = n + step;
        }
    });
    eprintln!(
        "{tag} signing {} payment links on 2 threads...",
        notes * links
    );
    let issuer_key = rig.issuer.public_key();
    let challenge = Deposit::challenge_for(&account.public());
    let done = AtomicUsize::new(0);
    let paid: Vec<Note> = std::thread::scope(|s| {
        let workers: Vec<_> = withdrawn
            .chunks(notes.div_ceil(2))
            .map(|chunk| {
                let (cards, done, tag) = (&cards, &done, &tag);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|n| {
                            let p = pay_through(n, cards, issuer_key, challenge);
                            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                            if d % step == 0 {
                                eprintln!("{tag}   {d} notes paid");
                            }
                            p
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    drop(withdrawn);
    let mut expected: HashMap<Digest, Expected> = HashMap::new();
    let mails: Vec<Vec<u8>> = paid
        .chunks(args.batch_notes)
        .map(|chunk| {
            let d = rig.deposit(&account, chunk.to_vec());
            let value = chunk.iter().map(|n| n.held().minor_units()).sum();
            expected.insert(
                d.id(),
                Expected {
                    notes: chunk.len(),
                    value,
                    seen: false,
                },
            );
            rig.mail(d.into_envelope())
        })
        .collect();
    drop(paid);
    let states_before: i64 = rig
        .conn
        .query_row("SELECT COUNT(*) FROM states", [], |r| r.get(0))
        .unwrap();
    let outbox_before: i64 = rig
        .conn
        .query_row("SELECT COALESCE(MAX(id), 0) FROM mail_outbox", [], |r| {
            r.get(0)
        })
        .unwrap();
    eprintln!(
        "{tag} setup took {:.1} s; clearing {} deposits...",
        setup.elapsed().as_secs_f64(),
        mails.len()
    );

    let mut per_deposit = Vec::with_capacity(mails.len());
    let cpu_before = thread_cpu();
    let io_before = thread_io();
    let start = Instant::now();
    for raw in &mails {
        let t = Instant::now();
        let d = rig.handle(raw);
        per_deposit.push(t.elapsed());
        if let Disposition::Rejected { reason } = d {
            fail(&format!("{tag} a deposit was rejected: {reason}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu_before, thread_cpu()) {
        (Some((u0, s0)), Some((u1, s1))) => Some((u1 - u0, s1 - s0)),
        _ => None,
    };
    let io = match (io_before, thread_io()) {
        (Some((r0, w0)), Some((r1, w1))) => Some((r1 - r0, w1 - w0)),
        _ => None,
    };
    eprintln!("{tag}   cleared in {secs:.1} s; checking the receipts...");

    check_receipts(&rig, outbox_before, &mut expected, &tag);
    per_deposit.sort();
    Run {
        links,
        notes,
        preload,
        states_before: states_before as u64,
        deposits: mails.len(),
        secs,
        per_deposit,
        cpu,
        io,
    }
}

/// Bytes this thread read and wrote through system calls so far, from
/// `/proc/thread-self/io` (Linux).
fn thread_io() -> Option<(u64, u64)> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    let field = |name: &str| {
        io.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
    };
    Some((field("rchar")?, field("wchar")?))
}

/// This thread's CPU time so far, (user, kernel) in seconds, from
/// `/proc/thread-self/stat` (Linux; clock ticks of 1/100 s).
fn thread_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start
    // with field 3; utime and stime are fields 14 and 15.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? as f64 / 100.0, ticks(12)? as f64 / 100.0))
}

/// Every deposit has one receipt, signed by the issuer, crediting every
/// note; or the benchmark fails.
fn check_receipts(
    rig: &Rig,
    outbox_before: i64,
    expected: &mut HashMap<Digest, Expected>,
    tag: &str,
) {
    let issuer_key = rig.issuer.public_key();
    let mut stmt = rig
        .conn
        .prepare("SELECT raw FROM mail_outbox WHERE id > ?1 ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([outbox_before], |r| r.get::<_, Vec<u8>>(0))
        .unwrap();
    for raw in rows {
        let raw = raw.unwrap();
        let mail = parse_mail(&raw).unwrap_or_else(|e| fail(&format!("{tag} a reply: {e}")));
        for env in mail.envelopes {
            if env.kind() == ErrorReply::KIND {
                let e = Signed::<ErrorReply>::from_envelope(env).unwrap();
                fail(&format!(
                    "{tag} a deposit was refused: {}",
                    e.unverified().reason
                ));
            }
            let r = Signed::<DepositReceipt>::from_envelope(env)
                .unwrap_or_else(|e| fail(&format!("{tag} a reply is no receipt: {e}")));
            let r = r
                .verify_signer(&issuer_key)
                .unwrap_or_else(|e| fail(&format!("{tag} a receipt: {e}")));
            let Some(exp) = expected.get_mut(&r.request) else {
                fail(&format!("{tag} a receipt for no deposit sent"));
            };
            if exp.seen {
                fail(&format!("{tag} two receipts for one deposit"));
            }
            exp.seen = true;
            if let Some(bad) = r
                .results
                .iter()
                .find(|x| x.result != DepositOutcome::Credited)
            {
                fail(&format!("{tag} a note was not credited: {:?}", bad.result));
            }
            if r.results.len() != exp.notes || r.credited != Amount::new(exp.value) {
                fail(&format!(
                    "{tag} a receipt credits {} for {} notes, expected {} for {}",
                    r.credited.minor_units(),
                    r.results.len(),
                    exp.value,
                    exp.notes
                ));
            }
        }
    }
    let missing = expected.values().filter(|e| !e.seen).count();
    if missing > 0 {
        fail(&format!("{tag} {missing} deposits got no receipt"));
    }
}

// ---------------------------------------------------------------- report

/// `1234567.8` as `1,234,568`.
fn grouped(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("preparing {RAW_TRIPLES} signed messages...");
    let msg_len = link_signing_len();
    let triples = raw_triples(RAW_TRIPLES, msg_len);
    eprintln!("measuring raw verification...");
    verify_rate(&triples, args.verify_time() / 4); // warm-up
    let single = verify_rate(&triples, args.verify_time());
    let batched = batch_rate(&triples, args.verify_time());

    let mut runs: Vec<Run> = Vec::new();
    for &l in &args.links {
        runs.push(clear(l, args.notes_for(l), 0, &args));
    }
    let scale = (args.preload > 0).then(|| {
        let empty = match runs.iter().position(|r| r.links == 1) {
            Some(i) => i,
            None => {
                runs.push(clear(1, args.notes_for(1), 0, &args));
                runs.len() - 1
            }
        };
        runs.push(clear(1, args.notes_for(1), args.preload, &args));
        (empty, runs.len() - 1)
    });
    eprintln!("measuring raw verification again...");
    let single_end = verify_rate(&triples, args.verify_time());
    let raw = single.max(single_end);
    let settings = if args.pragmas.is_empty() {
        "the daemon's settings: WAL, synchronous=FULL"
    } else {
        "settings changed as above"
    };

    println!();
    println!("## Clearing (issuer): {}, {cores} cores", cpu_model());
    if !args.pragmas.is_empty() {
        println!();
        println!(
            "Experiment: PRAGMA {} on the issuer's connection (not the daemon's settings).",
            args.pragmas.join("; PRAGMA ")
        );
    }
    println!();
    println!("Raw ed25519 verification, mailer::crypto, one core ({RAW_TRIPLES} distinct keys, {msg_len}-byte messages):");
    println!();
    println!("| measure                              | per second | µs each |");
    println!("|--------------------------------------|-----------:|--------:|");
    for (what, rate) in [
        ("single verify (start of run)", single),
        ("single verify (end of run)", single_end),
        ("batch of 256, per signature", batched),
    ] {
        println!(
            "| {what:<36} | {:>10} | {:>7.1} |",
            grouped(rate),
            1e6 / rate
        );
    }
    println!();
    println!(
        "Clearing through issuer::handle_mail, deposits of {} notes, one commit each \
         ({settings}); the deposit's signatures are verified in one batch. \
         ratio = notes/s x sigs/note / {} single verifies/s (the faster measure above; \
         1.0 = as fast as verifying the signatures one by one, {:.2} = as fast as \
         verifying them in batches of {BATCH}); vs batch = notes/s x sigs/note / {} \
         batch verifies/s (1.0 = as fast as batch verification alone):",
        args.batch_notes,
        grouped(raw),
        batched / raw,
        grouped(batched),
    );
    println!();
    println!("| links L | notes   | states before | deposits | seconds | notes/s | sigs/note | sigs/s  | ms/deposit p50 | p99   | ratio | vs batch |");
    println!("|--------:|--------:|--------------:|---------:|--------:|--------:|----------:|--------:|---------------:|------:|------:|---------:|");
    for r in &runs {
        let sigs = r.notes_per_sec() * r.sigs_per_note() as f64;
        println!(
            "| {:>7} | {:>7} | {:>13} | {:>8} | {:>7.1} | {:>7} | {:>9} | {:>7} | {:>14.1} | {:>5.1} | {:>5.2} | {:>8.2} |",
            r.links,
            grouped(r.notes as f64),
            grouped(r.states_before as f64),
            r.deposits,
            r.secs,
            grouped(r.notes_per_sec()),
            r.sigs_per_note(),
            grouped(sigs),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            sigs / raw,
            sigs / batched,
        );
    }
    let worst = runs
        .iter()
        .filter(|r| r.preload == 0)
        .map(|r| r.notes_per_sec() * r.sigs_per_note() as f64 / raw)
        .fold(f64::INFINITY, f64::min);
    if worst.is_finite() {
        println!();
        for goal in [0.8, 1.5] {
            println!(
                "lowest ratio without preload: {worst:.2} (goal: at least {goal}): {}",
                if worst >= goal { "met" } else { "NOT met" }
            );
        }
    }
    println!();
    println!(
        "Where the clearing thread's wall time went (kernel: WAL appends, checkpoints, page \
         reads; waiting: fsync), and its I/O through system calls:"
    );
    println!();
    println!("| links L | states before | wall s | user s | kernel s | waiting s | KB read/deposit | KB written/deposit |");
    println!("|--------:|--------------:|-------:|-------:|---------:|----------:|----------------:|-------------------:|");
    for r in &runs {
        let cpu = r.cpu.map_or_else(
            || "n/a | n/a | n/a".to_string(),
            |(user, sys)| {
                format!(
                    "{user:>6.1} | {sys:>8.1} | {:>9.1}",
                    (r.secs - user - sys).max(0.0)
                )
            },
        );
        let io = r.io.map_or_else(
            || "n/a | n/a".to_string(),
            |(read, written)| {
                let per = |b: u64| b as f64 / 1024.0 / r.deposits as f64;
                format!("{:>15.0} | {:>18.0}", per(read), per(written))
            },
        );
        println!(
            "| {:>7} | {:>13} | {:>6.1} | {cpu} | {io} |",
            r.links,
            grouped(r.states_before as f64),
            r.secs,
        );
    }
    if let Some((empty, full)) = scale {
        let (e, f) = (&runs[empty], &runs[full]);
        let slowdown = e.notes_per_sec() / f.notes_per_sec();
        println!();
        println!("Clearing with states already stored (L = 1):");
        println!();
        println!("| made-up states preloaded | states before | notes/s | time vs empty |");
        println!("|-------------------------:|--------------:|--------:|--------------:|");
        for r in [e, f] {
            println!(
                "| {:>24} | {:>13} | {:>7} | {:>12.2}x |",
                grouped(r.preload as f64),
                grouped(r.states_before as f64),
                grouped(r.notes_per_sec()),
                e.notes_per_sec() / r.notes_per_sec(),
            );
        }
        println!();
        println!(
            "preloaded / empty: {slowdown:.2}x the time per note (goal: within 1.5x): {}",
            if slowdown <= 1.5 { "met" } else { "NOT met" }
        );
    }
}
