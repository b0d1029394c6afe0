//! The durable outbox: outgoing mail as rows of the caller's own database.
//!
//! A handler decides, changes its state and queues its reply in ONE
//! transaction ([`enqueue`] takes the caller's transaction). The mail is
//! rendered to its final bytes when queued, so its Message-ID and Date are
//! fixed: if a send's outcome is unknown (connection lost after DATA) and it
//! is sent again, the receiver sees the same Message-ID and keeps one. A
//! separate sender loop ([`crate::smtp::run_sender`]) drains the table after
//! commit.
//!
//! Every attempt is counted BEFORE it is made ([`begin_attempt`]), so a
//! crash in the middle of sending still uses up an attempt and a mail that
//! crashes the sender cannot be retried forever.

use rusqlite::{params, Connection, OptionalExtension};

use crate::mime::{build_mail, MessageId, MimeError, OutgoingMail};
use crate::money::Timestamp;

/// The outbox table. `STRICT` so that a wrong type is an error, not a
/// silent conversion.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mail_outbox (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT    NOT NULL UNIQUE,
    sender          TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    raw             BLOB    NOT NULL,
    queued_at       INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    done_at         INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS mail_outbox_due ON mail_outbox (state, next_attempt_at);
";

/// Why the outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    #[error("outbox database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("could not render the mail: {0}")]
    Mime(#[from] MimeError),
    #[error("outbox row holds an invalid Message-ID {0:?}")]
    Corrupt(String),
}

/// Creates the outbox table if it is missing.
pub fn migrate(conn: &Connection) -> Result<(), OutboxError> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Renders `mail` and queues it, inside the caller's transaction. Queuing
/// the same Message-ID twice is a no-op (the first stays), so a handler run
/// twice on the same input cannot send two different replies.
pub fn enqueue(
    conn: &Connection,
    mail: &OutgoingMail,
    now: Timestamp,
) -> Result<MessageId, OutboxError> {
    let raw = build_mail(mail)?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO mail_outbox
            (message_id, sender, recipient, subject, raw, queued_at, state, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?6)",
    )?
    .execute(params![
        mail.message_id.as_str(),
        mail.from,
        mail.to,
        mail.subject,
        raw,
        now.unix() as i64
    ])?;
    Ok(mail.message_id.clone())
}

/// A queued mail, ready to hand to SMTP.
#[derive(Clone, Debug)]
pub struct QueuedMail {
    pub id: i64,
    pub message_id: MessageId,
    pub sender: String,
    pub recipient: String,
    pub raw: Vec<u8>,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Pending mails whose next attempt is due at `now`, oldest first.
pub fn due(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<QueuedMail>, OutboxError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    queued(
        conn,
        "WHERE state = 'pending' AND next_attempt_at <= ?1
         ORDER BY next_attempt_at, id LIMIT ?2",
        params![now.unix() as i64, limit],
    )
}

/// Every pending mail, due or waiting for a retry, oldest first: what the
/// outbox will still send.
pub fn pending(conn: &Connection) -> Result<Vec<QueuedMail>, OutboxError> {
    queued(
        conn,
        "WHERE state = 'pending' ORDER BY next_attempt_at, id",
        params![],
    )
}

/// The outbox rows that `tail` (a WHERE clause and an order) selects.
fn queued(
    conn: &Connection,
    tail: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<QueuedMail>, OutboxError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, message_id, sender, recipient, raw, attempts FROM mail_outbox {tail}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Vec<u8>>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, mid, sender, recipient, raw, attempts) = row?;
        out.push(QueuedMail {
            id,
            message_id: MessageId::parse(&mid).map_err(|_| OutboxError::Corrupt(mid.clone()))?,
            sender,
            recipient,
            raw,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

/// The earliest instant at which a pending mail is due, if any.
pub fn next_due(conn: &Connection) -> Result<Option<Timestamp>, OutboxError> {
    let t: Option<i64> = conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM mail_outbox WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(t.map(|t| Timestamp::from_unix(t.max(0) as u64)))
}

/// Counts an attempt before it is made, and pushes the next attempt to
/// `retry_at` in case this one never reports back (a crash). Commit this
/// before talking to the server.
pub fn begin_attempt(conn: &Connection, id: i64, retry_at: Timestamp) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = ?2
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, retry_at.unix() as i64])?;
    Ok(())
}

/// The server accepted the mail.
pub fn mark_sent(conn: &Connection, id: i64, now: Timestamp) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "UPDATE mail_outbox SET state = 'sent', done_at = ?2, last_error = NULL WHERE id = ?1",
    )?
    .execute(params![id, now.unix() as i64])?;
    Ok(())
}

/// A temporary failure: try again at `retry_at`.
pub fn mark_retry(
    conn: &Connection,
    id: i64,
    retry_at: Timestamp,
    error: &str,
) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "UPDATE mail_outbox SET next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
    )?
    .execute(params![id, retry_at.unix() as i64, error])?;
    Ok(())
}

/// A permanent failure (5xx, or too many attempts): recorded, never retried.
pub fn mark_failed(
    conn: &Connection,
    id: i64,
    now: Timestamp,
    error: &str,
) -> Result<(), OutboxError> {
    conn.prepare_cached(
        "UPDATE mail_outbox SET state = 'failed', done_at = ?2, last_error = ?3 WHERE id = ?1",
    )?
    .execute(params![id, now.unix() as i64, error])?;
    Ok(())
}

/// How many mails are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
}

pub fn stats(conn: &Connection) -> Result<OutboxStats, OutboxError> {
    let mut s = OutboxStats::default();
    let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM mail_outbox GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, n) = row?;
        let n = n.max(0) as u64;
        match state.as_str() {
            "pending" => s.pending = n,
            "sent" => s.sent = n,
            _ => s.failed = n,
        }
    }
    Ok(s)
}

/// One outbox row, for status displays and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub message_id: String,
    pub recipient: String,
    pub subject: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Every outbox row, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<OutboxEntry>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, recipient, subject, state, attempts, last_error
         FROM mail_outbox ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OutboxEntry {
            message_id: r.get(0)?,
            recipient: r.get(1)?,
            subject: r.get(2)?,
            state: r.get(3)?,
            attempts: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            last_error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A queued mail as it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub raw: Vec<u8>,
}

/// The mails queued after the row `after` (0 for all), oldest first,
/// whatever their state: what a handler queued, for those who check it.
pub fn queued_after(conn: &Connection, after: i64) -> Result<Vec<Queued>, OutboxError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, recipient, subject, raw FROM mail_outbox WHERE id > ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([after], |r| {
        Ok(Queued {
            id: r.get(0)?,
            recipient: r.get(1)?,
            subject: r.get(2)?,
            raw: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When to try again after `attempts` attempts: exponential from `base`
/// seconds, capped at `max`, with `jitter` (a random number the caller
/// draws) spreading retries over the upper half of the interval so that
/// many senders that failed together do not retry together.
pub fn backoff_secs(attempts: u32, base: u64, max: u64, jitter: u64) -> u64 {
    let exp = base
        .saturating_mul(1u64 << attempts.min(20))
        .min(max)
        .max(1);
    let half = exp / 2;
    (half + jitter % (exp - half + 1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::testkit::{key, NOW};

    fn mail(n: u8) -> OutgoingMail {
        OutgoingMail {
            from: "issuer@example.test".into(),
            to: "alice@example.test".into(),
            subject: format!("test {n}"),
            message_id: MessageId::parse(&format!("m{n}@example.test")).unwrap(),
            in_reply_to: None,
            references: vec![],
            date: NOW,
            text: "hello".into(),
            envelopes: vec![Envelope::seal("ping", vec![n], &key(1)).unwrap()],
            auto_reply: false,
        }
    }

    #[test]
    fn queue_attempt_and_finish() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap(); // idempotent
        enqueue(&conn, &mail(1), NOW).unwrap();
        enqueue(&conn, &mail(1), NOW).unwrap(); // same Message-ID: one row
        enqueue(&conn, &mail(2), NOW).unwrap();
        assert_eq!(stats(&conn).unwrap().pending, 2);
        let due_now = due(&conn, NOW, 10).unwrap();
        assert_eq!(due_now.len(), 2);
        assert_eq!(due_now[0].message_id.as_str(), "m1@example.test");
        let raw = String::from_utf8_lossy(&due_now[0].raw);
        assert!(raw.contains("Message-ID: <m1@example.test>"), "{raw}");

        begin_attempt(&conn, due_now[0].id, NOW.saturating_add_secs(60)).unwrap();
        // Not due again until the retry time: a crash now cannot loop.
        assert_eq!(due(&conn, NOW, 10).unwrap().len(), 1);
        // Still pending all the same: the outbox will send it.
        assert_eq!(pending(&conn).unwrap().len(), 2);
        let later = due(&conn, NOW.saturating_add_secs(60), 10).unwrap();
        let first = later.iter().find(|m| m.id == due_now[0].id).unwrap();
        assert_eq!(first.attempts, 1);
        mark_sent(&conn, due_now[0].id, NOW).unwrap();
        mark_failed(&conn, due_now[1].id, NOW, "550 no such user").unwrap();
        assert_eq!(
            stats(&conn).unwrap(),
            OutboxStats {
                pending: 0,
                sent: 1,
                failed: 1
            }
        );
        assert_eq!(next_due(&conn).unwrap(), None);
        assert!(pending(&conn).unwrap().is_empty());
        let rows = list(&conn).unwrap();
        assert_eq!(rows[1].last_error.as_deref(), Some("550 no such user"));
    }

    #[test]
    fn enqueue_rolls_back_with_the_callers_transaction() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        {
            let tx = conn.transaction().unwrap();
            enqueue(&tx, &mail(1), NOW).unwrap();
            // dropped without commit
        }
        assert_eq!(stats(&conn).unwrap().pending, 0);
        let tx = conn.transaction().unwrap();
        enqueue(&tx, &mail(1), NOW).unwrap();
        tx.commit().unwrap();
        assert_eq!(stats(&conn).unwrap().pending, 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff_secs(0, 10, 3600, 0), 5);
        assert!((5..=10).contains(&backoff_secs(0, 10, 3600, 7)));
        assert!((40..=80).contains(&backoff_secs(3, 10, 3600, 12345)));
        assert!(backoff_secs(30, 10, 3600, u64::MAX) <= 3600);
        assert!(backoff_secs(30, 10, 3600, 0) >= 1800);
    }
}
