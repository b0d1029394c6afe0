//! The standing adversarial suite, for evidence in figures that no input
//! and no crash loses or creates value or stops a daemon:
//!
//! - `conservation`: the value-conservation checker across a whole
//!   deployment (every issuer, the agent, every wallet, and the mail in
//!   between);
//! - `hostile`: the hostile-mail corpus and its runner against running
//!   daemons;
//! - `campaign`: the seeded fault campaign (kill -9 and restarts, dropped,
//!   duplicated and delayed mail).
//!
//! Deployments are the demo's cast (`demo::cast`, `demo::story`): every
//! party is the real program in a process of its own.

pub mod campaign;
pub mod conservation;
pub mod hostile;
