//! The receiving side's durable memory, in the caller's database: which
//! mails were already handled (by Message-ID, or by a digest of the raw
//! bytes when a mail has none), the IMAP position of each watched mailbox,
//! and how often a mail's handling failed for a passing reason.
//!
//! The watcher records a mail as handled in the SAME transaction as the
//! handler's effects, so a crash before the commit leaves the mail
//! unhandled (it is fetched and handled again) and a crash after it leaves
//! it handled (a second delivery, or a second fetch, finds it and does
//! nothing).

use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::digest;
use crate::mime::{parse_mail, read_headers};
use crate::money::Timestamp;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mail_inbox_seen (
    key      TEXT    PRIMARY KEY,
    outcome  TEXT    NOT NULL CHECK (outcome IN ('processed', 'rejected')),
    detail   TEXT,
    seen_at  INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS mail_imap_state (
    mailbox      TEXT    PRIMARY KEY,
    uidvalidity  INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS mail_inbox_failures (
    key        TEXT    PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    last_error TEXT    NOT NULL
) STRICT;
";

/// Creates the tables if they are missing.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// The identity of a received mail for deduplication: its Message-ID
/// together with a digest of the envelopes it carries. The same mail
/// delivered twice (even with other Received headers) has the same key; a
/// forged mail that reuses a Message-ID but carries other envelopes does
/// not, so it cannot make the real one be skipped; and a deliberate resend
/// under a new Message-ID reaches the handler (which answers it from what
/// it stored). A mail without readable envelopes is keyed by its bytes.
pub fn mail_key(raw: &[u8]) -> String {
    let mid = read_headers(raw).message_id;
    match parse_mail(raw) {
        Ok(mail) => {
            let ids: Vec<[u8; 32]> = mail.envelopes.iter().map(|e| e.id().0).collect();
            let refs: Vec<&[u8]> = ids.iter().map(|i| i.as_slice()).collect();
            let env = digest(&refs).to_hex();
            match mid {
                Some(m) => format!("mid:{}|env:{}", m.as_str(), &env[..32]),
                None => format!("env:{env}"),
            }
        }
        Err(_) => format!("raw:{}", digest(&[b"raw-mail", raw]).to_hex()),
    }
}

/// What happened to a mail, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Processed,
    Rejected(String),
}

/// Whether the mail with `key` was handled, and how.
pub fn seen(conn: &Connection, key: &str) -> rusqlite::Result<Option<Seen>> {
    conn.prepare_cached("SELECT outcome, detail FROM mail_inbox_seen WHERE key = ?1")?
        .query_row([key], |r| {
            let outcome: String = r.get(0)?;
            let detail: Option<String> = r.get(1)?;
            Ok(if outcome == "processed" {
                Seen::Processed
            } else {
                Seen::Rejected(detail.unwrap_or_default())
            })
        })
        .optional()
}

/// Records that the mail with `key` was handled (inside the handler's
/// transaction).
pub fn record(
    conn: &Connection,
    key: &str,
    outcome: &Seen,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let (o, d) = match outcome {
        Seen::Processed => ("processed", None),
        Seen::Rejected(r) => ("rejected", Some(r.as_str())),
    };
    conn.prepare_cached(
        "INSERT OR IGNORE INTO mail_inbox_seen (key, outcome, detail, seen_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![key, o, d, now.unix() as i64])?;
    conn.prepare_cached("DELETE FROM mail_inbox_failures WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Counts a passing failure to handle `key`; returns the attempts so far.
pub fn count_failure(conn: &Connection, key: &str, error: &str) -> rusqlite::Result<u32> {
    conn.prepare_cached(
        "INSERT INTO mail_inbox_failures (key, attempts, last_error) VALUES (?1, 1, ?2)
         ON CONFLICT (key) DO UPDATE SET attempts = attempts + 1, last_error = ?2",
    )?
    .execute(params![key, error])?;
    let n: i64 = conn
        .prepare_cached("SELECT attempts FROM mail_inbox_failures WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// The stored IMAP position of `mailbox`: (UIDVALIDITY, last UID handled).
pub fn position(conn: &Connection, mailbox: &str) -> rusqlite::Result<Option<(u32, u32)>> {
    conn.prepare_cached("SELECT uidvalidity, last_uid FROM mail_imap_state WHERE mailbox = ?1")?
        .query_row([mailbox], |r| {
            Ok((
                u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .optional()
}

/// Stores the IMAP position of `mailbox`.
pub fn set_position(
    conn: &Connection,
    mailbox: &str,
    uidvalidity: u32,
    last_uid: u32,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO mail_imap_state (mailbox, uidvalidity, last_uid) VALUES (?1, ?2, ?3)
         ON CONFLICT (mailbox) DO UPDATE SET uidvalidity = ?2, last_uid = ?3",
    )?
    .execute(params![
        mailbox,
        i64::from(uidvalidity),
        i64::from(last_uid)
    ])?;
    Ok(())
}

/// How many mails were handled, by outcome: (processed, rejected).
pub fn counts(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(outcome = 'processed'), 0), COALESCE(SUM(outcome = 'rejected'), 0)
         FROM mail_inbox_seen",
    )?
    .query_row([], |r| {
        Ok((
            r.get::<_, i64>(0)?.max(0) as u64,
            r.get::<_, i64>(1)?.max(0) as u64,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol_mail(mid: &str, body: u8, received: &str) -> Vec<u8> {
        use crate::envelope::Envelope;
        use crate::mime::{build_mail, MessageId, OutgoingMail};
        let raw = build_mail(&OutgoingMail {
            from: "a@example.test".into(),
            to: "b@example.test".into(),
            subject: "s".into(),
            message_id: MessageId::parse(mid).unwrap(),
            in_reply_to: None,
            references: vec![],
            date: Timestamp::from_unix(1_000_000),
            text: "t".into(),
            envelopes: vec![Envelope::seal("ping", vec![body], &crate::testkit::key(1)).unwrap()],
            auto_reply: false,
        })
        .unwrap();
        let mut v = received.as_bytes().to_vec();
        v.extend_from_slice(&raw);
        v
    }

    #[test]
    fn keys_survive_relays_and_resist_forged_message_ids() {
        let a = protocol_mail("m1@x", 1, "");
        let relayed = protocol_mail("m1@x", 1, "Received: from relay by mx; Mon, 1 Jan 2024\r\n");
        assert_eq!(mail_key(&a), mail_key(&relayed));
        assert!(mail_key(&a).starts_with("mid:m1@x|env:"));
        // Same Message-ID, other content (a forgery): another key.
        assert_ne!(mail_key(&a), mail_key(&protocol_mail("m1@x", 2, "")));
        // Same content, new Message-ID (a deliberate resend): another key.
        assert_ne!(mail_key(&a), mail_key(&protocol_mail("m2@x", 1, "")));
    }

    #[test]
    fn keys_records_and_positions() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        let without = b"Subject: x\r\n\r\nbody";
        let k = mail_key(without);
        assert!(k.starts_with("raw:"));
        assert_ne!(k, mail_key(b"Subject: y\r\n\r\nbody"));

        assert_eq!(seen(&conn, "mid:a@b").unwrap(), None);
        assert_eq!(count_failure(&conn, "mid:a@b", "busy").unwrap(), 1);
        assert_eq!(count_failure(&conn, "mid:a@b", "busy").unwrap(), 2);
        record(&conn, "mid:a@b", &Seen::Processed, Timestamp::from_unix(5)).unwrap();
        assert_eq!(seen(&conn, "mid:a@b").unwrap(), Some(Seen::Processed));
        // The first record stays.
        record(
            &conn,
            "mid:a@b",
            &Seen::Rejected("x".into()),
            Timestamp::from_unix(6),
        )
        .unwrap();
        assert_eq!(seen(&conn, "mid:a@b").unwrap(), Some(Seen::Processed));
        // Failures are forgotten once handled.
        assert_eq!(count_failure(&conn, "mid:a@b", "busy").unwrap(), 1);
        record(
            &conn,
            &k,
            &Seen::Rejected("not mime".into()),
            Timestamp::from_unix(7),
        )
        .unwrap();
        assert_eq!(counts(&conn).unwrap(), (1, 1));

        assert_eq!(position(&conn, "INBOX").unwrap(), None);
        set_position(&conn, "INBOX", 7, 42).unwrap();
        set_position(&conn, "INBOX", 7, 43).unwrap();
        assert_eq!(position(&conn, "INBOX").unwrap(), Some((7, 43)));
    }
}
