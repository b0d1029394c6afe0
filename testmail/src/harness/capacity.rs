//! What the mail server itself can do, measured with plain clients (lettre
//! for SMTP, async-imap for IMAP, no product code): how many mails per
//! second it takes in by SMTP and shows in IMAP, and how long one mail
//! takes from SMTP to IMAP. Benchmarks set the product's figures against
//! these, measured in the same run on the same machine.

use std::time::{Duration, Instant};

use futures::future::try_join_all;

use super::{imap, Account, HarnessError, TestServer};

/// How often a count of new mail is asked for while waiting for it.
const COUNT_EVERY: Duration = Duration::from_millis(5);
/// How long a measurement may wait for its mail before it is an error.
const WAIT: Duration = Duration::from_secs(120);

/// Mails per second through the server: see [`TestServer::raw_capacity`].
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub mails: usize,
    pub senders: usize,
    /// Bytes per mail.
    pub size: usize,
    /// From the first SMTP connection to the last mail shown in IMAP.
    pub elapsed: Duration,
}

impl Capacity {
    pub fn per_sec(&self) -> f64 {
        self.mails as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A mail of about `size` bytes (headers and a base64 body, as the
/// product's mails are), numbered `n`.
pub fn filler_mail(from: &str, to: &str, n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: capacity {n}\r\nMessage-ID: <capacity-{n}-{}@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = n;
    while m.len() < size {
        for _ in 0..76 {
            m.push(alphabet[i % 64]);
            i = i.wrapping_mul(31).wrapping_add(7);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

impl TestServer {
    /// Sends `mails` mails of `size` bytes, spread over `to`'s accounts,
    /// from `senders` concurrent SMTP clients (one connection per mail, as
    /// the product sends), and times them until the last is shown in its
    /// INBOX over IMAP (counted with EXAMINE on one session per account,
    /// every 5 ms). The accounts' INBOXes may hold mail before: only the
    /// new mails are counted.
    pub async fn raw_capacity(
        &self,
        from: &str,
        to: &[&Account],
        mails: usize,
        senders: usize,
        size: usize,
    ) -> Result<Capacity, HarnessError> {
        if to.is_empty() || senders == 0 {
            return Err(HarnessError::Unexpected(
                "raw_capacity needs at least one account and one sender".into(),
            ));
        }
        let addr = self.imap_addr();
        let mut sessions = Vec::with_capacity(to.len());
        let mut before = 0;
        for a in to {
            let mut s = imap::login(addr, &a.address, &a.password).await?;
            before += inbox_count(&mut s).await?;
            sessions.push(s);
        }
        let started = Instant::now();
        let send = try_join_all((0..senders).map(|k| async move {
            let mut n = k;
            while n < mails {
                let account = to[n % to.len()];
                let raw = filler_mail(from, &account.address, n, size);
                self.send_raw(from, &account.address, &raw).await?;
                n += senders;
            }
            Ok::<(), HarnessError>(())
        }));
        let shown = async {
            loop {
                let mut now = 0;
                for s in &mut sessions {
                    now += inbox_count(s).await?;
                }
                if now >= before + mails {
                    return Ok::<(), HarnessError>(());
                }
                if started.elapsed() > WAIT {
                    return Err(HarnessError::Timeout {
                        what: format!(
                            "{mails} mails to be shown in IMAP; {} were",
                            now.saturating_sub(before)
                        ),
                        after: WAIT,
                    });
                }
                tokio::time::sleep(COUNT_EVERY).await;
            }
        };
        let (sent, seen) = tokio::join!(send, shown);
        sent?;
        seen?;
        let elapsed = started.elapsed();
        for s in sessions {
            imap::logout(s).await;
        }
        Ok(Capacity {
            mails,
            senders,
            size,
            elapsed,
        })
    }

    /// `n` times, one after the other: sends one mail of `size` bytes to
    /// `to` and times it from the start of the SMTP connection until
    /// EXAMINE shows it in `to`'s INBOX (its UIDNEXT, asked every 5 ms).
    pub async fn delivery_latencies(
        &self,
        from: &str,
        to: &Account,
        n: usize,
        size: usize,
    ) -> Result<Vec<Duration>, HarnessError> {
        let mut watch = self.inbox_watch(to).await?;
        let mut next = watch.next_uid().await?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let raw = filler_mail(from, &to.address, i, size);
            let started = Instant::now();
            self.send_raw(from, &to.address, &raw).await?;
            next = watch.wait_past(next, WAIT).await?;
            out.push(started.elapsed());
        }
        imap::logout(watch.session).await;
        Ok(out)
    }

    /// The size in bytes of every message `account` holds, in all its
    /// folders (how many there are, and how big).
    pub async fn message_sizes(&self, account: &Account) -> Result<Vec<u32>, HarnessError> {
        let addr = self.imap_addr();
        super::with_timeout(format!("reading the mail of {}", account.address), async {
            let mut s = imap::login(addr, &account.address, &account.password).await?;
            let mut sizes = Vec::new();
            for (name, selectable) in imap::list(&mut s).await? {
                if selectable {
                    sizes.extend(imap::sizes(&mut s, &name).await?);
                }
            }
            imap::logout(s).await;
            Ok(sizes)
        })
        .await
    }
}

/// One IMAP session on an account's INBOX that sees each new delivery by
/// its UIDNEXT, which only a new message moves: mail the account's owner
/// reads and files away meanwhile does not hide one. See
/// [`TestServer::inbox_watch`].
pub struct InboxWatch {
    session: imap::Session,
}

impl std::fmt::Debug for InboxWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxWatch").finish_non_exhaustive()
    }
}

impl InboxWatch {
    /// INBOX's UIDNEXT now.
    pub async fn next_uid(&mut self) -> Result<u32, HarnessError> {
        imap::uid_next(&mut self.session, "INBOX").await
    }

    /// Waits until INBOX's UIDNEXT is past `uid` (asked every 5 ms); the
    /// UIDNEXT then.
    pub async fn wait_past(&mut self, uid: u32, timeout: Duration) -> Result<u32, HarnessError> {
        self.wait_past_unless(uid, timeout, || false).await
    }

    /// [`Self::wait_past`], giving up (an error) as soon as `give_up` says
    /// so: when what should deliver the mail has failed.
    pub async fn wait_past_unless(
        &mut self,
        uid: u32,
        timeout: Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<u32, HarnessError> {
        let started = Instant::now();
        loop {
            let now = self.next_uid().await?;
            if now > uid {
                return Ok(now);
            }
            if give_up() {
                return Err(HarnessError::Unexpected(format!(
                    "gave up waiting for a new message in INBOX (UIDNEXT past {uid})"
                )));
            }
            if started.elapsed() > timeout {
                return Err(HarnessError::Timeout {
                    what: format!("a new message in INBOX (UIDNEXT past {uid})"),
                    after: timeout,
                });
            }
            tokio::time::sleep(COUNT_EVERY).await;
        }
    }
}

impl TestServer {
    /// A session that watches `account`'s INBOX for new deliveries.
    pub async fn inbox_watch(&self, account: &Account) -> Result<InboxWatch, HarnessError> {
        Ok(InboxWatch {
            session: imap::login(self.imap_addr(), &account.address, &account.password).await?,
        })
    }
}

async fn inbox_count(s: &mut imap::Session) -> Result<usize, HarnessError> {
    Ok(imap::examine(s, "INBOX").await?.map_or(0, |(n, _)| n) as usize)
}
