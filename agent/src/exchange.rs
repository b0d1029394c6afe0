//! The agent's side of the exchange (paper section 4.1; docs/protocol.md
//! 4.4): one function per request kind, each deciding, changing the
//! agent's state and producing its reply inside the caller's transaction.
//!
//! - [`quote`]: a quote request gets an offer (TrID, A1, D1, A2, D2, the
//!   card to pay and its challenge), if the float can cover it.
//! - [`accept`]: an acceptance gets the signed offer, and A2 is reserved
//!   from the float until the offer is paid and delivered, or lapses.
//! - [`first_payment`]: verified offline like any payment; taken if it pays
//!   A1 to the offer's card against the offer's challenge before D1, else
//!   every note of it the agent holds is paid back with a `refund`.
//! - [`second_request`]: signed by the receiving card fixed in the signed
//!   offer, before D2, after a first payment in full: the request and the
//!   payment signature over its challenge commit in the same transaction,
//!   so once the request is recorded the payment exists. The same request
//!   again gets the same payment; a different one is a double demand,
//!   refused with the stored request as evidence.

use mailer::crypto::{Challenge, Id};
use mailer::envelope::{Envelope, Signed};
use mailer::messages::{
    ErrorCode, FirstPayment, Offer, OfferAcceptance, OfferTerms, QuoteRequest, Refund,
    SecondPayment, SecondPaymentRequest, SignedOffer,
};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::{Expect, Note};
use rusqlite::Connection;
use wallet::handler::{keep_notes, verify_paid};
use wallet::ops::{self, NewOp, OpData};
use wallet::{store as wstore, WalletError};

use crate::error::AgentError;
use crate::home::Agent;
use crate::store::{self, Trade};

/// A request refused: the code and reason of the signed `error`, and the
/// envelopes that support it.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub reason: String,
    pub evidence: Vec<Envelope>,
}

impl Refusal {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            evidence: Vec::new(),
        }
    }
}

/// What the agent decided about one request.
#[derive(Debug)]
pub enum Answer {
    /// Recorded with this reply, which is sent (and sent again to a
    /// replay of the request).
    Reply(Envelope),
    /// Recorded with no reply (a first payment taken).
    Taken,
    /// Recorded, answered with a signed error.
    Refused(Refusal),
    /// Answered with a signed error but not recorded: a bad signature (the
    /// envelope id does not cover it) or a refusal that may not hold later
    /// (the first payment has not arrived yet).
    Unrecorded(Refusal),
    /// Nothing recorded, nothing sent (a cheating agent under test).
    Withheld,
}

/// What a request is decided with.
#[derive(Clone, Copy, Debug)]
pub struct Cx<'a> {
    pub conn: &'a Connection,
    pub agent: &'a Agent,
    pub peer: &'a str,
    pub now: Timestamp,
    /// Test only: take first payments and never make second payments.
    pub withhold_second_payments: bool,
}

/// What the float of `currency` can still promise: the agent's spendable
/// notes less what signed offers have reserved.
pub fn available(
    conn: &Connection,
    currency: Currency,
    now: Timestamp,
) -> Result<Amount, AgentError> {
    let have = wstore::spendable_total(conn, currency)?;
    let reserved = store::reserved(conn, currency, now)?;
    Ok(have.checked_sub(reserved).unwrap_or(Amount::ZERO))
}

fn out_of_stock(cx: &Cx<'_>, currency: Currency, a2: Amount) -> Result<Answer, AgentError> {
    let free = available(cx.conn, currency, cx.now)?;
    store::warn(
        cx.conn,
        Some(currency),
        &format!(
            "out of stock: an exchange asked for {} {currency}, the unreserved float holds {}",
            a2.display_major(currency),
            free.display_major(currency)
        ),
        cx.now,
    )?;
    Ok(Answer::Refused(Refusal::new(
        ErrorCode::OutOfStock,
        format!(
            "the agent cannot promise {} {currency} now; ask again later or for less",
            a2.display_major(currency)
        ),
    )))
}

fn bad_signature() -> Answer {
    Answer::Unrecorded(Refusal::new(
        ErrorCode::BadSignature,
        "the signature does not verify; the request was not read",
    ))
}

// ---- negotiation -------------------------------------------------------------

pub fn quote(cx: &Cx<'_>, s: &Signed<QuoteRequest>) -> Result<Answer, AgentError> {
    if s.verify().is_err() {
        return Ok(bad_signature());
    }
    let q = s.unverified();
    if q.from == q.to {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::BadRequest,
            "both sides of the exchange are the same currency",
        )));
    }
    let Some(pricing) = store::rate(cx.conn, q.from, q.to)? else {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::NoRate,
            format!("this agent does not exchange {} into {}", q.from, q.to),
        )));
    };
    let (a1, a2, rate) = match pricing.amounts(q.amount) {
        Ok(x) => x,
        Err(e) => {
            return Ok(Answer::Refused(Refusal::new(
                ErrorCode::BadAmount,
                e.to_string(),
            )))
        }
    };
    let (Ok(pay_to), Ok(payer)) = (
        wstore::active_card(cx.conn, q.from),
        wstore::active_card(cx.conn, q.to),
    ) else {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::NoRate,
            format!(
                "this agent holds no licensed card for {} or {} at the moment",
                q.from, q.to
            ),
        )));
    };
    if available(cx.conn, q.to, cx.now)? < a2 {
        return out_of_stock(cx, q.to, a2);
    }
    let (Some(pay_to_license), Some(payer_license)) = (pay_to.license, payer.license) else {
        return Err(AgentError::Corrupt("an active card has no license".into()));
    };
    let (offer_secs, request_secs) = crate::home::deadlines(cx.conn)?;
    let d1 = cx.now.saturating_add_secs(offer_secs);
    let offer = cx.agent.sign(Offer {
        quote: s.id(),
        terms: OfferTerms {
            tr_id: Id::random(),
            pay_currency: q.from,
            a1,
            d1,
            receive_currency: q.to,
            a2,
            d2: d1.saturating_add_secs(request_secs),
            rate,
            agent: cx.agent.public_key(),
            pay_to: pay_to.keys,
            pay_to_license,
            challenge: Challenge::random(),
            payer_license,
        },
    })?;
    store::insert_trade(cx.conn, &offer, cx.peer, cx.now)?;
    tracing::info!(
        tr_id = %offer.unverified().terms.tr_id.to_hex(),
        "offered {} {} for {} {}",
        a2.display_major(q.to),
        q.to,
        a1.display_major(q.from),
        q.from
    );
    Ok(Answer::Reply(offer.into_envelope()))
}

fn trade_for(cx: &Cx<'_>, tr_id: &Id) -> Result<Result<Trade, Answer>, AgentError> {
    Ok(match store::trade(cx.conn, tr_id)? {
        Some(t) => Ok(t),
        None => Err(Answer::Refused(Refusal::new(
            ErrorCode::UnknownTransaction,
            format!("this agent made no offer with TrID {}", tr_id.to_hex()),
        ))),
    })
}

pub fn accept(cx: &Cx<'_>, s: &Signed<OfferAcceptance>) -> Result<Answer, AgentError> {
    let a = s.unverified();
    if s.verify().is_err() {
        return Ok(bad_signature());
    }
    let trade = match trade_for(cx, &a.tr_id)? {
        Ok(t) => t,
        Err(answer) => return Ok(answer),
    };
    if a.offer != trade.offer.id() {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::OfferMismatch,
            "the acceptance names another offer than the one made for this TrID",
        )));
    }
    if *s.signer() != a.receiver.auth {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::WrongKey,
            "an acceptance must be signed by the authentication key of the card it names",
        )));
    }
    let t = trade.terms().clone();
    match trade.state.as_str() {
        "offered" => {}
        "signed" | "paid" | "delivered" => {
            return Ok(Answer::Refused(Refusal::new(
                ErrorCode::Replay,
                "this offer was already accepted, for another card",
            )))
        }
        _ => {
            return Ok(Answer::Refused(Refusal::new(
                ErrorCode::OfferExpired,
                format!("this offer is {}", trade.state),
            )))
        }
    }
    if cx.now > t.d1 {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::OfferExpired,
            format!("the offer could be accepted until {}", t.d1),
        )));
    }
    if available(cx.conn, t.receive_currency, cx.now)? < t.a2 {
        return out_of_stock(cx, t.receive_currency, t.a2);
    }
    let signed = cx
        .agent
        .sign(SignedOffer {
            terms: t.clone(),
            receiver: a.receiver,
            acceptance: s.id(),
        })?
        .into_envelope();
    store::set_trade(
        cx.conn,
        &t.tr_id,
        "signed",
        &[("acceptance", s.envelope()), ("signed_offer", &signed)],
        &format!(
            "signed; {} {} reserved until the first payment (D1 {})",
            t.a2.display_major(t.receive_currency),
            t.receive_currency,
            t.d1
        ),
        cx.now,
    )?;
    Ok(Answer::Reply(signed))
}

// ---- first payment -----------------------------------------------------------

/// The card of the agent that every last link of `notes` pays, if one.
fn paid_card(conn: &Connection, notes: &[Note]) -> Result<Option<wstore::CardRow>, AgentError> {
    let mut payee = None;
    for n in notes {
        let Some(last) = n.links.last() else {
            return Ok(None);
        };
        let p = last.unverified().payee;
        if payee.is_some_and(|q| q != p) {
            return Ok(None);
        }
        payee = Some(p);
    }
    let Some(p) = payee else { return Ok(None) };
    Ok(wstore::cards(conn)?
        .into_iter()
        .find(|c| c.keys.payment == p && c.license.is_some()))
}

pub fn first_payment(cx: &Cx<'_>, s: &Signed<FirstPayment>) -> Result<Answer, AgentError> {
    let p = s.unverified();
    if s.verify().is_err() {
        return Ok(bad_signature());
    }
    let Some(card) = paid_card(cx.conn, &p.notes)? else {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::WrongPayee,
            "this payment does not pay a card of this agent; nothing was received",
        )));
    };
    let view = match verify_paid(
        cx.conn,
        card.currency,
        &p.notes,
        &p.licenses,
        Expect::Held {
            holder: card.keys.payment,
        },
        None,
        cx.now,
    ) {
        Ok(v) => v,
        Err((code, why)) => {
            return Ok(Answer::Refused(Refusal::new(
                code,
                format!("the payment does not verify, nothing was received: {why}"),
            )))
        }
    };
    // The payment is the word of the card that signed its last links.
    let links_by: Vec<_> = p
        .notes
        .iter()
        .filter_map(|n| n.links.last().map(|l| *l.signer()))
        .collect();
    let signer_card = p
        .licenses
        .iter()
        .map(|l| l.unverified().card)
        .find(|c| c.auth == *s.signer());
    if !signer_card.is_some_and(|c| links_by.iter().all(|k| *k == c.payment)) {
        return Ok(Answer::Unrecorded(Refusal::new(
            ErrorCode::WrongKey,
            "a first payment must be signed by the authentication key of the card that signed its links (with that card's license among the licenses)",
        )));
    }
    let trade = store::trade(cx.conn, &p.tr_id)?;
    let problem = match &trade {
        None => Some((
            ErrorCode::UnknownTransaction,
            format!("this agent made no offer with TrID {}", p.tr_id.to_hex()),
        )),
        Some(t) => check_first_payment(cx, t, p, &card, &view),
    };
    let total = view.total;
    let op = ops::insert_op(
        cx.conn,
        &NewOp {
            kind: "exchange-in",
            currency: card.currency,
            amount: total,
            peer: cx.peer,
            memo: &format!("first payment of TrID {}", p.tr_id.to_hex()),
            state: "done",
            transfer: None,
            data: OpData::default(),
        },
        cx.now,
    )?;
    keep_notes(cx.conn, &p.notes, &view, &p.licenses, card.id, op, cx.now)?;
    let Some((code, why)) = problem else {
        let Some(t) = trade else {
            return Err(AgentError::Corrupt("a taken payment lost its trade".into()));
        };
        store::set_paid(cx.conn, &t.tr_id, total)?;
        store::set_trade(
            cx.conn,
            &t.tr_id,
            "paid",
            &[("first_payment", s.envelope())],
            &format!(
                "first payment of {} {} taken; waiting for the second-payment request (D2 {})",
                total.display_major(card.currency),
                card.currency,
                t.terms().d2
            ),
            cx.now,
        )?;
        tracing::info!(tr_id = %t.tr_id.to_hex(), "first payment taken");
        return Ok(Answer::Taken);
    };
    // Not taken: everything received is paid back.
    let refund = refund(cx, s, &card, &view, code)?;
    // A trade that was still waiting for this payment, or had lapsed
    // before it came, ends refunded: its record then holds the refund.
    // A trade already paid keeps its state (this was a second payment).
    if let Some(t) = trade.filter(|t| matches!(t.state.as_str(), "signed" | "expired")) {
        store::set_trade(
            cx.conn,
            &t.tr_id,
            "refunded",
            &[("refund", &refund), ("first_payment", s.envelope())],
            &format!("first payment refunded, {code}: {why}"),
            cx.now,
        )?;
    }
    tracing::info!(tr_id = %p.tr_id.to_hex(), %code, "first payment refunded: {why}");
    Ok(Answer::Reply(refund))
}

/// Why a verified payment held by the agent cannot be taken for `t`.
fn check_first_payment(
    cx: &Cx<'_>,
    t: &Trade,
    p: &FirstPayment,
    card: &wstore::CardRow,
    view: &mailer::note::BundleView,
) -> Option<(ErrorCode, String)> {
    let terms = t.terms();
    let signed_id = t.signed_offer.as_ref().map(|s| s.id());
    if signed_id != Some(p.signed_offer) {
        return Some((
            ErrorCode::OfferMismatch,
            "the payment names no signed offer of this TrID".into(),
        ));
    }
    if card.currency != terms.pay_currency || card.keys != terms.pay_to {
        return Some((
            ErrorCode::WrongPayee,
            format!(
                "the offer asked for {} paid to its {} card",
                terms.pay_currency, terms.pay_currency
            ),
        ));
    }
    if p.notes.iter().any(|n| {
        n.links
            .last()
            .is_none_or(|l| l.unverified().challenge != terms.challenge)
    }) {
        return Some((
            ErrorCode::WrongChallenge,
            "the payment does not answer the offer's challenge".into(),
        ));
    }
    if matches!(t.state.as_str(), "paid" | "delivered") {
        return Some((
            ErrorCode::Replay,
            "this exchange was already paid by another payment".into(),
        ));
    }
    if cx.now > terms.d1 {
        return Some((
            ErrorCode::FirstPaymentLate,
            format!(
                "the payment arrived at {}, after its deadline {}",
                cx.now, terms.d1
            ),
        ));
    }
    if t.state != "signed" {
        return Some((
            ErrorCode::OfferExpired,
            format!("this offer is {}, not waiting for a payment", t.state),
        ));
    }
    if view.total < terms.a1 {
        return Some((
            ErrorCode::FirstPaymentShort,
            format!(
                "the payment is {}, the offer asked for {}",
                view.total.display_major(terms.pay_currency),
                terms.a1.display_major(terms.pay_currency)
            ),
        ));
    }
    if view.total > terms.a1 {
        return Some((
            ErrorCode::BadAmount,
            format!(
                "the payment is {}, more than the {} the offer asked for",
                view.total.display_major(terms.pay_currency),
                terms.a1.display_major(terms.pay_currency)
            ),
        ));
    }
    None
}

/// Pays every state just received back to the payer's refund key.
fn refund(
    cx: &Cx<'_>,
    s: &Signed<FirstPayment>,
    card: &wstore::CardRow,
    view: &mailer::note::BundleView,
    code: ErrorCode,
) -> Result<Envelope, AgentError> {
    let p = s.unverified();
    let secret = card.secret(cx.conn, &cx.agent.wallet.vault)?;
    let mut notes = Vec::new();
    for (note, v) in p.notes.iter().zip(&view.notes) {
        let value = v.current().value;
        let back = note
            .pay(
                &secret.payment,
                p.refund_to,
                value,
                p.refund_challenge,
                cx.now,
            )
            .map_err(|e| AgentError::Corrupt(format!("could not pay back a note: {e}")))?;
        wstore::spend(cx.conn, &v.current().id, value)?;
        notes.push(back);
    }
    let licenses = wstore::licenses_for(cx.conn, &notes)?;
    ops::insert_op(
        cx.conn,
        &NewOp {
            kind: "exchange-refund",
            currency: card.currency,
            amount: view.total,
            peer: cx.peer,
            memo: &format!("refund of TrID {}", p.tr_id.to_hex()),
            state: "done",
            transfer: None,
            data: OpData::default(),
        },
        cx.now,
    )?;
    Ok(cx
        .agent
        .sign(Refund {
            tr_id: p.tr_id,
            payment: s.id(),
            reason: code,
            notes,
            licenses,
        })?
        .into_envelope())
}

// ---- second payment ----------------------------------------------------------

pub fn second_request(cx: &Cx<'_>, s: &Signed<SecondPaymentRequest>) -> Result<Answer, AgentError> {
    let r = s.unverified();
    if s.verify().is_err() {
        return Ok(bad_signature());
    }
    let trade = match trade_for(cx, &r.tr_id)? {
        Ok(t) => t,
        Err(answer) => return Ok(answer),
    };
    let Some(signed) = trade.signed_offer.clone() else {
        return Ok(Answer::Unrecorded(Refusal::new(
            ErrorCode::FirstPaymentMissing,
            "this offer was not accepted yet",
        )));
    };
    if signed.id() != r.signed_offer {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::OfferMismatch,
            "the request names another signed offer than this TrID's",
        )));
    }
    let so = signed.unverified();
    if *s.signer() != so.receiver.auth {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::WrongKey,
            "only the receiving card fixed in the signed offer may ask for the second payment",
        )));
    }
    if let Some(stored) = &trade.request {
        let mut refusal = Refusal::new(
            ErrorCode::DoubleDemand,
            "the second payment of this exchange was already made, against the request attached",
        );
        refusal.evidence.push(stored.clone());
        return Ok(Answer::Refused(refusal));
    }
    let t = trade.terms();
    if cx.now > t.d2 {
        return Ok(Answer::Refused(Refusal::new(
            ErrorCode::Expired,
            format!("the second payment could be asked for until {}", t.d2),
        )));
    }
    match trade.state.as_str() {
        "paid" => {}
        "signed" => {
            return Ok(Answer::Unrecorded(Refusal::new(
                ErrorCode::FirstPaymentMissing,
                "the first payment has not arrived (yet); send this request again after it",
            )))
        }
        "refunded" => {
            let code = trade
                .refund
                .clone()
                .and_then(|e| Signed::<Refund>::from_envelope(e).ok())
                .map(|r| r.unverified().reason)
                .unwrap_or(ErrorCode::FirstPaymentLate);
            return Ok(Answer::Refused(Refusal::new(
                code,
                format!("the first payment was refunded: {}", trade.detail),
            )));
        }
        other => {
            return Ok(Answer::Refused(Refusal::new(
                ErrorCode::OfferExpired,
                format!("this exchange is {other}"),
            )))
        }
    }
    if cx.withhold_second_payments {
        tracing::warn!(tr_id = %t.tr_id.to_hex(), "withholding the second payment (cheating test mode)");
        return Ok(Answer::Withheld);
    }
    let card = wstore::active_card(cx.conn, t.receive_currency)?;
    let paid = ops::pay_out(
        cx.conn,
        &cx.agent.wallet,
        &card,
        t.a2,
        so.receiver.payment,
        r.challenge,
        cx.now,
        ops::NOTE_MARGIN_SECS,
    );
    let (notes, _) = match paid {
        Ok(x) => x,
        Err(WalletError::InsufficientFunds { .. } | WalletError::TooManyNotes { .. }) => {
            let text = format!(
                "cannot make the second payment of TrID {}: the {} float cannot pay {} now",
                t.tr_id.to_hex(),
                t.receive_currency,
                t.a2.display_major(t.receive_currency)
            );
            store::warn(cx.conn, Some(t.receive_currency), &text, cx.now)?;
            return Ok(Answer::Unrecorded(Refusal::new(
                ErrorCode::OutOfStock,
                "the agent cannot pay right now; send the same request again later",
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let mut licenses = wstore::licenses_for(cx.conn, &notes)?;
    licenses.retain(|l| l.unverified().card.payment != so.receiver.payment);
    let payment = cx
        .agent
        .sign(SecondPayment {
            tr_id: t.tr_id,
            request: s.id(),
            notes,
            licenses,
        })?
        .into_envelope();
    // The request, committed with the payment it gets (one transaction).
    store::set_trade(
        cx.conn,
        &t.tr_id,
        "delivered",
        &[("request", s.envelope()), ("second_payment", &payment)],
        &format!(
            "second payment of {} {} made",
            t.a2.display_major(t.receive_currency),
            t.receive_currency
        ),
        cx.now,
    )?;
    ops::insert_op(
        cx.conn,
        &NewOp {
            kind: "exchange-out",
            currency: t.receive_currency,
            amount: t.a2,
            peer: cx.peer,
            memo: &format!("second payment of TrID {}", t.tr_id.to_hex()),
            state: "done",
            transfer: None,
            data: OpData::default(),
        },
        cx.now,
    )?;
    tracing::info!(tr_id = %t.tr_id.to_hex(), "second payment made");
    Ok(Answer::Reply(payment))
}
