//! `mailer`: electronic money that travels by email.
//!
//! Layers, bottom up (each uses only those above it in this list):
//!
//! - [`money`]: currencies, amounts in minor units, instants, rates. Pure.
//! - [`crypto`]: ed25519 keys and signatures, SHA-256 digests, random ids.
//! - [`cbor`]: the one module that knows the CBOR library.
//! - [`limits`]: the hard limits on everything that comes from outside.
//! - [`envelope`]: signed envelopes (kind + CBOR body + signer + signature)
//!   and [`envelope::Signed`], an envelope with a typed body.
//! - [`license`]: card keys, licenses, revocation lists.
//! - [`note`]: issuances, payment links, notes, offline verification.
//! - [`overspend`]: the issuer's overspend check and self-verifying proofs.
//! - [`messages`]: every protocol message kind, and [`messages::Message`].
//! - [`evidence`]: an exchange's envelopes as one bundle, and what they
//!   prove, checked with public keys alone.
//! - [`mime`]: protocol emails: build them (lettre) and read them
//!   (mail-parser) into verified-able envelopes.
//!
//!
//! The I/O edge (the only modules that touch a database or the network):
//!
//! - [`clock`]: the wall clock, read at the edges only.
//! - [`outbox`]: outgoing mail as rows of the caller's database, queued in
//!   the same transaction as the decision that produced it.
//! - [`smtp`]: submission (lettre, rustls) and the outbox's sender loop.
//! - [`inbox`]: what was received and handled, and the IMAP position.
//! - [`imap`]: the mailbox watcher (async-imap): hands each mail's raw
//!   bytes to a handler exactly once, then files it away.
//! - [`daemon`]: watcher + sender + periodic work + progress log until a
//!   signal: the loop of every daemon.
//! - [`sqlite`], [`settings`]: the database and mail settings every
//!   program keeps.
//!
//! Everything above `mime` is pure data and pure functions: no clock, no
//! I/O, no async runtime, no database. Callers pass the time in.

pub mod cbor;
pub mod clock;
pub mod crypto;
pub mod daemon;
pub mod envelope;
pub mod evidence;
pub mod imap;
pub mod inbox;
pub mod license;
pub mod limits;
pub mod messages;
pub mod mime;
pub mod money;
pub mod note;
pub mod outbox;
pub mod overspend;
pub mod settings;
pub mod smtp;
pub mod sqlite;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
