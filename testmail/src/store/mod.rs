//! Users, mailboxes and messages: the in-memory index over the mail folder,
//! and change notification for IMAP sessions.
//!
//! Index and disk are changed together under one `std::sync::Mutex`: every
//! critical section is short, never awaits, and a message's UID must be
//! assigned and its file renamed into place as one step, or two deliveries
//! could race for a UID. The file I/O done under the lock is small (one
//! message, one state file); a test server can afford that. Message bodies
//! are not kept in memory; sessions read them from disk outside the lock.

mod disk;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::SystemTime,
};

use tokio::sync::watch;

use crate::{
    config::{Limits, User},
    error::{Error, Result},
};

pub(crate) use disk::{message_file, system_time, unix_seconds};

/// The name under which IMAP knows the inbox, whatever case the client uses.
pub(crate) const INBOX: &str = "INBOX";
/// The hierarchy delimiter reported by LIST.
pub(crate) const DELIMITER: char = '/';
const MAX_MAILBOX_NAME: usize = 200;

/// The system flags; anything else stored is a keyword.
pub(crate) const SYSTEM_FLAGS: [&str; 5] =
    ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"];
pub(crate) const SEEN: &str = "\\Seen";
pub(crate) const DELETED: &str = "\\Deleted";

/// One message's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub uid: u32,
    pub flags: BTreeSet<String>,
    /// Seconds since the Unix epoch (the message file's mtime).
    pub internal_date: i64,
    pub size: u32,
}

/// A copy of a mailbox's index, for a session to work from without the lock.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub dir: PathBuf,
    pub uidvalidity: u32,
    pub uidnext: u32,
    /// Ascending by UID.
    pub messages: Vec<Message>,
}

impl Snapshot {
    pub(crate) fn path(&self, uid: u32) -> PathBuf {
        self.dir.join(message_file(self.uidvalidity, uid))
    }

    pub(crate) fn find(&self, uid: u32) -> Option<&Message> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| &self.messages[i])
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagOp {
    Replace,
    Add,
    Remove,
}

struct Mailbox {
    dir: PathBuf,
    uidvalidity: u32,
    uidnext: u32,
    messages: Vec<Message>,
    /// Bumped on every change; IMAP sessions that selected the mailbox wait
    /// on it (IDLE) or compare it (NOOP). Dropping the mailbox closes it,
    /// which wakes them too.
    changes: watch::Sender<u64>,
}

impl Mailbox {
    fn load(dir: PathBuf, fresh_uidvalidity: impl FnOnce() -> u32) -> Result<Mailbox> {
        let loaded = disk::load_mailbox(&dir, fresh_uidvalidity)?;
        let messages = loaded
            .messages
            .into_iter()
            .map(|m| Message {
                uid: m.uid,
                flags: loaded.state.flags.get(&m.uid).cloned().unwrap_or_default(),
                internal_date: m.internal_date,
                size: u32::try_from(m.size).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(Mailbox {
            dir,
            uidvalidity: loaded.state.uidvalidity,
            uidnext: loaded.state.uidnext,
            messages,
            changes: watch::channel(0).0,
        })
    }

    fn save_state(&self) -> Result<()> {
        disk::write_state(
            &self.dir,
            &disk::State {
                uidvalidity: self.uidvalidity,
                uidnext: self.uidnext,
                flags: self
                    .messages
                    .iter()
                    .filter(|m| !m.flags.is_empty())
                    .map(|m| (m.uid, m.flags.clone()))
                    .collect(),
            },
        )
    }

    fn notify(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            dir: self.dir.clone(),
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            messages: self.messages.clone(),
        }
    }

    /// Stores a new message; the caller saves the state and notifies.
    fn add(
        &mut self,
        bytes: &[u8],
        flags: BTreeSet<String>,
        internal_date: SystemTime,
        limits: &Limits,
    ) -> Result<u32> {
        if self.messages.len() >= limits.max_messages_per_mailbox {
            return Err(Error::Limit("messages per mailbox"));
        }
        let uid = self.uidnext;
        let next = uid.checked_add(1).ok_or(Error::Limit("UIDs exhausted"))?;
        let size = u32::try_from(bytes.len()).map_err(|_| Error::Limit("message size"))?;
        disk::write_atomic(
            &self.dir,
            &message_file(self.uidvalidity, uid),
            bytes,
            Some(internal_date),
        )?;
        self.uidnext = next;
        self.messages.push(Message {
            uid,
            flags,
            internal_date: unix_seconds(internal_date),
            size,
        });
        Ok(uid)
    }

    fn check(&self, uidvalidity: u32, name: &str) -> Result<()> {
        if self.uidvalidity == uidvalidity {
            Ok(())
        } else {
            Err(Error::UidValidityChanged(name.to_owned()))
        }
    }

    /// Removes messages whose UIDs are in `uids` (sorted or not) from index
    /// and disk; returns the UIDs removed, ascending.
    fn remove(&mut self, uids: &BTreeSet<u32>) -> Result<Vec<u32>> {
        let mut removed = Vec::new();
        let mut first_error = None;
        let (dir, v) = (&self.dir, self.uidvalidity);
        self.messages.retain(|m| {
            if !uids.contains(&m.uid) {
                return true;
            }
            let path = dir.join(message_file(v, m.uid));
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed.push(m.uid);
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    removed.push(m.uid);
                    false
                }
                Err(e) => {
                    first_error.get_or_insert(Error::io(path, e));
                    true
                }
            }
        });
        if !removed.is_empty() {
            self.save_state()?;
            self.notify();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }
}

struct Account {
    dir: PathBuf,
    password: String,
    mailboxes: BTreeMap<String, Mailbox>,
}

impl Account {
    fn mailbox(&self, name: &str) -> Result<&Mailbox> {
        self.mailboxes
            .get(&canonical_mailbox(name))
            .ok_or_else(|| Error::UnknownMailbox(name.to_owned()))
    }

    fn mailbox_mut(&mut self, name: &str) -> Result<&mut Mailbox> {
        self.mailboxes
            .get_mut(&canonical_mailbox(name))
            .ok_or_else(|| Error::UnknownMailbox(name.to_owned()))
    }
}

struct Inner {
    /// Keyed by lower-case address.
    accounts: BTreeMap<String, Account>,
    /// The last UIDVALIDITY handed out, so that a mailbox deleted and created
    /// again, or renumbered, never gets the same one twice.
    last_uidvalidity: u32,
}

impl Inner {
    fn fresh_uidvalidity(&mut self) -> u32 {
        next_uidvalidity(&mut self.last_uidvalidity)
    }

    fn account(&self, address: &str) -> Result<&Account> {
        self.accounts
            .get(&address.to_ascii_lowercase())
            .ok_or_else(|| Error::UnknownUser(address.to_owned()))
    }

    fn account_mut(&mut self, address: &str) -> Result<&mut Account> {
        self.accounts
            .get_mut(&address.to_ascii_lowercase())
            .ok_or_else(|| Error::UnknownUser(address.to_owned()))
    }
}

/// The mail store shared by SMTP delivery, IMAP sessions and fault hooks.
pub(crate) struct Store {
    root: PathBuf,
    limits: Limits,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The current time in seconds, but always above `last`: UIDVALIDITY must
/// never repeat for a mailbox name, even within one second.
fn next_uidvalidity(last: &mut u32) -> u32 {
    let now = u32::try_from(unix_seconds(SystemTime::now())).unwrap_or(u32::MAX - 1);
    *last = now.max(last.saturating_add(1)).max(1);
    *last
}

/// `INBOX` in any case is the inbox; other names are case-sensitive.
pub(crate) fn canonical_mailbox(name: &str) -> String {
    if name.eq_ignore_ascii_case(INBOX) {
        INBOX.to_owned()
    } else {
        name.to_owned()
    }
}

fn validate_mailbox_name(name: &str) -> Result<String> {
    let refuse = |reason| {
        Err(Error::InvalidMailboxName {
            name: name.to_owned(),
            reason,
        })
    };
    let trimmed = name.strip_suffix(DELIMITER).unwrap_or(name);
    if trimmed.is_empty() {
        return refuse("empty");
    }
    if trimmed.len() > MAX_MAILBOX_NAME {
        return refuse("too long");
    }
    if trimmed.contains(['*', '%']) || trimmed.chars().any(char::is_control) {
        return refuse("wildcards and control characters are not allowed");
    }
    if trimmed.split(DELIMITER).any(str::is_empty) {
        return refuse("empty hierarchy level");
    }
    Ok(canonical_mailbox(trimmed))
}

impl Store {
    /// Opens (creating if needed) the store under `root` with these users.
    pub(crate) fn open(root: &Path, users: &[User], limits: Limits) -> Result<Store> {
        fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let store = Store {
            root: root.to_owned(),
            limits,
            inner: Mutex::new(Inner {
                accounts: BTreeMap::new(),
                last_uidvalidity: 0,
            }),
        };
        for user in users {
            store.add_user(user)?;
        }
        Ok(store)
    }

    // A panic while holding the lock cannot leave the index half-changed in
    // a way that matters more than the panic itself; keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an account, loading any mail it already has on disk; for an
    /// existing account, changes the password.
    pub(crate) fn add_user(&self, user: &User) -> Result<()> {
        user.validate()?;
        let key = user.address.to_ascii_lowercase();
        let mut inner = self.lock();
        if let Some(account) = inner.accounts.get_mut(&key) {
            account.password.clone_from(&user.password);
            return Ok(());
        }
        let dir = self.root.join(disk::encode_name(&key));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut mailboxes = BTreeMap::new();
        for (name, path) in disk::list_folders(&dir)? {
            let mailbox = Mailbox::load(path, || inner.fresh_uidvalidity())?;
            inner.last_uidvalidity = inner.last_uidvalidity.max(mailbox.uidvalidity);
            mailboxes.insert(canonical_mailbox(&name), mailbox);
        }
        if !mailboxes.contains_key(INBOX) {
            let path = dir.join(disk::encode_name(INBOX));
            fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            let mailbox = Mailbox::load(path, || inner.fresh_uidvalidity())?;
            mailboxes.insert(INBOX.to_owned(), mailbox);
        }
        inner.accounts.insert(
            key,
            Account {
                dir,
                password: user.password.clone(),
                mailboxes,
            },
        );
        Ok(())
    }

    /// The canonical (lower-case) address if the password is right.
    pub(crate) fn authenticate(&self, address: &str, password: &str) -> Option<String> {
        let inner = self.lock();
        let account = inner.account(address).ok()?;
        (account.password == password).then(|| address.to_ascii_lowercase())
    }

    pub(crate) fn has_user(&self, address: &str) -> bool {
        self.lock().account(address).is_ok()
    }

    /// Stores a message in the user's INBOX.
    pub(crate) fn deliver(&self, address: &str, bytes: &[u8]) -> Result<u32> {
        self.append(address, INBOX, bytes, BTreeSet::new(), SystemTime::now())
            .map(|(_, uid)| uid)
    }

    /// Stores a message in any mailbox; returns (UIDVALIDITY, UID).
    pub(crate) fn append(
        &self,
        address: &str,
        mailbox: &str,
        bytes: &[u8],
        flags: BTreeSet<String>,
        internal_date: SystemTime,
    ) -> Result<(u32, u32)> {
        let mut inner = self.lock();
        let mailbox = inner.account_mut(address)?.mailbox_mut(mailbox)?;
        let uid = mailbox.add(bytes, flags, internal_date, &self.limits)?;
        mailbox.save_state()?;
        mailbox.notify();
        Ok((mailbox.uidvalidity, uid))
    }

    pub(crate) fn snapshot(&self, address: &str, mailbox: &str) -> Result<Snapshot> {
        Ok(self.lock().account(address)?.mailbox(mailbox)?.snapshot())
    }

    /// A receiver that changes whenever the mailbox does, and is closed when
    /// the mailbox is deleted.
    pub(crate) fn watch(&self, address: &str, mailbox: &str) -> Result<watch::Receiver<u64>> {
        Ok(self
            .lock()
            .account(address)?
            .mailbox(mailbox)?
            .changes
            .subscribe())
    }

    /// Mailbox names, sorted.
    pub(crate) fn list(&self, address: &str) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .account(address)?
            .mailboxes
            .keys()
            .cloned()
            .collect())
    }

    pub(crate) fn create(&self, address: &str, name: &str) -> Result<()> {
        let name = validate_mailbox_name(name)?;
        let mut inner = self.lock();
        let inner = &mut *inner;
        let key = address.to_ascii_lowercase();
        let account = inner
            .accounts
            .get_mut(&key)
            .ok_or_else(|| Error::UnknownUser(address.to_owned()))?;
        if account.mailboxes.contains_key(&name) {
            return Err(Error::MailboxExists(name));
        }
        if account.mailboxes.len() >= self.limits.max_mailboxes {
            return Err(Error::Limit("mailboxes per user"));
        }
        let path = account.dir.join(disk::encode_name(&name));
        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let last = &mut inner.last_uidvalidity;
        let mailbox = Mailbox::load(path, || next_uidvalidity(last))?;
        account.mailboxes.insert(name, mailbox);
        Ok(())
    }

    pub(crate) fn delete(&self, address: &str, name: &str) -> Result<()> {
        let name = canonical_mailbox(name);
        if name == INBOX {
            return Err(Error::InvalidMailboxName {
                name,
                reason: "INBOX cannot be deleted",
            });
        }
        let mut inner = self.lock();
        let account = inner.account_mut(address)?;
        let mailbox = account
            .mailboxes
            .remove(&name)
            .ok_or_else(|| Error::UnknownMailbox(name.clone()))?;
        // Dropping `mailbox` closes its watch channel, which tells sessions
        // that had it selected.
        fs::remove_dir_all(&mailbox.dir).map_err(|e| Error::io(&mailbox.dir, e))
    }

    pub(crate) fn rename(&self, address: &str, from: &str, to: &str) -> Result<()> {
        let from = canonical_mailbox(from);
        let to = validate_mailbox_name(to)?;
        if from == INBOX || to == INBOX {
            return Err(Error::InvalidMailboxName {
                name: from,
                reason: "INBOX cannot be renamed here",
            });
        }
        let mut inner = self.lock();
        let account = inner.account_mut(address)?;
        if account.mailboxes.contains_key(&to) {
            return Err(Error::MailboxExists(to));
        }
        let mut mailbox = account
            .mailboxes
            .remove(&from)
            .ok_or_else(|| Error::UnknownMailbox(from.clone()))?;
        let path = account.dir.join(disk::encode_name(&to));
        if let Err(e) = fs::rename(&mailbox.dir, &path) {
            account.mailboxes.insert(from, mailbox);
            return Err(Error::io(path, e));
        }
        // Sessions that had the old name selected see it vanish.
        mailbox.changes = watch::channel(0).0;
        mailbox.dir = path;
        account.mailboxes.insert(to, mailbox);
        Ok(())
    }

    /// Changes flags of the given UIDs; returns the new flags of each UID
    /// that still exists.
    pub(crate) fn store_flags(
        &self,
        address: &str,
        mailbox_name: &str,
        uidvalidity: u32,
        uids: &[u32],
        op: FlagOp,
        flags: &BTreeSet<String>,
    ) -> Result<Vec<(u32, BTreeSet<String>)>> {
        let mut inner = self.lock();
        let mailbox = inner.account_mut(address)?.mailbox_mut(mailbox_name)?;
        mailbox.check(uidvalidity, mailbox_name)?;
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let mut changed = false;
        let mut out = Vec::new();
        for m in mailbox
            .messages
            .iter_mut()
            .filter(|m| wanted.contains(&m.uid))
        {
            let new: BTreeSet<String> = match op {
                FlagOp::Replace => flags.clone(),
                FlagOp::Add => m.flags.union(flags).cloned().collect(),
                FlagOp::Remove => m.flags.difference(flags).cloned().collect(),
            };
            if new != m.flags {
                m.flags = new;
                changed = true;
            }
            out.push((m.uid, m.flags.clone()));
        }
        if changed {
            mailbox.save_state()?;
            mailbox.notify();
        }
        Ok(out)
    }

    /// Copies messages to another mailbox (same user), keeping flags and
    /// internal dates. Returns the target's UIDVALIDITY and (source UID,
    /// new UID) pairs in ascending source order.
    pub(crate) fn copy(
        &self,
        address: &str,
        from: &str,
        uidvalidity: u32,
        uids: &[u32],
        to: &str,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        let mut inner = self.lock();
        let account = inner.account_mut(address)?;
        let source = account.mailbox(from)?;
        source.check(uidvalidity, from)?;
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let mut loaded = Vec::new();
        for m in source.messages.iter().filter(|m| wanted.contains(&m.uid)) {
            let path = source.dir.join(message_file(source.uidvalidity, m.uid));
            let bytes = fs::read(&path).map_err(|e| Error::io(path, e))?;
            loaded.push((m.uid, m.flags.clone(), m.internal_date, bytes));
        }
        let target = account.mailbox_mut(to)?;
        let mut pairs = Vec::new();
        let mut result = Ok(());
        for (uid, flags, date, bytes) in loaded {
            match target.add(&bytes, flags, system_time(date), &self.limits) {
                Ok(new) => pairs.push((uid, new)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if !pairs.is_empty() {
            target.save_state()?;
            target.notify();
        }
        result.map(|()| (target.uidvalidity, pairs))
    }

    /// Removes messages flagged `\Deleted`, limited to `only` if given.
    /// Returns the removed UIDs, ascending.
    pub(crate) fn expunge(
        &self,
        address: &str,
        mailbox_name: &str,
        uidvalidity: u32,
        only: Option<&[u32]>,
    ) -> Result<Vec<u32>> {
        let mut inner = self.lock();
        let mailbox = inner.account_mut(address)?.mailbox_mut(mailbox_name)?;
        mailbox.check(uidvalidity, mailbox_name)?;
        let only: Option<BTreeSet<u32>> = only.map(|u| u.iter().copied().collect());
        let doomed: BTreeSet<u32> = mailbox
            .messages
            .iter()
            .filter(|m| m.flags.contains(DELETED))
            .filter(|m| only.as_ref().is_none_or(|o| o.contains(&m.uid)))
            .map(|m| m.uid)
            .collect();
        mailbox.remove(&doomed)
    }

    /// Removes the given messages whatever their flags (the second half of
    /// MOVE).
    pub(crate) fn remove(
        &self,
        address: &str,
        mailbox_name: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<Vec<u32>> {
        let mut inner = self.lock();
        let mailbox = inner.account_mut(address)?.mailbox_mut(mailbox_name)?;
        mailbox.check(uidvalidity, mailbox_name)?;
        mailbox.remove(&uids.iter().copied().collect())
    }

    /// Gives the mailbox a new UIDVALIDITY and numbers its messages 1..=n, as
    /// a server whose index was rebuilt would. Returns the new UIDVALIDITY.
    pub(crate) fn renumber(&self, address: &str, mailbox_name: &str) -> Result<u32> {
        let mut inner = self.lock();
        let v = inner.fresh_uidvalidity();
        let mailbox = inner.account_mut(address)?.mailbox_mut(mailbox_name)?;
        let old = mailbox.uidvalidity;
        for (i, m) in mailbox.messages.iter_mut().enumerate() {
            let uid = u32::try_from(i + 1).map_err(|_| Error::Limit("UIDs exhausted"))?;
            let from = mailbox.dir.join(message_file(old, m.uid));
            fs::rename(&from, mailbox.dir.join(message_file(v, uid)))
                .map_err(|e| Error::io(from, e))?;
            m.uid = uid;
        }
        mailbox.uidvalidity = v;
        mailbox.uidnext = u32::try_from(mailbox.messages.len() + 1).unwrap_or(u32::MAX);
        mailbox.save_state()?;
        mailbox.notify();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(
            dir,
            &[User::new("alice@example.test", "pw")],
            Limits::default(),
        )
        .unwrap()
    }

    #[test]
    fn deliver_flag_copy_expunge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = "Alice@Example.test";
        assert_eq!(s.deliver(a, b"one").unwrap(), 1);
        assert_eq!(s.deliver(a, b"two").unwrap(), 2);
        let snap = s.snapshot(a, "inbox").unwrap();
        let v = snap.uidvalidity;
        s.store_flags(a, INBOX, v, &[1], FlagOp::Add, &[SEEN.to_owned()].into())
            .unwrap();
        s.create(a, "Archive").unwrap();
        let (tv, pairs) = s.copy(a, INBOX, v, &[1, 2], "Archive").unwrap();
        assert_eq!(pairs, [(1, 1), (2, 2)]);
        s.store_flags(a, INBOX, v, &[2], FlagOp::Add, &[DELETED.to_owned()].into())
            .unwrap();
        assert_eq!(s.expunge(a, INBOX, v, None).unwrap(), [2]);
        assert!(s.expunge(a, INBOX, v + 1, None).is_err());
        drop(s);

        let s = store(dir.path());
        let inbox = s.snapshot(a, INBOX).unwrap();
        assert_eq!(inbox.uidvalidity, v);
        assert_eq!(inbox.uidnext, 3);
        assert_eq!(inbox.messages.len(), 1);
        assert!(inbox.messages[0].flags.contains(SEEN));
        let archive = s.snapshot(a, "Archive").unwrap();
        assert_eq!(archive.uidvalidity, tv);
        assert!(archive.messages[0].flags.contains(SEEN));
        assert_eq!(fs::read(archive.path(2)).unwrap(), b"two");
    }

    #[test]
    fn renumber_changes_uidvalidity_and_uids() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = "alice@example.test";
        for body in [&b"1"[..], b"2", b"3"] {
            s.deliver(a, body).unwrap();
        }
        let v = s.snapshot(a, INBOX).unwrap().uidvalidity;
        s.store_flags(a, INBOX, v, &[2], FlagOp::Add, &[DELETED.to_owned()].into())
            .unwrap();
        s.expunge(a, INBOX, v, None).unwrap();
        let nv = s.renumber(a, INBOX).unwrap();
        assert_ne!(nv, v);
        let snap = s.snapshot(a, INBOX).unwrap();
        let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [1, 2]);
        assert_eq!(fs::read(snap.path(2)).unwrap(), b"3");
        assert_eq!(snap.uidnext, 3);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = "alice@example.test";
        for bad in ["", "a*", "a//b", "x\u{1}"] {
            assert!(s.create(a, bad).is_err(), "{bad:?}");
        }
        assert!(matches!(s.create(a, "inbox"), Err(Error::MailboxExists(_))));
        assert!(s.delete(a, "INBOX").is_err());
    }
}
