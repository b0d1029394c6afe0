//! The user's wallet: one card per currency, withdrawals and deposits at
//! the issuers, personal transfers, and currency exchanges through an
//! agent, all by email. The protocol it
//! speaks is defined in `mailer` (docs/protocol.md).
//!
//! - [`home`]: the home directory (settings file, database).
//! - [`db`]: the SQLite schema.
//! - [`vault`]: secret keys at rest, sealed under a passphrase if given.
//! - [`store`]: typed queries.
//! - [`pay`]: which notes pay an amount (pure).
//! - [`ops`]: operations as durable state machines, started by commands.
//! - [`exchange`]: the user's side of a currency exchange with an agent.
//! - [`handler`]: incoming mail advancing them, and the payee's answers.
//! - [`sync`]: the one I/O loop: send the outbox, read the mailbox.
//! - [`view`]: balances, pending operations and history for people and
//!   scripts.

pub mod db;
pub mod error;
pub mod exchange;
pub mod handler;
pub mod home;
pub mod ops;
pub mod pay;
pub mod store;
pub mod sync;
pub mod vault;
pub mod view;

pub use error::WalletError;
pub use home::Home;
pub use ops::Wallet;

/// Stops the process dead (no destructors, no flushing, like `kill -9`)
/// when the environment variable `WALLET_CRASH_AT` names this point: how
/// the tests crash the wallet between each pair of its steps.
pub fn crash_point(name: &str) {
    if std::env::var("WALLET_CRASH_AT").is_ok_and(|p| p == name) {
        std::process::abort();
    }
}
