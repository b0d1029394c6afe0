//! What `agent status` shows: the float per currency (held, reserved by
//! outstanding signed offers, free, water marks), open transactions and
//! their states, counts of finished ones, and the newest warnings.

use std::collections::BTreeMap;

use mailer::money::{Amount, Timestamp};
use rusqlite::Connection;
use serde::Serialize;
use wallet::store as wstore;

use crate::error::AgentError;
use crate::home::Agent;
use crate::store;

#[derive(Clone, Debug, Serialize)]
pub struct Float {
    pub currency: String,
    pub held: String,
    pub held_minor: u64,
    pub reserved: String,
    pub reserved_minor: u64,
    pub free: String,
    pub free_minor: u64,
    pub low: Option<String>,
    pub high: Option<String>,
    /// The agent's account at the issuer, as the issuer last said.
    pub account: Option<String>,
    pub card: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenTrade {
    pub tr_id: String,
    pub state: String,
    pub pay: String,
    pub receive: String,
    pub d1: u64,
    pub d2: u64,
    pub peer: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub address: String,
    pub key: String,
    pub floats: Vec<Float>,
    pub open: Vec<OpenTrade>,
    /// Finished transactions by state (delivered, refunded, expired).
    pub finished: BTreeMap<String, u64>,
    pub warnings: Vec<(u64, String)>,
    pub unsent_mail: u64,
}

fn money(a: Amount, c: mailer::money::Currency) -> String {
    format!("{} {c}", a.display_major(c))
}

pub fn status(conn: &Connection, agent: &Agent, now: Timestamp) -> Result<Status, AgentError> {
    let limits = store::limits(conn)?;
    let mut floats = Vec::new();
    for card in wstore::cards(conn)? {
        if !matches!(card.state.as_str(), "active" | "licensing") {
            continue;
        }
        let c = card.currency;
        let held = wstore::spendable_total(conn, c)?;
        let reserved = store::reserved(conn, c, now)?;
        let lim = limits.iter().find(|(x, _, _)| *x == c);
        let account = wstore::account(conn, c)?.map(|a| match (a.state.as_str(), a.balance) {
            ("enrolled", Some(b)) => money(b, c),
            (s, _) => s.to_string(),
        });
        let free = held.checked_sub(reserved).unwrap_or(Amount::ZERO);
        floats.push(Float {
            currency: c.to_string(),
            held: money(held, c),
            held_minor: held.minor_units(),
            reserved: money(reserved, c),
            reserved_minor: reserved.minor_units(),
            free: money(free, c),
            free_minor: free.minor_units(),
            low: lim.map(|(_, l, _)| money(*l, c)),
            high: lim.map(|(_, _, h)| money(*h, c)),
            account,
            card: card.state.clone(),
        });
    }
    let mut open = Vec::new();
    for t in store::open_trades(conn)? {
        let terms = t.terms();
        open.push(OpenTrade {
            tr_id: t.tr_id.to_hex(),
            state: t.state.clone(),
            pay: money(terms.a1, terms.pay_currency),
            receive: money(terms.a2, terms.receive_currency),
            d1: terms.d1.unix(),
            d2: terms.d2.unix(),
            peer: t.peer.clone(),
            detail: t.detail.clone(),
        });
    }
    let mut finished = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT state, COUNT(*) FROM trades WHERE state IN ('delivered', 'refunded', 'expired') GROUP BY state",
    )?;
    for r in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (s, n) = r?;
        finished.insert(s, u64::try_from(n).unwrap_or(0));
    }
    Ok(Status {
        address: agent.address().to_string(),
        key: agent.public_key().to_string(),
        floats,
        open,
        finished,
        warnings: store::warnings(conn, 10)?
            .into_iter()
            .map(|(at, text)| (at.unix(), text))
            .collect(),
        unsent_mail: wallet::view::unsent(conn)?,
    })
}
