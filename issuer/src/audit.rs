//! The books checked against each other, and the overspend report.
//!
//! [`audit`] recomputes what must hold whatever happened (crashes, replays,
//! overspends, refunds), from independent tables:
//!
//! - value: issued (notes) - credited (deposits) - refunded == what the
//!   backed states still hold, computed from `states`;
//! - every balance equals the sum of its ledger entries, and none is
//!   negative; the ledger's withdrawals, deposits and refunds equal the
//!   notes, credits and refunds tables;
//! - every credit is a backed state paid to the issuer's key, for its value;
//! - no backed state has backed payments and refunds out of it beyond its
//!   value, and no backed state hangs from an unbacked one;
//! - every stored overspend proof verifies with the issuer's key alone and
//!   names a revoked card.
//!
//! It reads every row, so it is for the operator (and the tests), not for
//! the mail path.

use std::collections::BTreeMap;

use mailer::crypto::PublicKey;
use mailer::license::Revocation;
use mailer::overspend::Overspend;
use rusqlite::Connection;

use crate::error::IssuerError;
use crate::store::{self, OverspendRow};
use crate::Issuer;

/// What the audit found. [`AuditReport::is_ok`] is the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Value of every note issued.
    pub issued: i128,
    /// Credited for deposits.
    pub credited: i128,
    /// Paid back to owners of revoked cards.
    pub refunded: i128,
    /// What backed states not yet deposited still hold.
    pub outstanding: i128,
    /// Sum of all balances.
    pub balances: i128,
    /// Everything that does not add up, for people.
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn sum(conn: &Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<i128, IssuerError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| r.get::<_, Option<i64>>(0))?;
    let mut total: i128 = 0;
    for r in rows {
        total += i128::from(r?.unwrap_or(0));
    }
    Ok(total)
}

/// Checks the books (see the module docs).
pub fn audit(conn: &Connection, issuer: &Issuer) -> Result<AuditReport, IssuerError> {
    audit_books(conn, &issuer.public_key())
}

/// [`audit`] with the issuer's public key alone (from
/// [`store::identity`]): what a reader without the secret key can check,
/// on a read-only connection.
pub fn audit_books(conn: &Connection, key: &PublicKey) -> Result<AuditReport, IssuerError> {
    let me = key.as_bytes().as_slice();
    let mut p = Vec::new();
    let issued = sum(conn, "SELECT value FROM notes", &[])?;
    let credited = sum(conn, "SELECT amount FROM credits", &[])?;
    let refunded = sum(conn, "SELECT amount FROM refunds", &[])?;
    let good_held = sum(
        conn,
        "SELECT value FROM states WHERE good = 1 AND holder != ?1",
        &[&me],
    )?;
    let good_links = sum(
        conn,
        "SELECT value FROM states WHERE good = 1 AND parent IS NOT NULL",
        &[],
    )?;
    let refunded_states = sum(conn, "SELECT refunded FROM states", &[])?;
    let outstanding = good_held - good_links - refunded_states;
    if issued - credited - refunded != outstanding {
        p.push(format!(
            "value does not add up: issued {issued} - credited {credited} - refunded {refunded} = {}, but the backed states hold {outstanding}",
            issued - credited - refunded
        ));
    }
    let refund_parts = sum(conn, "SELECT amount FROM refund_states", &[])?;
    if refunded != refunded_states || refunded != refund_parts {
        p.push(format!(
            "refunds do not add up: {refunded} paid, {refund_parts} by state, {refunded_states} marked on states"
        ));
    }
    let issuance_states: i64 = conn.query_row(
        "SELECT COUNT(*) FROM states s JOIN notes n ON n.note_id = s.state_id
         WHERE s.parent IS NULL AND s.good = 1 AND s.value = n.value AND s.holder = n.holder",
        [],
        |r| r.get(0),
    )?;
    let notes: i64 = conn.query_row("SELECT COUNT(*) FROM notes", [], |r| r.get(0))?;
    let roots: i64 = conn.query_row(
        "SELECT COUNT(*) FROM states WHERE parent IS NULL",
        [],
        |r| r.get(0),
    )?;
    if issuance_states != notes || roots != notes {
        p.push(format!(
            "{notes} notes issued, but {issuance_states} matching issuance states ({roots} roots)"
        ));
    }

    // Balances against the ledger.
    let mut ledger: BTreeMap<String, i128> = BTreeMap::new();
    {
        let mut stmt = conn.prepare("SELECT account, delta FROM ledger")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for r in rows {
            let (a, d) = r?;
            *ledger.entry(a).or_default() += i128::from(d);
        }
    }
    let mut balances: i128 = 0;
    {
        let mut stmt = conn.prepare("SELECT name, balance FROM accounts ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for r in rows {
            let (name, balance) = r?;
            let balance = i128::from(balance);
            balances += balance;
            if balance < 0 {
                p.push(format!("account {name:?} has a negative balance {balance}"));
            }
            let expected = ledger.remove(&name).unwrap_or(0);
            if balance != expected {
                p.push(format!(
                    "account {name:?} holds {balance}, but its ledger adds up to {expected}"
                ));
            }
        }
    }
    for (name, _) in ledger {
        p.push(format!("ledger entries for a missing account {name:?}"));
    }
    let by_kind = |kind: &str| sum(conn, "SELECT delta FROM ledger WHERE kind = ?1", &[&kind]);
    let (w, d, r) = (
        by_kind("withdrawal")?,
        by_kind("deposit")?,
        by_kind("refund")?,
    );
    if -w != issued {
        p.push(format!(
            "the ledger withdrew {}, but notes of {issued} were issued",
            -w
        ));
    }
    if d != credited {
        p.push(format!(
            "the ledger credited {d} for deposits, but credits add up to {credited}"
        ));
    }
    if r != refunded {
        p.push(format!(
            "the ledger refunded {r}, but refunds add up to {refunded}"
        ));
    }

    // Credits are backed deposit links.
    let bad_credits: i64 = conn.query_row(
        "SELECT COUNT(*) FROM credits c LEFT JOIN states s ON s.state_id = c.state_id
         WHERE s.state_id IS NULL OR s.good != 1 OR s.holder != ?1 OR s.value != c.amount",
        [me],
        |r| r.get(0),
    )?;
    if bad_credits != 0 {
        p.push(format!(
            "{bad_credits} credit(s) are not backed deposit links for their amount"
        ));
    }
    let uncredited: i64 = conn.query_row(
        "SELECT COUNT(*) FROM states s LEFT JOIN credits c ON c.state_id = s.state_id
         WHERE s.good = 1 AND s.holder = ?1 AND c.state_id IS NULL",
        [me],
        |r| r.get(0),
    )?;
    if uncredited != 0 {
        p.push(format!(
            "{uncredited} backed deposit link(s) were never credited"
        ));
    }
    // Backed states: backed payments and refunds within the value; no
    // backed state below an unbacked one.
    let over: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (
             SELECT p.state_id FROM states p JOIN states c ON c.parent = p.state_id AND c.good = 1
             WHERE p.good = 1 GROUP BY p.state_id
             HAVING SUM(c.value) + MAX(p.refunded) > MAX(p.value))",
        [],
        |r| r.get(0),
    )?;
    if over != 0 {
        p.push(format!(
            "{over} backed state(s) have backed payments beyond their value"
        ));
    }
    let orphans: i64 = conn.query_row(
        "SELECT COUNT(*) FROM states c JOIN states p ON p.state_id = c.parent
         WHERE c.good = 1 AND p.good = 0",
        [],
        |r| r.get(0),
    )?;
    if orphans != 0 {
        p.push(format!(
            "{orphans} backed state(s) hang from an unbacked one"
        ));
    }

    // Proofs.
    for row in store::overspends(conn)? {
        match row.proof.verify(key) {
            Ok(o) => {
                if o.guilty != row.guilty || o.state != row.state || row.proof.id() != row.proof_id
                {
                    p.push(format!(
                        "overspend proof {} does not match its record",
                        row.proof_id
                    ));
                }
                if store::revocation(conn, &o.guilty)?.is_none() {
                    p.push(format!(
                        "card {} overspent (proof {}) but is not revoked",
                        o.guilty, row.proof_id
                    ));
                }
            }
            Err(e) => p.push(format!(
                "overspend proof {} does not verify: {e}",
                row.proof_id
            )),
        }
    }
    Ok(AuditReport {
        issued,
        credited,
        refunded,
        outstanding,
        balances,
        problems: p,
    })
}

/// One overspend as reported: the record and what its proof establishes.
#[derive(Clone, Debug)]
pub struct OverspendReport {
    pub record: OverspendRow,
    /// What the proof shows, checked now with the issuer's key alone (an
    /// error text if it does not verify).
    pub check: Result<Overspend, String>,
}

/// The overspenders and revoked cards.
#[derive(Clone, Debug)]
pub struct Report {
    pub overspends: Vec<OverspendReport>,
    pub revocations: Vec<Revocation>,
    pub revocation_version: u64,
}

impl Report {
    /// The guilty payment keys, each once, in order.
    pub fn guilty(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.overspends.iter().map(|o| o.record.guilty).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

pub fn report(conn: &Connection, issuer: &Issuer) -> Result<Report, IssuerError> {
    let overspends = store::overspends(conn)?
        .into_iter()
        .map(|record| {
            let check = record
                .proof
                .verify(&issuer.public_key())
                .map_err(|e| e.to_string());
            OverspendReport { record, check }
        })
        .collect();
    Ok(Report {
        overspends,
        revocations: store::revocations(conn)?,
        revocation_version: store::revocation_version(conn)?.0,
    })
}
