//! Reading a deployment: every database opened read-only, one read
//! transaction each, through the products' own typed queries; every mail
//! parsed with `mailer`'s own decoders. What is read is plain facts
//! ([`Facts`]); [`super::tally`] reasons about them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use mailer::crypto::{Digest, PublicKey};
use mailer::envelope::Envelope;
use mailer::messages::Message;
use mailer::money::{Amount, Currency};
use mailer::note::Note;
use rusqlite::{Connection, OpenFlags};

use super::Homes;

/// One issuer's books.
#[derive(Debug)]
pub(crate) struct Books {
    pub name: String,
    pub currency: Currency,
    pub key: PublicKey,
    pub audit: issuer::AuditReport,
    pub states: Vec<issuer::store::StateRow>,
    pub credits: BTreeMap<Digest, Amount>,
    /// Overspent state -> the guilty keys its proofs name.
    pub proofs: BTreeMap<Digest, BTreeSet<PublicKey>>,
    pub revoked: BTreeSet<PublicKey>,
}

/// A note state in a wallet's book (the agent's float included).
#[derive(Debug)]
pub(crate) struct Holding {
    pub party: String,
    pub note: Note,
    pub state: Digest,
    /// What the wallet may still pay out of it (0 once gone).
    pub rest: Amount,
    /// The payment key of the card the row is filed under.
    pub card: Option<PublicKey>,
}

/// A note carried by something that will still deliver it.
#[derive(Debug)]
pub(crate) struct Carried {
    pub place: String,
    pub note: Note,
}

/// Everything read from a deployment.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub issuers: Vec<Books>,
    pub holdings: Vec<Holding>,
    pub carried: Vec<Carried>,
    /// What did not read right (a wallet's totals against its rows...).
    pub problems: Vec<String>,
}

/// A database opened read-only, its snapshot taken (one read transaction
/// until dropped).
struct Snapshot {
    name: String,
    conn: Connection,
}

fn snapshot(name: String, path: &Path) -> Result<Snapshot> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {} read-only", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // A deferred transaction takes its snapshot at its first read.
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Snapshot { name, conn })
}

/// A party's name: its home folder's name (the whole path if two homes
/// share a folder name).
fn names(paths: &[&PathBuf]) -> Vec<String> {
    let short: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    short
        .iter()
        .zip(paths)
        .map(|(s, p)| {
            if short.iter().filter(|t| *t == s).count() > 1 {
                p.display().to_string()
            } else {
                s.clone()
            }
        })
        .collect()
}

/// The notes an envelope carries (none if it carries none, or is not a
/// protocol message).
pub(crate) fn notes_in(env: &Envelope) -> Vec<Note> {
    match Message::decode(env.clone()) {
        Ok(Message::NotesIssued(s)) => s.unverified().notes.clone(),
        Ok(Message::Deposit(s)) => s.unverified().notes.clone(),
        Ok(Message::Payment(s)) => s.unverified().notes.clone(),
        Ok(Message::FirstPayment(s)) => s.unverified().notes.clone(),
        Ok(Message::SecondPayment(s)) => s.unverified().notes.clone(),
        Ok(Message::Refund(s)) => s.unverified().notes.clone(),
        _ => Vec::new(),
    }
}

/// The notes a raw mail carries (none if it does not parse).
pub(crate) fn notes_in_mail(raw: &[u8]) -> Vec<Note> {
    match mailer::mime::parse_mail(raw) {
        Ok(m) => m.envelopes.iter().flat_map(notes_in).collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn read(homes: &Homes, unhandled_mail: &[Vec<u8>]) -> Result<Facts> {
    let mut facts = Facts::default();
    // Every snapshot first, so that they are as close in time as can be.
    let issuer_paths: Vec<&PathBuf> = homes.issuers.iter().collect();
    let mut wallet_paths: Vec<&PathBuf> = homes.agent.iter().collect();
    wallet_paths.extend(homes.wallets.iter());
    let mut all: Vec<&PathBuf> = issuer_paths.clone();
    all.extend(wallet_paths.iter().copied());
    let all_names = names(&all);
    let (issuer_names, wallet_names) = all_names.split_at(issuer_paths.len());
    let mut issuers = Vec::new();
    for (p, n) in issuer_paths.iter().zip(issuer_names) {
        issuers.push(snapshot(
            n.clone(),
            &issuer::Home::new(p.as_path()).db_path(),
        )?);
    }
    let mut wallets = Vec::new();
    for (i, (p, n)) in wallet_paths.iter().zip(wallet_names).enumerate() {
        let db = if i == 0 && homes.agent.is_some() {
            agent::home::Home::new(p.as_path()).wallet_home().db_path()
        } else {
            wallet::Home::new(p.as_path()).db_path()
        };
        wallets.push(snapshot(n.clone(), &db)?);
    }
    let agent = homes.agent.as_ref().and_then(|_| wallets.first());

    for s in &issuers {
        facts.issuers.push(read_books(s)?);
        for m in mailer::outbox::pending(&s.conn)? {
            for note in notes_in_mail(&m.raw) {
                facts.carried.push(Carried {
                    place: format!("{}'s outbox (to {})", s.name, m.recipient),
                    note,
                });
            }
        }
    }
    for w in &wallets {
        read_wallet(w, &issuers, agent, &mut facts)?;
    }
    for raw in unhandled_mail {
        let subject = mailer::mime::read_headers(raw)
            .subject
            .unwrap_or_else(|| "no subject".into());
        for note in notes_in_mail(raw) {
            facts.carried.push(Carried {
                place: format!("an unhandled mail ({subject})"),
                note,
            });
        }
    }
    Ok(facts)
}

fn read_books(s: &Snapshot) -> Result<Books> {
    let conn = &s.conn;
    let (key, config) =
        issuer::store::identity(conn)?.with_context(|| format!("{} holds no issuer", s.name))?;
    let audit = issuer::audit::audit_books(conn, &key)?;
    let states = issuer::store::all_states(conn)?;
    let credits = issuer::store::credits(conn)?.into_iter().collect();
    let mut proofs: BTreeMap<Digest, BTreeSet<PublicKey>> = BTreeMap::new();
    for o in issuer::store::overspends(conn)? {
        proofs.entry(o.state).or_default().insert(o.guilty);
    }
    let revoked = issuer::store::revocations(conn)?
        .into_iter()
        .map(|r| r.payment_key)
        .collect();
    Ok(Books {
        name: s.name.clone(),
        currency: config.currency,
        key,
        audit,
        states,
        credits,
        proofs,
        revoked,
    })
}

fn read_wallet(
    w: &Snapshot,
    issuers: &[Snapshot],
    agent: Option<&Snapshot>,
    facts: &mut Facts,
) -> Result<()> {
    let conn = &w.conn;
    let cards: BTreeMap<i64, PublicKey> = wallet::store::cards(conn)?
        .into_iter()
        .map(|c| (c.id, c.keys.payment))
        .collect();
    let notes = wallet::store::all_notes(conn)?;
    // The rows against the totals the wallet shows (kept by triggers).
    let mut sums: BTreeMap<Currency, u128> = BTreeMap::new();
    for n in notes.iter().filter(|n| n.state == "spendable") {
        *sums.entry(n.currency).or_default() += u128::from(n.row.rest().minor_units());
    }
    for i in wallet::store::issuers(conn)? {
        let shown = wallet::store::spendable_total(conn, i.currency)?;
        let rows = sums.get(&i.currency).copied().unwrap_or(0);
        if u128::from(shown.minor_units()) != rows {
            facts.problems.push(format!(
                "{}: its balance shows {} {} spendable, but its spendable notes hold {rows}",
                w.name,
                shown.minor_units(),
                i.currency
            ));
        }
    }
    for n in notes {
        let spendable = n.state == "spendable";
        facts.holdings.push(Holding {
            party: w.name.clone(),
            state: n.row.state_id,
            rest: if spendable {
                n.row.rest()
            } else {
                Amount::ZERO
            },

            card: cards.get(&n.row.card).copied(),
            note: n.row.note,
        });
    }
    for m in mailer::outbox::pending(conn)? {
        for note in notes_in_mail(&m.raw) {
            facts.carried.push(Carried {
                place: format!("{}'s outbox (to {})", w.name, m.recipient),
                note,
            });
        }
    }
    // Unfinished ops send their request again until answered; the answer
    // is stored where it was decided and sent again on each resend.
    for r in wallet::store::awaited_requests(conn)? {
        let what = format!("{}'s {} op {} ({})", w.name, r.kind, r.op, r.state);
        let mut sent: Vec<&Envelope> = r.before.iter().collect();
        sent.push(&r.request);
        for env in sent {
            for note in notes_in(env) {
                facts.carried.push(Carried {
                    place: format!("{what}, to be sent again"),
                    note,
                });
            }
            let id = env.id();
            for i in issuers {
                if let Some(reply) = issuer::store::request(&i.conn, &id)? {
                    for note in notes_in(&reply.reply) {
                        facts.carried.push(Carried {
                            place: format!("{}'s answer to {what}, sent again on a resend", i.name),
                            note,
                        });
                    }
                }
            }
            if let Some(a) = agent.filter(|a| a.name != w.name) {
                if let Some(reply) = agent::store::decided(&a.conn, &id)?.and_then(|d| d.reply) {
                    for note in notes_in(&reply) {
                        facts.carried.push(Carried {
                            place: format!("{}'s answer to {what}, sent again on a resend", a.name),
                            note,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}
