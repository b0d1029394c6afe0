//! The agent's periodic work, which no mail starts: lapsed offers release
//! their reservation; the float of each currency is kept between its low
//! and high water marks by withdrawing from, or depositing into, the
//! agent's account at that issuer (by mail, as a wallet does); requests
//! to the issuers that got no answer are sent again.

use mailer::money::{Amount, Currency, Timestamp};
use rusqlite::Connection;
use wallet::{ops, store as wstore};

use crate::error::AgentError;
use crate::exchange::available;
use crate::home::Agent;
use crate::store;

/// What one round of periodic work did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub lapsed: usize,
    pub withdrawals: Vec<(Currency, Amount)>,
    pub deposits: Vec<(Currency, Amount)>,
    pub resent: usize,
}

impl Round {
    /// Mails queued by this round.
    pub fn mails(&self) -> usize {
        self.withdrawals.len() + self.deposits.len() + self.resent
    }
}

/// Runs one round in `conn`'s transaction.
pub fn round(conn: &Connection, agent: &Agent, now: Timestamp) -> Result<Round, AgentError> {
    let mut r = Round::default();
    for t in store::lapsed(conn, now)? {
        let detail = match t.state.as_str() {
            "offered" => "the offer was not accepted before D1".to_string(),
            "signed" => {
                "the first payment did not come before D1; the reservation is released".to_string()
            }
            _ => "the second payment was not asked for before D2; the reservation is released"
                .to_string(),
        };
        store::set_trade(conn, &t.tr_id, "expired", &[], &detail, now)?;
        r.lapsed += 1;
    }
    for (currency, low, high) in store::limits(conn)? {
        recharge(conn, agent, currency, low, high, now, &mut r)?;
    }
    r.resent = ops::resend_due(conn, &agent.wallet, now)?;
    Ok(r)
}

/// An unfinished withdrawal or deposit of `currency` by the agent.
fn busy(conn: &Connection, currency: Currency) -> Result<bool, AgentError> {
    Ok(ops::open_ops(conn)?
        .iter()
        .any(|o| o.currency == currency && matches!(o.kind.as_str(), "withdraw" | "deposit")))
}

fn recharge(
    conn: &Connection,
    agent: &Agent,
    currency: Currency,
    low: Amount,
    high: Amount,
    now: Timestamp,
    r: &mut Round,
) -> Result<(), AgentError> {
    if busy(conn, currency)? {
        return Ok(());
    }
    let Ok(card) = wstore::active_card(conn, currency) else {
        return Ok(());
    };
    let Some(account) = wstore::account(conn, currency)? else {
        return Ok(());
    };
    if account.state != "enrolled" {
        return Ok(());
    }
    let free = available(conn, currency, now)?;
    let target = Amount::new(low.minor_units() / 2 + high.minor_units() / 2);
    if free < low {
        let want = target.checked_sub(free).unwrap_or(Amount::ZERO);
        if want.is_zero() {
            return Ok(());
        }
        ops::withdraw(conn, &agent.wallet, currency, want, now)?;
        tracing::info!(%currency, "float below its low mark: withdrawing {}", want.display_major(currency));
        r.withdrawals.push((currency, want));
    } else if free > high && card.locked_by.is_none() {
        let surplus = free.checked_sub(target).unwrap_or(Amount::ZERO);
        if surplus.is_zero() {
            return Ok(());
        }
        // A surplus held in many small notes may take more notes than one
        // deposit carries: deposit what one can, the rest on a later round.
        let surplus = match ops::deposit(conn, &agent.wallet, currency, surplus, now) {
            Ok(_) => surplus,
            Err(wallet::WalletError::TooManyNotes { at_most, .. }) if !at_most.is_zero() => {
                ops::deposit(conn, &agent.wallet, currency, at_most, now)?;
                at_most
            }
            Err(wallet::WalletError::InsufficientFunds { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(%currency, "float above its high mark: depositing {}", surplus.display_major(currency));
        r.deposits.push((currency, surplus));
    }
    Ok(())
}
