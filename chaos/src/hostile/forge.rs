//! Building hostile mail: protocol mail made with the product's own
//! `mime::build_mail` (so that it passes every check but the one a case
//! aims at), and raw MIME written by hand where the product's builder
//! would refuse to make it.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use mailer::crypto::{Digest, SecretKey};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::mime::{self, MessageId, OutgoingMail};
use mailer::money::Timestamp;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A Message-ID no one used before.
pub fn fresh_id(domain: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let r: [u8; 6] = mailer::crypto::random_bytes();
    format!("hostile-{n}-{}@{domain}", hex(&r))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The domain of an address.
pub fn domain(address: &str) -> &str {
    mime::domain_of(address).unwrap_or("example.test")
}

/// A protocol mail from `from` to `to` carrying `envelopes`, as a wallet
/// would send it (not marked automatic), under a fresh Message-ID.
pub fn protocol_mail(from: &str, to: &str, envelopes: Vec<Envelope>) -> Result<Vec<u8>> {
    let id = fresh_id(domain(from));
    let mail = OutgoingMail {
        from: from.to_string(),
        to: to.to_string(),
        subject: "request".into(),
        message_id: MessageId::parse(&id)?,
        in_reply_to: None,
        references: Vec::new(),
        date: mailer::clock::now(),
        text: "A request.".into(),
        envelopes,
        auto_reply: false,
    };
    mime::build_mail(&mail).context("cannot build the mail")
}

/// The envelope of a signed body.
pub fn sign<T: Body>(body: T, key: &SecretKey) -> Result<Envelope> {
    Ok(Signed::sign(body, key)?.into_envelope())
}

/// Headers of a hand-written mail (no trailing blank line).
pub fn headers(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}>\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\n",
        fresh_id(domain(from))
    )
}

/// A part of a hand-written multipart mail.
#[derive(Debug, Clone)]
pub struct Part {
    pub content_type: String,
    /// `Content-Transfer-Encoding`, if any.
    pub encoding: Option<String>,
    /// The body as it appears in the mail (already encoded).
    pub body: Vec<u8>,
}

impl Part {
    pub fn text(t: &str) -> Part {
        Part {
            content_type: "text/plain; charset=utf-8".into(),
            encoding: None,
            body: t.as_bytes().to_vec(),
        }
    }

    /// An attachment of `content_type`, in base64 lines of 76.
    pub fn base64(content_type: &str, bytes: &[u8]) -> Part {
        Part {
            content_type: content_type.into(),
            encoding: Some("base64".into()),
            body: base64_lines(bytes),
        }
    }

    /// An `application/cbor` attachment of `bytes`.
    pub fn cbor(bytes: &[u8]) -> Part {
        Part::base64(mime::CBOR_CONTENT_TYPE, bytes)
    }
}

/// `bytes` in base64, CRLF every 76 characters.
pub fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let s = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(s.len() + s.len() / 38 + 2);
    for chunk in s.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A `multipart/mixed` mail of `parts`, written by hand.
pub fn multipart(from: &str, to: &str, parts: &[Part]) -> Vec<u8> {
    let boundary = format!("=_hostile_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut m = headers(from, to, "request").into_bytes();
    m.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
        )
        .as_bytes(),
    );
    for p in parts {
        m.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {}\r\n", p.content_type).as_bytes(),
        );
        if let Some(e) = &p.encoding {
            m.extend_from_slice(format!("Content-Transfer-Encoding: {e}\r\n").as_bytes());
            m.extend_from_slice(b"Content-Disposition: attachment; filename=\"part.bin\"\r\n");
        }
        m.extend_from_slice(b"\r\n");
        m.extend_from_slice(&p.body);
        if !p.body.ends_with(b"\r\n") {
            m.extend_from_slice(b"\r\n");
        }
    }
    m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    m
}

/// `raw` with its first `Message-ID` header replaced by a fresh one (a
/// deliberate resend of the same content under a new Message-ID).
pub fn with_new_message_id(raw: &[u8], domain_: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len() + 64);
    let mut done = false;
    for line in text.split_inclusive("\r\n") {
        if !done && line.to_ascii_lowercase().starts_with("message-id:") {
            out.push_str(&format!("Message-ID: <{}>\r\n", fresh_id(domain_)));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// `raw` with every `From:` header replaced by `from` (a resend by someone
/// else, so that the answer comes to them).
pub fn with_from(raw: &[u8], from: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len() + 64);
    let mut in_headers = true;
    for line in text.split_inclusive("\r\n") {
        if in_headers && line == "\r\n" {
            in_headers = false;
        }
        if in_headers && line.to_ascii_lowercase().starts_with("from:") {
            out.push_str(&format!("From: <{from}>\r\n"));
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// A timestamp `secs` from now.
pub fn in_secs(secs: i64) -> Timestamp {
    let now = mailer::clock::now();
    if secs >= 0 {
        now.saturating_add_secs(secs.unsigned_abs())
    } else {
        now.saturating_sub_secs(secs.unsigned_abs())
    }
}

/// The digest of some bytes (for ids that must not collide).
pub fn tag(parts: &[&[u8]]) -> Digest {
    mailer::crypto::digest(parts)
}
