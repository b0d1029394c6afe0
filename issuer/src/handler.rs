//! Mail in, state change and reply out: the issuer's
//! [`mailer::imap::MailHandler`].
//!
//! For each mail ([`handle_mail`]), inside the caller's transaction:
//!
//! 1. `parse_mail`. Mail that is not protocol mail at all (not MIME, no
//!    attachment, attachments of other types) is rejected with no reply,
//!    so the issuer never reflects spam. A protocol mail that cannot be
//!    read (bad base64, a broken envelope...) gets a signed error.
//! 2. For each envelope: if its id is in `requests` (and its signature
//!    verifies: the id does not cover it), the stored reply is
//!    sent again in a new mail (its Message-ID made from the request id and
//!    a resend counter) and nothing else changes. Otherwise it is decoded
//!    and handed to its family's handler ([`crate::handlers`]), and the
//!    reply (or the signed `error`) is recorded with the request id and
//!    queued with [`mailer::outbox::enqueue`], in the same transaction.
//! 3. Replies thread to the request mail, go to its From address and are
//!    marked `Auto-Submitted: auto-replied`; no error reply ever goes to
//!    a mail that is itself marked automatic.
//!
//! A refusal decided before the request's signature is known good (a bad
//! signature, an unknown kind) is answered but not recorded: the envelope
//! id does not cover the signature, so recording it would let anyone who
//! saw a request send a damaged copy first and make the real one refused.

use mailer::crypto::{digest, Digest};
use mailer::envelope::{Body, Envelope};
use mailer::imap::{Disposition, HandlerError, IncomingMail, MailHandler};
use mailer::messages::{ErrorCode, ErrorReply, Message, RevocationListRequest};
use mailer::mime::{self, MailHeaders, MessageId, MimeError, OutgoingMail};
use mailer::money::Timestamp;
use rusqlite::{Connection, Transaction};

pub use mailer::clock::Clock;

use crate::error::{IssuerError, Refusal};
use crate::handlers::{self, Answer, Cx};
use crate::{store, Issuer};

/// The issuer's mail handler, for [`mailer::imap::Watcher`].
#[derive(Debug)]
pub struct IssuerHandler {
    issuer: Issuer,
    clock: Clock,
}

impl IssuerHandler {
    pub fn new(issuer: Issuer) -> IssuerHandler {
        IssuerHandler {
            issuer,
            clock: Clock::System,
        }
    }
    pub fn with_clock(issuer: Issuer, clock: Clock) -> IssuerHandler {
        IssuerHandler { issuer, clock }
    }
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }
}

impl MailHandler for IssuerHandler {
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError> {
        handle_mail(tx, &self.issuer, mail.raw, self.clock.now())
            .map_err(|e| HandlerError(e.to_string()))
    }
}

/// The thread a reply joins, and where it goes.
#[derive(Clone, Debug)]
struct Thread {
    to: Option<String>,
    in_reply_to: Option<MessageId>,
    references: Vec<MessageId>,
    automatic: bool,
}

impl Thread {
    fn of(h: MailHeaders) -> Thread {
        Thread {
            // An address lettre cannot use is no address to reply to.
            to: h.from.filter(|a| mime::parse_address(a).is_ok()),
            in_reply_to: h.message_id,
            references: h.references,
            automatic: h.auto_submitted,
        }
    }
}

/// Handles one received mail inside `conn`'s transaction (see the module
/// docs). An `Err` is a failure of the issuer (its database): the caller
/// rolls back and tries the mail again later.
pub fn handle_mail(
    conn: &Connection,
    issuer: &Issuer,
    raw: &[u8],
    now: Timestamp,
) -> Result<Disposition, IssuerError> {
    let cx = Cx { conn, issuer, now };
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
            let refusal = Refusal::new(
                e.code(),
                format!("{e}; the mail was not read. Send the request again from your wallet"),
            );
            let thread = Thread::of(mime::read_headers(raw));
            let mid = digest(&[b"issuer-mail-refusal", raw]);
            send_unrecorded(&cx, &thread, None, None, &refusal, &mid)?;
            return Ok(Disposition::Rejected {
                reason: refusal.to_string(),
            });
        }
    };
    let thread = Thread {
        to: mail.from.filter(|a| mime::parse_address(a).is_ok()),
        in_reply_to: mail.message_id,
        references: mail.references,
        automatic: mail.auto_submitted,
    };
    let mut handled = 0usize;
    let mut refusals = Vec::new();
    for envelope in mail.envelopes {
        match handle_envelope(&cx, &thread, envelope)? {
            None => handled += 1,
            Some(reason) => refusals.push(reason),
        }
    }
    Ok(if handled > 0 || refusals.is_empty() {
        Disposition::Processed
    } else {
        Disposition::Rejected {
            reason: refusals.join("; "),
        }
    })
}

/// Handles one envelope; returns the refusal's text if it was refused.
fn handle_envelope(
    cx: &Cx<'_>,
    thread: &Thread,
    envelope: Envelope,
) -> Result<Option<String>, IssuerError> {
    let id = envelope.id();
    let kind = envelope.kind().to_string();
    let signature = *envelope.signature();
    let unrecorded_mid = digest(&[b"issuer-refusal", id.as_bytes(), signature.as_bytes()]);
    if let Some(stored) = store::request(cx.conn, &id)? {
        // The id does not cover the signature: a copy of an answered
        // request with a forged signature is refused, not answered as the
        // original was.
        if let Err(e) = envelope.verify() {
            let refusal = Refusal::new(
                ErrorCode::for_envelope(&e),
                format!("{e}; the request was not read"),
            );
            send_unrecorded(cx, thread, Some(id), Some(&kind), &refusal, &unrecorded_mid)?;
            return Ok(Some(refusal.to_string()));
        }
        return replay(cx, thread, &id, stored);
    }
    let message = match Message::decode(envelope.clone()) {
        Ok(m) => m,
        Err(e) => {
            let refusal = Refusal::new(
                ErrorCode::for_envelope(&e),
                format!("{e}; the request was not read"),
            );
            send_unrecorded(cx, thread, Some(id), Some(&kind), &refusal, &unrecorded_mid)?;
            return Ok(Some(refusal.to_string()));
        }
    };
    let answer = match &message {
        Message::LicenseRequest(s) => handlers::license::request(cx, s)?,
        Message::RevocationListRequest(s) => handlers::revocation::request(cx, s)?,
        Message::EnrollRequest(s) => handlers::enroll::request(cx, s)?,
        Message::WithdrawRequest(s) => handlers::withdraw::request(cx, s)?,
        Message::Deposit(s) => handlers::deposit::request(cx, s)?,
        // An error is never answered, least of all with an error.
        Message::Error(_) => {
            return Ok(Some(
                "an error reply reached the issuer, which sends no requests; not answered".into(),
            ))
        }
        Message::Unknown(_) => Answer::Unverified(Refusal::new(
            ErrorCode::UnknownKind,
            format!("the issuer does not know the message kind {kind:?}; {HANDLED}"),
        )),
        _ => Answer::Unverified(Refusal::new(
            ErrorCode::NotForUs,
            format!("the issuer does not handle {kind} messages; {HANDLED}"),
        )),
    };
    match answer {
        Answer::Unverified(refusal) => {
            send_unrecorded(cx, thread, Some(id), Some(&kind), &refusal, &unrecorded_mid)?;
            Ok(Some(refusal.to_string()))
        }
        Answer::Decided(result) => {
            let (reply, refused) = match result {
                Ok(reply) => (reply, None),
                Err(refusal) => (
                    error_reply(cx.issuer, Some(id), Some(&kind), &refusal)?,
                    Some(refusal.to_string()),
                ),
            };
            store::insert_request(cx.conn, &envelope, &reply, cx.now)?;
            if refused.is_none() || !thread.automatic {
                send(cx, thread, &reply, &reply_message_id(&id, 0))?;
            }
            Ok(refused)
        }
    }
}

const HANDLED: &str = "it answers license-request, revocation-list-request, enroll-request, withdraw-request and deposit";

/// Sends the stored reply to a request seen before, changing nothing else.
fn replay(
    cx: &Cx<'_>,
    thread: &Thread,
    id: &Digest,
    stored: store::StoredReply,
) -> Result<Option<String>, IssuerError> {
    // The revocation list is always the current one (protocol 4.1).
    let reply =
        if stored.kind == RevocationListRequest::KIND && stored.reply.kind() != ErrorReply::KIND {
            handlers::revocation::current_list(cx.conn, cx.issuer)?.into_envelope()
        } else {
            stored.reply
        };
    let n = store::count_resend(cx.conn, id, &reply)?;
    let refused = if reply.kind() == ErrorReply::KIND {
        Some(
            mailer::envelope::Signed::<ErrorReply>::from_envelope(reply.clone())
                .map(|e| format!("{} (answered again)", e.unverified().reason))
                .unwrap_or_else(|_| "refused before (answered again)".into()),
        )
    } else {
        None
    };
    if refused.is_none() || !thread.automatic {
        send(cx, thread, &reply, &reply_message_id(id, n))?;
    }
    Ok(refused)
}

/// The Message-ID of the `resend`-th mail carrying the reply to `request`.
fn reply_message_id(request: &Digest, resend: u64) -> Digest {
    digest(&[b"issuer-reply", request.as_bytes(), &resend.to_be_bytes()])
}

fn error_reply(
    issuer: &Issuer,
    request: Option<Digest>,
    kind: Option<&str>,
    refusal: &Refusal,
) -> Result<Envelope, IssuerError> {
    Ok(issuer
        .sign(ErrorReply {
            request,
            request_kind: kind.map(|k| k.chars().take(mailer::limits::MAX_KIND_LEN).collect()),
            code: refusal.code,
            reason: refusal.reason.clone(),
            evidence: Vec::new(),
        })?
        .into_envelope())
}

/// Answers a refusal that is not recorded (unless the mail is automatic).
fn send_unrecorded(
    cx: &Cx<'_>,
    thread: &Thread,
    request: Option<Digest>,
    kind: Option<&str>,
    refusal: &Refusal,
    message_id: &Digest,
) -> Result<(), IssuerError> {
    if thread.automatic {
        return Ok(());
    }
    let reply = error_reply(cx.issuer, request, kind, refusal)?;
    send(cx, thread, &reply, message_id)
}

/// Queues `reply` in a mail to the request's sender (if it has a usable
/// From address).
fn send(
    cx: &Cx<'_>,
    thread: &Thread,
    reply: &Envelope,
    message_id: &Digest,
) -> Result<(), IssuerError> {
    let Some(to) = &thread.to else {
        return Ok(());
    };
    let (subject, text) = describe(cx.issuer, reply);
    let mail = OutgoingMail {
        from: cx.issuer.address().to_string(),
        to: to.clone(),
        subject,
        message_id: MessageId::from_digest(message_id, cx.issuer.domain())?,
        in_reply_to: thread.in_reply_to.clone(),
        references: thread.references.clone(),
        date: cx.now,
        text,
        envelopes: vec![reply.clone()],
        auto_reply: true,
    };
    mailer::outbox::enqueue(cx.conn, &mail, cx.now)?;
    Ok(())
}

/// The subject and the text part of a reply.
fn describe(issuer: &Issuer, reply: &Envelope) -> (String, String) {
    let what = match reply.kind() {
        "license-granted" => "License granted".to_string(),
        "enrolled" => "Account key enrolled".to_string(),
        "notes-issued" => "Notes issued".to_string(),
        "deposit-receipt" => "Deposit receipt".to_string(),
        "revocation-list" => "Revocation list".to_string(),
        _ => match mailer::envelope::Signed::<ErrorReply>::from_envelope(reply.clone()) {
            Ok(e) => format!("Request refused: {}", e.unverified().code),
            Err(_) => reply.kind().to_string(),
        },
    };
    let text = Message::decode(reply.clone())
        .map(|m| m.describe())
        .unwrap_or_default();
    let currency = issuer.currency();
    (
        format!("{currency} issuer: {what}"),
        format!(
            "{text}\n\nSent automatically by the {currency} issuer in answer to your request. \
             Your wallet reads the attached message."
        ),
    )
}
