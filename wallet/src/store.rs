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
    conn.query_row("SELECT address FROM meta WHERE id = 1", [], |r| r.get(0))
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
    conn.query_row(
        &format!("SELECT {ISSUER_COLS} FROM issuers WHERE currency = ?1"),
        [currency.as_str()],
        issuer_row,
    )
    .optional()?
    .map(to_issuer)
    .transpose()
}

pub fn need_issuer(conn: &Connection, currency: Currency) -> Result<IssuerRow, WalletError> {
    issuer(conn, currency)?.ok_or(WalletError::NoIssuer(currency))
}

pub fn issuers(conn: &Connection) -> Result<Vec<IssuerRow>, WalletError> {
    let mut stmt = conn.prepare(&format!(
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
    conn.query_row(
        &format!("SELECT {ISSUER_COLS} FROM issuers WHERE key = ?1"),
        [key.as_bytes().as_slice()],
        issuer_row,
    )
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
    conn.query_row(
        "SELECT address, key, added_at FROM agents WHERE address = ?1",
        [address],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
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
    let mut stmt = conn.prepare("SELECT address, key, added_at FROM agents ORDER BY address")?;
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
    conn.query_row(
        "SELECT currency, secret, public, name, state, balance FROM accounts WHERE currency = ?1",
        [currency.as_str()],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        },
    )
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
    conn.query_row(
        &format!(
            "SELECT {CARD_COLS} FROM cards WHERE currency = ?1 AND state IN ('licensing', 'active')"
        ),
        [currency.as_str()],
        card_row,
    )
    .optional()?
    .map(to_card)
    .transpose()
}

pub fn card_by_id(conn: &Connection, id: i64) -> Result<CardRow, WalletError> {
    let t = conn
        .query_row(
            &format!("SELECT {CARD_COLS} FROM cards WHERE id = ?1"),
            [id],
            card_row,
        )
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
    let mut stmt = conn.prepare(&format!("SELECT {CARD_COLS} FROM cards ORDER BY id"))?;
    let rows = stmt.query_map([], card_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_card(r?)?);
    }
    Ok(out)
}

pub fn set_card_lock(conn: &Connection, card: i64, op: Option<i64>) -> Result<(), WalletError> {
    conn.execute(
        "UPDATE cards SET locked_by = ?2 WHERE id = ?1",
        params![card, op],
    )?;
    Ok(())
}

// ---- licenses of other cards ---------------------------------------------

pub fn remember_licenses(
    conn: &Connection,
    licenses: &[Signed<License>],
) -> Result<(), WalletError> {
    for l in licenses {
        conn.execute(
            "INSERT OR IGNORE INTO licenses (payment_public, license_id, license) VALUES (?1, ?2, ?3)",
            params![
                l.unverified().card.payment.as_bytes().as_slice(),
                l.id().as_bytes().as_slice(),
                l.envelope().to_bytes()?
            ],
        )?;
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
            .query_row(
                "SELECT license FROM cards WHERE payment_public = ?1",
                [k.as_bytes().as_slice()],
                |r| r.get(0),
            )
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
/// wallet has seen (an agent sees one per customer).
pub fn license_book(
    conn: &Connection,
    issuer: &IssuerRow,
    given: &[Signed<License>],
    notes: &[Note],
) -> Result<LicenseBook, WalletError> {
    let mut book = LicenseBook::new();
    for l in given {
        // A license that does not verify is simply not used; the note
        // check then says which link lacks a license.
        let _ = book.add_signed(l, &issuer.key, issuer.currency);
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
    let mut stmt = conn.prepare_cached("SELECT license FROM licenses WHERE payment_public = ?1")?;
    for key in holders {
        let rows = stmt.query_map([key.as_bytes().as_slice()], |r| r.get::<_, Vec<u8>>(0))?;
        for r in rows {
            let l: Signed<License> = signed_of(&r?)?;
            let _ = book.add_signed(&l, &issuer.key, issuer.currency);
        }
    }
    for c in cards(conn)? {
        if let Some(l) = &c.license {
            let _ = book.add_signed(l, &issuer.key, issuer.currency);
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
    conn.execute(
        "INSERT INTO notes (state_id, note_id, currency, card, held, expires_at, note, state, op, acquired_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'spendable', ?8, ?9)",
        params![
            state_id.as_bytes().as_slice(),
            note.id().as_bytes().as_slice(),
            note.currency().as_str(),
            card,
            sql_amount(held),
            sql_time(expires_at),
            mailer::cbor::to_vec(note).map_err(|e| WalletError::Corrupt(e.to_string()))?,
            op,
            sql_time(now),
        ],
    )?;
    Ok(())
}

pub fn has_state(conn: &Connection, state: &Digest) -> Result<bool, WalletError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM notes WHERE state_id = ?1",
            [state.as_bytes().as_slice()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn note_rows(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<NoteRow>, WalletError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(p, |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Vec<u8>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, card, held, spent, exp, note) = r?;
        out.push(NoteRow {
            state_id: digest_of(&id)?,
            card,
            held: amount_of(held),
            spent: amount_of(spent),
            expires_at: Timestamp::from_unix(u64::try_from(exp).unwrap_or(0)),
            note: mailer::cbor::from_slice(&note, mailer::limits::MAX_ENVELOPE_BYTES)
                .map_err(|e| WalletError::Corrupt(format!("a stored note: {e}")))?,
        });
    }
    Ok(out)
}

const NOTE_COLS: &str = "state_id, card, held, spent, expires_at, note";

/// The spendable states of `card`, oldest first.
pub fn spendable(conn: &Connection, card: i64) -> Result<Vec<NoteRow>, WalletError> {
    note_rows(
        conn,
        &format!("SELECT {NOTE_COLS} FROM notes WHERE card = ?1 AND state = 'spendable' ORDER BY acquired_at, state_id"),
        [card],
    )
}

/// Records `amount` paid out of `state`; the state is gone once spent.
pub fn spend(conn: &Connection, state: &Digest, amount: Amount) -> Result<(), WalletError> {
    let n = conn.execute(
        "UPDATE notes SET spent = spent + ?2,
                          state = CASE WHEN spent + ?2 >= held THEN 'gone' ELSE state END
         WHERE state_id = ?1 AND state = 'spendable' AND spent + ?2 <= held",
        params![state.as_bytes().as_slice(), sql_amount(amount)],
    )?;
    if n != 1 {
        return Err(corrupt("a note chosen to pay was no longer spendable"));
    }
    Ok(())
}

/// Gives back what [`spend`] took (a payment or deposit that was
/// refused as a whole before anything was cleared).
pub fn unspend(conn: &Connection, state: &Digest, amount: Amount) -> Result<(), WalletError> {
    conn.execute(
        "UPDATE notes SET spent = MAX(spent - ?2, 0), state = 'spendable' WHERE state_id = ?1",
        params![state.as_bytes().as_slice(), sql_amount(amount)],
    )?;
    Ok(())
}

/// What the wallet can spend in `currency` now.
pub fn spendable_total(conn: &Connection, currency: Currency) -> Result<Amount, WalletError> {
    let v: i64 = conn.query_row(
        "SELECT COALESCE(SUM(held - spent), 0) FROM notes WHERE currency = ?1 AND state = 'spendable'",
        [currency.as_str()],
        |r| r.get(0),
    )?;
    Ok(amount_of(v))
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
}
