//! Typed queries over the wallet's tables.

use mailer::crypto::{Digest, PublicKey};
use mailer::envelope::{Envelope, Signed};
use mailer::license::{CardKeys, CardSecret, License, LicenseBook, RevocationList, Revocations};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::Note;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::WalletError;
use crate::vault::Vault;

fn corrupt(what: &str) -> WalletError {
    WalletError::Corrupt(what.to_string())
}

pub fn key_of(b: &[u8]) -> Result<PublicKey, WalletError> {
    PublicKey::from_slice(b).ok_or_else(|| corrupt("a stored key has the wrong length"))
}

pub fn digest_of(b: &[u8]) -> Result<Digest, WalletError> {
    Digest::from_slice(b).ok_or_else(|| corrupt("a stored id has the wrong length"))
}

pub fn currency_of(s: &str) -> Result<Currency, WalletError> {
    s.parse()
        .map_err(|_| corrupt("a stored currency code is invalid"))
}

pub fn envelope_of(b: &[u8]) -> Result<Envelope, WalletError> {
    Envelope::from_bytes(b).map_err(|e| WalletError::Corrupt(format!("a stored envelope: {e}")))
}

pub fn signed_of<T: mailer::envelope::Body>(b: &[u8]) -> Result<Signed<T>, WalletError> {
    Signed::from_envelope(envelope_of(b)?)
        .map_err(|e| WalletError::Corrupt(format!("a stored {}: {e}", T::KIND)))
}

pub fn amount_of(v: i64) -> Amount {
    Amount::new(u64::try_from(v).unwrap_or(0))
}

pub fn sql_amount(a: Amount) -> i64 {
    i64::try_from(a.minor_units()).unwrap_or(i64::MAX)
}

pub fn sql_time(t: Timestamp) -> i64 {
    i64::try_from(t.unix()).unwrap_or(i64::MAX)
}

// ---- meta -------------------------------------------------------------------

pub fn address(conn: &Connection) -> Result<String, WalletError> {
    conn.prepare_cached("SELECT address FROM meta WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .ok_or_else(|| corrupt("no wallet metadata"))
}

// ---- issuers ----------------------------------------------------------------

/// A pinned issuer.
#[derive(Clone, Debug)]
pub struct IssuerRow {
    pub currency: Currency,
    pub address: String,
    pub key: PublicKey,
    pub revocations: Option<Signed<RevocationList>>,
    pub revocations_asked_at: Timestamp,
}

type IssuerTuple = (String, String, Vec<u8>, Option<Vec<u8>>, i64);

fn issuer_row(r: &Row<'_>) -> rusqlite::Result<IssuerTuple> {
    IssuerTuple::try_from(r)
}

fn to_issuer((c, address, key, list, asked): IssuerTuple) -> Result<IssuerRow, WalletError> {
    Ok(IssuerRow {
        currency: currency_of(&c)?,
        address,
        key: key_of(&key)?,
        revocations: list.as_deref().map(signed_of).transpose()?,
        revocations_asked_at: Timestamp::from_unix(u64::try_from(asked).unwrap_or(0)),
    })
}

const ISSUER_COLS: &str = "currency, address, key, revocations, revocations_asked_at";

pub fn issuer(conn: &Connection, currency: Currency) -> Result<Option<IssuerRow>, WalletError> {
    conn.prepare_cached(&format!(
        "SELECT {ISSUER_COLS} FROM issuers WHERE currency = ?1"
    ))?
    .query_row([currency.as_str()], issuer_row)
    .optional()?
    .map(to_issuer)
    .transpose()
}

pub fn need_issuer(conn: &Connection, currency: Currency) -> Result<IssuerRow, WalletError> {
    issuer(conn, currency)?.ok_or(WalletError::NoIssuer(currency))
}

pub fn issuers(conn: &Connection) -> Result<Vec<IssuerRow>, WalletError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ISSUER_COLS} FROM issuers ORDER BY currency"
    ))?;
    let rows = stmt.query_map([], issuer_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_issuer(r?)?);
    }
    Ok(out)
}

/// The issuer whose pinned key this is.
pub fn issuer_by_key(conn: &Connection, key: &PublicKey) -> Result<Option<IssuerRow>, WalletError> {
    conn.prepare_cached(&format!("SELECT {ISSUER_COLS} FROM issuers WHERE key = ?1"))?
        .query_row([key.as_bytes().as_slice()], issuer_row)
        .optional()?
        .map(to_issuer)
        .transpose()
}

/// The revocations to check payments against (none known: empty).
pub fn revocations(issuer: &IssuerRow) -> Revocations {
    issuer
        .revocations
        .as_ref()
        .and_then(|l| Revocations::from_signed(l, &issuer.key, issuer.currency).ok())
        .unwrap_or_else(Revocations::none)
}

// ---- agents -------------------------------------------------------------------

/// A pinned exchange agent.
#[derive(Clone, Debug)]
pub struct AgentRow {
    pub address: String,
    pub key: PublicKey,
    pub added_at: Timestamp,
}

fn to_agent((address, key, added): (String, Vec<u8>, i64)) -> Result<AgentRow, WalletError> {
    Ok(AgentRow {
        address,
        key: key_of(&key)?,
        added_at: Timestamp::from_unix(u64::try_from(added).unwrap_or(0)),
    })
}

/// The agent pinned at `address`.
pub fn agent(conn: &Connection, address: &str) -> Result<Option<AgentRow>, WalletError> {
    conn.prepare_cached("SELECT address, key, added_at FROM agents WHERE address = ?1")?
        .query_row([address], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .map(to_agent)
        .transpose()
}

pub fn need_agent(conn: &Connection, address: &str) -> Result<AgentRow, WalletError> {
    agent(conn, address)?.ok_or_else(|| {
        WalletError::refused(format!(
            "no exchange agent is pinned at {address}; pin its key with `wallet agent add {address} --key KEY`"
        ))
    })
}

/// Every pinned agent, by address.
pub fn agents(conn: &Connection) -> Result<Vec<AgentRow>, WalletError> {
    let mut stmt =
        conn.prepare_cached("SELECT address, key, added_at FROM agents ORDER BY address")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_agent(r?)?);
    }
    Ok(out)
}

// ---- accounts ---------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct AccountRow {
    pub currency: Currency,
    pub secret: i64,
    pub public: PublicKey,
    pub name: Option<String>,
    pub state: String,
    pub balance: Option<Amount>,
}

pub fn account(conn: &Connection, currency: Currency) -> Result<Option<AccountRow>, WalletError> {
    conn.prepare_cached(
        "SELECT currency, secret, public, name, state, balance FROM accounts WHERE currency = ?1",
    )?
    .query_row([currency.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })
    .optional()?
    .map(|(c, secret, public, name, state, balance)| {
        Ok(AccountRow {
            currency: currency_of(&c)?,
            secret,
            public: key_of(&public)?,
            name,
            state,
            balance: balance.map(amount_of),
        })
    })
    .transpose()
}

/// The enrolled account of `currency`, with its secret key.
pub fn enrolled_account(
    conn: &Connection,
    vault: &Vault,
    currency: Currency,
) -> Result<(AccountRow, mailer::crypto::SecretKey), WalletError> {
    let a = account(conn, currency)?.ok_or(WalletError::NoAccount(currency))?;
    if a.state != "enrolled" {
        return Err(WalletError::NotEnrolled(currency));
    }
    let key = vault.load(conn, a.secret)?;
    Ok((a, key))
}

// ---- cards ------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct CardRow {
    pub id: i64,
    pub currency: Currency,
    pub keys: CardKeys,
    pub payment_secret: i64,
    pub auth_secret: i64,
    pub license: Option<Signed<License>>,
    pub state: String,
    pub locked_by: Option<i64>,
}

impl CardRow {
    pub fn secret(&self, conn: &Connection, vault: &Vault) -> Result<CardSecret, WalletError> {
        Ok(CardSecret {
            payment: vault.load(conn, self.payment_secret)?,
            auth: vault.load(conn, self.auth_secret)?,
        })
    }
}

const CARD_COLS: &str =
    "id, currency, payment_public, auth_public, payment_secret, auth_secret, license, state, locked_by";

/// The row as the tuple of its columns (rusqlite converts rows to tuples).
fn card_row(r: &Row<'_>) -> rusqlite::Result<CardTuple> {
    CardTuple::try_from(r)
}

type CardTuple = (
    i64,
    String,
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    Option<Vec<u8>>,
    String,
    Option<i64>,
);

fn to_card(t: CardTuple) -> Result<CardRow, WalletError> {
    let (id, c, pay, auth, ps, as_, license, state, locked_by) = t;
    Ok(CardRow {
        id,
        currency: currency_of(&c)?,
        keys: CardKeys {
            payment: key_of(&pay)?,
            auth: key_of(&auth)?,
        },
        payment_secret: ps,
        auth_secret: as_,
        license: license.as_deref().map(signed_of).transpose()?,
        state,
        locked_by,
    })
}

/// The card of `currency` being licensed or in use.
pub fn card(conn: &Connection, currency: Currency) -> Result<Option<CardRow>, WalletError> {
    conn.prepare_cached(&format!(
        "SELECT {CARD_COLS} FROM cards WHERE currency = ?1 AND state IN ('licensing', 'active')"
    ))?
    .query_row([currency.as_str()], card_row)
    .optional()?
    .map(to_card)
    .transpose()
}

pub fn card_by_id(conn: &Connection, id: i64) -> Result<CardRow, WalletError> {
    let t = conn
        .prepare_cached(&format!("SELECT {CARD_COLS} FROM cards WHERE id = ?1"))?
        .query_row([id], card_row)
        .optional()?
        .ok_or_else(|| corrupt("a note's card is missing"))?;
    to_card(t)
}

/// The licensed card of `currency`.
pub fn active_card(conn: &Connection, currency: Currency) -> Result<CardRow, WalletError> {
    match card(conn, currency)? {
        Some(c) if c.state == "active" && c.license.is_some() => Ok(c),
        _ => Err(WalletError::NoCard(currency)),
    }
}

pub fn cards(conn: &Connection) -> Result<Vec<CardRow>, WalletError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {CARD_COLS} FROM cards ORDER BY id"))?;
    let rows = stmt.query_map([], card_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_card(r?)?);
    }
    Ok(out)
}

pub fn set_card_lock(conn: &Connection, card: i64, op: Option<i64>) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE cards SET locked_by = ?2 WHERE id = ?1")?
        .execute(params![card, op])?;
    Ok(())
}

// ---- licenses of other cards ---------------------------------------------

pub fn remember_licenses(
    conn: &Connection,
    licenses: &[Signed<License>],
) -> Result<(), WalletError> {
    for l in licenses {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO licenses (payment_public, license_id, license) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
                l.unverified().card.payment.as_bytes().as_slice(),
                l.id().as_bytes().as_slice(),
                l.envelope().to_bytes()?
            ])?;
    }
    Ok(())
}

/// The licenses this wallet knows of the cards that signed links in
/// `notes` (its own cards' included), to send along with them.
pub fn licenses_for(
    conn: &Connection,
    notes: &[Note],
) -> Result<Vec<Signed<License>>, WalletError> {
    let mut keys: Vec<PublicKey> = notes
        .iter()
        .flat_map(|n| n.links.iter().map(|l| *l.signer()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let own: Option<Option<Vec<u8>>> = conn
            .prepare_cached("SELECT license FROM cards WHERE payment_public = ?1")?
            .query_row([k.as_bytes().as_slice()], |r| r.get(0))
            .optional()?;
        if let Some(Some(l)) = own {
            out.push(signed_of(&l)?);
            continue;
        }
        let mut stmt = conn.prepare_cached(
            "SELECT license FROM licenses WHERE payment_public = ?1 ORDER BY license_id",
        )?;
        let rows = stmt.query_map([k.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))?;
        for r in rows {
            out.push(signed_of(&r?)?);
        }
    }
    Ok(out)
}

/// A book of the licenses `notes` need: the given ones (verified), and,
/// for every key that holds a state of the notes, those stored. Looked up
/// by key, so the cost follows the payment, not how many licenses this
/// wallet has seen (an agent sees one per customer). Each signature is
/// checked once: a stored license with the id of a given one that
/// verified has the same body (the id covers it), and this wallet's own
/// cards' licenses were checked against the pinned key when they came.
pub fn license_book(
    conn: &Connection,
    issuer: &IssuerRow,
    given: &[Signed<License>],
    notes: &[Note],
) -> Result<LicenseBook, WalletError> {
    let mut book = LicenseBook::new();
    let mut verified = Vec::new();
    for l in given {
        // A license that does not verify is simply not used; the note
        // check then says which link lacks a license.
        if book.add_signed(l, &issuer.key, issuer.currency).is_ok() {
            verified.push(l.id());
        }
    }
    let mut holders: Vec<&PublicKey> = notes
        .iter()
        .flat_map(|n| {
            std::iter::once(&n.issuance.unverified().holder)
                .chain(n.links.iter().map(|l| &l.unverified().payee))
        })
        .collect();
    holders.sort_by_key(|k| k.as_bytes());
    holders.dedup();
    let mut stmt =
        conn.prepare_cached("SELECT license_id, license FROM licenses WHERE payment_public = ?1")?;
    for key in holders {
        let rows = stmt.query_map([key.as_bytes().as_slice()], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        for r in rows {
            let (id, l) = r?;
            if verified.contains(&digest_of(&id)?) {
                continue;
            }
            let l: Signed<License> = signed_of(&l)?;
            let _ = book.add_signed(&l, &issuer.key, issuer.currency);
        }
    }
    for c in cards(conn)? {
        if let Some(l) = c.license.filter(|_| c.currency == issuer.currency) {
            if l.unverified().currency == issuer.currency {
                book.add_trusted(l.unverified().clone());
            }
        }
    }
    Ok(book)
}

// ---- notes ------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct NoteRow {
    pub state_id: Digest,
    pub card: i64,
    pub held: Amount,
    pub spent: Amount,
    pub expires_at: Timestamp,
    pub note: Note,
}

impl NoteRow {
    pub fn rest(&self) -> Amount {
        self.held.checked_sub(self.spent).unwrap_or(Amount::ZERO)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn insert_note(
    conn: &Connection,
    note: &Note,
    state_id: &Digest,
    card: i64,
    held: Amount,
    expires_at: Timestamp,
    op: i64,
    now: Timestamp,
) -> Result<(), WalletError> {
    conn.prepare_cached(
        "INSERT INTO notes (state_id, note_id, currency, card, held, expires_at, note, state, op, acquired_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'spendable', ?8, ?9)",
    )?
    .execute(params![
            state_id.as_bytes().as_slice(),
            note.id().as_bytes().as_slice(),
            note.currency().as_str(),
            card,
            sql_amount(held),
            sql_time(expires_at),
            mailer::cbor::to_vec(note).map_err(|e| WalletError::Corrupt(e.to_string()))?,
            op,
            sql_time(now),
        ])?;
    Ok(())
}

pub fn has_state(conn: &Connection, state: &Digest) -> Result<bool, WalletError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM notes WHERE state_id = ?1")?
        .query_row([state.as_bytes().as_slice()], |_| Ok(()))
        .optional()?
        .is_some())
}

type NoteTuple = (Vec<u8>, i64, i64, i64, i64, Vec<u8>);

/// The row as the tuple of its columns (rusqlite converts rows to tuples).
fn note_row(r: &Row<'_>) -> rusqlite::Result<NoteTuple> {
    NoteTuple::try_from(r)
}

fn to_note((id, card, held, spent, exp, note): NoteTuple) -> Result<NoteRow, WalletError> {
    Ok(NoteRow {
        state_id: digest_of(&id)?,
        card,
        held: amount_of(held),
        spent: amount_of(spent),
        expires_at: Timestamp::from_unix(u64::try_from(exp).unwrap_or(0)),
        note: mailer::cbor::from_slice(&note, mailer::limits::MAX_ENVELOPE_BYTES)
            .map_err(|e| WalletError::Corrupt(format!("a stored note: {e}")))?,
    })
}

const NOTE_COLS: &str = "state_id, card, held, spent, expires_at, note";

/// The spendable state of a card (?1) that covers an amount (?2) alone
/// with the least left over, expiring after ?3; the newest of equals.
fn covering_sql() -> String {
    format!(
        "SELECT {NOTE_COLS} FROM notes
         WHERE card = ?1 AND state = 'spendable' AND held - spent >= ?2 AND expires_at > ?3
         ORDER BY held - spent, acquired_at DESC, state_id DESC LIMIT 1"
    )
}

/// The spendable states of a card (?1) expiring after ?2, the largest
/// first, the oldest of equals first.
fn largest_sql() -> String {
    format!(
        "SELECT {NOTE_COLS} FROM notes
         WHERE card = ?1 AND state = 'spendable' AND expires_at > ?2
         ORDER BY held - spent DESC, acquired_at, state_id"
    )
}

/// The spendable states of `card` that [`crate::pay::choose`] picks from
/// to pay `amount` with notes that expire after `deadline`, in the order
/// it ranks them: the smallest state that covers the amount alone, else
/// the largest states until they cover it (all of them if they never
/// do). Read through the `notes_by_rest` index, so a payment reads the
/// notes it may take, not every note of the card.
pub fn candidates(
    conn: &Connection,
    card: i64,
    amount: Amount,
    deadline: Timestamp,
) -> Result<Vec<NoteRow>, WalletError> {
    let one = conn
        .prepare_cached(&covering_sql())?
        .query_row(
            params![card, sql_amount(amount), sql_time(deadline)],
            note_row,
        )
        .optional()?;
    if let Some(t) = one {
        return Ok(vec![to_note(t)?]);
    }
    let mut stmt = conn.prepare_cached(&largest_sql())?;
    let mut rows = stmt.query_map(params![card, sql_time(deadline)], note_row)?;
    let mut out = Vec::new();
    let mut sum = Amount::ZERO;
    while sum < amount {
        let Some(r) = rows.next() else { break };
        let n = to_note(r?)?;
        sum = sum
            .checked_add(n.rest())
            .ok_or_else(|| corrupt("the notes of a card overflow an amount"))?;
        out.push(n);
    }
    Ok(out)
}

/// Records `amount` paid out of `state`; the state is gone once spent.
pub fn spend(conn: &Connection, state: &Digest, amount: Amount) -> Result<(), WalletError> {
    let n = conn
        .prepare_cached(
            "UPDATE notes SET spent = spent + ?2,
                          state = CASE WHEN spent + ?2 >= held THEN 'gone' ELSE state END
         WHERE state_id = ?1 AND state = 'spendable' AND spent + ?2 <= held",
        )?
        .execute(params![state.as_bytes().as_slice(), sql_amount(amount)])?;
    if n != 1 {
        return Err(corrupt("a note chosen to pay was no longer spendable"));
    }
    Ok(())
}

/// Gives back what [`spend`] took (a payment or deposit that was
/// refused as a whole before anything was cleared).
pub fn unspend(conn: &Connection, state: &Digest, amount: Amount) -> Result<(), WalletError> {
    conn.prepare_cached(
        "UPDATE notes SET spent = MAX(spent - ?2, 0), state = 'spendable' WHERE state_id = ?1",
    )?
    .execute(params![state.as_bytes().as_slice(), sql_amount(amount)])?;
    Ok(())
}

/// One row of `notes` with its status, for readers of the whole book.
#[derive(Clone, Debug)]
pub struct StoredNote {
    pub row: NoteRow,
    pub currency: Currency,
    /// `spendable` (its rest may be paid) or `gone` (spent to the last unit).
    pub state: String,
    /// The op that brought it.
    pub op: i64,
}

/// Every note state the wallet has held, spendable or gone, by state id:
/// for checks that read the whole book (the deployment-wide conservation
/// check), not for paying.
pub fn all_notes(conn: &Connection) -> Result<Vec<StoredNote>, WalletError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {NOTE_COLS}, currency, state, op FROM notes ORDER BY state_id"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            note_row(r)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, i64>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (t, currency, state, op) = r?;
        out.push(StoredNote {
            row: to_note(t)?,
            currency: currency_of(&currency)?,
            state,
            op,
        });
    }
    Ok(out)
}

/// A request of an unfinished op that still waits for its answer, as it is
/// sent again: the envelope travelling ahead of it (an exchange's first
/// payment), then the request itself.
#[derive(Clone, Debug)]
pub struct AwaitedRequest {
    pub op: i64,
    pub kind: String,
    pub state: String,
    pub before: Option<Envelope>,
    pub request: Envelope,
}

/// The requests of every unfinished op that holds one, by op id.
pub fn awaited_requests(conn: &Connection) -> Result<Vec<AwaitedRequest>, WalletError> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, state, before_env, request_env FROM ops
         WHERE final = 0 AND request_env IS NOT NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, Vec<u8>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (op, kind, state, before, request) = r?;
        out.push(AwaitedRequest {
            op,
            kind,
            state,
            before: before.as_deref().map(envelope_of).transpose()?,
            request: envelope_of(&request)?,
        });
    }
    Ok(out)
}

/// What the wallet can spend in `currency` now (expired notes included:
/// they are still deposited). One row of `note_totals`.
pub fn spendable_total(conn: &Connection, currency: Currency) -> Result<Amount, WalletError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT spendable FROM note_totals WHERE currency = ?1")?
        .query_row([currency.as_str()], |r| r.get(0))
        .optional()?;
    Ok(amount_of(v.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use mailer::testkit::{card, TestIssuer, NOW};

    use super::*;

    #[test]
    fn the_license_book_holds_the_licenses_the_notes_need_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::db::open(&dir.path().join("w.db")).unwrap();
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        crate::ops::add_issuer(
            &conn,
            Currency::JPY,
            "i@example.test",
            jpy.key.public(),
            NOW,
        )
        .unwrap();
        let issuer = issuer(&conn, Currency::JPY).unwrap().unwrap();
        // Licenses of 50 cards seen before; the note was issued to one.
        let cards: Vec<_> = (0..50).map(|i| card(i + 20)).collect();
        let licenses: Vec<_> = cards.iter().map(|c| jpy.license(&c.keys())).collect();
        remember_licenses(&conn, &licenses).unwrap();
        let holder = &cards[7];
        let note = jpy.issue(500, &holder.keys());

        let book = license_book(&conn, &issuer, &[], std::slice::from_ref(&note)).unwrap();
        assert!(book.knows(&holder.keys().payment));
        assert!(!book.knows(&cards[8].keys().payment));
        // Licenses given with the payment count too.
        let other = card(99);
        let given = jpy.license(&other.keys());
        let book = license_book(&conn, &issuer, &[given], &[note]).unwrap();
        assert!(book.knows(&other.keys().payment));
    }

    /// A small deterministic generator (xorshift), so that a failing case
    /// replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A wallet database whose notes need no card rows.
    fn notes_db(dir: &tempfile::TempDir) -> Connection {
        let conn = crate::db::open(&dir.path().join("w.db")).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn
    }

    fn state(i: u64) -> Digest {
        mailer::crypto::digest(&[&i.to_be_bytes()])
    }

    #[test]
    fn the_whole_book_lists_spendable_and_gone_states_with_their_status() {
        let dir = tempfile::tempdir().unwrap();
        let conn = notes_db(&dir);
        let mut usd = TestIssuer::new(2, Currency::USD);
        let note = usd.issue(1_000, &card(3).keys());
        for i in 0..3 {
            insert_note(&conn, &note, &state(i), 1, Amount::new(100), NOW, 7, NOW).unwrap();
        }
        spend(&conn, &state(1), Amount::new(100)).unwrap();
        spend(&conn, &state(2), Amount::new(40)).unwrap();
        let all = all_notes(&conn).unwrap();
        let mut ids: Vec<Digest> = (0..3).map(state).collect();
        ids.sort();
        assert_eq!(all.iter().map(|n| n.row.state_id).collect::<Vec<_>>(), ids);
        let by = |i: u64| all.iter().find(|n| n.row.state_id == state(i)).unwrap();
        assert_eq!(
            (by(0).state.as_str(), by(0).row.rest()),
            ("spendable", Amount::new(100))
        );
        assert_eq!(
            (by(1).state.as_str(), by(1).row.rest()),
            ("gone", Amount::ZERO)
        );
        assert_eq!(
            (by(2).state.as_str(), by(2).row.rest()),
            ("spendable", Amount::new(60))
        );
        assert!(all.iter().all(|n| n.currency == Currency::USD && n.op == 7));
        // The book agrees with the totals the triggers keep.
        assert_eq!(
            spendable_total(&conn, Currency::USD).unwrap(),
            Amount::new(160)
        );
        assert!(awaited_requests(&conn).unwrap().is_empty());
    }

    #[test]
    fn the_indexed_candidates_give_what_choosing_among_every_note_gives() {
        use crate::pay::{choose, Spendable};
        let dir = tempfile::tempdir().unwrap();
        let conn = notes_db(&dir);
        let mut usd = TestIssuer::new(2, Currency::USD);
        let note = usd.issue(1_000_000, &card(3).keys());
        let mut rng = Rng(0x5eed);
        // Equal rests, equal times and expiries, on two cards.
        for i in 0..300 {
            let held = Amount::new(100 * (1 + rng.below(40)));
            let expires = Timestamp::from_unix(1_000 + 100 * rng.below(5));
            let at = Timestamp::from_unix(rng.below(50));
            let c = 1 + i64::from(i % 7 == 0);
            insert_note(&conn, &note, &state(i), c, held, expires, 1, at).unwrap();
            if rng.below(4) == 0 {
                let part = Amount::new(100 * rng.below(held.minor_units() / 100));
                if !part.is_zero() {
                    spend(&conn, &state(i), part).unwrap();
                }
            }
        }
        // Every spendable state of the card as the chooser saw them before:
        // oldest first.
        let all = |c: i64| -> Vec<(Digest, Amount, Timestamp)> {
            let mut stmt = conn
                .prepare(
                    "SELECT state_id, held - spent, expires_at FROM notes
                     WHERE card = ?1 AND state = 'spendable' ORDER BY acquired_at, state_id",
                )
                .unwrap();
            stmt.query_map([c], |r| {
                Ok((
                    digest_of(&r.get::<_, Vec<u8>>(0)?).unwrap(),
                    amount_of(r.get(1)?),
                    Timestamp::from_unix(r.get::<_, i64>(2)? as u64),
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        let pick = |states: &[(Digest, Amount, Timestamp)], amount, deadline| {
            let s: Vec<Spendable> = states
                .iter()
                .enumerate()
                .map(|(index, (_, rest, expires_at))| Spendable {
                    index,
                    rest: *rest,
                    expires_at: *expires_at,
                })
                .collect();
            choose(&s, amount, deadline).map(|parts| {
                parts
                    .iter()
                    .map(|p| (states[p.index].0, p.amount))
                    .collect::<Vec<_>>()
            })
        };
        let mut cases = 0;
        for c in [1, 2, 3] {
            let everything = all(c);
            for _ in 0..150 {
                let amount = Amount::new(1 + rng.below(12_000));
                let deadline = Timestamp::from_unix(900 + 100 * rng.below(6));
                let got: Vec<_> = candidates(&conn, c, amount, deadline)
                    .unwrap()
                    .iter()
                    .map(|n| (n.state_id, n.rest(), n.expires_at))
                    .collect();
                assert_eq!(
                    pick(&got, amount, deadline),
                    pick(&everything, amount, deadline),
                    "card {c}, {amount:?} after {deadline:?}"
                );
                cases += 1;
            }
        }
        assert_eq!(cases, 450);
    }

    #[test]
    fn choosing_notes_reads_through_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let conn = notes_db(&dir);
        for (sql, params) in [(covering_sql(), 3), (largest_sql(), 2)] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(vec![1; params]), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX notes_by_rest"), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }

    type Totals = Vec<(String, i64)>;

    /// Each currency's running total, and the same summed over every note.
    fn totals(conn: &Connection) -> (Totals, Totals) {
        let rows = |sql: &str| -> Totals {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        (
            rows("SELECT currency, spendable FROM note_totals WHERE spendable != 0 ORDER BY currency"),
            rows(
                "SELECT currency, SUM(held - spent) FROM notes WHERE state = 'spendable'
                 GROUP BY currency HAVING SUM(held - spent) != 0 ORDER BY currency",
            ),
        )
    }

    #[test]
    fn the_running_totals_match_the_notes_after_any_mix_of_changes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = notes_db(&dir);
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        let mut usd = TestIssuer::new(2, Currency::USD);
        let notes = [
            jpy.issue(1_000_000, &card(3).keys()),
            usd.issue(1_000_000, &card(4).keys()),
        ];
        let mut rng = Rng(0xfeed);
        let mut made = 0u64;
        for step in 0..2_000 {
            let pick = state(rng.below(made.max(1)));
            let rest: Option<(i64, i64, String)> = conn
                .query_row(
                    "SELECT held, spent, state FROM notes WHERE state_id = ?1",
                    [pick.as_bytes().as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .unwrap();
            match (rng.below(6), rest) {
                // A payment, withdrawal or change comes in.
                (0 | 1, _) | (_, None) => {
                    let n = &notes[rng.below(2) as usize];
                    let held = Amount::new(1 + rng.below(10_000));
                    let exp = Timestamp::from_unix(rng.below(3_000));
                    insert_note(&conn, n, &state(made), 1, held, exp, 1, NOW).unwrap();
                    made += 1;
                }
                // A payment, deposit or refund goes out of it, in part or whole.
                (2 | 3, Some((held, spent, s))) if s == "spendable" => {
                    let take = 1 + rng.below((held - spent) as u64);
                    spend(&conn, &pick, Amount::new(take)).unwrap();
                }
                // A refused payment or deposit is given back.
                (4, Some((_, spent, _))) if spent > 0 => {
                    unspend(&conn, &pick, Amount::new(1 + rng.below(spent as u64))).unwrap();
                }
                // Whatever else a later version may do to a row.
                (5, Some(_)) if rng.below(2) == 0 => {
                    conn.execute(
                        "DELETE FROM notes WHERE state_id = ?1",
                        [pick.as_bytes().as_slice()],
                    )
                    .unwrap();
                }
                (5, Some(_)) => {
                    conn.execute(
                        "UPDATE notes SET state = 'gone' WHERE state_id = ?1",
                        [pick.as_bytes().as_slice()],
                    )
                    .unwrap();
                }
                _ => {}
            }
            let (kept, summed) = totals(&conn);
            assert_eq!(kept, summed, "after step {step}");
        }
        for c in [Currency::JPY, Currency::USD] {
            let (kept, _) = totals(&conn);
            let want = kept
                .iter()
                .find(|(k, _)| k == c.as_str())
                .map_or(0, |(_, v)| *v);
            assert_eq!(spendable_total(&conn, c).unwrap(), amount_of(want));
        }
    }

    #[test]
    fn the_migration_sums_the_notes_already_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        {
            // A database of the version before the running totals.
            let mut conn = Connection::open(&path).unwrap();
            mailer::sqlite::migrate(&mut conn, &crate::db::MIGRATIONS[..2]).unwrap();
            conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
            for (i, (c, held, spent, st)) in [
                ("JPY", 500, 0, "spendable"),
                ("JPY", 700, 200, "spendable"),
                ("JPY", 300, 300, "gone"),
                ("USD", 900, 100, "spendable"),
            ]
            .into_iter()
            .enumerate()
            {
                conn.execute(
                    "INSERT INTO notes (state_id, note_id, currency, card, held, spent,
                                        expires_at, note, state, op, acquired_at)
                     VALUES (?1, x'00', ?2, 1, ?3, ?4, 0, x'00', ?5, 1, 0)",
                    params![state(i as u64).as_bytes().as_slice(), c, held, spent, st],
                )
                .unwrap();
            }
        }
        let conn = notes_db(&dir);
        assert_eq!(
            spendable_total(&conn, Currency::JPY).unwrap(),
            Amount::new(1_000)
        );
        assert_eq!(
            spendable_total(&conn, Currency::USD).unwrap(),
            Amount::new(800)
        );
        assert_eq!(spendable_total(&conn, Currency::EUR).unwrap(), Amount::ZERO);
    }
}
