//! What the wallet shows: balances, pending operations, history. Plain
//! data, serialisable for `--json`.

use mailer::money::{Amount, Currency};
use rusqlite::Connection;
use serde::Serialize;

use crate::error::WalletError;
use crate::ops::{self, Op};
use crate::store;

/// One currency's money.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Balance {
    pub currency: String,
    /// What can be spent now.
    pub spendable: String,
    pub spendable_minor: u64,
    /// On its way in: withdrawals, payments and exchanges (A2, once
    /// accepted) not yet arrived.
    pub incoming: String,
    pub incoming_minor: u64,
    /// On its way out: sends, deposits and exchanges (A1, once accepted)
    /// not yet confirmed.
    pub outgoing: String,
    pub outgoing_minor: u64,
    /// The bank account at the issuer, as it last said.
    pub account: Option<String>,
}

fn sum(ops: &[Op], currency: Currency, kinds: &[&str]) -> Amount {
    ops.iter()
        .filter(|o| o.currency == currency && kinds.contains(&o.kind.as_str()))
        .fold(Amount::ZERO, |a, o| a.checked_add(o.amount).unwrap_or(a))
}

/// What accepted, unfinished exchanges will bring in (A2) and take out
/// (A1) of `currency`.
fn exchanges(open: &[Op], currency: Currency) -> Result<(Amount, Amount), WalletError> {
    let (mut incoming, mut outgoing) = (Amount::ZERO, Amount::ZERO);
    for o in open.iter().filter(|o| {
        o.kind == crate::exchange::KIND && matches!(o.state.as_str(), "accepting" | "paying")
    }) {
        let Some(t) = o
            .data
            .exchange
            .as_ref()
            .map(|x| x.terms())
            .transpose()?
            .flatten()
        else {
            continue;
        };
        if t.receive_currency == currency {
            incoming = incoming.checked_add(t.a2).unwrap_or(incoming);
        }
        if t.pay_currency == currency {
            outgoing = outgoing.checked_add(t.a1).unwrap_or(outgoing);
        }
    }
    Ok((incoming, outgoing))
}

pub fn balances(conn: &Connection) -> Result<Vec<Balance>, WalletError> {
    let open = ops::open_ops(conn)?;
    let mut out = Vec::new();
    for i in store::issuers(conn)? {
        let c = i.currency;
        let spendable = store::spendable_total(conn, c)?;
        let (ex_in, ex_out) = exchanges(&open, c)?;
        let incoming = sum(&open, c, &["withdraw", "receive"])
            .checked_add(ex_in)
            .unwrap_or(Amount::new(u64::MAX));
        let outgoing = sum(&open, c, &["send", "deposit"])
            .checked_add(ex_out)
            .unwrap_or(Amount::new(u64::MAX));
        let account = store::account(conn, c)?
            .and_then(|a| a.balance)
            .map(|b| b.display_major(c));
        out.push(Balance {
            currency: c.as_str().to_string(),
            spendable: spendable.display_major(c),
            spendable_minor: spendable.minor_units(),
            incoming: incoming.display_major(c),
            incoming_minor: incoming.minor_units(),
            outgoing: outgoing.display_major(c),
            outgoing_minor: outgoing.minor_units(),
            account,
        });
    }
    Ok(out)
}

/// One operation, as shown.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OpLine {
    pub id: i64,
    pub kind: String,
    pub currency: String,
    pub amount: String,
    pub amount_minor: u64,
    pub peer: String,
    pub memo: String,
    pub state: String,
    pub done: bool,
    /// What it waits for (open) or how it ended (done).
    pub detail: String,
    /// Open, and waiting for the user (an exchange offer to accept or
    /// decline), not for mail: `sync --wait` does not wait for it.
    pub waits_for_user: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

fn waits_for(o: &Op) -> String {
    match (o.kind.as_str(), o.state.as_str()) {
        ("enroll" | "license" | "withdraw" | "deposit", _) => {
            format!("waiting for the {} issuer's answer", o.currency)
        }
        ("send", "inviting") => format!("waiting for {} to send a card and a challenge", o.peer),
        ("send", "addressed") => "waiting for the card to finish another payment".into(),
        ("send", "paying") => format!("waiting for {}'s receipt", o.peer),
        ("receive", "addressed") => format!("waiting for {}'s payment", o.peer),
        ("exchange", state) => exchange_waits_for(o, state),
        _ => o.detail.clone(),
    }
}

fn exchange_waits_for(o: &Op, state: &str) -> String {
    let x = o.data.exchange.as_ref();
    let terms = x.and_then(|x| x.terms().ok().flatten());
    let tr = o
        .transfer
        .map(|t| t.to_hex())
        .unwrap_or_else(|| format!("#{}", o.id));
    let asked = x
        .map(|x| match x.amount {
            mailer::messages::QuoteAmount::Pay(a) => {
                format!("pay {} {} for {}", a.display_major(x.from), x.from, x.to)
            }
            mailer::messages::QuoteAmount::Receive(a) => {
                format!("receive {} {} for {}", a.display_major(x.to), x.to, x.from)
            }
        })
        .unwrap_or_default();
    let a2 = terms
        .as_ref()
        .map(|t| {
            format!(
                "{} {}",
                t.a2.display_major(t.receive_currency),
                t.receive_currency
            )
        })
        .unwrap_or_default();
    match state {
        "quoting" => format!("waiting for {}'s offer ({asked})", o.peer),
        "offered" => format!(
            "waiting for you: {}; accept with `wallet exchange accept {tr}` or decline with `wallet exchange decline {tr}`",
            o.detail
        ),
        "accepting" => format!("waiting for {}'s signed offer (to receive {a2})", o.peer),
        "paying" if o.detail.contains("sent again") => o.detail.clone(),
        "paying" => format!("paid; waiting for {}'s second payment of {a2}", o.peer),
        _ => o.detail.clone(),
    }
}

pub fn line(o: &Op) -> OpLine {
    OpLine {
        id: o.id,
        kind: o.kind.clone(),
        currency: o.currency.as_str().to_string(),
        amount: o.amount.display_major(o.currency),
        amount_minor: o.amount.minor_units(),
        peer: o.peer.clone(),
        memo: o.memo.clone(),
        state: o.state.clone(),
        done: o.is_final,
        detail: if o.is_final {
            o.detail.clone()
        } else if o.detail.starts_with("refused") {
            // Something was refused on the way; still open.
            format!("{} ({})", waits_for(o), o.detail)
        } else {
            waits_for(o)
        },
        waits_for_user: !o.is_final && o.kind == crate::exchange::KIND && o.state == "offered",
        created_at: o.created_at.unix(),
        updated_at: o.updated_at.unix(),
    }
}

pub fn pending(conn: &Connection) -> Result<Vec<OpLine>, WalletError> {
    Ok(ops::open_ops(conn)?.iter().map(line).collect())
}

pub fn history(conn: &Connection) -> Result<Vec<OpLine>, WalletError> {
    Ok(ops::all_ops(conn)?.iter().map(line).collect())
}

/// Mail not yet handed to the SMTP server.
pub fn unsent(conn: &Connection) -> Result<u64, WalletError> {
    let s = mailer::outbox::stats(conn)?;
    Ok(s.pending)
}
