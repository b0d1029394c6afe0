//! Whole-protocol tests of the issuer without a network: request mails in,
//! replies out of the outbox (see `common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod audit;
mod bank;
mod common;
mod overspend;
mod refusals;
mod replay;
