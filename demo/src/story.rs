//! The story the demo tells, step by step: each step runs the programs as
//! a user would, checks what they report, and says what happened.

use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};
use testmail::harness::ServerKind;

use crate::cast::{wait_until, Daemon, Party, Program, Stage};

/// JPY has no minor unit; USD has cents.
const CURRENCIES: [(&str, u32); 2] = [("JPY", 0), ("USD", 2)];
/// The agent's price, JPY -> USD (and back at the inverse).
const MID: &str = "0.0067";
const SPREAD: &str = "0.5%";
/// Narration is wrapped to this many columns (after a 3-space indent).
const WIDTH: usize = 76;
/// How long one step may wait for mail before the demo gives up.
const STEP_SECS: u64 = 90;

/// The narrator: plain language on stdout (stderr under `--json`).
#[derive(Debug)]
pub struct Say {
    to_stderr: bool,
    started: Cell<Instant>,
    step: Cell<u32>,
}

impl Say {
    pub fn new(to_stderr: bool) -> Say {
        Say {
            to_stderr,
            started: Cell::new(Instant::now()),
            step: Cell::new(0),
        }
    }

    /// Times the demo from now (not from before building the programs).
    pub fn start_clock(&self) {
        self.started.set(Instant::now());
    }

    fn out(&self, text: &str) {
        // A closed stdout must not stop the demo half-way.
        if self.to_stderr {
            let _ = writeln!(std::io::stderr(), "{text}");
        } else {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    pub fn step(&self, title: &str) {
        let n = self.step.get() + 1;
        self.step.set(n);
        self.out(&format!(
            "\n{n}. {title}   [{:.1} s]",
            self.elapsed().as_secs_f64()
        ));
    }

    /// A paragraph, wrapped to the width of a terminal.
    pub fn line(&self, text: &str) {
        let mut l = String::new();
        for word in text.split_whitespace() {
            if !l.is_empty() && l.len() + 1 + word.chars().count() > WIDTH {
                self.out(&format!("   {l}"));
                l.clear();
            }
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(word);
        }
        if !l.is_empty() {
            self.out(&format!("   {l}"));
        }
    }

    pub fn plain(&self, text: &str) {
        self.out(text);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.get().elapsed()
    }
}

/// `minor` units of `currency`, for people: "10,000 JPY", "66.66 USD".
pub fn money(minor: u64, currency: &str) -> String {
    let decimals = CURRENCIES
        .iter()
        .find(|(c, _)| *c == currency)
        .map_or(0, |(_, d)| *d);
    let unit = 10u64.pow(decimals);
    let whole = (minor / unit).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    if decimals > 0 {
        format!(
            "{grouped}.{:0width$} {currency}",
            minor % unit,
            width = decimals as usize
        )
    } else {
        format!("{grouped} {currency}")
    }
}

fn short(key: &str) -> String {
    if key.len() > 16 {
        format!("{}…{}", &key[..8], &key[key.len() - 6..])
    } else {
        key.to_string()
    }
}

fn str_of<'a>(v: &'a Value, field: &str) -> Result<&'a str> {
    v[field]
        .as_str()
        .with_context(|| format!("no {field:?} in {v}"))
}

fn u64_of(v: &Value, field: &str) -> Result<u64> {
    v[field]
        .as_u64()
        .with_context(|| format!("no {field:?} in {v}"))
}

#[derive(Debug)]
pub struct Issuer {
    pub party: Party,
    pub currency: &'static str,
    pub key: String,
    pub daemon: Daemon,
}

impl Issuer {
    /// Opens an account for `name`, credits `amount` major units if any,
    /// and returns its one-time enrollment code.
    fn open_account(&self, stage: &Stage, name: &str, amount: u64) -> Result<String> {
        let code = self
            .party
            .run(stage, &["account", "open", name])?
            .trim()
            .to_string();
        if amount > 0 {
            self.party
                .run(stage, &["account", "credit", name, &amount.to_string()])?;
        }
        Ok(code)
    }

    fn balance(&self, stage: &Stage, name: &str) -> Result<u64> {
        u64_of(
            &self.party.json(stage, &["account", "show", name])?,
            "balance_minor",
        )
    }
}

/// A wallet's spendable money in `currency`, in minor units.
pub fn spendable(stage: &Stage, w: &Party, currency: &str) -> Result<u64> {
    let b = w.json(stage, &["balance"])?;
    Ok(b.as_array()
        .into_iter()
        .flatten()
        .find(|x| x["currency"] == currency)
        .and_then(|x| x["spendable_minor"].as_u64())
        .unwrap_or(0))
}

fn pending(stage: &Stage, w: &Party) -> Result<usize> {
    Ok(w.json(stage, &["pending"])?.as_array().map_or(0, Vec::len))
}

/// Every wallet in `wallets` syncs in turn until none has anything
/// pending; the daemons must stay up meanwhile.
pub fn settle(
    stage: &Stage,
    wallets: &[&Party],
    daemons: &mut [&mut Daemon],
    what: &str,
) -> Result<()> {
    let names: Vec<&str> = wallets.iter().map(|w| w.role.as_str()).collect();
    stage.record(&format!(
        "# {}: `wallet sync` in turn until `wallet pending` is empty ({what})",
        names.join(", ")
    ));
    let deadline = Instant::now() + Duration::from_secs(STEP_SECS);
    loop {
        for w in wallets {
            w.poll(stage, &["sync"])?;
        }
        let mut open = 0;
        for w in wallets {
            open += pending(stage, w)?;
        }
        if open == 0 {
            return Ok(());
        }
        for d in daemons.iter_mut() {
            d.check()?;
        }
        if Instant::now() >= deadline {
            let mut detail = String::new();
            for w in wallets {
                detail.push_str(&format!(
                    "\n{}: {}",
                    w.role,
                    w.poll(stage, &["pending"])?.trim_end()
                ));
            }
            bail!(
                "timed out after {STEP_SECS} s waiting for {what} ({} syncing); still pending:{detail}",
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// The last operation of `kind` in a wallet's history.
fn last_op(stage: &Stage, w: &Party, kind: &str) -> Result<Value> {
    w.json(stage, &["history"])?
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|o| o["kind"] == kind)
        .cloned()
        .with_context(|| format!("{}'s history has no {kind}", w.role))
}

pub fn issuer(stage: &Stage, say: &Say, currency: &'static str) -> Result<Issuer> {
    let party = stage.party(
        &format!("issuer-{}", currency.to_lowercase()),
        Program::Issuer,
    )?;
    let mut args: Vec<String> = ["init", "--currency", currency, "--email", party.address()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(stage.mail_flags(&party));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let key = party.run(stage, &a)?.trim().to_string();
    let daemon = party.spawn(stage, &["run", "--poll-ms", "100"])?;
    say.line(&format!(
        "The {currency} issuer ({}) has key {}; its daemon reads that mailbox.",
        party.address(),
        short(&key)
    ));
    Ok(Issuer {
        party,
        currency,
        key,
        daemon,
    })
}

/// `init` of `party` (a wallet or the agent: the same flags) with its
/// mail flags; what it printed.
fn init(stage: &Stage, party: &Party) -> Result<String> {
    let mut args: Vec<String> = vec!["init".into(), "--email".into(), party.address().into()];
    args.extend(stage.mail_flags(party));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    party.run(stage, &a)
}

/// `party` (a wallet or the agent, whose commands are the same) becomes
/// a customer of `issuer`: pins its key, has an account opened with
/// `credit` paid in, binds it with the enrollment code, makes a card.
fn open_account_at(stage: &Stage, party: &Party, issuer: &Issuer, credit: u64) -> Result<()> {
    let c = issuer.currency;
    party.run(
        stage,
        &[
            "issuer",
            "add",
            c,
            "--email",
            issuer.party.address(),
            "--key",
            &issuer.key,
        ],
    )?;
    let code = issuer.open_account(stage, &party.role, credit)?;
    party.run(stage, &["account", "add", c, "--code", &code])?;
    party.run(stage, &["card", "new", c])?;
    Ok(())
}

/// A wallet for `role`, with an account and a licensed card at each of
/// `issuers` (the account credited with the amount beside it).
pub fn wallet(stage: &Stage, role: &str, issuers: &[(&Issuer, u64)]) -> Result<Party> {
    let w = stage.party(role, Program::Wallet)?;
    init(stage, &w)?;
    for (i, credit) in issuers {
        open_account_at(stage, &w, i, *credit)?;
    }
    Ok(w)
}

#[derive(Debug)]
pub struct Agent {
    pub party: Party,
    pub key: String,
    pub daemon: Daemon,
}

impl Agent {
    pub fn status(&self, stage: &Stage) -> Result<Value> {
        self.party.json(stage, &["status"])
    }

    pub fn held(&self, stage: &Stage, currency: &str) -> Result<u64> {
        Ok(self.status(stage)?["floats"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["currency"] == currency)
            .and_then(|f| f["held_minor"].as_u64())
            .unwrap_or(0))
    }
}

/// What the agent is given: paid in at each issuer, and withdrawn as its
/// float, in major units.
#[derive(Debug)]
pub struct Float {
    pub jpy_paid_in: u64,
    pub usd_paid_in: u64,
    pub jpy_float: u64,
    pub usd_float: u64,
}

/// The demo's agent: enough for a few exchanges of a few thousand yen.
const DEMO_FLOAT: Float = Float {
    jpy_paid_in: 1_000_000,
    usd_paid_in: 10_000,
    jpy_float: 100_000,
    usd_float: 1_000,
};

/// The agent `fx`, with accounts at both issuers and `float` on its cards,
/// its daemon run with `run_flags` (after `run`).
pub fn agent(
    stage: &Stage,
    say: &Say,
    jpy: &Issuer,
    usd: &Issuer,
    float: &Float,
    run_flags: &[&str],
) -> Result<Agent> {
    let party = stage.party("fx", Program::Agent)?;
    let key = init(stage, &party)?.trim().to_string();
    for (i, credit) in [(jpy, float.jpy_paid_in), (usd, float.usd_paid_in)] {
        open_account_at(stage, &party, i, credit)?;
    }
    party.run(
        stage,
        &[
            "rates", "set", "JPY", "USD", "--mid", MID, "--spread", SPREAD,
        ],
    )?;
    let mut run = vec!["run"];
    run.extend_from_slice(run_flags);
    let daemon = party.spawn(stage, &run)?;
    let mut agent = Agent { party, key, daemon };
    say.line(&format!(
        "The exchange agent ({}) has key {}. The operator opens accounts for it at both issuers ({} and {} paid in at the counter), makes a card per currency, and sets its price: {MID} USD per JPY, less a {SPREAD} spread.",
        agent.party.address(),
        short(&agent.key),
        money(float.jpy_paid_in, "JPY"),
        money(float.usd_paid_in * 100, "USD").replace(".00", ""),
    ));
    wait_until("the agent's licenses and accounts", STEP_SECS, || {
        agent.daemon.check()?;
        let s = agent.status(stage)?;
        let floats = s["floats"].as_array().cloned().unwrap_or_default();
        Ok(floats.len() == 2
            && floats.iter().all(|f| {
                f["card"] == "active" && f["account"].as_str().is_some_and(|a| a.contains(' '))
            }))
    })?;
    // One withdrawal carries at most 64 notes (6,400 USD, 640,000 JPY).
    for (mut left, currency, most) in [
        (float.jpy_float, "JPY", 500_000),
        (float.usd_float, "USD", 5_000),
    ] {
        while left > 0 {
            let amount = left.min(most);
            agent
                .party
                .run(stage, &["float", "withdraw", &amount.to_string(), currency])?;
            left -= amount;
        }
    }
    wait_until("the agent's float", STEP_SECS, || {
        agent.daemon.check()?;
        Ok(agent.held(stage, "JPY")? == float.jpy_float
            && agent.held(stage, "USD")? == float.usd_float * 100)
    })?;
    say.line(&format!(
        "Its licenses came back by mail; it withdrew a float of {} and {} onto its cards, and its daemon now answers exchange requests.",
        money(float.jpy_float, "JPY"),
        money(float.usd_float * 100, "USD").replace(".00", ""),
    ));
    Ok(agent)
}

/// The demo from the first issuer to the summary. Returns the outcome as
/// JSON (what `--json` prints and the tests check).
pub fn tell(stage: &Stage, say: &Say) -> Result<Value> {
    say.step("Two issuers, one per currency");
    say.line(
        "An issuer signs the notes of its currency, licenses cards, and clears the notes that come back to it. Each runs as a daemon reading its own mailbox.",
    );
    let mut jpy = issuer(stage, say, "JPY")?;
    let mut usd = issuer(stage, say, "USD")?;

    say.step("Accounts and licenses");
    let mut agent = agent(
        stage,
        say,
        &jpy,
        &usd,
        &DEMO_FLOAT,
        &["--poll-ms", "100", "--tick-ms", "500"],
    )?;
    let alice = wallet(stage, "alice", &[(&jpy, 20_000), (&usd, 0)])?;
    let bob = wallet(stage, "bob", &[(&jpy, 0)])?;
    settle(
        stage,
        &[&alice, &bob],
        &mut [&mut jpy.daemon, &mut usd.daemon],
        "the wallets' enrollments and licenses",
    )?;
    say.line(&format!(
        "alice ({}) has accounts at both issuers, with 20,000 JPY paid in; bob ({}) has one at the JPY issuer. Each wallet enrolled with the one-time code the operator gave, and got a license for a card per currency: a pseudonymous key pair the issuer signed, by mail.",
        alice.address(),
        bob.address()
    ));

    say.step("Withdrawals");
    alice.run(stage, &["withdraw", "10000", "JPY"])?;
    alice.run(stage, &["withdraw", "1000", "JPY"])?;
    settle(
        stage,
        &[&alice],
        &mut [&mut jpy.daemon],
        "alice's withdrawals",
    )?;
    let held = spendable(stage, &alice, "JPY")?;
    ensure!(
        held == 11_000,
        "alice holds {} after withdrawing 11,000 JPY",
        money(held, "JPY")
    );
    say.line(&format!(
        "alice withdraws two notes, 10,000 and 1,000 JPY, onto her card: the issuer debits her account ({} left) and mails back notes it signed.",
        money(jpy.balance(stage, "alice")?, "JPY")
    ));

    say.step("alice pays bob 700 JPY by email");
    alice.run(
        stage,
        &[
            "send",
            "700",
            "JPY",
            "--to",
            bob.address(),
            "--memo",
            "lunch",
        ],
    )?;
    settle(stage, &[&alice, &bob], &mut [], "the payment to bob")?;
    let sent = last_op(stage, &alice, "send")?;
    let got = last_op(stage, &bob, "receive")?;
    ensure!(sent["state"] == "done", "alice's payment ended as {sent}");
    ensure!(got["state"] == "done", "bob's side ended as {got}");
    let alice_jpy = spendable(stage, &alice, "JPY")?;
    let bob_jpy = spendable(stage, &bob, "JPY")?;
    ensure!(
        alice_jpy == 10_300 && bob_jpy == 700,
        "after paying 700 JPY alice holds {alice_jpy} and bob {bob_jpy}"
    );
    say.line(
        "Four mails: alice's wallet invites bob's; bob's answers with its card's license and a fresh challenge; alice's pays, signing a link for 700 JPY of her 1,000 JPY note over to bob's card and that challenge (the other 300 JPY of the note stay hers: her change); bob's wallet checks the notes offline and mails a signed receipt.",
    );
    say.line(&format!(
        "alice now holds {}, bob {} (memo \"{}\").",
        money(alice_jpy, "JPY"),
        money(bob_jpy, "JPY"),
        got["memo"].as_str().unwrap_or("")
    ));

    say.step("alice exchanges 10,000 JPY for USD through the agent");
    let exchange = exchange(stage, say, &alice, &mut agent)?;

    say.step("bob deposits what he was paid");
    bob.run(stage, &["deposit", "700", "JPY"])?;
    settle(stage, &[&bob], &mut [&mut jpy.daemon], "bob's deposit")?;
    let dep = last_op(stage, &bob, "deposit")?;
    ensure!(
        dep["state"] == "done" && dep["amount_minor"] == 700,
        "bob's deposit ended as {dep}"
    );
    say.line(&format!(
        "The JPY issuer verifies every signature along each note, records its links so that no value is credited twice, and credits bob's account: {}.",
        money(jpy.balance(stage, "bob")?, "JPY")
    ));

    say.step("mallory spends the same note twice");
    let (mallory, overspend) = double_spend(stage, say, &mut jpy, &alice, &bob)?;

    say.step("The books");
    let mut audits = serde_json::Map::new();
    for i in [&jpy, &usd] {
        let (code, out, err) = i.party.run_status(stage, &["audit", "--json"])?;
        let report: Value = serde_json::from_str(&out)
            .with_context(|| format!("the {} audit printed no JSON: {err}", i.currency))?;
        let ok = code == Some(0) && report["ok"] == true;
        say.line(&format!(
            "{} issuer: issued {}, deposited {}, outstanding {}: {}.",
            i.currency,
            money(str_of(&report, "issued_minor")?.parse()?, i.currency),
            money(str_of(&report, "credited_minor")?.parse()?, i.currency),
            money(str_of(&report, "outstanding_minor")?.parse()?, i.currency),
            if ok { "the books add up" } else { "PROBLEMS" }
        ));
        ensure!(
            ok,
            "the {} audit found problems: {}",
            i.currency,
            report["problems"]
        );
        audits.insert(i.currency.to_string(), json!(ok));
    }
    for d in [&mut jpy.daemon, &mut usd.daemon, &mut agent.daemon] {
        d.check()?;
    }

    let balances = summary(
        stage,
        say,
        &jpy,
        &usd,
        &agent,
        &[
            (&alice, &["JPY", "USD"]),
            (&bob, &["JPY"]),
            (&mallory, &["JPY"]),
        ],
    )?;
    Ok(json!({
        "ok": true,
        "server": match stage.server.kind() {
            ServerKind::Embedded => "embedded",
            ServerKind::Real => "real",
        },
        "seconds": say.elapsed().as_secs_f64(),
        "addresses": {
            "issuer-jpy": jpy.party.address(),
            "issuer-usd": usd.party.address(),
            "agent": agent.party.address(),
            "alice": alice.address(),
            "bob": bob.address(),
            "mallory": mallory.address(),
        },
        "keys": { "issuer-jpy": jpy.key, "issuer-usd": usd.key, "agent": agent.key },
        "exchange": exchange,
        "overspend": overspend,
        "audits": audits,
        "balances": balances,
    }))
}

/// alice's exchange, narrated phase by phase as her wallet sees it.
fn exchange(stage: &Stage, say: &Say, alice: &Party, agent: &mut Agent) -> Result<Value> {
    alice.run(
        stage,
        &["agent", "add", agent.party.address(), "--key", &agent.key],
    )?;
    say.line("alice pins the agent's key, then asks it for an offer: 10,000 JPY to USD.");
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
    let status = |stage: &Stage| -> Result<Value> {
        alice
            .json(stage, &["exchange", "status"])?
            .as_array()
            .and_then(|a| a.last().cloned())
            .context("alice's wallet shows no exchange")
    };
    let mut seen = String::new();
    let mut accepted = false;
    let deadline = Instant::now() + Duration::from_secs(STEP_SECS);
    stage.record(
        "# alice: `wallet sync` until the exchange is done, accepting the offer when it comes",
    );
    let x = loop {
        alice.poll(stage, &["sync"])?;
        agent.daemon.check()?;
        let x = status(stage)?;
        let state = str_of(&x, "state")?.to_string();
        if state != seen {
            match state.as_str() {
                "offered" => say.line(&format!(
                    "Offer (negotiation): the agent quotes A1 = {} for A2 = {} ({}), her payment due before D1 = {}; the offer is signed by the agent.",
                    money(u64_of(&x, "a1_minor")?, "JPY"),
                    money(u64_of(&x, "a2_minor")?, "USD"),
                    str_of(&x, "price")?,
                    str_of(&x, "d1")?
                )),
                "accepting" => say.line(
                    "alice accepts (`wallet exchange accept`): her wallet mails the acceptance.",
                ),
                "paying" => {
                    say.line(&format!(
                        "Signed offer: the agent signs the same terms, with the deadlines D1 for her payment and D2 ({}) for its own: it is now bound to pay A2 against A1.",
                        str_of(&x, "d2")?
                    ));
                    say.line("1st payment: alice's wallet pays A1 to the agent's card and, in the same mail, asks for the 2nd payment with a request signed by her USD card.");
                }
                "done" => say.line(
                    "2nd payment: the agent commits her request with its payment of A2 to her USD card; her wallet verifies the notes offline.",
                ),
                _ => {}
            }
            seen = state.clone();
        }
        if x["done"] == true {
            break x;
        }
        if state == "offered" && !accepted {
            alice.run(stage, &["exchange", "accept", str_of(&x, "tr_id")?])?;
            accepted = true;
            continue;
        }
        if Instant::now() >= deadline {
            bail!("timed out after {STEP_SECS} s in the exchange; it is {state}: {x}");
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    ensure!(x["state"] == "done", "the exchange ended as {}", x);
    let tr = str_of(&x, "tr_id")?.to_string();
    let a1 = u64_of(&x, "a1_minor")?;
    let a2 = u64_of(&x, "a2_minor")?;
    let usd = spendable(stage, alice, "USD")?;
    ensure!(
        usd == a2,
        "alice holds {} after receiving {}",
        money(usd, "USD"),
        money(a2, "USD")
    );

    let file = stage.dir.join("alice-exchange.evidence");
    let file_s = file.to_string_lossy().into_owned();
    alice.run(stage, &["evidence", &tr, "--out", &file_s])?;
    let findings = alice.json(stage, &["evidence", "verify", &file_s])?;
    let agent_signed = findings["agent_signed"] == true;
    let paid_both = findings["first_paid_minor"].as_u64() == Some(a1)
        && findings["second_paid_minor"].as_u64() == Some(a2);
    ensure!(
        agent_signed && paid_both,
        "the evidence of the exchange does not show both payments: {findings}"
    );
    say.line(&format!(
        "Done: alice paid {} and holds {}. Her evidence file ({}) proves with public keys alone what the agent signed and what each side paid; had the agent kept her JPY, it would convict it.",
        money(a1, "JPY"),
        money(usd, "USD"),
        file.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned())
    ));
    Ok(json!({
        "tr_id": tr,
        "state": x["state"],
        "a1_minor": a1,
        "a2_minor": a2,
        "price": x["price"],
        "evidence_verifies": agent_signed && paid_both,
    }))
}

/// mallory withdraws a note, copies her wallet, pays alice with the note,
/// then pays bob with the same note from the copy. alice deposits first;
/// bob's deposit names mallory.
fn double_spend(
    stage: &Stage,
    say: &Say,
    jpy: &mut Issuer,
    alice: &Party,
    bob: &Party,
) -> Result<(Party, Value)> {
    let mallory = wallet(stage, "mallory", &[(jpy, 1_000)])?;
    settle(
        stage,
        &[&mallory],
        &mut [&mut jpy.daemon],
        "mallory's license",
    )?;
    mallory.run(stage, &["withdraw", "1000", "JPY"])?;
    settle(
        stage,
        &[&mallory],
        &mut [&mut jpy.daemon],
        "mallory's withdrawal",
    )?;
    let key = mallory
        .json(stage, &["card", "list"])?
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["currency"] == "JPY")
        .and_then(|c| c["payment_key"].as_str().map(str::to_string))
        .context("mallory's wallet shows no JPY card")?;
    let copy = stage.copy_of(&mallory, "mallory-copy")?;
    say.line(&format!(
        "mallory ({}) withdraws a 1,000 JPY note onto her card {}, then copies her wallet's folder.",
        mallory.address(),
        short(&key)
    ));
    mallory.run(stage, &["send", "1000", "JPY", "--to", alice.address()])?;
    settle(
        stage,
        &[&mallory, alice],
        &mut [],
        "mallory's payment to alice",
    )?;
    copy.run(stage, &["send", "1000", "JPY", "--to", bob.address()])?;
    settle(stage, &[&copy, bob], &mut [], "the copy's payment to bob")?;
    say.line(
        "She pays alice 1,000 JPY with it, then pays bob 1,000 JPY from the copy, which still holds the note. Payments are offline: both wallets accept.",
    );

    let alice_jpy = spendable(stage, alice, "JPY")?;
    alice.run(stage, &["deposit", &alice_jpy.to_string(), "JPY"])?;
    settle(stage, &[alice], &mut [&mut jpy.daemon], "alice's deposit")?;
    let a = last_op(stage, alice, "deposit")?;
    ensure!(
        a["state"] == "done" && a["amount_minor"] == alice_jpy,
        "alice's deposit ended as {a}"
    );
    bob.run(stage, &["deposit", "1000", "JPY"])?;
    settle(
        stage,
        &[bob],
        &mut [&mut jpy.daemon],
        "bob's second deposit",
    )?;
    let b = last_op(stage, bob, "deposit")?;
    ensure!(
        b["amount_minor"] == 0,
        "bob's deposit of the double-spent note was credited: {b}"
    );
    say.line(&format!(
        "alice deposits her {} first and is credited. bob deposits his 1,000 JPY: the issuer has seen mallory sign that note over once already. Its answer to bob: {}.",
        money(alice_jpy, "JPY"),
        str_of(&b, "detail")?
    ));

    let report = jpy.party.json(stage, &["report"])?;
    let guilty: Vec<String> = report["guilty"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let proof_verifies = report["overspends"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["guilty"] == key.as_str() && o["proof_verifies"] == true);
    let revoked = report["revocations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["payment_key"] == key.as_str() && r["reason"] == "overspend");
    ensure!(
        guilty.contains(&key) && proof_verifies && revoked,
        "the JPY issuer's report does not name mallory's card {key}: {report}"
    );
    say.line(&format!(
        "`issuer report` names the overspender: card {} (mallory's), with a proof anyone can check: her two signatures on the same note. The card is revoked; revocation list version {} tells every wallet.",
        short(&key),
        report["revocation_version"]
    ));
    let outcome = json!({
        "mallory_card": key,
        "guilty": guilty,
        "proof_verifies": proof_verifies,
        "revoked": revoked,
        "bob_deposit": b["detail"],
    });
    Ok((mallory, outcome))
}

/// The table of balances at the end, printed and returned.
fn summary(
    stage: &Stage,
    say: &Say,
    jpy: &Issuer,
    usd: &Issuer,
    agent: &Agent,
    wallets: &[(&Party, &[&str])],
) -> Result<Value> {
    let mut rows = Vec::new();
    for (w, currencies) in wallets {
        let mut row = json!({ "who": w.role });
        for i in [jpy, usd] {
            row[i.currency] = if currencies.contains(&i.currency) {
                json!({
                    "card_minor": spendable(stage, w, i.currency)?,
                    "account_minor": i.balance(stage, &w.role)?,
                })
            } else {
                Value::Null
            };
        }
        rows.push(row);
    }
    let mut fx = json!({ "who": "agent" });
    for i in [jpy, usd] {
        fx[i.currency] = json!({
            "card_minor": agent.held(stage, i.currency)?,
            "account_minor": i.balance(stage, "fx")?,
        });
    }
    rows.push(fx);

    say.plain("\nBalances at the end (card = notes held, account = at the issuer):");
    say.plain(&format!(
        "   {:<8} {:>12} {:>12} {:>12} {:>12}",
        "", "JPY card", "JPY account", "USD card", "USD account"
    ));
    for r in &rows {
        // "-": no card or account in that currency.
        let cell = |c: &str, f: &str| r[c][f].as_u64().map_or("-".into(), |m| money(m, c));
        say.plain(&format!(
            "   {:<8} {:>12} {:>12} {:>12} {:>12}",
            r["who"].as_str().unwrap_or(""),
            cell("JPY", "card_minor"),
            cell("JPY", "account_minor"),
            cell("USD", "card_minor"),
            cell("USD", "account_minor"),
        ));
    }
    Ok(Value::Array(rows))
}
