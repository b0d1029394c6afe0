//! Protocol emails: building them with lettre, reading them with mail-parser.
//!
//! A protocol email is `multipart/mixed`: a `text/plain` part that tells a
//! person what the mail is, then one or more `application/cbor` attachments
//! in base64, each a signed [`Envelope`]. Message-ID, In-Reply-To and
//! References thread the mails of one transaction into one conversation.
//!
//! Reading is strict where it matters and bounded everywhere: the mail's
//! size is checked before parsing, base64 is decoded by us (strictly, so a
//! damaged attachment is an error and not silently different bytes), and at
//! most [`MAX_ATTACHMENTS`] envelopes are taken from one mail.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use mail_parser::{Encoding, MessageParser, MimeHeaders, PartType};

use crate::crypto::Digest;
use crate::envelope::{Envelope, EnvelopeError};
use crate::limits::{MAX_ATTACHMENTS, MAX_ENVELOPE_BYTES, MAX_MAIL_BYTES};
use crate::money::Timestamp;

/// The content type of protocol attachments.
pub const CBOR_CONTENT_TYPE: &str = "application/cbor";
/// A header naming the kinds carried, so that filters and people can sort
/// protocol mail without decoding it. Informational only: never trusted.
pub const KIND_HEADER: &str = "X-Emoney-Kind";

/// Why a mail could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MimeError {
    #[error("mail of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("not a MIME email (no header section could be read)")]
    NotMime,
    #[error("the mail carries no attachment (a protocol mail carries an {CBOR_CONTENT_TYPE} attachment)")]
    NoAttachment,
    #[error("the mail's attachments are {found}, not {CBOR_CONTENT_TYPE}")]
    WrongContentType { found: String },
    #[error(
        "the mail carries {found} {CBOR_CONTENT_TYPE} attachments, more than the limit of {max}"
    )]
    TooManyAttachments { found: usize, max: usize },
    #[error("attachment {index} is not valid base64")]
    BadBase64 { index: usize },
    #[error("attachment {index} has a transfer encoding that could not be decoded")]
    BadTransferEncoding { index: usize },
    #[error("attachment {index} is {len} bytes, more than the limit of {max}")]
    AttachmentTooLarge {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("attachment {index} is not a valid envelope: {source}")]
    BadEnvelope {
        index: usize,
        #[source]
        source: EnvelopeError,
    },
    #[error("{0:?} is not a usable email address")]
    BadAddress(String),
    #[error("{0:?} is not a usable Message-ID")]
    BadMessageId(String),
    #[error("could not build the email: {0}")]
    Build(String),
}

impl MimeError {
    /// The error code an error reply to such a mail carries.
    pub fn code(&self) -> crate::messages::ErrorCode {
        use crate::messages::ErrorCode;
        match self {
            MimeError::TooLarge { .. } | MimeError::AttachmentTooLarge { .. } => {
                ErrorCode::TooLarge
            }
            MimeError::NoAttachment | MimeError::WrongContentType { .. } => ErrorCode::NoEnvelope,
            MimeError::TooManyAttachments { .. } => ErrorCode::LimitExceeded,
            MimeError::BadEnvelope { source, .. } => ErrorCode::for_envelope(source),
            MimeError::BadBase64 { .. } | MimeError::BadTransferEncoding { .. } => {
                ErrorCode::BadEnvelope
            }
            _ => ErrorCode::MalformedMail,
        }
    }
}

/// A Message-ID without its angle brackets (`local@domain`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// Longest Message-ID we write or accept (RFC 5322 lines are 998).
    pub const MAX_LEN: usize = 250;

    /// Parses `local@domain`, with or without angle brackets.
    pub fn parse(text: &str) -> Result<MessageId, MimeError> {
        let t = text.trim();
        let t = t
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or(t);
        let ok = !t.is_empty()
            && t.len() <= Self::MAX_LEN
            && t.bytes().filter(|b| *b == b'@').count() == 1
            && !t.starts_with('@')
            && !t.ends_with('@')
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b));
        if ok {
            Ok(MessageId(t.to_string()))
        } else {
            Err(MimeError::BadMessageId(text.chars().take(64).collect()))
        }
    }

    /// A Message-ID made from a digest, under the sender's domain. Made from
    /// a digest (not at random) so that the same outgoing mail always has the
    /// same Message-ID: a resend is recognisable as the same mail.
    pub fn from_digest(d: &Digest, domain: &str) -> Result<MessageId, MimeError> {
        MessageId::parse(&format!("{}@{domain}", &d.to_hex()[..40]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// With angle brackets, as written in headers.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}
impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// Validates an email address (`local@domain`), as lettre understands it.
pub fn parse_address(text: &str) -> Result<Mailbox, MimeError> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|_| MimeError::BadAddress(text.chars().take(64).collect()))
}

/// The domain part of an address ("example.test" for "a@example.test").
pub fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
}

/// Everything needed to build one protocol mail.
#[derive(Clone, Debug)]
pub struct OutgoingMail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub message_id: MessageId,
    pub in_reply_to: Option<MessageId>,
    /// The thread so far, oldest first (In-Reply-To is added if missing).
    pub references: Vec<MessageId>,
    pub date: Timestamp,
    /// The human-readable text part.
    pub text: String,
    pub envelopes: Vec<Envelope>,
    /// Marks the mail as an automatic reply (RFC 3834), so that
    /// vacation responders and other robots do not answer it.
    pub auto_reply: bool,
}

/// The last instant a Date header can carry: 9999-12-31T23:59:59Z.
const LAST_DATE: u64 = 253_402_300_799;

/// Builds the RFC 5322 bytes of a protocol mail.
pub fn build_mail(mail: &OutgoingMail) -> Result<Vec<u8>, MimeError> {
    if mail.envelopes.is_empty() || mail.envelopes.len() > MAX_ATTACHMENTS {
        return Err(MimeError::TooManyAttachments {
            found: mail.envelopes.len(),
            max: MAX_ATTACHMENTS,
        });
    }
    // lettre writes the Date header with httpdate, which panics on instants
    // after 9999-12-31T23:59:59Z (and SystemTime may overflow before that).
    if mail.date.unix() > LAST_DATE {
        return Err(MimeError::Build(format!(
            "date {} is after the year 9999",
            mail.date.unix()
        )));
    }
    let date = SystemTime::UNIX_EPOCH + Duration::from_secs(mail.date.unix());
    let mut builder = lettre::Message::builder()
        .from(parse_address(&mail.from)?)
        .to(parse_address(&mail.to)?)
        .subject(mail.subject.clone())
        .date(date)
        .message_id(Some(mail.message_id.bracketed()));
    let mut references: Vec<String> = mail.references.iter().map(MessageId::bracketed).collect();
    if let Some(parent) = &mail.in_reply_to {
        builder = builder.in_reply_to(parent.bracketed());
        if !mail.references.contains(parent) {
            references.push(parent.bracketed());
        }
    }
    if !references.is_empty() {
        builder = builder.references(references.join(" "));
    }
    let kinds: Vec<&str> = mail.envelopes.iter().map(Envelope::kind).collect();
    builder = builder.raw_header(HeaderValue::new(
        header_name(KIND_HEADER)?,
        kinds.join(", "),
    ));
    if mail.auto_reply {
        builder = builder.raw_header(HeaderValue::new(
            header_name("Auto-Submitted")?,
            "auto-replied".to_string(),
        ));
    }
    let cbor =
        ContentType::parse(CBOR_CONTENT_TYPE).map_err(|e| MimeError::Build(e.to_string()))?;
    let mut body = MultiPart::mixed().singlepart(SinglePart::plain(mail.text.clone()));
    for (i, env) in mail.envelopes.iter().enumerate() {
        let bytes = env
            .to_bytes()
            .map_err(|e| MimeError::Build(e.to_string()))?;
        let filename = format!("{}-{}.cbor", i + 1, env.kind());
        // Always base64: the CBOR is binary, and a fixed encoding keeps the
        // mail's bytes predictable for tests and for people.
        let part = Attachment::new(filename).body(
            lettre::message::Body::new_with_encoding(
                bytes,
                lettre::message::header::ContentTransferEncoding::Base64,
            )
            .map_err(|_| MimeError::Build("base64 body".into()))?,
            cbor.clone(),
        );
        body = body.singlepart(part);
    }
    let msg = builder
        .multipart(body)
        .map_err(|e| MimeError::Build(e.to_string()))?;
    Ok(msg.formatted())
}

fn header_name(name: &str) -> Result<HeaderName, MimeError> {
    HeaderName::new_from_ascii(name.to_string()).map_err(|e| MimeError::Build(e.to_string()))
}

/// What was read from a received protocol mail. The envelopes are decoded
/// but their signatures are NOT checked yet: that is the receiver's job,
/// against the key it requires.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub message_id: Option<MessageId>,
    pub in_reply_to: Option<MessageId>,
    pub references: Vec<MessageId>,
    /// The From address as written: informational only, never proof.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// `Auto-Submitted` other than `no` (RFC 3834). Protocol replies are
    /// marked so (they are automatic); a receiver still answers them as the
    /// protocol says, but never sends an *error* reply to such a mail, so
    /// two robots cannot bounce errors at each other forever.
    pub auto_submitted: bool,
    pub envelopes: Vec<Envelope>,
}

/// The thread headers of a mail, readable even when the rest is not (so that
/// an error reply can still be threaded and addressed).
#[derive(Clone, Debug, Default)]
pub struct MailHeaders {
    pub message_id: Option<MessageId>,
    pub in_reply_to: Option<MessageId>,
    pub references: Vec<MessageId>,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub auto_submitted: bool,
}

/// Reads the headers only. Never fails: what cannot be read is `None`.
pub fn read_headers(raw: &[u8]) -> MailHeaders {
    if raw.len() > MAX_MAIL_BYTES {
        return MailHeaders::default();
    }
    match MessageParser::default().parse_headers(raw) {
        Some(msg) => headers_of(&msg),
        None => MailHeaders::default(),
    }
}

fn headers_of(msg: &mail_parser::Message<'_>) -> MailHeaders {
    let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<MessageId> {
        match v {
            mail_parser::HeaderValue::Text(t) => {
                MessageId::parse(t).map(|m| vec![m]).unwrap_or_default()
            }
            mail_parser::HeaderValue::TextList(l) => {
                l.iter().filter_map(|t| MessageId::parse(t).ok()).collect()
            }
            _ => Vec::new(),
        }
    };
    let auto_submitted = msg
        .header_raw("Auto-Submitted")
        .map(|v| !v.trim().eq_ignore_ascii_case("no"))
        .unwrap_or(false);
    MailHeaders {
        message_id: msg.message_id().and_then(|m| MessageId::parse(m).ok()),
        in_reply_to: ids(msg.in_reply_to()).into_iter().next(),
        references: ids(msg.references())
            .into_iter()
            .take(crate::limits::MAX_EVIDENCE * 8)
            .collect(),
        from: msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string),
        subject: msg.subject().map(|s| s.chars().take(200).collect()),
        auto_submitted,
    }
}

/// Reads a received mail into its envelopes.
pub fn parse_mail(raw: &[u8]) -> Result<ReceivedMail, MimeError> {
    if raw.len() > MAX_MAIL_BYTES {
        return Err(MimeError::TooLarge {
            len: raw.len(),
            max: MAX_MAIL_BYTES,
        });
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(MimeError::NotMime)?;
    // mail-parser takes a last line without a colon, and any bytes before a
    // colon, for a header name (so "hello" or binary junk would be a mail):
    // a mail needs one real field, a name of printable ASCII (RFC 5322
    // section 2.2) ended by a colon.
    let has_field = msg.root_part().headers().iter().any(|h| {
        let name = h.name.as_str();
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_graphic())
            && raw
                .get(..h.offset_start as usize)
                .is_some_and(|r| r.ends_with(b":"))
    });
    if !has_field {
        return Err(MimeError::NotMime);
    }
    let headers = headers_of(&msg);
    let raw_message = msg.raw_message();
    let mut envelopes = Vec::new();
    let mut other_types: Vec<String> = Vec::new();
    // Counted before any is decoded, so that the error names them all.
    let found = msg
        .parts
        .iter()
        .filter(|p| content_type_of(p) == CBOR_CONTENT_TYPE)
        .count();
    if found > MAX_ATTACHMENTS {
        return Err(MimeError::TooManyAttachments {
            found,
            max: MAX_ATTACHMENTS,
        });
    }
    // Only this message's own parts: a nested message/rfc822 (a bounce that
    // quotes our mail, a forward) is never taken for a new request.
    for (i, part) in msg.parts.iter().enumerate() {
        if i == 0 && part.is_multipart() {
            continue;
        }
        let ctype = content_type_of(part);
        if ctype != CBOR_CONTENT_TYPE {
            let is_text_body = msg.text_body.contains(&(i as u32))
                || msg.html_body.contains(&(i as u32))
                || part.is_multipart();
            if !is_text_body && !ctype.is_empty() {
                other_types.push(ctype);
            }
            continue;
        }
        let index = envelopes.len();
        let bytes = attachment_bytes(raw_message, part, index)?;
        let env = Envelope::from_bytes(&bytes)
            .map_err(|source| MimeError::BadEnvelope { index, source })?;
        envelopes.push(env);
    }
    if envelopes.is_empty() {
        if other_types.is_empty() {
            return Err(MimeError::NoAttachment);
        }
        other_types.sort();
        other_types.dedup();
        return Err(MimeError::WrongContentType {
            found: other_types.join(", "),
        });
    }
    Ok(ReceivedMail {
        message_id: headers.message_id,
        in_reply_to: headers.in_reply_to,
        references: headers.references,
        from: headers.from,
        subject: headers.subject,
        auto_submitted: headers.auto_submitted,
        envelopes,
    })
}

/// A part's `type/subtype` in lower case, or "" when it has none.
fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|c| {
            format!(
                "{}/{}",
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("").to_ascii_lowercase()
            )
        })
        .unwrap_or_default()
}

/// The decoded bytes of an attachment. Base64 is decoded here, strictly,
/// from the raw part body; other encodings are taken as mail-parser decoded
/// them, unless it reported a problem.
fn attachment_bytes(
    raw: &[u8],
    part: &mail_parser::MessagePart<'_>,
    index: usize,
) -> Result<Vec<u8>, MimeError> {
    let too_large = |len| MimeError::AttachmentTooLarge {
        index,
        len,
        max: MAX_ENVELOPE_BYTES,
    };
    // mail-parser sets `encoding` to None when its own (lenient) base64
    // decoding fails, so the header decides.
    let base64 = part.encoding == Encoding::Base64
        || part
            .content_transfer_encoding()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    if base64 {
        let start = part.raw_body_offset() as usize;
        let end = (part.raw_end_offset() as usize).min(raw.len());
        let body = raw.get(start..end).unwrap_or(&[]);
        let compact: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        // 4 characters carry 3 bytes, less up to 2 for padding; line
        // ends do not count.
        if compact.len() / 4 * 3 > MAX_ENVELOPE_BYTES + 2 {
            return Err(too_large(compact.len() / 4 * 3));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&compact)
            .map_err(|_| MimeError::BadBase64 { index })?;
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(too_large(bytes.len()));
        }
        Ok(bytes)
    } else {
        if part.is_encoding_problem {
            return Err(MimeError::BadTransferEncoding { index });
        }
        let bytes = match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => b.to_vec(),
            PartType::Text(t) | PartType::Html(t) => t.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(too_large(bytes.len()));
        }
        Ok(bytes)
    }
}
