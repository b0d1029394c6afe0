//! What the agent's in-process tests and its benchmark share: an agent on
//! a temporary database with a JPY and a USD card licensed by testkit
//! issuers and a JPY -> USD rate; float notes put straight onto its card;
//! incoming mail built as a wallet builds it; the envelopes it queued.

use std::path::Path;

use agent::{handle_mail, store, Agent, Home};
use mailer::envelope::{Envelope, Signed};
use mailer::messages::LicenseGranted;
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::testkit::{TestIssuer, NOTE_LIFETIME_SECS, NOW};
use rusqlite::Connection;
use wallet::{ops, store as wstore};

pub const AGENT_ADDRESS: &str = "agent@example.test";
pub const JPY_ISSUER: &str = "jpy@example.test";
pub const USD_ISSUER: &str = "usd@example.test";

/// Mail number `n` from `from` to the agent, carrying `envelopes`.
pub fn incoming(from: &str, n: u64, envelopes: Vec<Envelope>, now: Timestamp) -> Vec<u8> {
    build_mail(&OutgoingMail {
        from: from.into(),
        to: AGENT_ADDRESS.into(),
        subject: "test".into(),
        message_id: MessageId::parse(&format!("m{n}@example.test")).unwrap(),
        in_reply_to: None,
        references: vec![],
        date: now,
        text: "test".into(),
        envelopes,
        auto_reply: false,
    })
    .unwrap()
}

/// A new agent in `dir` (offers open an hour, second payments asked for
/// within a day of D1) whose JPY and USD cards `jpy` and `usd` licensed
/// by mail, selling USD for JPY at 0.0067 less 0.5% (100 to 1,000,000).
/// Its license mails are numbered 1 and 2.
pub fn licensed_agent(
    dir: &Path,
    jpy: &mut TestIssuer,
    usd: &mut TestIssuer,
) -> (Agent, Connection) {
    let (agent, mut conn) = Home::new(dir.join("agent"))
        .create(AGENT_ADDRESS, None, 3_600, 86_400, NOW)
        .unwrap();
    for (n, issuer, addr) in [(1, jpy, JPY_ISSUER), (2, usd, USD_ISSUER)] {
        let c = issuer.currency;
        ops::add_issuer(&conn, c, addr, issuer.key.public(), NOW).unwrap();
        let op = ops::new_card(&conn, &agent.wallet, c, NOW).unwrap();
        let keys = wstore::card(&conn, c).unwrap().unwrap().keys;
        let request = ops::op(&conn, op).unwrap().request.unwrap();
        let license = issuer.license(&keys);
        let granted = Signed::sign(LicenseGranted { request, license }, &issuer.key).unwrap();
        let raw = incoming(addr, n, vec![granted.into_envelope()], NOW);
        let tx = conn.transaction().unwrap();
        handle_mail(&tx, &agent, &raw, NOW, false).unwrap();
        tx.commit().unwrap();
    }
    store::set_rate(
        &conn,
        &agent::pricing::Pricing {
            pay: Currency::JPY,
            receive: Currency::USD,
            mid: "0.0067".parse().unwrap(),
            spread_bp: 50,
            min: Amount::new(100),
            max: Amount::new(1_000_000),
        },
        NOW,
    )
    .unwrap();
    (agent, conn)
}

/// Notes of `values` from `issuer`, put straight onto the agent's card of
/// that currency.
pub fn float(conn: &mut Connection, issuer: &mut TestIssuer, values: &[u64]) {
    let card = wstore::card(conn, issuer.currency).unwrap().unwrap();
    let tx = conn.transaction().unwrap();
    for v in values {
        let n = issuer.issue(*v, &card.keys);
        wstore::insert_note(
            &tx,
            &n,
            &n.id(),
            card.id,
            Amount::new(*v),
            NOW.saturating_add_secs(NOTE_LIFETIME_SECS),
            0,
            NOW,
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The envelopes of the mail queued after outbox row `seen`, which moves
/// to the last row read.
pub fn queued_envelopes(conn: &Connection, seen: &mut i64) -> Vec<Envelope> {
    let rows = mailer::outbox::queued_after(conn, *seen).unwrap();
    if let Some(last) = rows.last() {
        *seen = last.id;
    }
    rows.into_iter()
        .flat_map(|q| parse_mail(&q.raw).unwrap().envelopes)
        .collect()
}
