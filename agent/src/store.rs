//! Typed queries over the agent's tables (the float itself is the
//! wallet's: `wallet::store`).

use mailer::crypto::{Digest, Id};
use mailer::envelope::{Envelope, Signed};
use mailer::messages::{Offer, OfferTerms, SignedOffer};
use mailer::money::{Amount, Currency, Rate, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};
use wallet::store::{amount_of, currency_of, envelope_of, sql_amount, sql_time};

use crate::error::AgentError;
use crate::pricing::Pricing;

pub fn time_of(v: i64) -> Timestamp {
    Timestamp::from_unix(u64::try_from(v).unwrap_or(0))
}

// ---- rates -------------------------------------------------------------------

pub fn set_rate(conn: &Connection, p: &Pricing, now: Timestamp) -> Result<(), AgentError> {
    conn.prepare_cached(
        "INSERT INTO rates (pay, receive, mid_mantissa, mid_scale, spread_bp, min, max, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (pay, receive) DO UPDATE SET mid_mantissa = ?3, mid_scale = ?4,
             spread_bp = ?5, min = ?6, max = ?7, updated_at = ?8",
    )?
    .execute(params![
        p.pay.as_str(),
        p.receive.as_str(),
        i64::try_from(p.mid.mantissa).map_err(|_| AgentError::refused("the rate is too large"))?,
        i64::from(p.mid.scale),
        i64::from(p.spread_bp),
        sql_amount(p.min),
        sql_amount(p.max),
        sql_time(now)
    ])?;
    Ok(())
}

type RateTuple = (String, String, i64, i64, i64, i64, i64);

fn to_pricing(t: RateTuple) -> Result<Pricing, AgentError> {
    let (pay, receive, m, s, bp, min, max) = t;
    Ok(Pricing {
        pay: currency_of(&pay)?,
        receive: currency_of(&receive)?,
        mid: Rate {
            mantissa: u64::try_from(m).unwrap_or(0),
            scale: u8::try_from(s).unwrap_or(u8::MAX),
        },
        spread_bp: u32::try_from(bp).unwrap_or(u32::MAX),
        min: amount_of(min),
        max: amount_of(max),
    })
}

/// The row as the tuple of its columns (rusqlite converts rows to tuples).
fn rate_row(r: &Row<'_>) -> rusqlite::Result<RateTuple> {
    RateTuple::try_from(r)
}

const RATE_COLS: &str = "pay, receive, mid_mantissa, mid_scale, spread_bp, min, max";

pub fn rate(
    conn: &Connection,
    pay: Currency,
    receive: Currency,
) -> Result<Option<Pricing>, AgentError> {
    conn.prepare_cached(&format!(
        "SELECT {RATE_COLS} FROM rates WHERE pay = ?1 AND receive = ?2"
    ))?
    .query_row([pay.as_str(), receive.as_str()], rate_row)
    .optional()?
    .map(to_pricing)
    .transpose()
}

pub fn rates(conn: &Connection) -> Result<Vec<Pricing>, AgentError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RATE_COLS} FROM rates ORDER BY pay, receive"
    ))?;
    let rows = stmt.query_map([], rate_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_pricing(r?)?);
    }
    Ok(out)
}

// ---- float limits ------------------------------------------------------------

pub fn set_limits(
    conn: &Connection,
    currency: Currency,
    low: Amount,
    high: Amount,
) -> Result<(), AgentError> {
    if high < low {
        return Err(AgentError::refused(
            "the high-water mark must not be below the low-water mark",
        ));
    }
    conn.prepare_cached(
        "INSERT INTO float_limits (currency, low, high) VALUES (?1, ?2, ?3)
         ON CONFLICT (currency) DO UPDATE SET low = ?2, high = ?3",
    )?
    .execute(params![
        currency.as_str(),
        sql_amount(low),
        sql_amount(high)
    ])?;
    Ok(())
}

pub fn limits(conn: &Connection) -> Result<Vec<(Currency, Amount, Amount)>, AgentError> {
    let mut stmt =
        conn.prepare_cached("SELECT currency, low, high FROM float_limits ORDER BY currency")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (c, low, high) = r?;
        out.push((currency_of(&c)?, amount_of(low), amount_of(high)));
    }
    Ok(out)
}

// ---- trades ------------------------------------------------------------------

/// One exchange transaction as the agent keeps it.
#[derive(Clone, Debug)]
pub struct Trade {
    pub tr_id: Id,
    pub state: String,
    pub peer: String,
    pub offer: Signed<Offer>,
    pub signed_offer: Option<Signed<SignedOffer>>,
    pub acceptance: Option<Envelope>,
    pub first_payment: Option<Envelope>,
    pub paid: Amount,
    pub request: Option<Envelope>,
    pub second_payment: Option<Envelope>,
    pub refund: Option<Envelope>,
    pub detail: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Trade {
    pub fn terms(&self) -> &OfferTerms {
        &self.offer.unverified().terms
    }
}

const TRADE_COLS: &str = "tr_id, state, peer, offer, signed_offer, acceptance, first_payment, paid, request, second_payment, refund, detail, created_at, updated_at";

type TradeTuple = (
    Vec<u8>,
    String,
    String,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    String,
    i64,
    i64,
);

/// The row as the tuple of its columns (rusqlite converts rows to tuples).
fn trade_row(r: &Row<'_>) -> rusqlite::Result<TradeTuple> {
    TradeTuple::try_from(r)
}

fn env(b: Option<Vec<u8>>) -> Result<Option<Envelope>, AgentError> {
    Ok(b.as_deref().map(envelope_of).transpose()?)
}

fn to_trade(t: TradeTuple) -> Result<Trade, AgentError> {
    let (id, state, peer, offer, so, acc, fp, paid, req, sp, refund, detail, created, updated) = t;
    let corrupt = |what: &str| AgentError::Corrupt(format!("trade {}: {what}", hex_of(&id)));
    Ok(Trade {
        tr_id: Id::from_slice(&id).ok_or_else(|| corrupt("its id"))?,
        state,
        peer,
        offer: Signed::from_envelope(envelope_of(&offer)?).map_err(|_| corrupt("its offer"))?,
        signed_offer: env(so)?
            .map(Signed::from_envelope)
            .transpose()
            .map_err(|_| corrupt("its signed offer"))?,
        acceptance: env(acc)?,
        first_payment: env(fp)?,
        paid: amount_of(paid),
        request: env(req)?,
        second_payment: env(sp)?,
        refund: env(refund)?,
        detail,
        created_at: time_of(created),
        updated_at: time_of(updated),
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn trades_where(
    conn: &Connection,
    cond: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<Trade>, AgentError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRADE_COLS} FROM trades WHERE {cond} ORDER BY created_at, tr_id"
    ))?;
    let rows = stmt.query_map(p, trade_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(to_trade(r?)?);
    }
    Ok(out)
}

pub fn trade(conn: &Connection, tr_id: &Id) -> Result<Option<Trade>, AgentError> {
    Ok(trades_where(conn, "tr_id = ?1", [tr_id.as_bytes().as_slice()])?.pop())
}

pub fn trades(conn: &Connection) -> Result<Vec<Trade>, AgentError> {
    trades_where(conn, "1 = 1", [])
}

/// Trades not finished (offered, signed, paid).
pub fn open_trades(conn: &Connection) -> Result<Vec<Trade>, AgentError> {
    trades_where(conn, "state IN ('offered', 'signed', 'paid')", [])
}

pub fn insert_trade(
    conn: &Connection,
    offer: &Signed<Offer>,
    peer: &str,
    now: Timestamp,
) -> Result<(), AgentError> {
    let t = &offer.unverified().terms;
    conn.prepare_cached(
        "INSERT INTO trades (tr_id, state, peer, pay_currency, a1, d1, receive_currency, a2, d2, rate,
                             offer, created_at, updated_at)
         VALUES (?1, 'offered', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    )?
    .execute(params![
        t.tr_id.as_bytes().as_slice(),
        peer,
        t.pay_currency.as_str(),
        sql_amount(t.a1),
        sql_time(t.d1),
        t.receive_currency.as_str(),
        sql_amount(t.a2),
        sql_time(t.d2),
        t.rate.to_string(),
        offer.envelope().to_bytes()?,
        sql_time(now)
    ])?;
    Ok(())
}

/// Moves a trade to `state`, setting the envelope columns named in
/// `columns` (the trade's envelope columns only).
pub fn set_trade(
    conn: &Connection,
    tr_id: &Id,
    state: &str,
    columns: &[(&str, &Envelope)],
    detail: &str,
    now: Timestamp,
) -> Result<(), AgentError> {
    for (col, e) in columns {
        if !matches!(
            *col,
            "signed_offer"
                | "acceptance"
                | "first_payment"
                | "request"
                | "second_payment"
                | "refund"
        ) {
            return Err(AgentError::Corrupt(format!("no trade column {col}")));
        }
        conn.prepare_cached(&format!("UPDATE trades SET {col} = ?2 WHERE tr_id = ?1"))?
            .execute(params![tr_id.as_bytes().as_slice(), e.to_bytes()?])?;
    }
    conn.prepare_cached(
        "UPDATE trades SET state = ?2, detail = ?3, updated_at = ?4 WHERE tr_id = ?1",
    )?
    .execute(params![
        tr_id.as_bytes().as_slice(),
        state,
        detail,
        sql_time(now)
    ])?;
    Ok(())
}

pub fn set_paid(conn: &Connection, tr_id: &Id, paid: Amount) -> Result<(), AgentError> {
    conn.prepare_cached("UPDATE trades SET paid = ?2 WHERE tr_id = ?1")?
        .execute(params![tr_id.as_bytes().as_slice(), sql_amount(paid)])?;
    Ok(())
}

/// What the agent has promised in `currency` and not yet paid: A2 of
/// every signed offer whose first payment may still come (before D1) and
/// of every paid one whose second payment may still be asked (before D2).
pub fn reserved(
    conn: &Connection,
    currency: Currency,
    now: Timestamp,
) -> Result<Amount, AgentError> {
    let v: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(a2), 0) FROM trades
         WHERE receive_currency = ?1
           AND ((state = 'signed' AND d1 >= ?2) OR (state = 'paid' AND d2 >= ?2))",
        )?
        .query_row(params![currency.as_str(), sql_time(now)], |r| r.get(0))?;
    Ok(amount_of(v))
}

/// Open trades whose deadline has passed: signed offers not paid by D1,
/// paid ones not asked for by D2, offers not accepted by D1.
pub fn lapsed(conn: &Connection, now: Timestamp) -> Result<Vec<Trade>, AgentError> {
    trades_where(
        conn,
        "(state IN ('offered', 'signed') AND d1 < ?1) OR (state = 'paid' AND d2 < ?1)",
        [sql_time(now)],
    )
}

// ---- requests decided --------------------------------------------------------

/// A request decided before, and the reply it got.
#[derive(Clone, Debug)]
pub struct Decided {
    pub kind: String,
    pub reply: Option<Envelope>,
}

pub fn decided(conn: &Connection, id: &Digest) -> Result<Option<Decided>, AgentError> {
    let row: Option<(String, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT kind, reply FROM agent_requests WHERE id = ?1")?
        .query_row([id.as_bytes().as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(kind, reply)| {
        Ok(Decided {
            kind,
            reply: env(reply)?,
        })
    })
    .transpose()
}

pub fn record(
    conn: &Connection,
    request: &Envelope,
    tr_id: Option<&Id>,
    reply: Option<&Envelope>,
    now: Timestamp,
) -> Result<(), AgentError> {
    conn.prepare_cached(
        "INSERT INTO agent_requests (id, kind, tr_id, reply, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        request.id().as_bytes().as_slice(),
        request.kind(),
        tr_id.map(|t| t.as_bytes().to_vec()),
        reply.map(|r| r.to_bytes()).transpose()?,
        sql_time(now)
    ])?;
    Ok(())
}

/// Counts one more sending of a stored reply; returns the count before.
pub fn count_resend(conn: &Connection, id: &Digest) -> Result<u64, AgentError> {
    let n: i64 = conn
        .prepare_cached(
            "UPDATE agent_requests SET sends = sends + 1 WHERE id = ?1 RETURNING sends",
        )?
        .query_row([id.as_bytes().as_slice()], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

// ---- warnings ----------------------------------------------------------------

pub fn warn(
    conn: &Connection,
    currency: Option<Currency>,
    text: &str,
    now: Timestamp,
) -> Result<(), AgentError> {
    tracing::warn!(currency = currency.map(|c| c.to_string()), "{text}");
    conn.prepare_cached("INSERT INTO warnings (at, currency, text) VALUES (?1, ?2, ?3)")?
        .execute(params![
            sql_time(now),
            currency.map(|c| c.to_string()),
            text
        ])?;
    Ok(())
}

/// The newest `n` warnings, newest first.
pub fn warnings(conn: &Connection, n: u32) -> Result<Vec<(Timestamp, String)>, AgentError> {
    let mut stmt =
        conn.prepare_cached("SELECT at, text FROM warnings ORDER BY id DESC LIMIT ?1")?;
    let rows = stmt.query_map([n], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for r in rows {
        let (at, text) = r?;
        out.push((time_of(at), text));
    }
    Ok(out)
}
