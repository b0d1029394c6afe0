//! A small mail server (SMTP + IMAP on loopback) for the demo and the tests.
//! It knows nothing about what the mail says: it stores bytes and serves
//! them, and it can be told to misbehave.
//!
//! ```no_run
//! # async fn demo() -> Result<(), testmail::Error> {
//! let dir = std::env::temp_dir().join("testmail-demo");
//! let config = testmail::Config::new(dir).user("alice@example.test", "secret");
//! let server = testmail::Server::start(config).await?;
//! println!("smtp {} imap {}", server.smtp_addr(), server.imap_addr());
//! server.faults().duplicate_next_deliveries(1);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Map
//! - [`config`]: what a server starts with, limits included.
//! - `server`: [`Server::start`], [`RunningServer`], [`run`]; owns the tasks
//!   and shutdown.
//! - `store`: users, mailboxes and messages; the in-memory index, the
//!   on-disk layout (`store/disk.rs`), change notification.
//! - `smtp`: accepts mail (RFC 5321 subset) and hands it to `delivery`.
//! - `delivery`: puts accepted mail into INBOXes, applying delivery faults.
//! - `imap`: IMAP4rev1 + IDLE, MOVE, UIDPLUS. `imap/conn.rs` drives
//!   imap-next's parser over the socket; `imap/session.rs` has the command
//!   semantics; fetch, search and sequence sets are beside it.
//! - [`faults`]: the fault-injection handle and counters.
//! - `error`: [`Error`].
//! - [`harness`]: for test suites: [`harness::TestServer`] runs them against
//!   this server or, with `TESTMAIL_SERVER=real`, against Postfix + Dovecot
//!   (`real-server.sh`); accounts, fault proxies, sending and reading mail.
//!
//! Invariants: the server never rewrites a message (the bytes read back over
//! IMAP are the bytes received over SMTP); every file is written by rename,
//! so a killed server never leaves half a message; nothing here knows what
//! the product puts in the mail.

pub mod config;
mod delivery;
mod error;
pub mod faults;
pub mod harness;
mod imap;
mod server;
mod smtp;
mod store;

pub use config::{Config, Limits, User};
pub use error::{Error, Result};
pub use faults::{Faults, SmtpStage, Stats};
pub use server::{run, RunningServer, Server};
