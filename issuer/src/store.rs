//! Typed queries over the issuer's tables (schema in [`crate::db`]).
//!
//! Every function takes the caller's connection or transaction, so a
//! handler's reads and writes and its queued reply commit together. Every
//! lookup made while clearing is by primary key or by an index, so its cost
//! does not grow with the number of notes already cleared.

use mailer::crypto::{Digest, PublicKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::license::{License, Revocation, RevocationReason};
use mailer::money::{Amount, Timestamp};
use mailer::note::Issuance;
use mailer::overspend::OverspendProof;
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::{
    digest_from_sql, from_sql_amount, from_sql_time, key_from_sql, to_sql_amount, to_sql_time,
};
use crate::error::IssuerError;

pub(crate) fn decode_signed<T: Body>(bytes: &[u8], what: &str) -> Result<Signed<T>, IssuerError> {
    Envelope::from_bytes(bytes)
        .and_then(Signed::from_envelope)
        .map_err(|e| IssuerError::Corrupt(format!("stored {what}: {e}")))
}

// ---- meta -----------------------------------------------------------------

/// The issuer's public key and policy, as written at its creation (None
/// for a database without an issuer): what a reader that holds no secret
/// key needs to check the books ([`crate::audit::audit_books`]).
pub fn identity(
    conn: &Connection,
) -> Result<Option<(PublicKey, crate::IssuerConfig)>, IssuerError> {
    crate::db::load_meta(conn)
}

/// The current revocation list version and when it was made.
pub fn revocation_version(conn: &Connection) -> Result<(u64, Timestamp), IssuerError> {
    let (v, at): (i64, i64) = conn.query_row(
        "SELECT revocation_version, revocation_issued_at FROM issuer_meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let v = u64::try_from(v).map_err(|_| IssuerError::Corrupt("revocation_version".into()))?;
    Ok((v, from_sql_time(at)))
}

fn bump_revocation_version(conn: &Connection, now: Timestamp) -> Result<u64, IssuerError> {
    conn.execute(
        "UPDATE issuer_meta SET revocation_version = revocation_version + 1,
             revocation_issued_at = ?1 WHERE id = 1",
        [to_sql_time(now)],
    )?;
    Ok(revocation_version(conn)?.0)
}

// ---- accounts -------------------------------------------------------------

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    OperatorCredit,
    Withdrawal,
    Deposit,
    Refund,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::OperatorCredit => "operator-credit",
            EntryKind::Withdrawal => "withdrawal",
            EntryKind::Deposit => "deposit",
            EntryKind::Refund => "refund",
        }
    }
}

pub fn create_account(conn: &Connection, name: &str, now: Timestamp) -> Result<(), IssuerError> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO accounts (name, balance, created_at) VALUES (?1, 0, ?2)",
        params![name, to_sql_time(now)],
    )?;
    if n == 0 {
        return Err(IssuerError::AccountExists(name.to_string()));
    }
    Ok(())
}

pub fn balance(conn: &Connection, account: &str) -> Result<Option<Amount>, IssuerError> {
    conn.query_row(
        "SELECT balance FROM accounts WHERE name = ?1",
        [account],
        |r| r.get::<_, i64>(0),
    )
    .optional()?
    .map(from_sql_amount)
    .transpose()
}

/// Adds `amount` to the balance (or takes it, for a withdrawal) and writes
/// the ledger entry. Taking more than the balance is refused by the
/// caller first; here it would fail the CHECK.
pub fn change_balance(
    conn: &Connection,
    account: &str,
    amount: Amount,
    kind: EntryKind,
    reference: Option<&[u8]>,
    memo: Option<&str>,
    now: Timestamp,
) -> Result<Amount, IssuerError> {
    let current =
        balance(conn, account)?.ok_or_else(|| IssuerError::NoSuchAccount(account.into()))?;
    let (new, delta) = if kind == EntryKind::Withdrawal {
        let new = current.checked_sub(amount).ok_or_else(|| {
            IssuerError::BadAmount(format!("account {account:?} does not hold {amount:?}"))
        })?;
        (new, -to_sql_amount(amount)?)
    } else {
        let new = current.checked_add(amount).ok_or_else(|| {
            IssuerError::BadAmount(format!("the balance of {account:?} would overflow"))
        })?;
        (new, to_sql_amount(amount)?)
    };
    conn.execute(
        "UPDATE accounts SET balance = ?2 WHERE name = ?1",
        params![account, to_sql_amount(new)?],
    )?;
    conn.execute(
        "INSERT INTO ledger (account, delta, kind, reference, memo, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            account,
            delta,
            kind.as_str(),
            reference,
            memo,
            to_sql_time(now)
        ],
    )?;
    Ok(new)
}

pub fn account_of_key(conn: &Connection, key: &PublicKey) -> Result<Option<String>, IssuerError> {
    Ok(conn
        .query_row(
            "SELECT account FROM account_keys WHERE account_key = ?1",
            [key.as_bytes().as_slice()],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn bind_key(
    conn: &Connection,
    key: &PublicKey,
    account: &str,
    request: &Digest,
    now: Timestamp,
) -> Result<(), IssuerError> {
    conn.execute(
        "INSERT OR IGNORE INTO account_keys (account_key, account, enrolled_at, request)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            key.as_bytes().as_slice(),
            account,
            to_sql_time(now),
            request.as_bytes().as_slice()
        ],
    )?;
    Ok(())
}

pub fn keys_of_account(conn: &Connection, account: &str) -> Result<Vec<PublicKey>, IssuerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT account_key FROM account_keys WHERE account = ?1 ORDER BY account_key",
    )?;
    let rows = stmt.query_map([account], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(key_from_sql(&r?)?);
    }
    Ok(out)
}

// ---- enrollment codes -----------------------------------------------------

/// A stored enrollment code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeRow {
    pub account: String,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

pub fn insert_code(
    conn: &Connection,
    hash: &Digest,
    account: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<(), IssuerError> {
    conn.execute(
        "INSERT INTO enrollment_codes (code_hash, account, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            hash.as_bytes().as_slice(),
            account,
            to_sql_time(now),
            to_sql_time(expires_at)
        ],
    )?;
    Ok(())
}

pub fn code(conn: &Connection, hash: &Digest) -> Result<Option<CodeRow>, IssuerError> {
    Ok(conn
        .query_row(
            "SELECT account, expires_at, used_at FROM enrollment_codes WHERE code_hash = ?1",
            [hash.as_bytes().as_slice()],
            |r| {
                Ok(CodeRow {
                    account: r.get(0)?,
                    expires_at: from_sql_time(r.get(1)?),
                    used_at: r.get::<_, Option<i64>>(2)?.map(from_sql_time),
                })
            },
        )
        .optional()?)
}

pub fn use_code(
    conn: &Connection,
    hash: &Digest,
    key: &PublicKey,
    now: Timestamp,
) -> Result<(), IssuerError> {
    conn.execute(
        "UPDATE enrollment_codes SET used_at = ?2, used_by = ?3 WHERE code_hash = ?1",
        params![
            hash.as_bytes().as_slice(),
            to_sql_time(now),
            key.as_bytes().as_slice()
        ],
    )?;
    Ok(())
}

// ---- licenses -------------------------------------------------------------

pub fn insert_license(conn: &Connection, license: &Signed<License>) -> Result<(), IssuerError> {
    let l = license.unverified();
    conn.execute(
        "INSERT OR IGNORE INTO licenses
             (license_id, payment_key, auth_key, issued_at, expires_at, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            license.id().as_bytes().as_slice(),
            l.card.payment.as_bytes().as_slice(),
            l.card.auth.as_bytes().as_slice(),
            to_sql_time(l.issued_at),
            to_sql_time(l.expires_at),
            license.envelope().to_bytes()?,
        ],
    )?;
    Ok(())
}

/// The licenses this issuer granted to a payment key (signed by this
/// issuer when stored, so they need no verification).
pub fn licenses_of(
    conn: &Connection,
    payment_key: &PublicKey,
) -> Result<Vec<Signed<License>>, IssuerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT envelope FROM licenses WHERE payment_key = ?1 ORDER BY license_id",
    )?;
    let rows = stmt.query_map([payment_key.as_bytes().as_slice()], |r| {
        r.get::<_, Vec<u8>>(0)
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode_signed(&r?, "license")?);
    }
    Ok(out)
}

// ---- notes and states -----------------------------------------------------

/// One state of a note, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub id: Digest,
    pub note: Digest,
    pub parent: Option<Digest>,
    pub holder: PublicKey,
    pub value: Amount,
    /// What the links seen out of it add up to (saturating at i64::MAX).
    pub spent: u64,
    pub refunded: Amount,
    pub good: bool,
}

impl StateRow {
    /// What is left of the state for its holder: its value less the links
    /// seen out of it and what was refunded.
    pub fn remaining(&self) -> u64 {
        self.value
            .minor_units()
            .saturating_sub(self.spent)
            .saturating_sub(self.refunded.minor_units())
    }
}

const STATE_COLUMNS: &str = "state_id, note_id, parent, holder, value, spent, refunded, good";

fn state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawState> {
    Ok(RawState {
        id: r.get(0)?,
        note: r.get(1)?,
        parent: r.get(2)?,
        holder: r.get(3)?,
        value: r.get(4)?,
        spent: r.get(5)?,
        refunded: r.get(6)?,
        good: r.get(7)?,
    })
}

struct RawState {
    id: Vec<u8>,
    note: Vec<u8>,
    parent: Option<Vec<u8>>,
    holder: Vec<u8>,
    value: i64,
    spent: i64,
    refunded: i64,
    good: i64,
}

impl RawState {
    fn typed(self) -> Result<StateRow, IssuerError> {
        Ok(StateRow {
            id: digest_from_sql(&self.id)?,
            note: digest_from_sql(&self.note)?,
            parent: self.parent.as_deref().map(digest_from_sql).transpose()?,
            holder: key_from_sql(&self.holder)?,
            value: from_sql_amount(self.value)?,
            spent: from_sql_amount(self.spent)?.minor_units(),
            refunded: from_sql_amount(self.refunded)?,
            good: self.good == 1,
        })
    }
}

pub fn state(conn: &Connection, id: &Digest) -> Result<Option<StateRow>, IssuerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STATE_COLUMNS} FROM states WHERE state_id = ?1"
    ))?;
    stmt.query_row([id.as_bytes().as_slice()], state_from_row)
        .optional()?
        .map(RawState::typed)
        .transpose()
}

/// Every state seen (issuances and links, backed or not), by note then
/// state id: for the checks that read the whole tree (the deployment-wide
/// conservation check), not for the mail path.
pub fn all_states(conn: &Connection) -> Result<Vec<StateRow>, IssuerError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {STATE_COLUMNS} FROM states ORDER BY note_id, state_id"
    ))?;
    let rows = stmt.query_map([], state_from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?.typed()?);
    }
    Ok(out)
}

/// Good states held by `holder` (for refunds), in a fixed order.
pub fn states_held_by(conn: &Connection, holder: &PublicKey) -> Result<Vec<StateRow>, IssuerError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {STATE_COLUMNS} FROM states WHERE holder = ?1 AND good = 1 ORDER BY state_id"
    ))?;
    let rows = stmt.query_map([holder.as_bytes().as_slice()], state_from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?.typed()?);
    }
    Ok(out)
}

/// Stores a note just issued, with its issuance state.
pub fn insert_note(
    conn: &Connection,
    issuance: &Signed<Issuance>,
    account: &str,
    request: &Digest,
    now: Timestamp,
) -> Result<(), IssuerError> {
    let i = issuance.unverified();
    let id = issuance.id();
    let value = to_sql_amount(i.value)?;
    conn.execute(
        "INSERT INTO notes (note_id, value, holder, issued_at, expires_at, account, request,
             link_count, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8)",
        params![
            id.as_bytes().as_slice(),
            value,
            i.holder.as_bytes().as_slice(),
            to_sql_time(i.issued_at),
            to_sql_time(i.expires_at),
            account,
            request.as_bytes().as_slice(),
            issuance.envelope().to_bytes()?,
        ],
    )?;
    conn.execute(
        "INSERT INTO states (state_id, note_id, parent, holder, value, spent, refunded, good,
             link, first_seen_at)
         VALUES (?1, ?1, NULL, ?2, ?3, 0, 0, 1, NULL, ?4)",
        params![
            id.as_bytes().as_slice(),
            i.holder.as_bytes().as_slice(),
            value,
            to_sql_time(now)
        ],
    )?;
    Ok(())
}

/// The signed issuance of a note this issuer issued.
pub fn issuance(conn: &Connection, note: &Digest) -> Result<Option<Signed<Issuance>>, IssuerError> {
    let mut stmt = conn.prepare_cached("SELECT envelope FROM notes WHERE note_id = ?1")?;
    stmt.query_row([note.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(|b| decode_signed(&b, "issuance"))
        .transpose()
}

/// How many links were seen for `note`; None if this issuer did not issue it.
pub fn link_count(conn: &Connection, note: &Digest) -> Result<Option<u64>, IssuerError> {
    let mut stmt = conn.prepare_cached("SELECT link_count FROM notes WHERE note_id = ?1")?;
    let n: Option<i64> = stmt
        .query_row([note.as_bytes().as_slice()], |r| r.get(0))
        .optional()?;
    Ok(n.map(|n| u64::try_from(n).unwrap_or(0)))
}

/// Counts `n` more links seen for `note`.
pub fn add_link_count(conn: &Connection, note: &Digest, n: u64) -> Result<(), IssuerError> {
    let mut stmt =
        conn.prepare_cached("UPDATE notes SET link_count = link_count + ?2 WHERE note_id = ?1")?;
    stmt.execute(params![
        note.as_bytes().as_slice(),
        i64::try_from(n).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// A new link state.
#[derive(Debug)]
pub struct NewLink<'a> {
    pub id: &'a Digest,
    pub note: &'a Digest,
    pub parent: &'a Digest,
    pub holder: &'a PublicKey,
    pub value: Amount,
    pub good: bool,
    pub link: &'a Envelope,
}

pub fn insert_link(conn: &Connection, l: &NewLink<'_>, now: Timestamp) -> Result<(), IssuerError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO states (state_id, note_id, parent, holder, value, spent, refunded, good,
             link, first_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![
        l.id.as_bytes().as_slice(),
        l.note.as_bytes().as_slice(),
        l.parent.as_bytes().as_slice(),
        l.holder.as_bytes().as_slice(),
        to_sql_amount(l.value)?,
        i64::from(l.good),
        l.link.to_bytes()?,
        to_sql_time(now),
    ])?;
    Ok(())
}

pub fn set_spent(conn: &Connection, id: &Digest, spent: u64) -> Result<(), IssuerError> {
    let mut stmt = conn.prepare_cached("UPDATE states SET spent = ?2 WHERE state_id = ?1")?;
    stmt.execute(params![
        id.as_bytes().as_slice(),
        i64::try_from(spent).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

pub fn add_refunded(conn: &Connection, id: &Digest, amount: Amount) -> Result<(), IssuerError> {
    conn.execute(
        "UPDATE states SET refunded = refunded + ?2 WHERE state_id = ?1",
        params![id.as_bytes().as_slice(), to_sql_amount(amount)?],
    )?;
    Ok(())
}

/// The stored link that created state `id` (None for an issuance).
pub fn link_of(
    conn: &Connection,
    id: &Digest,
) -> Result<Option<Signed<mailer::note::Link>>, IssuerError> {
    let mut stmt = conn.prepare_cached("SELECT link FROM states WHERE state_id = ?1")?;
    stmt.query_row([id.as_bytes().as_slice()], |r| {
        r.get::<_, Option<Vec<u8>>>(0)
    })
    .optional()?
    .flatten()
    .map(|b| decode_signed(&b, "link"))
    .transpose()
}

/// Every link seen out of state `parent` of note `note`.
pub fn links_out_of(
    conn: &Connection,
    note: &Digest,
    parent: &Digest,
) -> Result<Vec<Signed<mailer::note::Link>>, IssuerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT link FROM states WHERE note_id = ?1 AND parent = ?2 ORDER BY state_id",
    )?;
    let rows = stmt.query_map(
        [note.as_bytes().as_slice(), parent.as_bytes().as_slice()],
        |r| r.get::<_, Vec<u8>>(0),
    )?;
    let mut out = Vec::new();
    for r in rows {
        out.push(decode_signed(&r?, "link")?);
    }
    Ok(out)
}

// ---- credits --------------------------------------------------------------

pub fn is_credited(conn: &Connection, state: &Digest) -> Result<bool, IssuerError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM credits WHERE state_id = ?1")?;
    Ok(stmt
        .query_row([state.as_bytes().as_slice()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every credit: the deposit state credited and the amount, by state id.
pub fn credits(conn: &Connection) -> Result<Vec<(Digest, Amount)>, IssuerError> {
    let mut stmt = conn.prepare("SELECT state_id, amount FROM credits ORDER BY state_id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (id, amount) = r?;
        out.push((digest_from_sql(&id)?, from_sql_amount(amount)?));
    }
    Ok(out)
}

pub fn insert_credit(
    conn: &Connection,
    state: &Digest,
    account: &str,
    amount: Amount,
    request: &Digest,
    now: Timestamp,
) -> Result<(), IssuerError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO credits (state_id, account, amount, request, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![
        state.as_bytes().as_slice(),
        account,
        to_sql_amount(amount)?,
        request.as_bytes().as_slice(),
        to_sql_time(now)
    ])?;
    Ok(())
}

// ---- requests -------------------------------------------------------------

/// A request decided before, and the reply it got.
#[derive(Clone, Debug)]
pub struct StoredReply {
    pub kind: String,
    pub reply: Envelope,
    pub resends: u64,
}

pub fn request(conn: &Connection, id: &Digest) -> Result<Option<StoredReply>, IssuerError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, reply, resends FROM requests WHERE request_id = ?1")?;
    let row = stmt
        .query_row([id.as_bytes().as_slice()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    let Some((kind, reply, resends)) = row else {
        return Ok(None);
    };
    let reply = Envelope::from_bytes(&reply)
        .map_err(|e| IssuerError::Corrupt(format!("stored reply: {e}")))?;
    Ok(Some(StoredReply {
        kind,
        reply,
        resends: u64::try_from(resends).unwrap_or(0),
    }))
}

pub fn insert_request(
    conn: &Connection,
    request: &Envelope,
    reply: &Envelope,
    now: Timestamp,
) -> Result<(), IssuerError> {
    conn.execute(
        "INSERT INTO requests (request_id, kind, signer, reply, resends, at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5)",
        params![
            request.id().as_bytes().as_slice(),
            request.kind(),
            request.signer().as_bytes().as_slice(),
            reply.to_bytes()?,
            to_sql_time(now)
        ],
    )?;
    Ok(())
}

/// Counts one more resend of the reply to `id`, returns the count, and
/// stores `reply` (the same envelope, except for a revocation list, which
/// is always the current one).
pub fn count_resend(conn: &Connection, id: &Digest, reply: &Envelope) -> Result<u64, IssuerError> {
    let n: i64 = conn.query_row(
        "UPDATE requests SET resends = resends + 1, reply = ?2 WHERE request_id = ?1
         RETURNING resends",
        params![id.as_bytes().as_slice(), reply.to_bytes()?],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

// ---- overspends and revocations -------------------------------------------

pub fn insert_overspend(
    conn: &Connection,
    proof: &OverspendProof,
    o: &mailer::overspend::Overspend,
    now: Timestamp,
) -> Result<Digest, IssuerError> {
    let id = proof.id();
    let bytes = mailer::cbor::to_vec(proof)
        .map_err(|e| IssuerError::Corrupt(format!("overspend proof does not encode: {e}")))?;
    conn.execute(
        "INSERT OR IGNORE INTO overspends (proof_id, guilty, note_id, state_id, proof, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id.as_bytes().as_slice(),
            o.guilty.as_bytes().as_slice(),
            o.note.as_bytes().as_slice(),
            o.state.as_bytes().as_slice(),
            bytes,
            to_sql_time(now)
        ],
    )?;
    Ok(id)
}

fn decode_proof(bytes: &[u8]) -> Result<OverspendProof, IssuerError> {
    mailer::cbor::from_slice(bytes, mailer::limits::MAX_ENVELOPE_BYTES * 4)
        .map_err(|e| IssuerError::Corrupt(format!("stored overspend proof: {e}")))
}

/// The proof stored for an overspent state (the first one, if several).
pub fn proof_for_state(
    conn: &Connection,
    state: &Digest,
) -> Result<Option<OverspendProof>, IssuerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT proof FROM overspends WHERE state_id = ?1 ORDER BY at, proof_id LIMIT 1",
    )?;
    stmt.query_row([state.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(|b| decode_proof(&b))
        .transpose()
}

/// A stored overspend.
#[derive(Clone, Debug)]
pub struct OverspendRow {
    pub proof_id: Digest,
    pub guilty: PublicKey,
    pub note: Digest,
    pub state: Digest,
    pub at: Timestamp,
    pub proof: OverspendProof,
}

pub fn overspends(conn: &Connection) -> Result<Vec<OverspendRow>, IssuerError> {
    let mut stmt = conn.prepare(
        "SELECT proof_id, guilty, note_id, state_id, at, proof FROM overspends
         ORDER BY at, proof_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Vec<u8>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, guilty, note, state, at, proof) = r?;
        out.push(OverspendRow {
            proof_id: digest_from_sql(&id)?,
            guilty: key_from_sql(&guilty)?,
            note: digest_from_sql(&note)?,
            state: digest_from_sql(&state)?,
            at: from_sql_time(at),
            proof: decode_proof(&proof)?,
        });
    }
    Ok(out)
}

fn revocation_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRevocation> {
    Ok(RawRevocation {
        key: r.get(0)?,
        at: r.get(1)?,
        reason: r.get(2)?,
        proof: r.get(3)?,
        note: r.get(4)?,
    })
}

struct RawRevocation {
    key: Vec<u8>,
    at: i64,
    reason: String,
    proof: Option<Vec<u8>>,
    note: Option<String>,
}

impl RawRevocation {
    fn typed(self) -> Result<Revocation, IssuerError> {
        let reason = match (self.reason.as_str(), self.proof) {
            ("overspend", Some(p)) => RevocationReason::Overspend {
                proof: digest_from_sql(&p)?,
            },
            ("operator", _) => RevocationReason::Operator {
                note: self.note.unwrap_or_default(),
            },
            _ => return Err(IssuerError::Corrupt("revocation reason".into())),
        };
        Ok(Revocation {
            payment_key: key_from_sql(&self.key)?,
            revoked_at: from_sql_time(self.at),
            reason,
        })
    }
}

pub fn revocation(conn: &Connection, key: &PublicKey) -> Result<Option<Revocation>, IssuerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT payment_key, revoked_at, reason, proof_id, note FROM revocations
         WHERE payment_key = ?1",
    )?;
    stmt.query_row([key.as_bytes().as_slice()], revocation_from_row)
        .optional()?
        .map(RawRevocation::typed)
        .transpose()
}

/// Every revocation, by payment key.
pub fn revocations(conn: &Connection) -> Result<Vec<Revocation>, IssuerError> {
    let mut stmt = conn.prepare(
        "SELECT payment_key, revoked_at, reason, proof_id, note FROM revocations
         ORDER BY payment_key",
    )?;
    let rows = stmt.query_map([], revocation_from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?.typed()?);
    }
    Ok(out)
}

/// Revokes a card unless it is revoked already (the first revocation
/// stands), bumping the revocation list's version. Returns whether it was
/// new.
pub fn revoke(conn: &Connection, r: &Revocation, now: Timestamp) -> Result<bool, IssuerError> {
    if revocation(conn, &r.payment_key)?.is_some() {
        return Ok(false);
    }
    let version = bump_revocation_version(conn, now)?;
    let (reason, proof, note) = match &r.reason {
        RevocationReason::Overspend { proof } => {
            ("overspend", Some(proof.as_bytes().to_vec()), None)
        }
        RevocationReason::Operator { note } => ("operator", None, Some(note.as_str())),
    };
    conn.execute(
        "INSERT INTO revocations (payment_key, revoked_at, reason, proof_id, note, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            r.payment_key.as_bytes().as_slice(),
            to_sql_time(r.revoked_at),
            reason,
            proof,
            note,
            i64::try_from(version).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use mailer::crypto::digest;
    use mailer::money::Currency;
    use mailer::testkit::{card, TestIssuer, NOW};

    use super::*;

    #[test]
    fn the_whole_tree_and_the_credits_read_back_as_written() {
        let conn = crate::db::open_in_memory().unwrap();
        assert!(identity(&conn).unwrap().is_none());
        create_account(&conn, "a", NOW).unwrap();
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        let holder = card(2).keys();
        let note = jpy.issue(500, &holder);
        insert_note(&conn, &note.issuance, "a", &digest(&[b"req"]), NOW).unwrap();
        let paid = mailer::testkit::pay(
            &note,
            &card(2),
            &card(3).keys(),
            200,
            mailer::crypto::Challenge::random(),
        );
        let link = paid.links.last().unwrap();
        insert_link(
            &conn,
            &NewLink {
                id: &link.id(),
                note: &note.id(),
                parent: &note.id(),
                holder: &card(3).keys().payment,
                value: Amount::new(200),
                good: true,
                link: link.envelope(),
            },
            NOW,
        )
        .unwrap();
        insert_credit(
            &conn,
            &link.id(),
            "a",
            Amount::new(200),
            &digest(&[b"dep"]),
            NOW,
        )
        .unwrap();

        let states = all_states(&conn).unwrap();
        assert_eq!(states.len(), 2);
        let root = states.iter().find(|s| s.parent.is_none()).unwrap();
        assert_eq!(
            (root.id, root.value, root.holder),
            (note.id(), Amount::new(500), holder.payment)
        );
        let child = states.iter().find(|s| s.parent.is_some()).unwrap();
        assert_eq!(
            (child.parent, child.value),
            (Some(note.id()), Amount::new(200))
        );
        assert_eq!(credits(&conn).unwrap(), vec![(link.id(), Amount::new(200))]);
    }
}
