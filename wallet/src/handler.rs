//! Incoming mail: the wallet's [`MailHandler`]. Each envelope is matched
//! to the op it answers (by the request id it names, or the transfer id)
//! and checked against the key that must have signed it: the pinned
//! issuer for the issuer's answers, the payee card fixed in the address
//! for a payee's answers. Whatever it changes, and whatever it answers,
//! commits in the watcher's transaction.
//!
//! As payee the wallet answers by itself: a payment invite gets an
//! address (a licensed card and a fresh challenge); a payment is verified
//! offline (the whole chain, against the pinned issuer key and the newest
//! revocation list held) and gets a signed receipt, or a signed error.
//!
//! An exchange agent's answers (offer, signed offer, second payment,
//! refund, and its errors) go to [`crate::exchange`], checked against the
//! agent key pinned for its address.

use mailer::crypto::{Challenge, Digest};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::imap::{Disposition, HandlerError, IncomingMail, MailHandler};
use mailer::messages::{
    DepositOutcome, DepositReceipt, Enrolled, ErrorCode, ErrorReply, LicenseGranted, Message,
    NotesIssued, Payment, PaymentAddress, PaymentInvite, Receipt,
};
use mailer::mime::{self, MessageId, MimeError};
use mailer::money::Timestamp;
use mailer::note::{verify_bundle, Expect, NotePolicy};
use rusqlite::{params, Connection, Transaction};

use crate::error::WalletError;
use crate::ops::{self, Op, OpData, Wallet};
use crate::store::{self, sql_amount, sql_time};

/// The thread an answer joins.
#[derive(Clone, Debug, Default)]
pub struct Thread {
    pub from: Option<String>,
    pub message_id: Option<MessageId>,
    pub references: Vec<MessageId>,
    pub automatic: bool,
}

/// The wallet's handler for [`mailer::imap::Watcher`].
#[derive(Debug)]
pub struct WalletHandler {
    pub wallet: Wallet,
}

impl MailHandler for WalletHandler {
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError> {
        handle_mail(tx, &self.wallet, mail.raw, mailer::clock::now())
            .map_err(|e| HandlerError(e.to_string()))
    }
}

/// What became of one envelope.
#[derive(Debug)]
pub enum Outcome {
    Done,
    Ignored(String),
}

/// Handles one mail in `conn`'s transaction. `Err` only for the wallet's
/// own failures (the mail is tried again later).
pub fn handle_mail(
    conn: &Connection,
    w: &Wallet,
    raw: &[u8],
    now: Timestamp,
) -> Result<Disposition, WalletError> {
    each_envelope(
        raw,
        |_, _| Ok(()),
        |thread, env| handle_envelope(conn, w, thread, env, now),
    )
}

/// Reads a mail and hands each envelope, with the mail's thread, to
/// `each`; the mail's disposition follows from what became of them. Mail
/// that is not protocol mail is rejected unanswered; a protocol mail that
/// cannot be read is shown to `unreadable` (which may answer it) and
/// rejected. Every program that reads protocol mail reads it here.
pub fn each_envelope<E>(
    raw: &[u8],
    unreadable: impl FnOnce(&MimeError, Thread) -> Result<(), E>,
    mut each: impl FnMut(&Thread, Envelope) -> Result<Outcome, E>,
) -> Result<Disposition, E> {
    let mail = match mime::parse_mail(raw) {
        Ok(m) => m,
        Err(
            e @ (MimeError::NotMime | MimeError::NoAttachment | MimeError::WrongContentType { .. }),
        ) => {
            return Ok(Disposition::Rejected {
                reason: format!("not a protocol mail: {e}"),
            })
        }
        Err(e) => {
            let h = mime::read_headers(raw);
            unreadable(
                &e,
                Thread {
                    from: h.from.filter(|a| mime::parse_address(a).is_ok()),
                    message_id: h.message_id,
                    references: h.references,
                    automatic: h.auto_submitted,
                },
            )?;
            return Ok(Disposition::Rejected {
                reason: format!("unreadable protocol mail: {e}"),
            });
        }
    };
    let mut references = mail.references.clone();
    if let Some(m) = &mail.message_id {
        if !references.contains(m) {
            references.push(m.clone());
        }
    }
    let thread = Thread {
        from: mail.from.clone().filter(|a| mime::parse_address(a).is_ok()),
        message_id: mail.message_id.clone(),
        references,
        automatic: mail.auto_submitted,
    };
    let mut ignored = Vec::new();
    let mut done = 0;
    for env in mail.envelopes {
        match each(&thread, env)? {
            Outcome::Done => done += 1,
            Outcome::Ignored(why) => {
                tracing::warn!(reason = %why, "an incoming message was not used");
                ignored.push(why)
            }
        }
    }
    Ok(if done > 0 || ignored.is_empty() {
        Disposition::Processed
    } else {
        Disposition::Rejected {
            reason: ignored.join("; "),
        }
    })
}

/// Handles one decoded-or-not envelope of a mail (the agent hands the
/// wallet's kinds here too).
pub fn handle_envelope(
    conn: &Connection,
    w: &Wallet,
    thread: &Thread,
    env: Envelope,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let message = match Message::decode(env) {
        Ok(m) => m,
        Err(e) => return Ok(Outcome::Ignored(format!("an unreadable envelope: {e}"))),
    };
    match message {
        Message::LicenseGranted(s) => {
            from_issuer(conn, &s.unverified().request, s.envelope(), |op| {
                license_granted(conn, op, &s, now)
            })
        }
        Message::Enrolled(s) => from_issuer(conn, &s.unverified().request, s.envelope(), |op| {
            enrolled(conn, op, &s, now)
        }),
        Message::NotesIssued(s) => from_issuer(conn, &s.unverified().request, s.envelope(), |op| {
            notes_issued(conn, op, &s, now)
        }),
        Message::DepositReceipt(s) => {
            from_issuer(conn, &s.unverified().request, s.envelope(), |op| {
                deposit_receipt(conn, op, &s, now)
            })
        }
        Message::RevocationList(s) => revocation_list(conn, &s),
        Message::Error(s) => error_reply(conn, w, &s, now),
        Message::PaymentInvite(s) => invite(conn, w, thread, &s, now),
        Message::PaymentAddress(s) => address(conn, w, &s, now),
        Message::Payment(s) => payment(conn, w, thread, &s, now),
        Message::Receipt(s) => receipt(conn, w, &s, now),
        Message::Offer(s) => crate::exchange::offer(conn, w, &s, now),
        Message::SignedOffer(s) => crate::exchange::signed_offer(conn, w, &s, now),
        Message::SecondPayment(s) => crate::exchange::second_payment(conn, w, &s, now),
        Message::Refund(s) => crate::exchange::refund(conn, w, &s, now),
        other => Ok(Outcome::Ignored(format!(
            "a {} message is not for a wallet",
            other.kind()
        ))),
    }
}

/// An issuer's answer to the request `request`: the op must be open and
/// the envelope signed by the pinned issuer of the op's currency.
fn from_issuer(
    conn: &Connection,
    request: &Digest,
    env: &Envelope,
    f: impl FnOnce(Op) -> Result<Outcome, WalletError>,
) -> Result<Outcome, WalletError> {
    let Some(op) = ops::op_by_request(conn, request)? else {
        return Ok(Outcome::Ignored(format!(
            "a {} for no request of ours",
            env.kind()
        )));
    };
    let issuer = store::need_issuer(conn, op.currency)?;
    if env.verify_signer(&issuer.key).is_err() {
        return Ok(Outcome::Ignored(format!(
            "a {} not signed by the pinned {} issuer",
            env.kind(),
            op.currency
        )));
    }
    if op.is_final {
        return Ok(Outcome::Ignored(format!(
            "a second answer to operation {} (already {})",
            op.id, op.state
        )));
    }
    f(op)
}

fn license_granted(
    conn: &Connection,
    op: Op,
    s: &Signed<LicenseGranted>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let Some(card_id) = op.data.card else {
        return Err(WalletError::Corrupt(format!(
            "license op {} names no card",
            op.id
        )));
    };
    let card = store::card_by_id(conn, card_id)?;
    let issuer = store::need_issuer(conn, op.currency)?;
    let license = &s.unverified().license;
    let ok = license
        .verify_signer(&issuer.key)
        .map(|l| l.card == card.keys && l.currency == op.currency)
        .unwrap_or(false);
    if !ok {
        ops::set_state(
            conn,
            &op,
            "failed",
            "the issuer's license does not name this card",
            now,
        )?;
        conn.prepare_cached("UPDATE cards SET state = 'failed' WHERE id = ?1")?
            .execute([card_id])?;
        return Ok(Outcome::Ignored("a license for another card".into()));
    }
    let l = license.unverified();
    conn.prepare_cached(
        "UPDATE cards SET license = ?2, expires_at = ?3, state = 'active' WHERE id = ?1",
    )?
    .execute(params![
        card_id,
        license.envelope().to_bytes()?,
        sql_time(l.expires_at)
    ])?;
    ops::set_state(
        conn,
        &op,
        "done",
        &format!("licensed until {}", l.expires_at),
        now,
    )?;
    Ok(Outcome::Done)
}

fn enrolled(
    conn: &Connection,
    op: Op,
    s: &Signed<Enrolled>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let e = s.unverified();
    conn.prepare_cached(
        "UPDATE accounts SET state = 'enrolled', name = ?2, balance = ?3 WHERE currency = ?1",
    )?
    .execute(params![
        op.currency.as_str(),
        e.account,
        sql_amount(e.balance)
    ])?;
    ops::set_state(
        conn,
        &op,
        "done",
        &format!("account {:?} bound", e.account),
        now,
    )?;
    Ok(Outcome::Done)
}

fn notes_issued(
    conn: &Connection,
    op: Op,
    s: &Signed<NotesIssued>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let Some(card_id) = op.data.card else {
        return Err(WalletError::Corrupt(format!(
            "withdraw op {} names no card",
            op.id
        )));
    };
    let card = store::card_by_id(conn, card_id)?;
    let issuer = store::need_issuer(conn, op.currency)?;
    let issued = s.unverified();
    let book = mailer::license::LicenseBook::new();
    let revocations = mailer::license::Revocations::none();
    let policy = NotePolicy {
        issuer: &issuer.key,
        currency: op.currency,
        now,
        licenses: &book,
        revocations: &revocations,
        expect: Expect::Issued {
            holder: card.keys.payment,
        },
        accept_expired: false,
    };
    let view = match verify_bundle(&issued.notes, &policy, Some(op.amount)) {
        Ok(v) => v,
        Err(e) => {
            // The account was debited: keep the answer for the operator.
            ops::set_state(
                conn,
                &op,
                "failed",
                &format!(
                    "the issuer's notes do not verify ({e}); show this to the issuer's operator"
                ),
                now,
            )?;
            return Ok(Outcome::Ignored(format!("notes that do not verify: {e}")));
        }
    };
    for (note, v) in issued.notes.iter().zip(&view.notes) {
        store::insert_note(
            conn,
            note,
            &v.current().id,
            card.id,
            v.current().value,
            v.expires_at,
            op.id,
            now,
        )?;
    }
    conn.prepare_cached("UPDATE accounts SET balance = ?2 WHERE currency = ?1")?
        .execute(params![op.currency.as_str(), sql_amount(issued.balance)])?;
    ops::set_state(
        conn,
        &op,
        "done",
        &format!("{} notes", issued.notes.len()),
        now,
    )?;
    Ok(Outcome::Done)
}

fn deposit_receipt(
    conn: &Connection,
    op: Op,
    s: &Signed<DepositReceipt>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let r = s.unverified();
    let mut refused = Vec::new();
    for x in &r.results {
        match &x.result {
            DepositOutcome::Credited | DepositOutcome::AlreadyCredited => {}
            DepositOutcome::Refused { code, reason } => refused.push(format!(
                "{} {} {code}: {reason}",
                x.amount.display_major(op.currency),
                op.currency
            )),
            DepositOutcome::Overspent { proof } => refused.push(format!(
                "{} {} overspent upstream (proof {}): not credited",
                x.amount.display_major(op.currency),
                op.currency,
                proof.id()
            )),
        }
    }
    conn.prepare_cached("UPDATE accounts SET balance = ?2 WHERE currency = ?1")?
        .execute(params![op.currency.as_str(), sql_amount(r.balance)])?;
    let mut detail = format!(
        "credited {} {}",
        r.credited.display_major(op.currency),
        op.currency
    );
    if !refused.is_empty() {
        detail.push_str("; refused: ");
        detail.push_str(&refused.join("; "));
    }
    ops::set_amount(conn, op.id, r.credited)?;
    ops::set_state(conn, &op, "done", &detail, now)?;
    Ok(Outcome::Done)
}

fn revocation_list(
    conn: &Connection,
    s: &Signed<mailer::license::RevocationList>,
) -> Result<Outcome, WalletError> {
    let list = s.unverified();
    let Some(issuer) = store::issuer(conn, list.currency)? else {
        return Ok(Outcome::Ignored(format!(
            "a revocation list for {}, which this wallet does not use",
            list.currency
        )));
    };
    if s.verify_signer(&issuer.key).is_err() {
        return Ok(Outcome::Ignored(
            "a revocation list not signed by the pinned issuer".into(),
        ));
    }
    conn.prepare_cached(
        "UPDATE issuers SET revocations = ?2, revocation_version = ?3
         WHERE currency = ?1 AND revocation_version < ?3",
    )?
    .execute(params![
        list.currency.as_str(),
        s.envelope().to_bytes()?,
        i64::try_from(list.version).unwrap_or(i64::MAX)
    ])?;
    Ok(Outcome::Done)
}

fn error_reply(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<ErrorReply>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let e = s.unverified();
    let Some(request) = e.request else {
        return Ok(Outcome::Ignored(format!(
            "an error about no request of ours: {}",
            e.reason
        )));
    };
    // An exchange's first payment travels ahead of its request: an error
    // may name it (or an earlier step) instead of the op's request.
    let op = match ops::op_by_request(conn, &request)? {
        Some(op) => Some(op),
        None => crate::exchange::op_naming(conn, &request)?,
    };
    let Some(op) = op else {
        return Ok(Outcome::Ignored(format!(
            "an error about no request of ours: {}",
            e.reason
        )));
    };
    if op.is_final {
        return Ok(Outcome::Ignored(format!(
            "an error about finished operation {}: {}",
            op.id, e.reason
        )));
    }
    // Who may refuse: the issuer for its requests; for a payment, the
    // payee card of the address. An invite may be refused by anyone
    // (nothing has moved yet). For an exchange, the pinned agent key.
    let signer_ok = match op.kind.as_str() {
        "send" => match op.state.as_str() {
            "paying" => payee_auth(&op).is_some_and(|k| s.verify_signer(&k).is_ok()),
            _ => s.verify().is_ok(),
        },
        crate::exchange::KIND => {
            crate::exchange::agent_key(conn, &op)?.is_some_and(|k| s.verify_signer(&k).is_ok())
        }
        _ => store::need_issuer(conn, op.currency).map(|i| s.verify_signer(&i.key).is_ok())?,
    };
    if !signer_ok {
        return Ok(Outcome::Ignored(
            "an error reply not signed by whom it concerns".into(),
        ));
    }
    if op.kind == crate::exchange::KIND {
        return crate::exchange::error_reply(conn, w, op, s, now);
    }
    let detail = format!("{} ({}): {}", e.code, e.code.text(), e.reason);
    match op.kind.as_str() {
        "enroll" => {
            conn.prepare_cached("UPDATE accounts SET state = 'failed' WHERE currency = ?1")?
                .execute([op.currency.as_str()])?;
            ops::set_state(conn, &op, "failed", &detail, now)?;
        }
        "license" => {
            if let Some(c) = op.data.card {
                conn.prepare_cached("UPDATE cards SET state = 'failed' WHERE id = ?1")?
                    .execute([c])?;
            }
            ops::set_state(conn, &op, "failed", &detail, now)?;
        }
        "withdraw" => ops::set_state(conn, &op, "failed", &detail, now)?,
        "deposit" => {
            // Refused as a whole: nothing was cleared, the notes are ours.
            for (state, amount) in &op.data.parts {
                store::unspend(conn, state, *amount)?;
            }
            ops::set_state(conn, &op, "failed", &detail, now)?;
        }
        "send" if op.state == "paying" => {
            // The links are signed and out: the value is not ours to
            // spend again. The card is free for other payments.
            if let Some(c) = op.data.card {
                store::set_card_lock(conn, c, None)?;
            }
            ops::set_state(
                conn,
                &op,
                "refused",
                &format!("the payee refused the payment: {detail}"),
                now,
            )?;
            pay_waiting(conn, w, op.currency, now)?;
        }
        "send" => ops::set_state(
            conn,
            &op,
            "refused",
            &format!("the payee refused: {detail}"),
            now,
        )?,
        _ => {
            return Ok(Outcome::Ignored(format!(
                "an error about a {} operation",
                op.kind
            )))
        }
    }
    Ok(Outcome::Done)
}

/// The payee card's authentication key from a send's address.
fn payee_auth(op: &Op) -> Option<mailer::crypto::PublicKey> {
    let env = op.data.address.clone()?;
    let a = Signed::<PaymentAddress>::from_envelope(env).ok()?;
    Some(a.unverified().card.auth)
}

// ---- as payer -------------------------------------------------------------

fn address(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<PaymentAddress>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let a = s.unverified();
    let Some(op) = ops::op_by_transfer(conn, "send", &a.transfer)? else {
        return Ok(Outcome::Ignored(
            "a payment address for no transfer of ours".into(),
        ));
    };
    if op.state != "inviting" {
        return Ok(Outcome::Ignored(format!(
            "a payment address for transfer {} again (already {})",
            op.id, op.state
        )));
    }
    if op.request != Some(a.invite) {
        return Ok(Outcome::Ignored(
            "a payment address answering another invite".into(),
        ));
    }
    let issuer = store::need_issuer(conn, op.currency)?;
    // Signed by the card it names, which the pinned issuer licensed for
    // this currency, now, and has not revoked.
    let check = s
        .verify_signer(&a.card.auth)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            a.license
                .verify_signer(&issuer.key)
                .map_err(|e| e.to_string())
        })
        .and_then(|l| {
            if l.card != a.card || l.currency != op.currency || !l.covers(now) {
                Err("the license does not cover this card, currency and time".into())
            } else if store::revocations(&issuer)
                .revoked_at(&a.card.payment)
                .is_some()
            {
                Err("the payee's card is revoked".into())
            } else {
                Ok(())
            }
        });
    if let Err(why) = check {
        ops::set_state(
            conn,
            &op,
            "refused",
            &format!("the payee's address is not acceptable: {why}"),
            now,
        )?;
        return Ok(Outcome::Ignored(why));
    }
    store::remember_licenses(conn, std::slice::from_ref(&a.license))?;
    let mut data = op.data.clone();
    data.address = Some(s.envelope().clone());
    ops::set_data(conn, op.id, &data)?;
    conn.prepare_cached("UPDATE ops SET next_resend_at = NULL WHERE id = ?1")?
        .execute([op.id])?;
    ops::set_state(
        conn,
        &op,
        "addressed",
        "the payee's card and challenge arrived",
        now,
    )?;
    pay_waiting(conn, w, op.currency, now)?;
    Ok(Outcome::Done)
}

/// Pays the oldest addressed send of `currency` if its card is free.
pub fn pay_waiting(
    conn: &Connection,
    w: &Wallet,
    currency: mailer::money::Currency,
    now: Timestamp,
) -> Result<bool, WalletError> {
    let Some(op) = ops::open_ops(conn)?
        .into_iter()
        .find(|o| o.kind == "send" && o.state == "addressed" && o.currency == currency)
    else {
        return Ok(false);
    };
    let card = store::active_card(conn, currency)?;
    if card.locked_by.is_some() {
        return Ok(false);
    }
    let Some(env) = op.data.address.clone() else {
        return Err(WalletError::Corrupt(format!(
            "send {} has no address",
            op.id
        )));
    };
    let a = Signed::<PaymentAddress>::from_envelope(env)
        .map_err(|e| WalletError::Corrupt(e.to_string()))?
        .unverified()
        .clone();
    let (notes, parts) = match ops::pay_out(
        conn,
        w,
        &card,
        op.amount,
        a.card.payment,
        a.challenge,
        now,
        ops::NOTE_MARGIN_SECS,
    ) {
        Ok(x) => x,
        Err(e @ (WalletError::InsufficientFunds { .. } | WalletError::TooManyNotes { .. })) => {
            ops::set_state(conn, &op, "refused", &format!("not paid: {e}"), now)?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let mut licenses = store::licenses_for(conn, &notes)?;
    licenses.retain(|l| l.unverified().card.payment != a.card.payment);
    let secret = card.secret(conn, &w.vault)?;
    let payment = Signed::sign(
        Payment {
            transfer: a.transfer,
            currency,
            amount: op.amount,
            notes,
            licenses,
            memo: op.memo.clone(),
        },
        &secret.auth,
    )?
    .into_envelope();
    let mut data = op.data.clone();
    data.parts = parts;
    data.payment = Some(payment.id());
    ops::set_data(conn, op.id, &data)?;
    store::set_card_lock(conn, card.id, Some(op.id))?;
    ops::set_state(
        conn,
        &op,
        "paying",
        "paid; waiting for the payee's receipt",
        now,
    )?;
    w.send_request(
        conn,
        op.id,
        &op.peer,
        &format!(
            "payment of {} {currency}",
            op.amount.display_major(currency)
        ),
        &payment,
        now,
    )?;
    Ok(true)
}

fn receipt(
    conn: &Connection,
    w: &Wallet,
    s: &Signed<Receipt>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let r = s.unverified();
    let Some(op) = ops::op_by_transfer(conn, "send", &r.transfer)? else {
        return Ok(Outcome::Ignored("a receipt for no transfer of ours".into()));
    };
    if op.state != "paying" || op.data.payment != Some(r.payment) {
        return Ok(Outcome::Ignored(format!(
            "a receipt for transfer {} that is {}",
            op.id, op.state
        )));
    }
    let Some(auth) = payee_auth(&op) else {
        return Err(WalletError::Corrupt(format!(
            "send {} has no address",
            op.id
        )));
    };
    if s.verify_signer(&auth).is_err() || r.amount != op.amount || r.currency != op.currency {
        return Ok(Outcome::Ignored(
            "a receipt not signed by the payee card, or for another amount".into(),
        ));
    }
    if let Some(c) = op.data.card {
        store::set_card_lock(conn, c, None)?;
    }
    ops::set_state(conn, &op, "done", "the payee's signed receipt arrived", now)?;
    pay_waiting(conn, w, op.currency, now)?;
    Ok(Outcome::Done)
}

// ---- as payee ---------------------------------------------------------------

/// Signs and queues a refusal to the sender of `thread` (never to an
/// automatic mail, never for an error).
#[allow(clippy::too_many_arguments)]
fn refuse(
    conn: &Connection,
    w: &Wallet,
    thread: &Thread,
    signer: &mailer::crypto::SecretKey,
    request: &Envelope,
    code: ErrorCode,
    reason: &str,
    now: Timestamp,
) -> Result<(), WalletError> {
    let Some(to) = &thread.from else {
        return Ok(());
    };
    if thread.automatic {
        return Ok(());
    }
    let env = Signed::sign(
        ErrorReply {
            request: Some(request.id()),
            request_kind: Some(request.kind().to_string()),
            code,
            reason: reason.to_string(),
            evidence: Vec::new(),
        },
        signer,
    )?
    .into_envelope();
    w.answer(
        conn,
        to,
        &format!("refused: {}", code.text()),
        thread,
        &env,
        0,
        now,
    )
}

fn invite(
    conn: &Connection,
    w: &Wallet,
    thread: &Thread,
    s: &Signed<PaymentInvite>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let i = s.unverified();
    if s.verify().is_err() {
        return Ok(Outcome::Ignored(
            "a payment invite with a bad signature".into(),
        ));
    }
    let Some(from) = thread.from.clone() else {
        return Ok(Outcome::Ignored(
            "a payment invite with no address to answer".into(),
        ));
    };
    // The same invite again: the same answer.
    if let Some(op) = ops::op_by_transfer(conn, "receive", &i.transfer)? {
        if op.data.invite == Some(s.id()) {
            if let Some(answer) = &op.data.answer {
                if answer.kind() == PaymentAddress::KIND {
                    w.answer(
                        conn,
                        &from,
                        "payment address (again)",
                        thread,
                        answer,
                        1 + now.unix(),
                        now,
                    )?;
                }
            }
            return Ok(Outcome::Done);
        }
        return Ok(Outcome::Ignored(
            "a second invite reusing a transfer id".into(),
        ));
    }
    let Ok(card) = store::active_card(conn, i.currency) else {
        // No card to answer with (and so no key to sign a refusal): the
        // invite waits in Rejected, and `wallet history` says why.
        return Ok(Outcome::Ignored(format!(
            "an invite to receive {} {} from {from}, but this wallet has no licensed {} card; make one with `wallet card new {}`",
            i.amount.display_major(i.currency), i.currency, i.currency, i.currency
        )));
    };
    let secret = card.secret(conn, &w.vault)?;
    let Some(license) = card.license.clone() else {
        return Err(WalletError::NoCard(i.currency));
    };
    let challenge = Challenge::random();
    let address = Signed::sign(
        PaymentAddress {
            transfer: i.transfer,
            invite: s.id(),
            card: card.keys,
            license,
            challenge,
        },
        &secret.auth,
    )?
    .into_envelope();
    let op = ops::insert_op(
        conn,
        &ops::NewOp {
            kind: "receive",
            currency: i.currency,
            amount: i.amount,
            peer: &from,
            memo: &i.memo,
            state: "addressed",
            transfer: Some(i.transfer),
            data: OpData {
                card: Some(card.id),
                invite: Some(s.id()),
                challenge: Some(challenge),
                payer: Some(*s.signer()),
                answer: Some(address.clone()),
                ..OpData::default()
            },
        },
        now,
    )?;
    tracing::info!(op, transfer = %i.transfer.to_hex(), "answered a payment invite");
    w.answer(
        conn,
        &from,
        &format!(
            "where to pay {} {}",
            i.amount.display_major(i.currency),
            i.currency
        ),
        thread,
        &address,
        0,
        now,
    )?;
    Ok(Outcome::Done)
}

fn payment(
    conn: &Connection,
    w: &Wallet,
    thread: &Thread,
    s: &Signed<Payment>,
    now: Timestamp,
) -> Result<Outcome, WalletError> {
    let p = s.unverified();
    let Some(op) = ops::op_by_transfer(conn, "receive", &p.transfer)? else {
        return Ok(Outcome::Ignored(
            "a payment for no transfer this wallet agreed to".into(),
        ));
    };
    let Some(card_id) = op.data.card else {
        return Err(WalletError::Corrupt(format!(
            "receive op {} names no card",
            op.id
        )));
    };
    let card = store::card_by_id(conn, card_id)?;
    let secret = card.secret(conn, &w.vault)?;
    let to = thread.from.clone().unwrap_or_else(|| op.peer.clone());
    if op.state == "done" {
        if op.data.payment == Some(s.id()) {
            // The same payment again: the same receipt.
            if let Some(r) = &op.data.answer {
                w.answer(conn, &to, "receipt (again)", thread, r, 1 + now.unix(), now)?;
            }
            return Ok(Outcome::Done);
        }
        refuse(
            conn,
            w,
            thread,
            &secret.auth,
            s.envelope(),
            ErrorCode::Replay,
            "this transfer was already paid and received",
            now,
        )?;
        return Ok(Outcome::Ignored(
            "a second, different payment for a received transfer".into(),
        ));
    }
    if op.state != "addressed" {
        return Ok(Outcome::Ignored(format!(
            "a payment for transfer {} that is {}",
            op.id, op.state
        )));
    }
    // Not signed by the card that invited: not the payer's word (damaged
    // or forged on the way). Refused, but the transfer stays open for the
    // genuine payment.
    let signed_by_payer = op.data.payer.is_some_and(|k| s.verify_signer(&k).is_ok());
    if !signed_by_payer {
        let why = "the payment is not signed by the card that sent the invite (damaged or forged on the way); the transfer is still open";
        conn.prepare_cached("UPDATE ops SET detail = ?2 WHERE id = ?1")?
            .execute(params![op.id, format!("refused a payment: {why}")])?;
        refuse(
            conn,
            w,
            thread,
            &secret.auth,
            s.envelope(),
            ErrorCode::BadSignature,
            why,
            now,
        )?;
        return Ok(Outcome::Ignored(why.into()));
    }
    match check_payment(conn, &op, &card, s, now) {
        Ok(view) => {
            keep_notes(conn, &p.notes, &view, &p.licenses, card.id, op.id, now)?;
            let receipt = Signed::sign(
                Receipt {
                    transfer: p.transfer,
                    payment: s.id(),
                    currency: p.currency,
                    amount: p.amount,
                },
                &secret.auth,
            )?
            .into_envelope();
            let mut data = op.data.clone();
            data.payment = Some(s.id());
            data.answer = Some(receipt.clone());
            ops::set_data(conn, op.id, &data)?;
            ops::set_state(
                conn,
                &op,
                "done",
                &format!("received and verified ({} notes)", p.notes.len()),
                now,
            )?;
            w.answer(
                conn,
                &to,
                &format!(
                    "receipt for {} {}",
                    p.amount.display_major(p.currency),
                    p.currency
                ),
                thread,
                &receipt,
                0,
                now,
            )?;
            Ok(Outcome::Done)
        }
        Err((code, why)) => {
            ops::set_state(
                conn,
                &op,
                "refused",
                &format!("payment refused, {code} ({}): {why}", code.text()),
                now,
            )?;
            refuse(conn, w, thread, &secret.auth, s.envelope(), code, &why, now)?;
            Ok(Outcome::Ignored(format!(
                "a payment that failed verification: {why}"
            )))
        }
    }
}

/// Stores verified notes on `card` as spendable (brought by `op`), and
/// the licenses that came with them.
#[allow(clippy::too_many_arguments)]
pub fn keep_notes(
    conn: &Connection,
    notes: &[mailer::note::Note],
    view: &mailer::note::BundleView,
    licenses: &[Signed<mailer::license::License>],
    card: i64,
    op: i64,
    now: Timestamp,
) -> Result<(), WalletError> {
    for (note, v) in notes.iter().zip(&view.notes) {
        store::insert_note(
            conn,
            note,
            &v.current().id,
            card,
            v.current().value,
            v.expires_at,
            op,
            now,
        )?;
    }
    store::remember_licenses(conn, licenses)
}

/// The payee's offline check of a whole payment.
fn check_payment(
    conn: &Connection,
    op: &Op,
    card: &store::CardRow,
    s: &Signed<Payment>,
    now: Timestamp,
) -> Result<mailer::note::BundleView, (ErrorCode, String)> {
    let p = s.unverified();
    let Some(challenge) = op.data.challenge else {
        return Err((
            ErrorCode::BadRequest,
            "no challenge was given for this transfer".into(),
        ));
    };
    if p.currency != op.currency {
        return Err((
            ErrorCode::WrongCurrency,
            format!(
                "the invite was for {}, the payment is in {}",
                op.currency, p.currency
            ),
        ));
    }
    if p.amount != op.amount {
        return Err((
            ErrorCode::BadAmount,
            format!(
                "the invite was for {}, the payment is for {}",
                op.amount.display_major(op.currency),
                p.amount.display_major(op.currency)
            ),
        ));
    }
    verify_paid(
        conn,
        op.currency,
        &p.notes,
        &p.licenses,
        Expect::Paid {
            payee: card.keys.payment,
            challenge,
        },
        Some(p.amount),
        now,
    )
}

/// Verifies notes paid to this wallet (or agent) offline: the whole chain
/// against the pinned issuer of `currency`, the licenses given and stored,
/// the newest revocation list held, `expect` for the last links, the
/// total against `declared`; and that no state was received before.
/// The refusal is a code and a reason for the signed error reply.
#[allow(clippy::too_many_arguments)]
pub fn verify_paid(
    conn: &Connection,
    currency: mailer::money::Currency,
    notes: &[mailer::note::Note],
    licenses: &[Signed<mailer::license::License>],
    expect: Expect,
    declared: Option<mailer::money::Amount>,
    now: Timestamp,
) -> Result<mailer::note::BundleView, (ErrorCode, String)> {
    let db = |e: WalletError| {
        (
            ErrorCode::BadRequest,
            format!("the receiving wallet failed: {e}"),
        )
    };
    let issuer = match store::issuer(conn, currency).map_err(db)? {
        Some(i) => i,
        None => {
            return Err((
                ErrorCode::WrongCurrency,
                format!("no {currency} issuer is pinned here"),
            ))
        }
    };
    let book = store::license_book(conn, &issuer, licenses, notes).map_err(db)?;
    let revocations = store::revocations(&issuer);
    let policy = NotePolicy {
        issuer: &issuer.key,
        currency,
        now,
        licenses: &book,
        revocations: &revocations,
        expect,
        accept_expired: false,
    };
    let view = verify_bundle(notes, &policy, declared)
        .map_err(|e| (ErrorCode::for_bundle(&e), e.to_string()))?;
    for v in &view.notes {
        if store::has_state(conn, &v.current().id).map_err(db)? {
            return Err((
                ErrorCode::Replay,
                "a note in this payment was received before".into(),
            ));
        }
    }
    Ok(view)
}
