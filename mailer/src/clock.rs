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
