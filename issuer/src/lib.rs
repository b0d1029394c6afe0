//! The issuer of one currency: licenses cards, runs the bank accounts of
//! its currency, issues notes on withdrawal and clears them on deposit,
//! naming overspenders by their key. The protocol it speaks is defined in
//! `mailer` and specified in `docs/protocol.md` (sections 3, 4.1, 4.2).
//!
//! Modules, from the bottom up:
//!
//! - [`error`]: [`IssuerError`] (a failure of the issuer) and [`Refusal`]
//!   (a request refused, answered with a signed `error`).
//! - [`identity`]: [`Issuer`] (its key and policy) and [`IssuerConfig`];
//!   withdrawals split into denominations.
//! - [`db`]: the SQLite file (WAL, busy timeout, STRICT tables), its
//!   schema and migrations.
//! - [`store`]: typed queries over those tables.
//! - [`clearing`]: "the first deposit of a value wins": notes walked into
//!   the issuer's tree of states, overspends found, proved and revoked.
//! - [`handlers`]: one file per message family (license, revocation list,
//!   enroll, withdraw, deposit): checks, state change, signed reply.
//! - [`handler`]: [`IssuerHandler`], the [`mailer::imap::MailHandler`]:
//!   mail in, replies queued in the outbox, exactly once.
//! - [`operator`]: the operator's commands (accounts, enrollment codes,
//!   credits, revocations, refunds).
//! - [`audit`]: the books checked against each other; the overspend report.
//! - [`home`]: an issuer's directory (key file and database).
//!
//! The daemon is `mailer::imap::Watcher` over [`IssuerHandler`] plus
//! `mailer::smtp::run_sender`, each with its own connection to the same
//! database file ([`Home::open`], [`Home::connect`]).

pub mod audit;
pub mod clearing;
pub mod db;
pub mod error;
pub mod handler;
pub mod handlers;
pub mod home;
pub mod identity;
pub mod operator;
pub mod store;

pub use audit::{audit, report, AuditReport, Report};
pub use error::{IssuerError, Refusal};
pub use handler::{handle_mail, Clock, IssuerHandler};
pub use home::Home;
pub use identity::{Issuer, IssuerConfig, SplitError};
