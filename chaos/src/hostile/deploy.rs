//! The deployment the corpus is sent to: the demo's cast (two issuer
//! daemons, the agent daemon with a float, honest wallets that withdrew,
//! paid, deposited and exchanged), and what an attacker can take from it:
//! old requests really sent, and the keys of wallets it controls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use demo::bins::Bins;
use demo::cast::{wait_until, Party, Stage};
use demo::story::{self, Agent, Float, Issuer, Say};
use mailer::crypto::PublicKey;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use testmail::harness::{Account, ServerKind};

/// How long one setup step may wait for mail.
const STEP_SECS: u64 = 90;

/// The whole cast, running.
#[derive(Debug)]
pub struct Deployment {
    pub stage: Stage,
    pub jpy: Issuer,
    pub usd: Issuer,
    pub agent: Agent,
    pub alice: Party,
    pub bob: Party,
    pub mallory: Party,
    /// The stranger's own mailbox: every reply to the corpus lands here.
    pub attacker: Account,
}

/// A small float: enough for the one exchange the setup makes.
const FLOAT: Float = Float {
    jpy_paid_in: 1_000_000,
    usd_paid_in: 10_000,
    jpy_float: 100_000,
    usd_float: 1_000,
};

impl Deployment {
    /// Starts the mail server of `kind` and the cast in `dir`, with the
    /// programs in `bins`, and lets the honest parties do real business
    /// (see the module docs). Narration goes to stderr.
    pub fn start(bins: Bins, dir: PathBuf, kind: ServerKind) -> Result<Deployment> {
        let say = Say::new(true);
        let stage = Stage::new(bins, dir, kind)?;
        let mut jpy = story::issuer(&stage, &say, "JPY")?;
        let mut usd = story::issuer(&stage, &say, "USD")?;
        let mut agent = story::agent(
            &stage,
            &say,
            &jpy,
            &usd,
            &FLOAT,
            &["--poll-ms", "100", "--tick-ms", "500"],
        )?;
        let alice = story::wallet(&stage, "alice", &[(&jpy, 20_000), (&usd, 0)])?;
        let bob = story::wallet(&stage, "bob", &[(&jpy, 0)])?;
        let mallory = story::wallet(&stage, "mallory", &[(&jpy, 1_000)])?;
        story::settle(
            &stage,
            &[&alice, &bob, &mallory],
            &mut [&mut jpy.daemon, &mut usd.daemon],
            "the wallets' enrollments and licenses",
        )?;
        alice.run(&stage, &["withdraw", "11000", "JPY"])?;
        mallory.run(&stage, &["withdraw", "1000", "JPY"])?;
        story::settle(
            &stage,
            &[&alice, &mallory],
            &mut [&mut jpy.daemon],
            "the withdrawals",
        )?;
        alice.run(&stage, &["send", "700", "JPY", "--to", bob.address()])?;
        story::settle(&stage, &[&alice, &bob], &mut [], "alice's payment to bob")?;
        bob.run(&stage, &["deposit", "700", "JPY"])?;
        story::settle(&stage, &[&bob], &mut [&mut jpy.daemon], "bob's deposit")?;
        exchange(&stage, &alice, &mut agent)?;
        // mallory's card is revoked by the issuer's operator (as for a
        // card reported stolen): her keys stay in her wallet.
        let key = card_key(&stage, &mallory, "JPY")?;
        jpy.party
            .run(&stage, &["revoke", &key, "--note", "reported stolen"])?;
        let attacker = stage
            .rt
            .block_on(stage.server.account("stranger"))
            .context("cannot get a mailbox for the stranger")?;
        for d in [&mut jpy.daemon, &mut usd.daemon, &mut agent.daemon] {
            d.check()?;
        }
        Ok(Deployment {
            stage,
            jpy,
            usd,
            agent,
            alice,
            bob,
            mallory,
            attacker,
        })
    }

    pub fn wallets(&self) -> [&Party; 3] {
        [&self.alice, &self.bob, &self.mallory]
    }

    /// The conservation checker over every home and every party's
    /// unread mail (the stranger's mailbox holds only error replies).
    pub fn conservation(&self) -> Result<crate::conservation::Report> {
        let mut parties = vec![&self.jpy.party, &self.usd.party, &self.agent.party];
        parties.extend(self.wallets());
        crate::conservation::check_cast(&self.stage, &parties)
    }

    /// Every daemon still running (an error naming the one that stopped,
    /// with the end of its log).
    pub fn check_daemons(&mut self) -> Result<()> {
        self.jpy.daemon.check()?;
        self.usd.daemon.check()?;
        self.agent.daemon.check()
    }

    pub fn issuer_db(&self, i: &Issuer) -> PathBuf {
        i.party.home.join(issuer::home::DB_FILE)
    }

    pub fn agent_db(&self) -> PathBuf {
        self.agent.party.home.join("agent.db")
    }

    pub fn wallet_db(&self, w: &Party) -> PathBuf {
        w.home.join("wallet.db")
    }

    /// Every party's money, and both audits.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut values = BTreeMap::new();
        let mut audits = Vec::new();
        for i in [&self.jpy, &self.usd] {
            let conn = read_only(&self.issuer_db(i))?;
            let mut stmt = conn.prepare("SELECT name, balance FROM accounts ORDER BY name")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for r in rows {
                let (name, balance) = r?;
                values.insert(
                    format!("{} account {name}", i.party.role),
                    u64::try_from(balance).unwrap_or(0),
                );
            }
            let (code, out, err) = i.party.run_status(&self.stage, &["audit", "--json"])?;
            let report: Value = serde_json::from_str(&out)
                .with_context(|| format!("the {} audit printed no JSON: {err}", i.currency))?;
            let ok = code == Some(0) && report["ok"] == true;
            audits.push((i.currency.to_string(), ok, report["problems"].to_string()));
        }
        let status = self.agent.status(&self.stage)?;
        for f in status["floats"].as_array().into_iter().flatten() {
            values.insert(
                format!("fx float {}", f["currency"].as_str().unwrap_or("?")),
                f["held_minor"].as_u64().unwrap_or(0),
            );
        }
        for w in self.wallets() {
            let b = w.json(&self.stage, &["balance"])?;
            for row in b.as_array().into_iter().flatten() {
                let c = row["currency"].as_str().unwrap_or("?");
                for field in ["spendable_minor", "incoming_minor", "outgoing_minor"] {
                    values.insert(
                        format!("{} {c} {field}", w.role),
                        row[field].as_u64().unwrap_or(0),
                    );
                }
            }
        }
        Ok(Snapshot { values, audits })
    }
}

/// Every party's money at one moment (minor units by name) and the
/// issuers' audits (currency, ok, problems).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub values: BTreeMap<String, u64>,
    pub audits: Vec<(String, bool, String)>,
}

impl Snapshot {
    /// The sum of absolute differences from `before`, over every entry
    /// either has.
    pub fn changed_since(&self, before: &Snapshot) -> u64 {
        let keys: std::collections::BTreeSet<&String> =
            self.values.keys().chain(before.values.keys()).collect();
        keys.into_iter()
            .map(|k| {
                let a = before.values.get(k).copied().unwrap_or(0);
                let b = self.values.get(k).copied().unwrap_or(0);
                a.abs_diff(b)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// What differs from `before`, for people.
    pub fn diff(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (k, b) in &self.values {
            let a = before.values.get(k).copied().unwrap_or(0);
            if a != *b {
                out.push(format!("{k}: {a} -> {b}"));
            }
        }
        for (k, a) in &before.values {
            if !self.values.contains_key(k) {
                out.push(format!("{k}: {a} -> gone"));
            }
        }
        out
    }

    pub fn audits_ok(&self) -> bool {
        self.audits.iter().all(|(_, ok, _)| *ok)
    }
}

/// A database of a running program, opened for reading only.
pub fn read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} to read it", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// The payment key of `w`'s card of `currency`.
pub fn card_key(stage: &Stage, w: &Party, currency: &str) -> Result<String> {
    w.json(stage, &["card", "list"])?
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["currency"] == currency)
        .and_then(|c| c["payment_key"].as_str().map(str::to_string))
        .with_context(|| format!("{}'s wallet shows no {currency} card", w.role))
}

/// A public key printed in hex by a program.
pub fn key_of(hex: &str) -> Result<PublicKey> {
    PublicKey::from_hex(hex.trim()).with_context(|| format!("{hex:?} is not a public key"))
}

/// alice exchanges 10,000 JPY for USD and accepts the offer: the three
/// phases, so that the agent holds real old requests.
fn exchange(stage: &Stage, alice: &Party, agent: &mut Agent) -> Result<()> {
    alice.run(
        stage,
        &["agent", "add", agent.party.address(), "--key", &agent.key],
    )?;
    alice.run(
        stage,
        &[
            "exchange",
            "10000",
            "JPY",
            "--to",
            "USD",
            "--agent",
            agent.party.address(),
            "--no-wait",
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(STEP_SECS);
    let mut accepted = false;
    loop {
        alice.poll(stage, &["sync"])?;
        agent.daemon.check()?;
        let x = alice
            .json(stage, &["exchange", "status"])?
            .as_array()
            .and_then(|a| a.last().cloned())
            .context("alice's wallet shows no exchange")?;
        if x["done"] == true {
            ensure!(x["state"] == "done", "alice's exchange ended as {x}");
            return Ok(());
        }
        if x["state"] == "offered" && !accepted {
            let tr = x["tr_id"].as_str().context("no tr_id")?.to_string();
            alice.run(stage, &["exchange", "accept", &tr])?;
            accepted = true;
            continue;
        }
        if Instant::now() >= deadline {
            bail!("timed out after {STEP_SECS} s in alice's exchange: {x}");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Waits until `f` holds, for at most `secs` (the demo's `wait_until`).
pub fn wait(what: &str, secs: u64, f: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_until(what, secs, f)
}
