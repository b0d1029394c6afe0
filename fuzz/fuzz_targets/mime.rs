//! Raw mail bytes into `mime::parse_mail`, as the IMAP watcher hands them
//! to a handler.
//!
//! Checks, on every mail it reads: at least one and at most
//! `MAX_ATTACHMENTS` envelopes, each passing the envelope target's checks;
//! the thread headers within their limits, each Message-ID valid and a
//! fixed point of `MessageId::parse`, and the same as `read_headers` reads
//! (an error reply is threaded from those); and a reply built by
//! `build_mail` with the mail's envelopes and thread reads back the same.

#![no_main]
#![allow(clippy::panic, clippy::expect_used)] // a broken invariant must crash

use emoney_fuzz::check_envelope;
use libfuzzer_sys::fuzz_target;
use mailer::limits::{MAX_ATTACHMENTS, MAX_EVIDENCE, MAX_MAIL_BYTES};
use mailer::messages::Message;
use mailer::mime::{build_mail, parse_address, parse_mail, read_headers, MessageId, OutgoingMail};
use mailer::testkit::NOW;

fn check_id(id: &MessageId) {
    assert!(id.as_str().len() <= MessageId::MAX_LEN);
    assert_eq!(MessageId::parse(id.as_str()).as_ref(), Ok(id));
    assert_eq!(MessageId::parse(&id.bracketed()).as_ref(), Ok(id));
}

fuzz_target!(|data: &[u8]| {
    let headers = read_headers(data);
    let Ok(mail) = parse_mail(data) else {
        return;
    };
    assert!(data.len() <= MAX_MAIL_BYTES);
    let n = mail.envelopes.len();
    assert!((1..=MAX_ATTACHMENTS).contains(&n), "{n} envelopes");
    for env in &mail.envelopes {
        check_envelope(
            env,
            env.to_bytes().map_or(0, |b| b.len()),
            &Message::decode(env.clone()),
        );
    }
    // The thread as parse_mail reads it: within limits, and as read_headers
    // reads it.
    assert!(mail.references.len() <= MAX_EVIDENCE * 8);
    mail.message_id.iter().for_each(check_id);
    mail.in_reply_to.iter().for_each(check_id);
    mail.references.iter().for_each(check_id);
    if let Some(s) = &mail.subject {
        assert!(s.chars().count() <= 200);
    }
    assert_eq!(mail.message_id, headers.message_id, "Message-ID");
    assert_eq!(mail.in_reply_to, headers.in_reply_to, "In-Reply-To");
    assert_eq!(mail.references, headers.references, "References");
    assert_eq!(mail.from, headers.from, "From");
    assert_eq!(mail.subject, headers.subject, "Subject");
    assert_eq!(
        mail.auto_submitted, headers.auto_submitted,
        "Auto-Submitted"
    );
    if let Some(from) = &mail.from {
        let _ = parse_address(from);
    }
    // What we read, we can send on: the same envelopes and thread.
    let message_id = mail
        .message_id
        .clone()
        .unwrap_or_else(|| MessageId::parse("<fuzz@example.test>").expect("valid id"));
    let out = OutgoingMail {
        from: "a@example.test".into(),
        to: "b@example.test".into(),
        subject: "again".into(),
        message_id: message_id.clone(),
        in_reply_to: mail.in_reply_to.clone(),
        references: mail.references.clone(),
        date: NOW,
        text: "again\n".into(),
        envelopes: mail.envelopes.clone(),
        auto_reply: mail.auto_submitted,
    };
    let raw = build_mail(&out).expect("a mail of envelopes we read builds");
    let back = parse_mail(&raw).expect("a mail we built reads");
    assert_eq!(back.envelopes, mail.envelopes, "envelopes");
    assert_eq!(back.message_id, Some(message_id));
    assert_eq!(back.in_reply_to, mail.in_reply_to);
    let mut references = mail.references.clone();
    if let Some(parent) = &mail.in_reply_to {
        if !references.contains(parent) {
            references.push(parent.clone());
        }
    }
    references.truncate(MAX_EVIDENCE * 8);
    assert_eq!(back.references, references, "references");
    assert_eq!(back.auto_submitted, mail.auto_submitted);
});
