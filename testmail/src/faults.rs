//! Fault injection and counters, for tests of clients that must survive a
//! hostile server. A [`Faults`] handle is cheap to clone; every hook takes
//! effect at once for all connections.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    error::{Error, Result},
    store::Store,
};

/// Where in an SMTP transaction a refusal is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmtpStage {
    /// Every `RCPT TO` of the transaction is answered with the code.
    Rcpt,
    /// The `DATA` command is answered with the code (no message is sent).
    Data,
    /// The message is transferred, then the final `.` is answered with the
    /// code; nothing is delivered.
    EndOfData,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub code: u16,
    pub stage: SmtpStage,
}

impl Refusal {
    /// The reply line (without CRLF) for this refusal.
    pub(crate) fn reply(&self) -> String {
        let class = self.code / 100;
        format!(
            "{} {class}.0.0 refused by testmail fault injection",
            self.code
        )
    }
}

#[derive(Debug, Default)]
struct Counters {
    smtp_connections: AtomicU64,
    imap_connections: AtomicU64,
    mails_accepted: AtomicU64,
    mails_refused: AtomicU64,
    messages_delivered: AtomicU64,
    imap_connections_dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Refusals {
    remaining: u32,
    refusal: Option<Refusal>,
}

struct Shared {
    store: Arc<Store>,
    drop_fetches: AtomicU32,
    duplicates: AtomicU32,
    delay: Mutex<Duration>,
    refusals: Mutex<Refusals>,
    /// Bumped to make every IMAP session that is in IDLE drop its connection.
    idle_kill: watch::Sender<u64>,
    counters: Counters,
}

/// The fault-injection handle of a running server
/// ([`crate::RunningServer::faults`]).
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("drop_fetches", &self.shared.drop_fetches)
            .field("duplicates", &self.shared.duplicates)
            .field("counters", &self.shared.counters)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the server's counters, from [`Faults::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// SMTP connections accepted since start.
    pub smtp_connections: u64,
    /// IMAP connections accepted since start.
    pub imap_connections: u64,
    /// SMTP transactions answered `250` after the final `.`.
    pub mails_accepted: u64,
    /// SMTP transactions refused by a fault hook.
    pub mails_refused: u64,
    /// Messages stored in a mailbox by SMTP (one per recipient, two for a
    /// duplicated delivery).
    pub messages_delivered: u64,
    /// IMAP connections cut by a fault hook.
    pub imap_connections_dropped: u64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Faults {
    pub(crate) fn new(store: Arc<Store>) -> Faults {
        Faults {
            shared: Arc::new(Shared {
                store,
                drop_fetches: AtomicU32::new(0),
                duplicates: AtomicU32::new(0),
                delay: Mutex::new(Duration::ZERO),
                refusals: Mutex::new(Refusals::default()),
                idle_kill: watch::channel(0).0,
                counters: Counters::default(),
            }),
        }
    }

    /// The next `n` IMAP FETCH (or UID FETCH) commands that return at least
    /// one message get part of their first response written, then the
    /// connection is closed without a word.
    pub fn drop_connections_mid_fetch(&self, n: u32) {
        self.shared.drop_fetches.store(n, Ordering::SeqCst);
    }

    /// Closes, without a BYE, every IMAP connection that is in IDLE now.
    pub fn drop_idle_connections(&self) {
        self.shared
            .idle_kill
            .send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The next `n` messages accepted over SMTP are stored twice in each
    /// recipient's INBOX (two messages, same bytes, two UIDs).
    pub fn duplicate_next_deliveries(&self, n: u32) {
        self.shared.duplicates.store(n, Ordering::SeqCst);
    }

    /// Messages accepted over SMTP from now on are stored only after
    /// `delay`; `Duration::ZERO` turns this off. A server shut down while
    /// messages wait delivers them before it stops.
    pub fn delay_deliveries(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// The next `n` SMTP transactions are refused with `code` (400..=599)
    /// at `stage`.
    pub fn refuse_smtp(&self, n: u32, code: u16, stage: SmtpStage) -> Result<()> {
        if !(400..=599).contains(&code) {
            return Err(Error::InvalidReplyCode(code));
        }
        *lock(&self.shared.refusals) = Refusals {
            remaining: n,
            refusal: Some(Refusal { code, stage }),
        };
        Ok(())
    }

    /// Gives a mailbox a new UIDVALIDITY and renumbers its messages from 1,
    /// as a server whose index was rebuilt would. IMAP sessions that have the
    /// mailbox selected are disconnected (with `* BYE`), since UIDVALIDITY
    /// cannot change under a selected mailbox. Returns the new UIDVALIDITY.
    pub fn change_uidvalidity(&self, user: &str, mailbox: &str) -> Result<u32> {
        self.shared.store.renumber(user, mailbox)
    }

    /// Turns every fault off (counters are kept).
    pub fn clear(&self) {
        self.drop_connections_mid_fetch(0);
        self.duplicate_next_deliveries(0);
        self.delay_deliveries(Duration::ZERO);
        *lock(&self.shared.refusals) = Refusals::default();
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            smtp_connections: get(&c.smtp_connections),
            imap_connections: get(&c.imap_connections),
            mails_accepted: get(&c.mails_accepted),
            mails_refused: get(&c.mails_refused),
            messages_delivered: get(&c.messages_delivered),
            imap_connections_dropped: get(&c.imap_connections_dropped),
        }
    }

    // ----- used by the protocol code -----

    /// Takes one "drop mid-FETCH" if any is left.
    pub(crate) fn take_drop_fetch(&self) -> bool {
        take_one(&self.shared.drop_fetches)
    }

    pub(crate) fn take_duplicate(&self) -> bool {
        take_one(&self.shared.duplicates)
    }

    pub(crate) fn delay(&self) -> Duration {
        *lock(&self.shared.delay)
    }

    /// Takes one SMTP refusal if any is left for `stage`; a transaction
    /// asks once per stage it reaches, so one refusal spoils one transaction.
    pub(crate) fn take_refusal(&self, stage: SmtpStage) -> Option<Refusal> {
        let mut r = lock(&self.shared.refusals);
        let refusal = r.refusal.filter(|f| f.stage == stage && r.remaining > 0)?;
        r.remaining -= 1;
        Some(refusal)
    }

    pub(crate) fn idle_kill(&self) -> watch::Receiver<u64> {
        self.shared.idle_kill.subscribe()
    }

    pub(crate) fn count_smtp_connection(&self) {
        bump(&self.shared.counters.smtp_connections);
    }
    pub(crate) fn count_imap_connection(&self) {
        bump(&self.shared.counters.imap_connections);
    }
    pub(crate) fn count_accepted(&self) {
        bump(&self.shared.counters.mails_accepted);
    }
    pub(crate) fn count_refused(&self) {
        bump(&self.shared.counters.mails_refused);
    }
    pub(crate) fn count_delivered(&self) {
        bump(&self.shared.counters.messages_delivered);
    }
    pub(crate) fn count_dropped(&self) {
        bump(&self.shared.counters.imap_connections_dropped);
    }
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

// The values behind these mutexes are plain data that a panic cannot leave
// inconsistent, so a poisoned lock is still good to use.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
