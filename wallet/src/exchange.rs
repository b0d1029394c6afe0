//! Currency exchange through an untrusted agent, the user's side
//! (docs/protocol.md section 4.4; the paper's three phases). One op of kind
//! `exchange` per exchange, a durable state machine:
//!
//! | state       | what happened, what it waits for                          |
//! |-------------|-----------------------------------------------------------|
//! | `quoting`   | quote request sent (signed by the paying card); waits for the offer |
//! | `offered`   | the offer verified and kept; waits for the user (or the policy) |
//! | `accepting` | acceptance sent (signed by the receiving card); waits for the signed offer |
//! | `paying`    | signed offer verified; first payment and second-payment request sent in one mail; waits for the second payment |
//! | `done`      | the second payment verified; its notes are on the receiving card |
//! | `refunded`  | the agent returned the first payment; its notes are back on the paying card |
//! | `failed`    | refused or aborted (the detail says why, and what to keep) |
//! | `declined`  | the user said no before paying |
//! | `expired`   | D1 passed before the first payment could be made |
//!
//! Every step decides, changes state and queues its mail in the caller's
//! transaction. Answers are matched by the ids they name (offer -> quote,
//! signed offer -> acceptance, second payment -> request, refund -> first
//! payment) or the TrID, and must be signed by the agent key pinned for the
//! agent's address (`wallet agent add`). The receiving card is locked from
//! the first payment until the exchange ends; the paying card is not (its
//! links are signed and queued in one transaction). Every envelope is kept,
//! and [`evidence`] exports them as a bundle anyone can check
//! ([`mailer::evidence`]).

use mailer::crypto::{Challenge, Digest, Id, PublicKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::evidence::{terms_difference, ExchangeEvidence, EVIDENCE_VERSION, MAX_EVIDENCE_ERRORS};
use mailer::license::CardKeys;
use mailer::messages::{
    ErrorCode, ErrorReply, FirstPayment, Offer, OfferAcceptance, OfferTerms, QuoteAmount,
    QuoteRequest, Refund, SecondPayment, SecondPaymentRequest, SignedOffer,
};
use mailer::money::{Amount, Currency, Money, Rate, Timestamp};
use mailer::note::Expect;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::error::WalletError;
use crate::handler::{self, Outcome};
use crate::ops::{self, NewOp, Op, OpData, Wallet};
use crate::store;

/// The op kind.
pub const KIND: &str = "exchange";

/// How long after D2 a paid exchange waits for the second payment before
/// it is marked failed (a late second payment is still taken).
pub const SECOND_PAYMENT_GRACE_SECS: u64 = 7 * 86_400;

/// When an offer is accepted without asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Wait for `wallet exchange accept`.
    Ask,
    /// Accept any offer that passes the checks (`--yes`).
    Any,
    /// Accept when the price, A1/A2 in major units (units of the paying
    /// currency per one unit of the receiving currency), is at most this
    /// (`--max-rate`).
    MaxRate(Rate),
}

impl Policy {
    /// Whether this policy accepts `terms` without asking.
    pub fn accepts(&self, terms: &OfferTerms) -> bool {
        match self {
            Policy::Ask => false,
            Policy::Any => true,
            Policy::MaxRate(r) => price_at_most(terms, r),
        }
    }

    pub fn describe(&self, pay: Currency, receive: Currency) -> String {
        match self {
            Policy::Ask => "ask".into(),
            Policy::Any => "accept any offer".into(),
            Policy::MaxRate(r) => format!("accept at most {r} {pay} per {receive}"),
        }
    }
}

/// Whether A1/A2 (major units) <= `max`, exactly:
/// `a1 / 10^d1 <= max.mantissa / 10^scale * a2 / 10^d2`, i.e.
/// `a1 * 10^d2 * 10^scale <= mantissa * a2 * 10^d1`.
pub fn price_at_most(t: &OfferTerms, max: &Rate) -> bool {
    let pow = |d: u8| 10u128.checked_pow(u32::from(d));
    let lhs = u128::from(t.a1.minor_units())
        .checked_mul(pow(t.receive_currency.minor_digits()).unwrap_or(u128::MAX))
        .and_then(|v| v.checked_mul(pow(max.scale)?));
    let rhs = u128::from(max.mantissa)
        .checked_mul(u128::from(t.a2.minor_units()))
        .and_then(|v| v.checked_mul(pow(t.pay_currency.minor_digits())?));
    match (lhs, rhs) {
        (Some(l), Some(r)) => l <= r,
        // The right side outgrew 128 bits (the left cannot, with at most
        // 12 decimals): it is the larger.
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The price A1/A2 for people: "149.2537 JPY per USD" (rounded down to 6
/// decimals, trailing zeros dropped).
pub fn price_text(t: &OfferTerms) -> String {
    const DECIMALS: u32 = 6;
    let num = u128::from(t.a1.minor_units())
        .checked_mul(10u128.pow(u32::from(t.receive_currency.minor_digits())))
        .and_then(|v| v.checked_mul(10u128.pow(DECIMALS)));
    let den = u128::from(t.a2.minor_units())
        .checked_mul(10u128.pow(u32::from(t.pay_currency.minor_digits())));
    let q = match (num, den) {
        (Some(n), Some(d)) if d > 0 => n / d,
        _ => return "-".into(),
    };
    let scale = 10u128.pow(DECIMALS);
    let frac = format!("{:06}", q % scale);
    let frac = frac.trim_end_matches('0');
    let int = q / scale;
    let n = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    format!("{n} {} per {}", t.pay_currency, t.receive_currency)
}

/// What an exchange op keeps (in `OpData::exchange`): the request, the
/// policy, the cards, and every envelope of the exchange.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExchangeData {
    pub from: Currency,
    pub to: Currency,
    pub amount: QuoteAmount,
    pub policy: Policy,
    /// The card that pays (`from`) and the card that receives (`to`).
    pub pay_card: i64,
    pub receive_card: i64,
    #[serde(default)]
    pub quote: Option<Envelope>,
    #[serde(default)]
    pub offer: Option<Envelope>,
    #[serde(default)]
    pub acceptance: Option<Envelope>,
    #[serde(default)]
    pub signed_offer: Option<Envelope>,
    #[serde(default)]
    pub first_payment: Option<Envelope>,
    #[serde(default)]
    pub second_request: Option<Envelope>,
    #[serde(default)]
    pub second_payment: Option<Envelope>,
    #[serde(default)]
    pub refund: Option<Envelope>,
    /// Error replies received, as evidence (at most
    /// [`MAX_EVIDENCE_ERRORS`]).
    #[serde(default)]
    pub errors: Vec<Envelope>,
}

impl ExchangeData {
    fn typed<T: Body>(env: &Option<Envelope>) -> Result<Option<Signed<T>>, WalletError> {
        env.clone()
            .map(|e| {
                Signed::<T>::from_envelope(e)
                    .map_err(|e| WalletError::Corrupt(format!("a stored {}: {e}", T::KIND)))
            })
            .transpose()
    }
    pub fn offer(&self) -> Result<Option<Signed<Offer>>, WalletError> {
        Self::typed(&self.offer)
    }
    pub fn signed_offer(&self) -> Result<Option<Signed<SignedOffer>>, WalletError> {
        Self::typed(&self.signed_offer)
    }
    pub fn first_payment(&self) -> Result<Option<Signed<FirstPayment>>, WalletError> {
        Self::typed(&self.first_payment)
    }
    pub fn second_request(&self) -> Result<Option<Signed<SecondPaymentRequest>>, WalletError> {
        Self::typed(&self.second_request)
    }
    /// The terms, once an offer is kept (the signed offer's, once that is).
    pub fn terms(&self) -> Result<Option<OfferTerms>, WalletError> {
        if let Some(s) = self.signed_offer()? {
            return Ok(Some(s.unverified().terms.clone()));
        }
        Ok(self.offer()?.map(|o| o.unverified().terms.clone()))
    }

    /// Every envelope held, with its role, in the order of the exchange.
    pub fn envelopes(&self) -> Vec<(&'static str, &Envelope)> {
        let named = [
            ("quote-request", &self.quote),
            ("offer", &self.offer),
            ("offer-acceptance", &self.acceptance),
            ("signed-offer", &self.signed_offer),
            ("first-payment", &self.first_payment),
            ("second-payment-request", &self.second_request),
            ("second-payment", &self.second_payment),
            ("refund", &self.refund),
        ];
        let mut out: Vec<(&'static str, &Envelope)> = named
            .into_iter()
            .filter_map(|(role, e)| e.as_ref().map(|e| (role, e)))
            .collect();
        out.extend(self.errors.iter().map(|e| ("error", e)));
        out
    }
}

fn data(op: &Op) -> Result<ExchangeData, WalletError> {
    op.data
        .exchange
        .clone()
        .ok_or_else(|| WalletError::Corrupt(format!("exchange {} keeps no exchange data", op.id)))
}

fn save(conn: &Connection, op: &Op, x: ExchangeData) -> Result<(), WalletError> {
    let mut d = op.data.clone();
    d.exchange = Some(x);
    ops::set_data(conn, op.id, &d)
}

fn sign<T: Body>(body: T, key: &mailer::crypto::SecretKey) -> Result<Envelope, WalletError> {
    Ok(Signed::sign(body, key)?.into_envelope())
}

fn set_detail(conn: &Connection, op: i64, detail: &str) -> Result<(), WalletError> {
    conn.prepare_cached("UPDATE ops SET detail = ?2 WHERE id = ?1")?
        .execute(params![op, detail])?;
    Ok(())
}

fn tr_hex(op: &Op) -> String {
    op.transfer
        .map(|t| t.to_hex())
        .unwrap_or_else(|| format!("#{}", op.id))
}

fn money(a: Amount, c: Currency) -> Money {
    Money::new(a, c)
}

// ---- pinned agents ------------------------------------------------------------

/// Pins the key of the agent at `address`. A pinned key is never replaced:
/// the same key again is fine, another key is refused. Returns whether the
/// agent was new.
pub fn add_agent(
    conn: &Connection,
    address: &str,
    key: PublicKey,
    now: Timestamp,
) -> Result<bool, WalletError> {
    let address = address.trim();
    mailer::mime::parse_address(address)
        .map_err(|e| WalletError::refused(format!("{address:?} is not a mail address: {e}")))?;
    if let Some(old) = store::agent(conn, address)? {
        if old.key != key {
            return Err(WalletError::refused(format!(
                "the agent {address} is pinned to another key ({}); a wallet never changes a pinned key",
                old.key.fingerprint()
            )));
        }
        return Ok(false);
    }
    conn.prepare_cached("INSERT INTO agents (address, key, added_at) VALUES (?1, ?2, ?3)")?
        .execute(params![
            address,
            key.as_bytes().as_slice(),
            store::sql_time(now)
        ])?;
    Ok(true)
}

/// The pinned key of the op's agent.
fn agent_key_of(conn: &Connection, op: &Op) -> Result<PublicKey, WalletError> {
    Ok(store::need_agent(conn, &op.peer)?.key)
}

/// The exchange an agent's envelope answers (it names the envelope
/// `named` we sent, or the TrID) and the agent's pinned key, which must
/// have signed it; else why the envelope is not used. `what` names the
/// envelope in that reason ("an offer").
fn from_agent(
    conn: &Connection,
    named: &Digest,
    tr_id: &Id,
    env: &Envelope,
    what: &str,
) -> Result<Result<(Op, PublicKey), Outcome>, WalletError> {
    let Some(op) = op_for(conn, named, tr_id)? else {
        return Ok(Err(Outcome::Ignored(format!(
            "{what} for no exchange of ours"
        ))));
    };
    let agent = agent_key_of(conn, &op)?;
    if env.verify_signer(&agent).is_err() {
        return Ok(Err(Outcome::Ignored(format!(
            "{what} not signed by the pinned key of the agent {}",
            op.peer
        ))));
    }
    Ok(Ok((op, agent)))
}

/// For the error handler: the key that may sign errors about `op`.
pub fn agent_key(conn: &Connection, op: &Op) -> Result<Option<PublicKey>, WalletError> {
    Ok(store::agent(conn, &op.peer)?.map(|a| a.key))
}

// ---- what the user starts -------------------------------------------------

/// Starts an exchange: asks the agent at `agent_address` (pinned) for an
/// offer to pay `from` and receive `to`, `amount` fixing one side. The
/// quote request is signed by the paying card's authentication key.
/// Returns the op's id.
#[allow(clippy::too_many_arguments)]
pub fn start(
    conn: &Connection,
    w: &Wallet,
    agent_address: &str,
    from: Currency,
    to: Currency,
    amount: QuoteAmount,
    policy: Policy,
    now: Timestamp,
) -> Result<i64, WalletError> {
    let agent = store::need_agent(conn, agent_address.trim())?;
    if from == to {
        return Err(WalletError::refused(format!(
            "an exchange is between two currencies; {from} to {from} is not one"
        )));
    }
    let fixed = match amount {
        QuoteAmount::Pay(a) | QuoteAmount::Receive(a) => a,
    };
    if fixed.is_zero() {
        return Err(WalletError::refused("exchange more than zero"));
    }
    store::need_issuer(conn, from)?;
    store::need_issuer(conn, to)?;
    let pay_card = store::active_card(conn, from)?;
    let receive_card = store::active_card(conn, to)?;
    if let QuoteAmount::Pay(a) = amount {
        let available = store::spendable_total(conn, from)?;
        if available < a {
            return Err(WalletError::InsufficientFunds {
                currency: from,
                available: available.display_major(from),
                wanted: a.display_major(from),
            });
        }
    }
    let secret = pay_card.secret(conn, &w.vault)?;
    let quote = sign(
        QuoteRequest {
            request_id: Id::random(),
            from,
            to,
            amount,
        },
        &secret.auth,
    )?;
    let op = ops::insert_op(
        conn,
        &NewOp {
            kind: KIND,
            currency: from,
            amount: match amount {
                QuoteAmount::Pay(a) => a,
                QuoteAmount::Receive(_) => Amount::ZERO,
            },
            peer: &agent.address,
            memo: "",
            state: "quoting",
            transfer: None,
            data: OpData {
                card: Some(pay_card.id),
                exchange: Some(ExchangeData {
                    from,
                    to,
                    amount,
                    policy,
                    pay_card: pay_card.id,
                    receive_card: receive_card.id,
                    quote: Some(quote.clone()),
                    offer: None,
                    acceptance: None,
                    signed_offer: None,
                    first_payment: None,
                    second_request: None,
                    second_payment: None,
                    refund: None,
                    errors: Vec::new(),
                }),
                ..OpData::default()
            },
        },
        now,
    )?;
    let subject = match amount {
        QuoteAmount::Pay(a) => format!("exchange: pay {} for {to}", money(a, from)),
        QuoteAmount::Receive(a) => format!("exchange: receive {} for {from}", money(a, to)),
    };
    w.send_request(conn, op, &agent.address, &subject, &quote, now)?;
    Ok(op)
}

/// The exchange op named by `text`: a TrID (32 hex digits) or an op number
/// (`7` or `#7`).
pub fn find(conn: &Connection, text: &str) -> Result<Op, WalletError> {
    let t = text.trim();
    let op = if let Some(id) = (t.len() == 2 * Id::LEN).then(|| Id::from_hex(t)).flatten() {
        ops::op_by_transfer(conn, KIND, &id)?
    } else if let Ok(n) = t.trim_start_matches('#').parse::<i64>() {
        ops::ops_of_kind(conn, KIND)?
            .into_iter()
            .find(|o| o.id == n)
    } else {
        return Err(WalletError::refused(format!(
            "{t:?} names no exchange: give its TrID (32 hex digits) or its operation number; `wallet exchange status` lists them"
        )));
    };
    op.ok_or_else(|| {
        WalletError::refused(format!(
            "no exchange {t} in this wallet; `wallet exchange status` lists them"
        ))
    })
}

/// Accepts the offer of exchange `op_id` (state `offered`): signs the
/// acceptance with the receiving card's authentication key and sends it.
/// Returns the new state: `accepting`, or `expired` if D1 has passed.
pub fn accept(
    conn: &Connection,
    w: &Wallet,
    op_id: i64,
    now: Timestamp,
) -> Result<&'static str, WalletError> {
    let op = ops::op(conn, op_id)?;
    if op.kind != KIND {
        return Err(WalletError::refused(format!(
            "operation #{op_id} is a {}, not an exchange",
            op.kind
        )));
    }
    if op.state != "offered" {
        return Err(WalletError::refused(format!(
            "exchange #{op_id} is {}: only an offered exchange can be accepted",
            op.state
        )));
    }
    accept_op(conn, w, &op, now)
}

fn accept_op(
    conn: &Connection,
    w: &Wallet,
    op: &Op,
    now: Timestamp,
) -> Result<&'static str, WalletError> {
    let mut x = data(op)?;
    let Some(offer) = x.offer()? else {
        return Err(WalletError::Corrupt(format!(
            "exchange {} is offered but keeps no offer",
            op.id
        )));
    };
    let t = offer.unverified().terms.clone();
    if now > t.d1 {
        ops::set_state(
            conn,
            op,
            "expired",
            &format!(
                "the offer expired at {} (D1) before it was accepted; nothing was paid",
                t.d1
            ),
            now,
        )?;
        return Ok("expired");
    }
    let card = store::card_by_id(conn, x.receive_card)?;
    if card.state != "active" {
        ops::set_state(
            conn,
            op,
            "failed",
            &format!(
                "the receiving {} card is {}; nothing was paid",
                card.currency, card.state
            ),
            now,
        )?;
        return Ok("failed");
    }
    let secret = card.secret(conn, &w.vault)?;
    let acceptance = sign(
        OfferAcceptance {
            tr_id: t.tr_id,
            offer: offer.id(),
            receiver: card.keys,
        },
        &secret.auth,
    )?;
    x.acceptance = Some(acceptance.clone());
    save(conn, op, x)?;
    ops::set_state(
        conn,
        op,
        "accepting",
        "accepted; waiting for the agent's signed offer",
        now,
    )?;
    w.send_request(
        conn,
        op.id,
        &op.peer,
        &format!("exchange {}: accepted", t.tr_id.to_hex()),
        &acceptance,
        now,
    )?;
    Ok("accepting")
}

/// Declines exchange `op_id` before anything is paid (states `quoting`,
/// `offered`, `accepting`): nothing more is sent; an offer or signed offer
/// that arrives later is ignored.
pub fn decline(conn: &Connection, op_id: i64, now: Timestamp) -> Result<(), WalletError> {
    let op = ops::op(conn, op_id)?;
    if op.kind != KIND || !matches!(op.state.as_str(), "quoting" | "offered" | "accepting") {
        return Err(WalletError::refused(format!(
            "operation #{op_id} ({} {}) cannot be declined: only an exchange that has not paid yet can",
            op.kind, op.state
        )));
    }
    ops::set_state(
        conn,
        &op,
        "declined",
        "declined by the user; nothing was paid",
        now,
    )
}

/// Moves exchanges on by the clock: an offer the policy accepts (again,
/// after a crash), offers past D1 (expired), and paid exchanges whose
/// second payment has not come long after D2 (failed; a late one is still
/// taken). Returns how many changed.
pub fn advance(conn: &Connection, w: &Wallet, now: Timestamp) -> Result<usize, WalletError> {
    let mut changed = 0;
    for op in ops::open_ops(conn)?.into_iter().filter(|o| o.kind == KIND) {
        let x = data(&op)?;
        let Some(t) = x.terms()? else { continue };
        match op.state.as_str() {
            "offered" => {
                if now > t.d1 {
                    ops::set_state(
                        conn,
                        &op,
                        "expired",
                        &format!(
                            "the offer expired at {} (D1) before it was accepted; nothing was paid",
                            t.d1
                        ),
                        now,
                    )?;
                    changed += 1;
                } else if x.policy.accepts(&t) {
                    accept_op(conn, w, &op, now)?;
                    changed += 1;
                }
            }
            "accepting" if now > t.d1 => {
                ops::set_state(
                    conn,
                    &op,
                    "expired",
                    &format!(
                        "no signed offer arrived before {} (D1); nothing was paid",
                        t.d1
                    ),
                    now,
                )?;
                changed += 1;
            }
            "paying" if now > t.d2.saturating_add_secs(SECOND_PAYMENT_GRACE_SECS) => {
                unlock_receiving(conn, w, &op, &x, now)?;
                ops::set_state(
                    conn,
                    &op,
                    "failed",
                    &format!(
                        "the first payment of {} was sent, but no second payment arrived by {} (D2) and a week after; keep the evidence: `wallet evidence {} --out FILE`",
                        money(t.a1, t.pay_currency),
                        t.d2,
                        tr_hex(&op)
                    ),
                    now,
                )?;
                changed += 1;
            }
            _ => {}
        }
    }
    Ok(changed)
}

// ---- answers from the agent -------------------------------------------------

/// The op an answer is for: by the id it names, else by TrID.
fn op_for(conn: &Connection, named: &Digest, tr_id: &Id) -> Result<Option<Op>, WalletError> {
    if let Some(op) = ops::op_by_request(conn, named)?.filter(|o| o.kind == KIND) {
        return Ok(Some(op));
    }
    ops::op_by_transfer(conn, KIND, tr_id)
}

/// The exchange op that sent the envelope `id` (quote, acceptance, first
/// payment or second-payment request), for an error reply that names it.
pub fn op_naming(conn: &Connection, id: &Digest) -> Result<Option<Op>, WalletError> {
    for op in ops::ops_of_kind(conn, KIND)?.into_iter().rev() {
        let Some(x) = &op.data.exchange else { continue };
        let sent = [&x.quote, &x.acceptance, &x.first_payment, &x.second_request];
        if sent
            .iter()
            .any(|e| e.as_ref().is_some_and(|e| e.id() == *id))
        {
            return Ok(Some(op));
        }
    }
    Ok(None)
}

/// The offer checks of protocol.md ("offer"). `Err` is the reason to
/// refuse the offer.
fn check_offer(
    conn: &Connection,
    x: &ExchangeData,
    o: &Offer,
    agent: &PublicKey,
    now: Timestamp,
) -> Result<Result<(), String>, WalletError> {
    let t = &o.terms;
    if t.agent != *agent {
        return Ok(Err(format!(
            "its terms name agent key {}, not the pinned key {}",
            t.agent.fingerprint(),
            agent.fingerprint()
        )));
    }
    if x.quote.as_ref().map(Envelope::id) != Some(o.quote) {
        return Ok(Err("it answers another quote request".into()));
    }
    if t.pay_currency != x.from || t.receive_currency != x.to {
        return Ok(Err(format!(
            "it exchanges {} for {}, not {} for {}",
            t.pay_currency, t.receive_currency, x.from, x.to
        )));
    }
    match x.amount {
        QuoteAmount::Pay(a) if t.a1 != a => {
            return Ok(Err(format!(
                "it asks {} (A1), not the {} asked for",
                money(t.a1, t.pay_currency),
                money(a, x.from)
            )))
        }
        QuoteAmount::Receive(a) if t.a2 != a => {
            return Ok(Err(format!(
                "it gives {} (A2), not the {} asked for",
                money(t.a2, t.receive_currency),
                money(a, x.to)
            )))
        }
        _ => {}
    }
    if t.a1.is_zero() || t.a2.is_zero() {
        return Ok(Err("an amount is zero".into()));
    }
    if t.d1 <= now {
        return Ok(Err(format!("its deadline D1 ({}) has passed", t.d1)));
    }
    if t.d2 < t.d1 {
        return Ok(Err(format!(
            "its deadline D2 ({}) is before D1 ({})",
            t.d2, t.d1
        )));
    }
    let pay_issuer = store::need_issuer(conn, t.pay_currency)?;
    match t.pay_to_license.verify_signer(&pay_issuer.key) {
        Err(e) => {
            return Ok(Err(format!(
                "the license of the agent's {} card is not the pinned issuer's: {e}",
                t.pay_currency
            )))
        }
        Ok(l) if l.currency != t.pay_currency || l.card != t.pay_to || !l.covers(now) => {
            return Ok(Err(format!(
                "the license of the agent's {} card does not cover that card, currency and time",
                t.pay_currency
            )))
        }
        Ok(_) => {}
    }
    if store::revocations(&pay_issuer)
        .revoked_at(&t.pay_to.payment)
        .is_some()
    {
        return Ok(Err(format!(
            "the agent's {} card is revoked",
            t.pay_currency
        )));
    }
    let receive_issuer = store::need_issuer(conn, t.receive_currency)?;
    match t.payer_license.verify_signer(&receive_issuer.key) {
        Err(e) => {
            return Ok(Err(format!(
                "the license of the agent's {} card is not the pinned issuer's: {e}",
                t.receive_currency
            )))
        }
        Ok(l) if l.currency != t.receive_currency || !l.covers(now) => {
            return Ok(Err(format!(
                "the license of the agent's {} card does not cover that currency and time",
                t.receive_currency
            )))
        }
        Ok(_) => {}
    }
    Ok(Ok(()))
}

fn offer_summary(t: &OfferTerms) -> String {
    format!(
        "offer {}: pay {} by {} (D1), receive {} if asked by {} (D2); price {}",
        t.tr_id.to_hex(),
        money(t.a1, t.pay_currency),
        t.d1,
        money(t.a2, t.receive_currency),
        t.d2,
        price_text(t)
    )
}

/// An `offer`: checked against the quote request and the pinned keys,
/// kept, and accepted at once if the policy says so.
pub fn offer(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<Offer>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let o = s.unverified();
    let (op, agent) = match from_agent(conn, &o.quote, &o.terms.tr_id, s.envelope(), "an offer")? {
        Ok(x) => x,
        Err(ignored) => return Ok(ignored),
    };
    let mut x = data(&op)?;
    if op.state != "quoting" || x.quote.as_ref().map(Envelope::id) != Some(o.quote) {
        let again = x.offer.as_ref().is_some_and(|e| e.id() == s.id());
        return Ok(Outcome::Ignored(if again {
            format!("the same offer again for exchange #{}", op.id)
        } else {
            format!(
                "another offer for exchange #{} (already {})",
                op.id, op.state
            )
        }));
    }
    x.offer = Some(s.envelope().clone());
    let refusal = match check_offer(conn, &x, o, &agent, now)? {
        Err(why) => Some(why),
        Ok(()) => ops::op_by_transfer(conn, KIND, &o.terms.tr_id)?
            .filter(|other| other.id != op.id)
            .map(|other| {
                format!(
                    "its transaction id {} is the one of exchange #{}",
                    o.terms.tr_id.to_hex(),
                    other.id
                )
            }),
    };
    save(conn, &op, x.clone())?;
    ops::stop_resending(conn, op.id)?;
    if let Some(why) = refusal {
        ops::set_state(
            conn,
            &op,
            "failed",
            &format!("the agent's offer was refused, nothing was paid: {why}"),
            now,
        )?;
        return Ok(Outcome::Ignored(format!(
            "an offer that fails its checks: {why}"
        )));
    }
    let t = &o.terms;
    ops::set_transfer(conn, op.id, &t.tr_id)?;
    ops::set_amount(conn, op.id, t.a1)?;
    ops::set_state(conn, &op, "offered", &offer_summary(t), now)?;
    tracing::info!(op = op.id, tr_id = %t.tr_id.to_hex(), "an exchange offer arrived");
    if x.policy.accepts(t) {
        let op = ops::op(conn, op.id)?;
        accept_op(conn, w, &op, now)?;
    }
    Ok(Outcome::Done)
}

/// A `signed-offer`: must be the offer's terms exactly, for our acceptance
/// and receiving card; then, in the same transaction, the first payment and
/// the second-payment request go out in one mail.
pub fn signed_offer(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<SignedOffer>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let so = s.unverified();
    let (op, _) = match from_agent(
        conn,
        &so.acceptance,
        &so.terms.tr_id,
        s.envelope(),
        "a signed offer",
    )? {
        Ok(x) => x,
        Err(ignored) => return Ok(ignored),
    };
    let mut x = data(&op)?;
    if op.state != "accepting" {
        let again = x.signed_offer.as_ref().is_some_and(|e| e.id() == s.id());
        return Ok(Outcome::Ignored(if again {
            format!("the same signed offer again for exchange #{}", op.id)
        } else {
            format!(
                "a signed offer for exchange #{} that is {}",
                op.id, op.state
            )
        }));
    }
    let (Some(offer), Some(acceptance)) = (
        x.offer()?,
        ExchangeData::typed::<OfferAcceptance>(&x.acceptance)?,
    ) else {
        return Err(WalletError::Corrupt(format!(
            "exchange {} is accepting without an offer and an acceptance",
            op.id
        )));
    };
    let terms = &offer.unverified().terms;
    let receiver = acceptance.unverified().receiver;
    let difference = if so.acceptance != acceptance.id() {
        Some("it names another acceptance".to_string())
    } else if so.receiver != receiver {
        Some("its receiving card is not the card we named".to_string())
    } else {
        terms_difference(terms, &so.terms).map(|f| format!("its terms differ in `{f}`"))
    };
    x.signed_offer = Some(s.envelope().clone());
    save(conn, &op, x.clone())?;
    ops::stop_resending(conn, op.id)?;
    if let Some(d) = difference {
        let why = format!("the agent's signed offer differs from its offer: {d}");
        ops::set_state(
            conn,
            &op,
            "failed",
            &format!("aborted, nothing was paid: {why}"),
            now,
        )?;
        return Ok(Outcome::Ignored(why));
    }
    if now > terms.d1 {
        ops::set_state(
            conn,
            &op,
            "expired",
            &format!(
                "the signed offer arrived after D1 ({}); nothing was paid",
                terms.d1
            ),
            now,
        )?;
        return Ok(Outcome::Done);
    }
    let op = ops::op(conn, op.id)?;
    pay(conn, w, &op, x, s.id(), terms, receiver, now)
}

/// Pays A1 and asks for A2, in one mail: [first-payment, second-payment
/// request], the first payment first.
#[allow(clippy::too_many_arguments)]
fn pay(
    conn: &Connection,
    w: &Wallet,
    op: &Op,
    mut x: ExchangeData,
    signed_offer: Digest,
    t: &OfferTerms,
    receiver: CardKeys,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let pay_card = store::card_by_id(conn, x.pay_card)?;
    let receive_card = store::card_by_id(conn, x.receive_card)?;
    if pay_card.state != "active" || receive_card.keys != receiver {
        ops::set_state(
            conn,
            op,
            "failed",
            "the paying card is no longer active, or the receiving card changed; nothing was paid",
            now,
        )?;
        return Ok(Outcome::Done);
    }
    let (notes, parts) = match ops::pay_out(
        conn,
        w,
        &pay_card,
        t.a1,
        t.pay_to.payment,
        t.challenge,
        now,
        ops::NOTE_MARGIN_SECS,
    ) {
        Ok(x) => x,
        Err(e @ (WalletError::InsufficientFunds { .. } | WalletError::TooManyNotes { .. })) => {
            ops::set_state(conn, op, "failed", &format!("nothing was paid: {e}"), now)?;
            return Ok(Outcome::Done);
        }
        Err(e) => return Err(e),
    };
    let mut licenses = store::licenses_for(conn, &notes)?;
    licenses.retain(|l| l.unverified().card.payment != t.pay_to.payment);
    let pay_secret = pay_card.secret(conn, &w.vault)?;
    let first = sign(
        FirstPayment {
            tr_id: t.tr_id,
            signed_offer,
            notes,
            licenses,
            refund_to: pay_card.keys.payment,
            refund_challenge: Challenge::random(),
        },
        &pay_secret.auth,
    )?;
    let receive_secret = receive_card.secret(conn, &w.vault)?;
    let request = sign(
        SecondPaymentRequest {
            tr_id: t.tr_id,
            signed_offer,
            challenge: Challenge::random(),
        },
        &receive_secret.auth,
    )?;
    x.first_payment = Some(first.clone());
    x.second_request = Some(request.clone());
    let mut d = op.data.clone();
    d.parts = parts;
    d.exchange = Some(x);
    ops::set_data(conn, op.id, &d)?;
    conn.prepare_cached("UPDATE cards SET locked_by = ?2 WHERE id = ?1 AND locked_by IS NULL")?
        .execute(params![receive_card.id, op.id])?;
    ops::set_state(
        conn,
        op,
        "paying",
        &format!(
            "paid {}; waiting for the agent's second payment of {}",
            money(t.a1, t.pay_currency),
            money(t.a2, t.receive_currency)
        ),
        now,
    )?;
    w.send_request_after(
        conn,
        op.id,
        &op.peer,
        &format!("exchange {}: first payment", t.tr_id.to_hex()),
        Some(&first),
        &request,
        now,
    )?;
    tracing::info!(op = op.id, tr_id = %t.tr_id.to_hex(), "paid the first payment of an exchange");
    Ok(Outcome::Done)
}

/// Frees the receiving card if this exchange holds it, and lets sends
/// waiting for it go.
fn unlock_receiving(
    conn: &Connection,
    w: &Wallet,
    op: &Op,
    x: &ExchangeData,
    now: Timestamp,
) -> Result<(), WalletError> {
    let n = conn
        .prepare_cached("UPDATE cards SET locked_by = NULL WHERE id = ?1 AND locked_by = ?2")?
        .execute(params![x.receive_card, op.id])?;
    if n > 0 {
        handler::pay_waiting(conn, w, x.to, now)?;
    }
    Ok(())
}

/// A `second-payment`: signed by the agent key of the signed offer, for our
/// request; notes verified as paying A2 to the receiving card against our
/// challenge, the last links signed by the agent's card of `payer_license`.
pub fn second_payment(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<SecondPayment>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let p = s.unverified();
    let (op, agent) =
        match from_agent(conn, &p.request, &p.tr_id, s.envelope(), "a second payment")? {
            Ok(x) => x,
            Err(ignored) => return Ok(ignored),
        };
    let mut x = data(&op)?;
    let (Some(so), Some(request)) = (x.signed_offer()?, x.second_request()?) else {
        return Ok(Outcome::Ignored(format!(
            "a second payment for exchange #{}, which has not asked for one",
            op.id
        )));
    };
    let so = so.unverified().clone();
    let t = &so.terms;
    if t.agent != agent {
        return Ok(Outcome::Ignored(format!(
            "a second payment not signed by the key of the agent {}",
            op.peer
        )));
    }
    if p.request != request.id() || p.tr_id != t.tr_id {
        return Ok(Outcome::Ignored(format!(
            "a second payment for exchange #{} answering another request",
            op.id
        )));
    }
    if x.second_payment.is_some() || !matches!(op.state.as_str(), "paying" | "failed") {
        let again = x.second_payment.as_ref().is_some_and(|e| e.id() == s.id());
        return Ok(Outcome::Ignored(if again {
            format!("the same second payment again for exchange #{}", op.id)
        } else {
            format!(
                "another second payment for exchange #{} (already {})",
                op.id, op.state
            )
        }));
    }
    let payer_card = t.payer_license.unverified().card.payment;
    let checked = handler::verify_paid(
        conn,
        t.receive_currency,
        &p.notes,
        &p.licenses,
        Expect::Paid {
            payee: so.receiver.payment,
            challenge: request.unverified().challenge,
        },
        Some(t.a2),
        now,
    )
    .map_err(|(code, why)| format!("{code}: {why}"))
    .and_then(|view| {
        match p
            .notes
            .iter()
            .filter_map(|n| n.links.last())
            .find(|l| *l.signer() != payer_card)
        {
            Some(l) => Err(format!(
                "a last link is signed by {}, not by the agent's {} card of the signed offer ({})",
                l.signer().fingerprint(),
                t.receive_currency,
                payer_card.fingerprint()
            )),
            None => Ok(view),
        }
    });
    x.second_payment = Some(s.envelope().clone());
    save(conn, &op, x.clone())?;
    ops::stop_resending(conn, op.id)?;
    unlock_receiving(conn, w, &op, &x, now)?;
    match checked {
        Ok(view) => {
            handler::keep_notes(
                conn,
                &p.notes,
                &view,
                &p.licenses,
                x.receive_card,
                op.id,
                now,
            )?;
            ops::set_state(
                conn,
                &op,
                "done",
                &format!(
                    "received {} for {}",
                    money(t.a2, t.receive_currency),
                    money(t.a1, t.pay_currency)
                ),
                now,
            )?;
            tracing::info!(op = op.id, tr_id = %t.tr_id.to_hex(), "an exchange completed");
            Ok(Outcome::Done)
        }
        Err(why) => {
            ops::set_state(
                conn,
                &op,
                "failed",
                &format!(
                    "the agent's second payment does not verify ({why}); nothing was kept; keep the evidence: `wallet evidence {} --out FILE`",
                    t.tr_id.to_hex()
                ),
                now,
            )?;
            Ok(Outcome::Ignored(format!(
                "a second payment that fails verification: {why}"
            )))
        }
    }
}

/// A `refund`: the agent returns the first payment to the refund key
/// against the refund challenge; the notes go back on the paying card.
pub fn refund(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<Refund>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let r = s.unverified();
    let (op, agent) = match from_agent(conn, &r.payment, &r.tr_id, s.envelope(), "a refund")? {
        Ok(x) => x,
        Err(ignored) => return Ok(ignored),
    };
    let mut x = data(&op)?;
    let (Some(so), Some(first)) = (x.signed_offer()?, x.first_payment()?) else {
        return Ok(Outcome::Ignored(format!(
            "a refund for exchange #{}, which paid nothing",
            op.id
        )));
    };
    let t = so.unverified().terms.clone();
    if t.agent != agent {
        return Ok(Outcome::Ignored(format!(
            "a refund not signed by the key of the agent {}",
            op.peer
        )));
    }
    if r.payment != first.id() || r.tr_id != t.tr_id {
        return Ok(Outcome::Ignored(format!(
            "a refund for exchange #{} naming another payment",
            op.id
        )));
    }
    if x.refund.is_some() || !matches!(op.state.as_str(), "paying" | "failed") {
        let again = x.refund.as_ref().is_some_and(|e| e.id() == s.id());
        return Ok(Outcome::Ignored(if again {
            format!("the same refund again for exchange #{}", op.id)
        } else {
            format!("a refund for exchange #{} that is {}", op.id, op.state)
        }));
    }
    let f = first.unverified();
    let paid = Amount::checked_sum(op.data.parts.iter().map(|(_, a)| *a)).unwrap_or(t.a1);
    let checked = handler::verify_paid(
        conn,
        t.pay_currency,
        &r.notes,
        &r.licenses,
        Expect::Paid {
            payee: f.refund_to,
            challenge: f.refund_challenge,
        },
        Some(paid),
        now,
    );
    x.refund = Some(s.envelope().clone());
    save(conn, &op, x.clone())?;
    ops::stop_resending(conn, op.id)?;
    unlock_receiving(conn, w, &op, &x, now)?;
    match checked {
        Ok(view) => {
            handler::keep_notes(conn, &r.notes, &view, &r.licenses, x.pay_card, op.id, now)?;
            ops::set_state(
                conn,
                &op,
                "refunded",
                &format!(
                    "the agent refunded the {} paid ({}: {})",
                    money(paid, t.pay_currency),
                    r.reason,
                    r.reason.text()
                ),
                now,
            )?;
            Ok(Outcome::Done)
        }
        Err((code, why)) => {
            ops::set_state(
                conn,
                &op,
                "failed",
                &format!(
                    "the agent's refund does not verify ({code}: {why}); keep the evidence: `wallet evidence {} --out FILE`",
                    t.tr_id.to_hex()
                ),
                now,
            )?;
            Ok(Outcome::Ignored(format!(
                "a refund that fails verification: {why}"
            )))
        }
    }
}

/// An `error` from the agent about one of our envelopes (the caller has
/// checked it is signed by the pinned agent key). 504 (the request came
/// before the first payment) keeps waiting: the mail with both is sent
/// again. Any other code ends the exchange.
pub fn error_reply(
    conn: &Connection,
    w: &Wallet,
    op: Op,
    s: &Signed<ErrorReply>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let e = s.unverified();
    let mut x = data(&op)?;
    if !x.errors.iter().any(|v| v.id() == s.id()) && x.errors.len() < MAX_EVIDENCE_ERRORS {
        x.errors.push(s.envelope().clone());
    }
    save(conn, &op, x.clone())?;
    let said = format!(
        "{}: {}",
        e.code,
        e.reason.chars().take(500).collect::<String>()
    );
    if e.code == ErrorCode::FirstPaymentMissing && op.state == "paying" {
        set_detail(
            conn,
            op.id,
            &format!(
                "the agent had not received the first payment when the request arrived ({said}); both are sent again"
            ),
        )?;
        return Ok(Outcome::Done);
    }
    let paid = x.first_payment.is_some();
    unlock_receiving(conn, w, &op, &x, now)?;
    let tr = tr_hex(&op);
    let detail = match e.code {
        ErrorCode::DoubleDemand => format!(
            "the agent refused the second-payment request as a double demand ({said}); its evidence is kept: `wallet evidence {tr} --out FILE`"
        ),
        _ if paid => format!(
            "the agent refused ({said}); the first payment was sent: a refund may follow; keep the evidence: `wallet evidence {tr} --out FILE`"
        ),
        _ => format!("the agent refused ({said}); nothing was paid"),
    };
    ops::set_state(conn, &op, "failed", &detail, now)?;
    Ok(Outcome::Done)
}

// ---- status and evidence -----------------------------------------------------

/// One envelope an exchange holds.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HeldEnvelope {
    pub role: String,
    pub kind: String,
    pub id: String,
    pub signer: String,
}

/// An exchange as `wallet exchange status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExchangeStatus {
    pub op: i64,
    pub tr_id: Option<String>,
    pub agent: String,
    pub agent_key: Option<String>,
    pub state: String,
    pub done: bool,
    /// What it waits for (open) or how it ended.
    pub detail: String,
    pub pay_currency: String,
    pub receive_currency: String,
    /// What was asked: "pay 1000 JPY" or "receive 10.00 USD".
    pub asked: String,
    pub policy: String,
    pub a1: Option<String>,
    pub a1_minor: Option<u64>,
    pub a2: Option<String>,
    pub a2_minor: Option<u64>,
    /// A1/A2 as a price: "149.253731 JPY per USD".
    pub price: Option<String>,
    pub d1: Option<String>,
    pub d1_unix: Option<u64>,
    pub d2: Option<String>,
    pub d2_unix: Option<u64>,
    pub envelopes: Vec<HeldEnvelope>,
    pub created_at: u64,
    pub updated_at: u64,
}

fn status_of(conn: &Connection, op: &Op) -> Result<ExchangeStatus, WalletError> {
    let x = data(op)?;
    let t = x.terms()?;
    let line = crate::view::line(op);
    Ok(ExchangeStatus {
        op: op.id,
        tr_id: op.transfer.map(|t| t.to_hex()),
        agent: op.peer.clone(),
        agent_key: store::agent(conn, &op.peer)?.map(|a| a.key.to_hex()),
        state: op.state.clone(),
        done: op.is_final,
        detail: line.detail,
        pay_currency: x.from.to_string(),
        receive_currency: x.to.to_string(),
        asked: match x.amount {
            QuoteAmount::Pay(a) => format!("pay {}", money(a, x.from)),
            QuoteAmount::Receive(a) => format!("receive {}", money(a, x.to)),
        },
        policy: x.policy.describe(x.from, x.to),
        a1: t.as_ref().map(|t| money(t.a1, t.pay_currency).to_string()),
        a1_minor: t.as_ref().map(|t| t.a1.minor_units()),
        a2: t
            .as_ref()
            .map(|t| money(t.a2, t.receive_currency).to_string()),
        a2_minor: t.as_ref().map(|t| t.a2.minor_units()),
        price: t.as_ref().map(price_text),
        d1: t.as_ref().map(|t| t.d1.to_string()),
        d1_unix: t.as_ref().map(|t| t.d1.unix()),
        d2: t.as_ref().map(|t| t.d2.to_string()),
        d2_unix: t.as_ref().map(|t| t.d2.unix()),
        envelopes: x
            .envelopes()
            .into_iter()
            .map(|(role, e)| HeldEnvelope {
                role: role.to_string(),
                kind: e.kind().to_string(),
                id: e.id().to_hex(),
                signer: e.signer().to_hex(),
            })
            .collect(),
        created_at: op.created_at.unix(),
        updated_at: op.updated_at.unix(),
    })
}

/// The status of exchange `op_id`.
pub fn status(conn: &Connection, op_id: i64) -> Result<ExchangeStatus, WalletError> {
    let op = ops::op(conn, op_id)?;
    if op.kind != KIND {
        return Err(WalletError::refused(format!(
            "operation #{op_id} is a {}, not an exchange",
            op.kind
        )));
    }
    status_of(conn, &op)
}

/// Every exchange, oldest first.
pub fn statuses(conn: &Connection) -> Result<Vec<ExchangeStatus>, WalletError> {
    ops::ops_of_kind(conn, KIND)?
        .iter()
        .map(|o| status_of(conn, o))
        .collect()
}

/// The evidence bundle of exchange `op_id`: every envelope it holds and
/// the issuer keys this wallet pins for both currencies. Needs the signed
/// offer (before it, the agent promised nothing).
pub fn evidence(conn: &Connection, op_id: i64) -> Result<ExchangeEvidence, WalletError> {
    let op = ops::op(conn, op_id)?;
    if op.kind != KIND {
        return Err(WalletError::refused(format!(
            "operation #{op_id} is a {}, not an exchange",
            op.kind
        )));
    }
    let x = data(&op)?;
    let Some(signed_offer) = x.signed_offer.clone() else {
        return Err(WalletError::refused(format!(
            "exchange #{op_id} ({}) holds no signed offer: the agent has promised nothing that evidence could show",
            op.state
        )));
    };
    let mut issuers = Vec::new();
    for c in [x.from, x.to] {
        if let Some(i) = store::issuer(conn, c)? {
            issuers.push((c, i.key));
        }
    }
    Ok(ExchangeEvidence {
        version: EVIDENCE_VERSION,
        offer: x.offer,
        acceptance: x.acceptance,
        signed_offer,
        first_payment: x.first_payment,
        second_request: x.second_request,
        second_payment: x.second_payment,
        refund: x.refund,
        errors: x.errors,
        issuers,
    })
}
