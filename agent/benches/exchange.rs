//! The agent's cost per exchange (docs/performance.md, "Agent cost per
//! exchange"). Prints figures, asserts none about time.
//!
//! ```text
//! cargo bench -p agent --bench exchange -- [--exchanges N] [--users U] [--raw-secs S]
//! ```
//!
//! The agent's real handler over its real database (an `agent.db` made by
//! `Home::create`: WAL, `synchronous = FULL`), with the mail server taken
//! out of the loop: each request is a mail built as a wallet builds it and
//! handed to `handle_mail` as the daemon's watcher does (the mail's key,
//! an IMMEDIATE transaction, the inbox record, one commit); each reply is
//! read back from the outbox. One exchange is three mails in and three
//! replies out: quote request -> offer, acceptance -> signed offer, first
//! payment with the second-payment request -> second payment. Users cycle
//! over `--users` distinct card pairs; every second payment is verified
//! as the user's wallet would (or the benchmark fails, exit 1).
//!
//! Measured on the handling thread: wall time and CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) inside the three handlings, per kind; the
//! raw ed25519 verification rate on one core in the same run, to express
//! the agent's CPU per exchange in verifications; resident memory
//! (VmRSS) and the agent's CPU per exchange over each tenth of the run,
//! and the database size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmark

#[path = "../tests/support/world.rs"]
mod world;

use std::hint::black_box;
use std::process::exit;
use std::time::{Duration, Instant};

use agent::{handle_mail, Agent};
use mailer::crypto::{Challenge, Id, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::imap::Disposition;
use mailer::inbox::{self, Seen};
use mailer::license::{CardSecret, License};
use mailer::messages::{
    FirstPayment, Offer, OfferAcceptance, QuoteAmount, QuoteRequest, SecondPayment,
    SecondPaymentRequest, SignedOffer,
};
use mailer::money::{Amount, Currency};
use mailer::testkit::{pay, verify_paid, TestIssuer, NOW};
use rusqlite::{Connection, TransactionBehavior};

const USAGE: &str =
    "usage: cargo bench -p agent --bench exchange -- [--exchanges N] [--users U] [--raw-secs S]";
/// What each exchange pays and receives: 10,000 JPY for 66.66 USD at
/// 0.0067 USD per JPY less 0.5%.
const A1: u64 = 10_000;
const A2: u64 = 6_666;

struct Args {
    exchanges: usize,
    users: usize,
    raw_secs: f64,
}

fn args() -> Args {
    let mut a = Args {
        exchanges: 2_000,
        users: 100,
        raw_secs: 1.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("{USAGE}");
                    exit(2)
                })
        };
        match flag.as_str() {
            "--exchanges" => a.exchanges = num().max(1),
            "--users" => a.users = num().max(1),
            // Seconds of each raw measurement (0 for a profile of the
            // exchanges alone).
            "--raw-secs" => {
                a.raw_secs = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                    eprintln!("{USAGE}");
                    exit(2)
                })
            }
            // cargo bench passes --bench to harness=false benches.
            "--bench" => {}
            _ => {
                eprintln!("{USAGE}");
                exit(2)
            }
        }
    }
    a
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A line of /proc/self/status, in KiB (Linux).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Raw single ed25519 verifications per second on this thread, over
/// distinct keys and 170-byte messages (a link's signing input), for
/// about `secs` seconds.
fn raw_verifies_per_sec(secs: f64) -> f64 {
    let triples: Vec<_> = (0..2_000u32)
        .map(|i| {
            let k = SecretKey::generate();
            let mut msg = vec![0u8; 170];
            msg[..4].copy_from_slice(&i.to_le_bytes());
            let sig = k.sign(&msg);
            (k.public(), msg, sig)
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for (k, m, s) in &triples {
            black_box(k.verify(m, s)).unwrap();
            n += 1;
        }
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    n.max(1) as f64 / start.elapsed().as_secs_f64()
}

/// The handling thread's cost of one kind of request.
#[derive(Default, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// A user: a JPY card that pays (licensed), a USD card that receives.
struct User {
    address: String,
    uj: CardSecret,
    uu: CardSecret,
    uj_license: Signed<License>,
}

struct World {
    _dir: tempfile::TempDir,
    agent: Agent,
    conn: Connection,
    jpy: TestIssuer,
    usd: TestIssuer,
    seen: i64,
    n: u64,
    /// Quote, acceptance, first payment + request.
    costs: [Cost; 3],
}

impl World {
    fn new(float_notes: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        let mut usd = TestIssuer::new(2, Currency::USD);
        let (agent, mut conn) = world::licensed_agent(dir.path(), &mut jpy, &mut usd);
        // The USD float: one note per exchange, of exactly A2, so that every
        // second payment is one link on a fresh note.
        world::float(&mut conn, &mut usd, &vec![A2; float_notes]);
        let mut w = World {
            _dir: dir,
            agent,
            conn,
            jpy,
            usd,
            seen: 0,
            // The license mails were 1 and 2.
            n: 2,
            costs: [Cost::default(); 3],
        };
        w.outbox();
        w
    }

    /// Handles one mail as the daemon's watcher does, timing it into
    /// `costs[kind]`.
    fn handle(&mut self, from: &str, envelopes: Vec<Envelope>, kind: usize) {
        self.n += 1;
        let raw = world::incoming(from, self.n, envelopes, NOW);
        let (wall0, cpu0) = (Instant::now(), thread_cpu());
        let key = inbox::mail_key(&raw);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        assert!(inbox::seen(&tx, &key).unwrap().is_none());
        let d = handle_mail(&tx, &self.agent, &raw, NOW, false).unwrap();
        let seen = match &d {
            Disposition::Processed => Seen::Processed,
            Disposition::Rejected { reason } => {
                eprintln!("the agent rejected a mail: {reason}");
                exit(1)
            }
        };
        inbox::record(&tx, &key, &seen, NOW).unwrap();
        tx.commit().unwrap();
        self.costs[kind].wall += wall0.elapsed();
        self.costs[kind].cpu += thread_cpu() - cpu0;
    }

    /// The one envelope queued since the last call, of kind `T`.
    fn reply<T: Body>(&mut self) -> Signed<T> {
        let mut out = self.outbox();
        if out.len() != 1 || out[0].kind() != T::KIND {
            eprintln!(
                "expected one {}, the agent queued {:?}",
                T::KIND,
                out.iter().map(|e| e.kind().to_string()).collect::<Vec<_>>()
            );
            exit(1)
        }
        let s = Signed::<T>::from_envelope(out.remove(0)).unwrap();
        s.verify_signer(&self.agent.public_key()).unwrap();
        s
    }

    fn outbox(&mut self) -> Vec<Envelope> {
        world::queued_envelopes(&self.conn, &mut self.seen)
    }

    /// One whole exchange for the user with cards `uj` (pays JPY) and `uu`
    /// (receives USD), who holds a JPY note of `A1`.
    fn exchange(&mut self, user: &User) {
        let User {
            address: user,
            uj,
            uu,
            uj_license,
        } = user;
        let note = self.jpy.issue(A1, &uj.keys());
        let q = Signed::sign(
            QuoteRequest {
                request_id: Id::random(),
                from: Currency::JPY,
                to: Currency::USD,
                amount: QuoteAmount::Pay(Amount::new(A1)),
            },
            &uj.auth,
        )
        .unwrap();
        self.handle(user, vec![q.into_envelope()], 0);
        let offer = self.reply::<Offer>();
        let a = Signed::sign(
            OfferAcceptance {
                tr_id: offer.unverified().terms.tr_id,
                offer: offer.id(),
                receiver: uu.keys(),
            },
            &uu.auth,
        )
        .unwrap();
        self.handle(user, vec![a.into_envelope()], 1);
        let so = self.reply::<SignedOffer>();
        let t = so.unverified().terms.clone();
        if (t.a1.minor_units(), t.a2.minor_units()) != (A1, A2) {
            eprintln!("unexpected terms: {:?} for {:?}", t.a1, t.a2);
            exit(1)
        }
        let paid = pay(&note, uj, &t.pay_to, A1, t.challenge);
        let fp = Signed::sign(
            FirstPayment {
                tr_id: t.tr_id,
                signed_offer: so.id(),
                notes: vec![paid],
                licenses: vec![uj_license.clone()],
                refund_to: uj.keys().payment,
                refund_challenge: Challenge::random(),
            },
            &uj.auth,
        )
        .unwrap();
        let cu = Challenge::random();
        let req = Signed::sign(
            SecondPaymentRequest {
                tr_id: t.tr_id,
                signed_offer: so.id(),
                challenge: cu,
            },
            &uu.auth,
        )
        .unwrap();
        self.handle(user, vec![fp.into_envelope(), req.into_envelope()], 2);
        let sp = self.reply::<SecondPayment>();
        let got: u64 = sp
            .unverified()
            .notes
            .iter()
            .map(|n| {
                verify_paid(&self.usd, n, &uu.keys(), cu)
                    .unwrap_or_else(|e| {
                        eprintln!("a second payment does not verify: {e}");
                        exit(1)
                    })
                    .current()
                    .value
                    .minor_units()
            })
            .sum();
        if got != A2 {
            eprintln!("a second payment carried {got}, not {A2}");
            exit(1)
        }
    }
}

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let a = args();
    eprintln!("raw ed25519 verification, one core...");
    let raw_before = raw_verifies_per_sec(a.raw_secs);
    eprintln!(
        "setting up the agent with a float of {} notes...",
        a.exchanges
    );
    let mut w = World::new(a.exchanges);
    let users: Vec<User> = (0..a.users)
        .map(|i| {
            let uj = CardSecret::generate();
            User {
                address: format!("user{i}@example.test"),
                uj_license: w.jpy.license(&uj.keys()),
                uj,
                uu: CardSecret::generate(),
            }
        })
        .collect();
    let rss_start = status_kib("VmRSS:");
    let mut rss = Vec::new();
    let start = Instant::now();
    let tenth = (a.exchanges / 10).max(1);
    // The agent's CPU at the end of each tenth: a cost that grows with the
    // float or the history shows as later tenths costing more.
    let mut cpu_before = Duration::ZERO;
    for i in 0..a.exchanges {
        w.exchange(&users[i % users.len()]);
        if (i + 1) % tenth == 0 {
            let cpu: Duration = w.costs.iter().map(|c| c.cpu).sum();
            rss.push((i + 1, status_kib("VmRSS:"), us(cpu - cpu_before, tenth)));
            cpu_before = cpu;
            eprintln!("{} exchanges", i + 1);
        }
    }
    let wall = start.elapsed();
    let raw_after = raw_verifies_per_sec(a.raw_secs);
    let raw = raw_before.max(raw_after);
    let raw_us = 1e6 / raw;
    let n = a.exchanges;
    let delivered = agent::status::status(&w.conn, &w.agent, NOW)
        .unwrap()
        .finished;
    if delivered.get("delivered").copied() != Some(n as u64) {
        eprintln!("the agent counts {delivered:?} delivered, not {n}");
        exit(1)
    }
    let db_kib = std::fs::metadata(w._dir.path().join("agent/agent.db"))
        .map(|m| m.len() / 1024)
        .unwrap_or(0);

    let total = w.costs.iter().fold(Cost::default(), |t, c| Cost {
        wall: t.wall + c.wall,
        cpu: t.cpu + c.cpu,
    });
    println!(
        "Raw ed25519 verification, one core: {raw:.0}/s ({raw_us:.1} µs each; {raw_before:.0}/s at the start, {raw_after:.0}/s at the end)\n"
    );
    println!(
        "Agent cost per exchange: {n} exchanges, {} users, agent.db with WAL and synchronous=FULL; 3 mails handled and 3 replies queued per exchange:\n",
        a.users
    );
    println!("| handling                         | wall µs/exchange | CPU µs/exchange | CPU in verifications |");
    println!("|----------------------------------|-----------------:|----------------:|---------------------:|");
    for (name, c) in [
        ("quote request -> offer", w.costs[0]),
        ("acceptance -> signed offer", w.costs[1]),
        ("1st payment + request -> 2nd", w.costs[2]),
        ("whole exchange", total),
    ] {
        println!(
            "| {name:<32} | {:>16.0} | {:>15.0} | {:>20.1} |",
            us(c.wall, n),
            us(c.cpu, n),
            us(c.cpu, n) / raw_us
        );
    }
    let per_sec = n as f64 / total.wall.as_secs_f64();
    println!(
        "\nThe agent alone: {per_sec:.0} exchanges/s of handling (wall), {:.0} µs of CPU per exchange (goal: under 1,000): {}",
        us(total.cpu, n),
        if us(total.cpu, n) < 1_000.0 { "met" } else { "NOT met" }
    );
    println!(
        "The whole loop, with the users' side in the same thread: {:.1} s, {:.0} exchanges/s\n",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    println!("Resident memory of the process (the agent and the simulated users), and the agent's CPU per exchange over the last tenth, as exchanges accumulate:\n");
    println!("| exchanges done | VmRSS MiB | CPU µs/exchange |");
    println!("|---------------:|----------:|----------------:|");
    println!(
        "| {:>14} | {:>9.1} | {:>15} |",
        0,
        rss_start as f64 / 1024.0,
        ""
    );
    for (i, kib, cpu) in &rss {
        println!("| {i:>14} | {:>9.1} | {cpu:>15.0} |", *kib as f64 / 1024.0);
    }
    println!(
        "\nPeak (VmHWM): {:.1} MiB; agent.db: {:.1} MiB ({:.1} KiB per exchange)",
        status_kib("VmHWM:") as f64 / 1024.0,
        db_kib as f64 / 1024.0,
        db_kib as f64 / n as f64
    );
}
