//! The wall clock, read only at the edges (daemon loops, the CLI) and
//! passed into the protocol core as a [`Timestamp`].

use std::time::SystemTime;

use crate::money::Timestamp;

/// Now, in whole seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_unix(secs)
}

/// Where a daemon's handler takes the time from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// The wall clock ([`now`]).
    System,
    /// A fixed instant (tests, replays of a day's mail).
    Fixed(Timestamp),
    /// The wall clock moved by this many seconds (tests of deadlines).
    Offset(i64),
}

impl Clock {
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => now(),
            Clock::Fixed(t) => t,
            Clock::Offset(s) if s >= 0 => now().saturating_add_secs(s.unsigned_abs()),
            Clock::Offset(s) => now().saturating_sub_secs(s.unsigned_abs()),
        }
    }
}
