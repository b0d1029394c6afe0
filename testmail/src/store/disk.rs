//! The on-disk layout, and the only code that touches it.
//!
//! ```text
//! DIR/<user>/<mailbox>/state              UIDVALIDITY, UIDNEXT, flags
//! DIR/<user>/<mailbox>/<uidvalidity>-<uid>.eml   one message, bytes as received
//! ```
//!
//! Every file is written to a `.tmp-*` name and renamed into place, so a
//! killed server leaves either the old or the new file, never half of one;
//! leftovers are removed on load. We do not fsync: surviving a power cut is
//! not a test server's job, and fsync would slow the burst tests tenfold.
//!
//! The message list is the set of `.eml` files, not the state file, so a
//! crash between writing a message and writing the state loses nothing: the
//! file is found on load and the state catches up. The UIDVALIDITY in each
//! file name means a file left over from before a renumbering can never be
//! mistaken for the message that now has its UID; such files are given fresh
//! UIDs on load.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::error::{Error, Result};

const STATE_FILE: &str = "state";
const STATE_MAGIC: &str = "testmail-mailbox 1";
const TMP_PREFIX: &str = ".tmp-";

/// A folder name for a user address or mailbox name: safe on any file
/// system, never `.`/`..`, never starting with `.` (that is ours for temp
/// files), and reversible.
pub(crate) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b"_@+-".contains(&b) || (b == b'.' && i > 0);
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_name`]; `None` for names we did not write.
pub(crate) fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file name of a message.
pub(crate) fn message_file(uidvalidity: u32, uid: u32) -> String {
    format!("{uidvalidity}-{uid}.eml")
}

/// Writes `bytes` to `dir/name` atomically, optionally with a modification
/// time (which is how we keep a message's INTERNALDATE).
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mtime: Option<SystemTime>,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}-{name}", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if let Some(mtime) = mtime {
            file.set_modified(mtime)?;
        }
        drop(file);
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(target, e));
    }
    Ok(())
}

/// What the state file holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub flags: BTreeMap<u32, BTreeSet<String>>,
}

impl State {
    fn encode(&self) -> String {
        let mut s = format!(
            "{STATE_MAGIC}\nuidvalidity {}\nuidnext {}\n",
            self.uidvalidity, self.uidnext
        );
        for (uid, flags) in &self.flags {
            if !flags.is_empty() {
                s.push_str(&format!("flags {uid}"));
                for flag in flags {
                    s.push(' ');
                    s.push_str(flag);
                }
                s.push('\n');
            }
        }
        s
    }

    fn decode(path: &Path, text: &str) -> Result<State> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some(STATE_MAGIC) {
            return Err(corrupt(format!("first line is not {STATE_MAGIC:?}")));
        }
        let mut state = State::default();
        for line in lines {
            let mut words = line.split(' ');
            let number = |w: Option<&str>| {
                w.and_then(|w| w.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| corrupt(format!("bad number in {line:?}")))
            };
            match words.next() {
                Some("uidvalidity") => state.uidvalidity = number(words.next())?,
                Some("uidnext") => state.uidnext = number(words.next())?,
                Some("flags") => {
                    let uid = number(words.next())?;
                    state.flags.insert(
                        uid,
                        words.filter(|w| !w.is_empty()).map(str::to_owned).collect(),
                    );
                }
                Some("") | None => {}
                Some(other) => return Err(corrupt(format!("unknown line {other:?}"))),
            }
        }
        if state.uidvalidity == 0 || state.uidnext == 0 {
            return Err(corrupt("uidvalidity or uidnext missing".into()));
        }
        Ok(state)
    }
}

pub(crate) fn write_state(dir: &Path, state: &State) -> Result<()> {
    write_atomic(dir, STATE_FILE, state.encode().as_bytes(), None)
}

/// One message file found on disk.
#[derive(Debug, Clone)]
pub(crate) struct FoundMessage {
    pub uid: u32,
    pub size: u64,
    pub internal_date: i64,
}

/// A mailbox folder as found on disk, already repaired: orphans renamed to
/// fresh UIDs, temp files removed, UIDNEXT above every UID.
#[derive(Debug)]
pub(crate) struct LoadedMailbox {
    pub state: State,
    pub messages: Vec<FoundMessage>,
}

/// Loads (and if needed repairs) the mailbox in `dir`. `fresh_uidvalidity`
/// is called only when the folder has no state file yet.
pub(crate) fn load_mailbox(
    dir: &Path,
    fresh_uidvalidity: impl FnOnce() -> u32,
) -> Result<LoadedMailbox> {
    let state_path = dir.join(STATE_FILE);
    let (mut state, mut dirty) = match fs::read_to_string(&state_path) {
        Ok(text) => (State::decode(&state_path, &text)?, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            State {
                uidvalidity: fresh_uidvalidity(),
                uidnext: 1,
                flags: BTreeMap::new(),
            },
            true,
        ),
        Err(e) => return Err(Error::io(state_path, e)),
    };

    let mut current = Vec::new();
    let mut orphans = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TMP_PREFIX) {
            // Half-written by a killed server: it never became visible.
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Some((v, u)) = name
            .strip_suffix(".eml")
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(v, u)| Some((v.parse::<u32>().ok()?, u.parse::<u32>().ok()?)))
        else {
            continue;
        };
        let meta = entry.metadata().map_err(|e| Error::io(entry.path(), e))?;
        let found = FoundMessage {
            uid: u,
            size: meta.len(),
            internal_date: unix_seconds(meta.modified().unwrap_or(UNIX_EPOCH)),
        };
        if v == state.uidvalidity && u > 0 {
            current.push(found);
        } else {
            orphans.push((v, found));
        }
    }
    current.sort_by_key(|m| m.uid);
    if let Some(last) = current.last() {
        if last.uid >= state.uidnext {
            state.uidnext = last.uid.saturating_add(1);
            dirty = true;
        }
    }
    orphans.sort_by_key(|(v, m)| (*v, m.uid));
    for (v, mut found) in orphans {
        let uid = state.uidnext;
        fs::rename(
            dir.join(message_file(v, found.uid)),
            dir.join(message_file(state.uidvalidity, uid)),
        )
        .map_err(|e| Error::io(dir, e))?;
        found.uid = uid;
        current.push(found);
        state.uidnext = uid.saturating_add(1);
        dirty = true;
    }
    // Flags of messages that are gone would otherwise live forever.
    let before = state.flags.len();
    state
        .flags
        .retain(|uid, _| current.binary_search_by_key(uid, |m| m.uid).is_ok());
    dirty |= before != state.flags.len();
    if dirty {
        write_state(dir, &state)?;
    }
    Ok(LoadedMailbox {
        state,
        messages: current,
    })
}

pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Lists the sub-folders of `dir` whose names decode, as (decoded, path).
pub(crate) fn list_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let name = entry.file_name();
        if let (true, Some(decoded)) = (is_dir, name.to_str().and_then(decode_name)) {
            out.push((decoded, entry.path()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_stay_safe() {
        for name in [
            "INBOX",
            "alice@example.test",
            "a/b",
            ".hidden",
            "..",
            "Ünï cödé",
            "%",
        ] {
            let encoded = encode_name(name);
            assert!(!encoded.starts_with('.'), "{encoded}");
            assert!(!encoded.contains('/'), "{encoded}");
            assert_eq!(decode_name(&encoded).as_deref(), Some(name));
        }
        assert_eq!(encode_name("alice@example.test"), "alice@example.test");
    }

    #[test]
    fn state_round_trips() {
        let mut state = State {
            uidvalidity: 7,
            uidnext: 12,
            flags: BTreeMap::new(),
        };
        state
            .flags
            .insert(3, ["\\Seen".to_owned(), "$Junk".to_owned()].into());
        let text = state.encode();
        assert_eq!(State::decode(Path::new("x"), &text).unwrap(), state);
        assert!(State::decode(Path::new("x"), "garbage").is_err());
    }

    #[test]
    fn load_repairs_orphans_and_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_state(
            d,
            &State {
                uidvalidity: 5,
                uidnext: 3,
                flags: [
                    (2, ["\\Seen".to_owned()].into()),
                    (9, ["\\Seen".to_owned()].into()),
                ]
                .into(),
            },
        )
        .unwrap();
        fs::write(d.join(message_file(5, 2)), b"two").unwrap();
        // Written but the state was not updated before a crash.
        fs::write(d.join(message_file(5, 3)), b"three").unwrap();
        // Left over from an older UIDVALIDITY.
        fs::write(d.join(message_file(4, 1)), b"old").unwrap();
        fs::write(d.join(".tmp-1-2-x.eml"), b"half").unwrap();
        let loaded = load_mailbox(d, || unreachable!()).unwrap();
        let uids: Vec<u32> = loaded.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [2, 3, 4]);
        assert_eq!(loaded.state.uidnext, 5);
        assert_eq!(fs::read(d.join(message_file(5, 4))).unwrap(), b"old");
        assert!(!d.join(".tmp-1-2-x.eml").exists());
        assert_eq!(loaded.state.flags.keys().copied().collect::<Vec<_>>(), [2]);
        // And the repair was saved.
        let again = load_mailbox(d, || unreachable!()).unwrap();
        assert_eq!(again.state, loaded.state);
    }
}
