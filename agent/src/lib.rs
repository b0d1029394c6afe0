//! The exchange agent: fair currency exchange by email from its own float,
//! in the three phases of the NTT paper (section 4): negotiation with a
//! signed offer, the user's first payment, the agent's second payment
//! against a request signed by the receiving card. The protocol is in
//! docs/protocol.md, section 4.4.
//!
//! The agent keeps its float in a wallet of its own (the `wallet` library:
//! cards, accounts at the issuers, notes), in one database with its own
//! tables. Modules:
//!
//! - [`pricing`]: rates, spreads, the amounts of an offer (pure).
//! - [`db`]: the agent's tables on top of the wallet's schema.
//! - [`store`]: typed queries over them.
//! - [`home`]: the home directory and [`Agent`] (its wallet and key).
//! - [`exchange`]: one function per request kind: decide, change state,
//!   produce the reply.
//! - [`handler`]: [`AgentHandler`], the `MailHandler`: replays, dispatch,
//!   replies queued in the transaction.
//! - [`float`]: periodic work: lapsed offers, recharge, resends.
//! - [`status`]: what `agent status` shows.

pub mod db;
pub mod error;
pub mod exchange;
pub mod float;
pub mod handler;
pub mod home;
pub mod pricing;
pub mod status;
pub mod store;

pub use error::AgentError;
pub use handler::{handle_mail, AgentHandler, Clock};
pub use home::{Agent, Home};
