//! The operator's commands, as library calls (the CLI wraps them): open an
//! account (and give its holder a one-time enrollment code), credit it,
//! show it, revoke a card, refund an honest revoked card.
//!
//! Each runs in its own `IMMEDIATE` transaction, so it never interleaves
//! with the mail handler's work on the same database.

use std::collections::BTreeSet;

use mailer::crypto::{digest, random_bytes, Digest, PublicKey};
use mailer::license::{LicenseBook, Revocation, RevocationList, RevocationReason, Revocations};
use mailer::limits::MAX_TEXT;
use mailer::money::{Amount, Timestamp};
use mailer::note::{Expect, Note, NotePolicy};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::clearing::clear_path;
use crate::db::{to_sql_amount, to_sql_time};
use crate::error::IssuerError;
use crate::store::{self, EntryKind};
use crate::Issuer;

pub(crate) fn immediate(conn: &mut Connection) -> Result<Transaction<'_>, IssuerError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

/// A one-time enrollment code, shown once to the operator (who gives it to
/// the account holder); only its hash is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollmentCode {
    pub account: String,
    /// Four groups of four characters, e.g. `K7QF-2M9X-PL4D-8RTW` (80 bits).
    pub code: String,
    pub expires_at: Timestamp,
}

/// Letters and digits that cannot be mistaken for one another (no 0/O, 1/I).
const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn new_code_text() -> String {
    let bytes: [u8; 16] = random_bytes();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(b & 31)]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The stored form of a code: the code as typed, less dashes and spaces,
/// in capitals, hashed.
pub fn code_hash(code: &str) -> Digest {
    let normal: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    digest(&[b"emoney-mail/1 issuer enrollment-code", normal.as_bytes()])
}

fn check_name(name: &str) -> Result<(), IssuerError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.len() <= MAX_TEXT
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(IssuerError::BadAccountName(name.chars().take(64).collect()))
    }
}

/// Opens an account with a zero balance and returns its first enrollment
/// code.
pub fn open_account(
    conn: &mut Connection,
    issuer: &Issuer,
    name: &str,
    now: Timestamp,
) -> Result<EnrollmentCode, IssuerError> {
    check_name(name)?;
    let tx = immediate(conn)?;
    store::create_account(&tx, name, now)?;
    let code = make_code(&tx, issuer, name, now)?;
    tx.commit()?;
    Ok(code)
}

/// A new one-time code for an existing account (another device, a lost
/// key). Older codes stay valid until used or expired.
pub fn new_enrollment_code(
    conn: &mut Connection,
    issuer: &Issuer,
    name: &str,
    now: Timestamp,
) -> Result<EnrollmentCode, IssuerError> {
    let tx = immediate(conn)?;
    if store::balance(&tx, name)?.is_none() {
        return Err(IssuerError::NoSuchAccount(name.to_string()));
    }
    let code = make_code(&tx, issuer, name, now)?;
    tx.commit()?;
    Ok(code)
}

fn make_code(
    conn: &Connection,
    issuer: &Issuer,
    name: &str,
    now: Timestamp,
) -> Result<EnrollmentCode, IssuerError> {
    let code = new_code_text();
    let expires_at = now.saturating_add_secs(issuer.config().code_lifetime_secs);
    store::insert_code(conn, &code_hash(&code), name, now, expires_at)?;
    Ok(EnrollmentCode {
        account: name.to_string(),
        code,
        expires_at,
    })
}

/// Credits an account (money paid in at the bank's counter, a transfer):
/// returns the new balance.
pub fn credit_account(
    conn: &mut Connection,
    name: &str,
    amount: Amount,
    memo: &str,
    now: Timestamp,
) -> Result<Amount, IssuerError> {
    if amount.is_zero() {
        return Err(IssuerError::BadAmount(
            "credit something more than zero".into(),
        ));
    }
    to_sql_amount(amount)?;
    let tx = immediate(conn)?;
    let memo = (!memo.is_empty()).then_some(memo);
    let balance = store::change_balance(
        &tx,
        name,
        amount,
        EntryKind::OperatorCredit,
        None,
        memo,
        now,
    )?;
    tx.commit()?;
    Ok(balance)
}

/// An account as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub name: String,
    pub balance: Amount,
    /// The account keys enrolled for it.
    pub keys: Vec<PublicKey>,
    /// Enrollment codes neither used nor expired.
    pub open_codes: u64,
}

pub fn show_account(
    conn: &Connection,
    name: &str,
    now: Timestamp,
) -> Result<AccountView, IssuerError> {
    let balance =
        store::balance(conn, name)?.ok_or_else(|| IssuerError::NoSuchAccount(name.to_string()))?;
    let open_codes: i64 = conn.query_row(
        "SELECT COUNT(*) FROM enrollment_codes
         WHERE account = ?1 AND used_at IS NULL AND expires_at >= ?2",
        params![name, to_sql_time(now)],
        |r| r.get(0),
    )?;
    Ok(AccountView {
        name: name.to_string(),
        balance,
        keys: store::keys_of_account(conn, name)?,
        open_codes: u64::try_from(open_codes).unwrap_or(0),
    })
}

/// Revokes a card (lost, stolen, its owner asked): links it signs from
/// `now` on are refused, and the next revocation list names it. Returns
/// false if it was revoked already (the first revocation stands).
pub fn revoke_card(
    conn: &mut Connection,
    payment_key: &PublicKey,
    note: &str,
    now: Timestamp,
) -> Result<bool, IssuerError> {
    let tx = immediate(conn)?;
    let new = store::revoke(
        &tx,
        &Revocation {
            payment_key: *payment_key,
            revoked_at: now,
            reason: RevocationReason::Operator {
                note: note.chars().take(MAX_TEXT / 4).collect(),
            },
        },
        now,
    )?;
    tx.commit()?;
    Ok(new)
}

/// What a refund paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundReport {
    pub amount: Amount,
    /// The states whose rest was paid back.
    pub states: usize,
    pub balance: Amount,
}

/// Pays the owner of a revoked card what the card still held, into
/// `account`. `notes` are the card's notes as its wallet holds them (each
/// currently held by the card); the issuer adds them to what it knows,
/// then pays back, for every backed state the card holds, its value less
/// the payments seen out of it. The amount is recorded against each
/// state, so it is never paid twice, and a payment out of such a state
/// that turns up later is not credited (its value went to the refund).
pub fn refund(
    conn: &mut Connection,
    issuer: &Issuer,
    payment_key: &PublicKey,
    account: &str,
    notes: &[Note],
    now: Timestamp,
) -> Result<RefundReport, IssuerError> {
    let tx = immediate(conn)?;
    if store::revocation(&tx, payment_key)?.is_none() {
        return Err(IssuerError::NotRevoked(*payment_key));
    }
    if store::balance(&tx, account)?.is_none() {
        return Err(IssuerError::NoSuchAccount(account.to_string()));
    }
    let signers: BTreeSet<PublicKey> = notes
        .iter()
        .flat_map(|n| n.links.iter().map(|l| *l.signer()))
        .collect();
    let mut book = LicenseBook::new();
    let mut entries = Vec::new();
    for k in &signers {
        for l in store::licenses_of(&tx, k)? {
            book.add_trusted(l.unverified().clone());
        }
        entries.extend(store::revocation(&tx, k)?);
    }
    let revocations = Revocations::from_list(&RevocationList {
        currency: issuer.currency(),
        version: 0,
        issued_at: now,
        entries,
    });
    let issuer_key = issuer.public_key();
    for (index, note) in notes.iter().enumerate() {
        let view = note
            .verify(&NotePolicy {
                issuer: &issuer_key,
                currency: issuer.currency(),
                now,
                licenses: &book,
                revocations: &revocations,
                expect: Expect::Held {
                    holder: *payment_key,
                },
                accept_expired: true,
            })
            .map_err(|e| IssuerError::BadRefundNote {
                index,
                reason: e.to_string(),
            })?;
        clear_path(&tx, issuer, note, &view, now)?;
    }
    let mut total = Amount::ZERO;
    let mut paid = Vec::new();
    for s in store::states_held_by(&tx, payment_key)? {
        let rest = Amount::new(s.remaining());
        if !rest.is_zero() {
            total = total
                .checked_add(rest)
                .ok_or_else(|| IssuerError::BadAmount("the refund overflows".into()))?;
            paid.push((s.id, rest));
        }
    }
    if total.is_zero() {
        return Err(IssuerError::NothingToRefund(*payment_key));
    }
    tx.execute(
        "INSERT INTO refunds (payment_key, account, amount, at) VALUES (?1, ?2, ?3, ?4)",
        params![
            payment_key.as_bytes().as_slice(),
            account,
            to_sql_amount(total)?,
            to_sql_time(now)
        ],
    )?;
    let refund_id = tx.last_insert_rowid();
    for (state, amount) in &paid {
        store::add_refunded(&tx, state, *amount)?;
        tx.execute(
            "INSERT INTO refund_states (refund, state_id, amount) VALUES (?1, ?2, ?3)",
            params![
                refund_id,
                state.as_bytes().as_slice(),
                to_sql_amount(*amount)?
            ],
        )?;
    }
    let balance = store::change_balance(
        &tx,
        account,
        total,
        EntryKind::Refund,
        Some(&refund_id.to_be_bytes()),
        Some(&format!("refund of revoked card {payment_key}")),
        now,
    )?;
    tx.commit()?;
    Ok(RefundReport {
        amount: total,
        states: paid.len(),
        balance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_readable_and_typed_loosely() {
        let c = new_code_text();
        assert_eq!(c.len(), 19);
        assert_eq!(c.matches('-').count(), 3);
        assert!(c.bytes().all(|b| b == b'-' || CODE_ALPHABET.contains(&b)));
        assert_ne!(c, new_code_text());
        assert_eq!(
            code_hash(&c),
            code_hash(&c.to_lowercase().replace('-', " "))
        );
        assert_ne!(code_hash("ABCD"), code_hash("ABCE"));
    }

    #[test]
    fn account_names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("Alice Smith <alice@example>").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(" alice").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(201)).is_err());
    }
}
