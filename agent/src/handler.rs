//! Mail in, replies out: the agent's [`MailHandler`]. For each envelope
//! of a mail, in the watcher's transaction:
//!
//! 1. A request decided before (its envelope id is in `agent_requests`)
//!    gets its stored reply again, in a new mail, and nothing else (unless
//!    its signature does not verify: the id does not cover it, so a copy
//!    with a forged signature is refused as such).
//! 2. What the agent never takes (an envelope that does not decode, an
//!    unknown kind, a request for an issuer) is refused with a signed
//!    error, not recorded.
//! 3. An exchange request goes to [`crate::exchange`]; its decision, the
//!    state it changes and the reply it queues commit together.
//! 4. Anything else (the issuers' answers to the agent's own withdrawals,
//!    deposits and licenses; payments to its cards) is the agent's wallet's
//!    business: `wallet::handler::handle_envelope`.
//!
//! Replies thread to the request and go to its From address; no error is
//! ever sent in answer to an automatic mail.

use mailer::crypto::digest;
use mailer::envelope::{Body, Envelope, Signed};
use mailer::imap::{Disposition, HandlerError, IncomingMail, MailHandler};
use mailer::messages::{ErrorCode, ErrorReply, Message};
use mailer::money::Timestamp;
use rusqlite::{Connection, Transaction};
use wallet::handler::{Outcome, Thread};

pub use mailer::clock::Clock;

use crate::error::AgentError;
use crate::exchange::{self, Answer, Cx, Refusal};
use crate::home::Agent;
use crate::store;

/// The agent's handler for [`mailer::imap::Watcher`].
#[derive(Debug)]
pub struct AgentHandler {
    pub agent: Agent,
    pub clock: Clock,
    /// Test only: take first payments, never make second payments.
    pub withhold_second_payments: bool,
}

impl MailHandler for AgentHandler {
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError> {
        handle_mail(
            tx,
            &self.agent,
            mail.raw,
            self.clock.now(),
            self.withhold_second_payments,
        )
        .map_err(|e| HandlerError(e.to_string()))
    }
}

/// Handles one mail in `conn`'s transaction. `Err` only for the agent's
/// own failures (the mail is tried again later).
pub fn handle_mail(
    conn: &Connection,
    agent: &Agent,
    raw: &[u8],
    now: Timestamp,
    withhold_second_payments: bool,
) -> Result<Disposition, AgentError> {
    wallet::handler::each_envelope(
        raw,
        |e, thread| {
            let refusal = Refusal::new(
                e.code(),
                format!("{e}; the mail was not read. Send the request again"),
            );
            let n = u64::from_be_bytes(
                digest(&[b"agent-mail-refusal", raw]).as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            );
            send_error(conn, agent, &thread, None, &refusal, n, now)
        },
        |thread, env| handle_envelope(conn, agent, thread, env, now, withhold_second_payments),
    )
}

/// What the agent answers, for refusals.
const AGENT_HANDLES: &str =
    "it answers quote-request, offer-acceptance, first-payment and second-payment-request";

/// The message, or why the agent refuses it unread: an envelope that does
/// not decode, a kind it does not know, a request meant for an issuer.
/// What the agent never takes is refused with a signed reason, so that the
/// sender learns why (the wallet part would drop it silently).
fn decode_for_agent(env: &Envelope) -> Result<Message, Refusal> {
    match Message::decode(env.clone()) {
        Err(e) => Err(Refusal::new(
            ErrorCode::for_envelope(&e),
            format!("{e}; the request was not read"),
        )),
        Ok(Message::Unknown(_)) => Err(Refusal::new(
            ErrorCode::UnknownKind,
            format!(
                "the agent does not know the message kind {:?}; {AGENT_HANDLES}",
                env.kind()
            ),
        )),
        Ok(
            Message::LicenseRequest(_)
            | Message::RevocationListRequest(_)
            | Message::EnrollRequest(_)
            | Message::WithdrawRequest(_)
            | Message::Deposit(_),
        ) => Err(Refusal::new(
            ErrorCode::NotForUs,
            format!(
                "a {} is for an issuer, not an exchange agent; {AGENT_HANDLES}",
                env.kind()
            ),
        )),
        Ok(m) => Ok(m),
    }
}

fn handle_envelope(
    conn: &Connection,
    agent: &Agent,
    thread: &Thread,
    env: Envelope,
    now: Timestamp,
    withhold_second_payments: bool,
) -> Result<Outcome, AgentError> {
    let id = env.id();
    let unrecorded_n = || {
        u64::from_be_bytes(
            digest(&[
                b"agent-unrecorded",
                id.as_bytes(),
                env.signature().as_bytes(),
            ])
            .as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        )
    };
    // A signed error that is not recorded: the same request may be sent
    // again and be read then.
    let refuse_unrecorded = |refusal: &Refusal| -> Result<Outcome, AgentError> {
        send_error(
            conn,
            agent,
            thread,
            Some(&env),
            refusal,
            unrecorded_n(),
            now,
        )?;
        Ok(Outcome::Ignored(format!("refused: {}", refusal.reason)))
    };
    // The id does not cover the signature: a copy of a decided request
    // with a forged signature is refused, not answered as the original.
    let read = match store::decided(conn, &id)? {
        Some(_) if env.verify().is_err() => Err(Refusal::new(
            ErrorCode::BadSignature,
            "the signature does not verify; the request was not read",
        )),
        Some(stored) => return replay(conn, agent, thread, &env, stored, now),
        None => decode_for_agent(&env),
    };
    let message = match read {
        Ok(m) => m,
        Err(refusal) => return refuse_unrecorded(&refusal),
    };
    let cx = Cx {
        conn,
        agent,
        peer: thread.from.as_deref().unwrap_or(""),
        now,
        withhold_second_payments,
    };
    let (answer, tr_id) = match &message {
        Message::QuoteRequest(s) => (exchange::quote(&cx, s)?, None),
        Message::OfferAcceptance(s) => (exchange::accept(&cx, s)?, Some(s.unverified().tr_id)),
        Message::FirstPayment(s) => (exchange::first_payment(&cx, s)?, Some(s.unverified().tr_id)),
        Message::SecondPaymentRequest(s) => (
            exchange::second_request(&cx, s)?,
            Some(s.unverified().tr_id),
        ),
        _ => {
            return Ok(wallet::handler::handle_envelope(
                conn,
                &agent.wallet,
                thread,
                env,
                now,
            )?)
        }
    };
    let tr_id = tr_id.or_else(|| match &answer {
        Answer::Reply(r) => Signed::<mailer::messages::Offer>::from_envelope(r.clone())
            .ok()
            .map(|o| o.unverified().terms.tr_id),
        _ => None,
    });
    match answer {
        Answer::Reply(reply) => {
            store::record(conn, &env, tr_id.as_ref(), Some(&reply), now)?;
            send(conn, agent, thread, &reply, 0, now)?;
            Ok(Outcome::Done)
        }
        Answer::Taken => {
            store::record(conn, &env, tr_id.as_ref(), None, now)?;
            Ok(Outcome::Done)
        }
        Answer::Refused(refusal) => {
            let reply = error_reply(agent, &env, &refusal)?;
            store::record(conn, &env, tr_id.as_ref(), Some(&reply), now)?;
            if !thread.automatic {
                send(conn, agent, thread, &reply, 0, now)?;
            }
            Ok(Outcome::Ignored(format!("refused: {}", refusal.reason)))
        }
        Answer::Unrecorded(refusal) => refuse_unrecorded(&refusal),
        Answer::Withheld => Ok(Outcome::Done),
    }
}

/// The stored reply to a request seen before, sent again.
fn replay(
    conn: &Connection,
    agent: &Agent,
    thread: &Thread,
    env: &Envelope,
    stored: store::Decided,
    now: Timestamp,
) -> Result<Outcome, AgentError> {
    let n = store::count_resend(conn, &env.id())?;
    let Some(reply) = stored.reply else {
        return Ok(Outcome::Done);
    };
    let is_error = reply.kind() == ErrorReply::KIND;
    if !(is_error && thread.automatic) {
        send(conn, agent, thread, &reply, n + 1, now)?;
    }
    Ok(if is_error {
        Outcome::Ignored(format!("a {} refused before, answered again", stored.kind))
    } else {
        Outcome::Done
    })
}

fn error_reply(agent: &Agent, request: &Envelope, r: &Refusal) -> Result<Envelope, AgentError> {
    Ok(agent
        .sign(ErrorReply {
            request: Some(request.id()),
            request_kind: Some(
                request
                    .kind()
                    .chars()
                    .take(mailer::limits::MAX_KIND_LEN)
                    .collect(),
            ),
            code: r.code,
            reason: r.reason.clone(),
            evidence: r.evidence.clone(),
        })?
        .into_envelope())
}

fn send_error(
    conn: &Connection,
    agent: &Agent,
    thread: &Thread,
    request: Option<&Envelope>,
    r: &Refusal,
    n: u64,
    now: Timestamp,
) -> Result<(), AgentError> {
    if thread.automatic {
        return Ok(());
    }
    let reply = match request {
        Some(req) => error_reply(agent, req, r)?,
        None => agent
            .sign(ErrorReply {
                request: None,
                request_kind: None,
                code: r.code,
                reason: r.reason.clone(),
                evidence: Vec::new(),
            })?
            .into_envelope(),
    };
    send(conn, agent, thread, &reply, n, now)
}

fn send(
    conn: &Connection,
    agent: &Agent,
    thread: &Thread,
    reply: &Envelope,
    n: u64,
    now: Timestamp,
) -> Result<(), AgentError> {
    let Some(to) = &thread.from else {
        return Ok(());
    };
    let subject = match reply.kind() {
        "offer" => "Exchange offer".to_string(),
        "signed-offer" => "Signed offer".to_string(),
        "second-payment" => "Second payment".to_string(),
        "refund" => "Refund of your payment".to_string(),
        _ => match Signed::<ErrorReply>::from_envelope(reply.clone()) {
            Ok(e) => format!("Request refused: {}", e.unverified().code),
            Err(_) => reply.kind().to_string(),
        },
    };
    agent.wallet.answer(
        conn,
        to,
        &format!("exchange agent: {subject}"),
        thread,
        reply,
        n,
        now,
    )?;
    Ok(())
}
