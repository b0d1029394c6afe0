//! The value-conservation checker across a whole deployment: every
//! issuer, the exchange agent, every wallet, and the mail in between.
//!
//! For each currency:
//!
//! ```text
//! issued + overspent (proven) = deposited (credited) + refunded + unbacked
//!                               + held in cards + in flight
//! ```
//!
//! checked per note, not only in sums. A note is a tree of states (the
//! issuance, and every link: a payment of part or all of what its signer
//! held, see `mailer::note`); its value is spread over the states that
//! were not paid on. The checker rebuilds each note's tree from
//! everything the deployment holds (the issuer's states, every wallet's
//! note rows, every note a pending message or request carries), then,
//! state by state, finds where what was not paid on is:
//!
//! - **held**: a wallet (or the agent's float, `agent.db`) has a row for
//!   the state, filed under its own card that the state pays. What it
//!   holds is the row's rest (`held - spent`) while `spendable`, nothing
//!   once `gone`. Counted once however many copies of the mail brought
//!   it, and held even if a mail still carries it;
//! - **in flight**: no wallet has it, but something will still deliver
//!   it: a mail pending in some party's outbox table, a raw mail not yet
//!   handled in some INBOX, the request of an unfinished op (sent again
//!   until answered), or the answer the issuer or the agent stored for
//!   such a request (sent again on each resend);
//! - **deposited**: a link paying the issuer's key that the issuer
//!   credited; **unbacked**: value below an overspend (or a refund) the
//!   issuer refused as not backed; **refunded**: paid back by the issuer
//!   to the owner of a revoked card.
//!
//! Where the places claim more than the state is worth, value was created:
//! allowed only as a proven overspend (the issuer holds a proof for that
//! state naming its card, and the card is revoked), counted as
//! `overspent`; otherwise a problem. Where they claim less, value was
//! lost: a problem. A state held by two wallets, or held by a wallet
//! and also paid on (deposited at the issuer, say), is value created.
//!
//! How each wallet status is classified (the wallet's `notes.state` is
//! `spendable` or `gone`; everything else is in its ops):
//!
//! - spendable (expired included: the issuer takes expired notes in
//!   deposit; on a card locked by an unfinished exchange or payment:
//!   the lock stops new payments, the value is still the card's): held,
//!   for its rest;
//! - being deposited (a `deposit` op waiting): the wallet has spent the
//!   state, the deposit link is in flight in the op's request until the
//!   issuer has it, then deposited; a deposit refused as a whole is given
//!   back to the wallet (spendable again);
//! - sent, awaiting the receipt (a `send` op paying): in flight in the
//!   op's request (and the mail) until the payee's wallet has it, then
//!   held by the payee;
//! - received but not yet handled (the payee has not synced): in flight
//!   in the mail in its INBOX; a wallet verifies a payment as it handles
//!   it, so no verified-but-unstored state exists in between;
//! - withdrawn but not yet arrived (a `withdraw` op waiting): in flight in
//!   the issuer's outbox, the wallet's INBOX, or the issuer's stored
//!   answer to the op's request;
//! - gone: nothing held; its value is wherever the links out of it are;
//! - the agent's first payments received are ordinary notes of its float
//!   (held); a refund or a second payment it made is in flight in its
//!   outbox, or in its stored answer (`agent_requests`) while the user's
//!   exchange op still asks; the `trades` table's copies are records, not
//!   value (counting them would hide a payment nobody will deliver).
//!
//! What it proves and what it does not: see `docs/reliability.md`.

mod read;
mod tally;

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use demo::cast::{Party, Program, Stage};

/// Where each party of a deployment keeps its state.
#[derive(Clone, Debug, Default)]
pub struct Homes {
    pub issuers: Vec<PathBuf>,
    pub agent: Option<PathBuf>,
    pub wallets: Vec<PathBuf>,
}

/// One currency's figures, in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrencyLine {
    pub currency: String,
    /// The issuer's party name (its home folder).
    pub issuer: String,
    /// Every note issued.
    pub issued: u64,
    /// Value created by overspends the issuer proved (and revoked).
    pub overspent: u64,
    /// Credited by the issuer for deposits.
    pub deposited: u64,
    /// Paid back by the issuer to owners of revoked cards.
    pub refunded: u64,
    /// Unbacked value (below a proven overspend) refused by the issuer.
    pub unbacked: u64,
    /// What the cards hold (spendable rests).
    pub held: u64,
    /// What pending mail and requests carry, held by nobody yet.
    pub in_flight: u64,
    /// Value created without a proof (each also a problem).
    pub created: u64,
    /// Value found nowhere (each also a problem).
    pub lost: u64,
    /// deposited + refunded + unbacked + held + in flight - issued -
    /// overspent: zero when value is conserved.
    pub difference: i128,
    /// Notes checked (every note the issuer issued).
    pub notes: usize,
    /// States checked.
    pub states: usize,
}

/// Where a state's value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// In these wallets' books.
    Held(Vec<String>),
    /// Carried by these, held by nobody yet.
    InFlight(Vec<String>),
    /// Credited by the issuer.
    Deposited,
    /// Refused by the issuer as not backed.
    Unbacked,
    /// Nowhere (why not).
    Nowhere(String),
}

impl Place {
    fn describe(&self) -> String {
        match self {
            Place::Held(by) => format!("held by {}", by.join(" and ")),
            Place::InFlight(by) => format!("in flight ({})", by.join("; ")),
            Place::Deposited => "deposited and credited at the issuer".into(),
            Place::Unbacked => "refused by the issuer as not backed".into(),
            Place::Nowhere(why) => format!("nowhere: {why}"),
        }
    }

    fn nowhere_why(&self) -> String {
        match self {
            Place::Nowhere(why) => why.clone(),
            Place::Held(by) => format!(
                "{} paid it out in links found nowhere else",
                by.join(" and ")
            ),
            other => other.describe(),
        }
    }
}

/// One note state and where its value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateLine {
    pub currency: String,
    /// The note (its issuance id) and the state, in hex.
    pub note: String,
    pub state: String,
    /// The payment key the state pays, in hex.
    pub holder: String,
    pub value: u64,
    /// What links out of it (and refunds) took.
    pub passed_on: u64,
    /// What is at `place`.
    pub amount: u64,
    pub place: Place,
}

/// What the check found. [`Report::is_ok`] is the verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One line per issuer, by currency.
    pub currencies: Vec<CurrencyLine>,
    /// Everything that does not add up, for people, in a fixed order.
    pub problems: Vec<String>,
    /// Every state of every note, by note then state.
    pub states: Vec<StateLine>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.currencies.iter().all(|c| c.difference == 0)
    }

    /// The line of `currency` (the first, if two issuers share it).
    pub fn currency(&self, currency: &str) -> Option<&CurrencyLine> {
        self.currencies.iter().find(|c| c.currency == currency)
    }

    /// The states whose value is in flight.
    pub fn in_flight(&self) -> impl Iterator<Item = &StateLine> {
        self.states
            .iter()
            .filter(|s| matches!(s.place, Place::InFlight(_)) && s.amount > 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = [
            "currency",
            "issued",
            "overspent",
            "deposited",
            "refunded",
            "unbacked",
            "held",
            "in flight",
            "difference",
            "notes",
            "states",
        ];
        let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
        for c in &self.currencies {
            rows.push(vec![
                c.currency.clone(),
                c.issued.to_string(),
                c.overspent.to_string(),
                c.deposited.to_string(),
                c.refunded.to_string(),
                c.unbacked.to_string(),
                c.held.to_string(),
                c.in_flight.to_string(),
                c.difference.to_string(),
                c.notes.to_string(),
                c.states.to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..head.len())
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        writeln!(f, "(amounts in minor units; issued + overspent = deposited + refunded + unbacked + held + in flight)")?;
        if self.problems.is_empty() {
            writeln!(f, "value conserved: no problems")?;
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "- {p}")?;
            }
        }
        Ok(())
    }
}

/// Checks a deployment (see the module docs). `unhandled_mail` is every
/// raw mail still in some party's INBOX ([`unhandled_mail`]). Each
/// database is read in one read transaction, opened read-only: daemons may
/// run meanwhile, but a note moving from one database to another between
/// two reads may show as lost or twice; check a deployment at rest.
pub fn check(homes: &Homes, unhandled_mail: &[Vec<u8>]) -> Result<Report> {
    let facts = read::read(homes, unhandled_mail)?;
    Ok(tally::tally(facts))
}

/// The homes of a cast, each party's by the program it runs.
pub fn homes_of(parties: &[&Party]) -> Homes {
    let mut homes = Homes::default();
    for p in parties {
        match p.program {
            Program::Issuer => homes.issuers.push(p.home.clone()),
            Program::Agent => homes.agent = Some(p.home.clone()),
            Program::Wallet => homes.wallets.push(p.home.clone()),
        }
    }
    homes
}

/// [`check`] over every party of a cast: their homes, and the mail still
/// in each one's INBOX (a mailbox two parties share is read once).
pub fn check_cast(stage: &Stage, parties: &[&Party]) -> Result<Report> {
    let mut accounts: Vec<&testmail::harness::Account> = Vec::new();
    for p in parties {
        if !accounts.iter().any(|a| a.address == p.account.address) {
            accounts.push(p.account.as_ref());
        }
    }
    let unread = stage
        .rt
        .block_on(unhandled_mail(&stage.server, &accounts))?;
    check(&homes_of(parties), &unread)
}

/// Every mail in the INBOX of each account (for [`check`]).
pub async fn unhandled_mail(
    server: &testmail::harness::TestServer,
    accounts: &[&testmail::harness::Account],
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for a in accounts {
        out.extend(server.messages(a, "INBOX").await?);
    }
    Ok(out)
}
