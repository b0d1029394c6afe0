//! The transport suite: SMTP outbox and IMAP watcher against a real mail
//! server. Runs against the embedded `testmail` server by default and
//! against Postfix + Dovecot when `TESTMAIL_SERVER=real` (see
//! `testmail/real-server.sh`). Every mail must be handled exactly once
//! whatever the server and the network do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailer::clock;
use mailer::envelope::Envelope;
use mailer::imap::{Disposition, HandlerError, ImapConfig, IncomingMail, MailHandler, Watcher};
use mailer::mime::{build_mail, MessageId, OutgoingMail};
use mailer::outbox;
use mailer::smtp::{drain_once, SenderPolicy, SmtpClient, SmtpConfig, TlsMode};
use rusqlite::{Connection, Transaction};
use testmail::harness::{Account, TestServer};

const WAIT: Duration = Duration::from_secs(30);

/// A handler that records one effect per mail in its own table, inside the
/// watcher's transaction, and can be told to fail.
#[derive(Clone, Default)]
struct Recorder {
    /// Fail (as a passing error) while this is above zero.
    fail: Arc<std::sync::atomic::AtomicU32>,
    /// Fail only mail `tag(n)`, if set.
    fail_only: Option<u32>,
}

impl MailHandler for Recorder {
    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        mail: &IncomingMail<'_>,
    ) -> Result<Disposition, HandlerError> {
        let parsed = match mailer::mime::parse_mail(mail.raw) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Disposition::Rejected {
                    reason: e.to_string(),
                })
            }
        };
        let tag = parsed.envelopes[0].body().to_vec();
        let chosen = self.fail_only.is_none_or(|n| self::tag(n) == tag);
        tx.execute(
            "INSERT INTO effects (tag, n) VALUES (?1, 1)
             ON CONFLICT (tag) DO UPDATE SET n = n + 1",
            [tag],
        )
        .map_err(|e| HandlerError(e.to_string()))?;
        let left = self.fail.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 && chosen {
            self.fail
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(HandlerError("injected passing failure".into()));
        }
        Ok(Disposition::Processed)
    }
}

fn open_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS effects (tag BLOB PRIMARY KEY, n INTEGER NOT NULL) STRICT;",
    )
    .unwrap();
    outbox::migrate(&conn).unwrap();
    conn
}

/// Effects recorded: tag -> count.
fn effects(path: &Path) -> Vec<(Vec<u8>, i64)> {
    let conn = open_db(path);
    let mut stmt = conn
        .prepare("SELECT tag, n FROM effects ORDER BY tag")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn tag(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// A protocol mail whose envelope body is `tag(i)`.
fn mail(from: &str, to: &str, i: u32, salt: &str) -> OutgoingMail {
    OutgoingMail {
        from: from.into(),
        to: to.into(),
        subject: format!("test mail {i}"),
        message_id: MessageId::parse(&format!("t{i}-{salt}@example.test")).unwrap(),
        in_reply_to: None,
        references: vec![],
        date: clock::now(),
        text: format!("test mail {i}"),
        envelopes: vec![Envelope::seal("ping", tag(i), &mailer::testkit::key(1)).unwrap()],
        auto_reply: false,
    }
}

struct Rig {
    server: TestServer,
    account: Account,
    dir: tempfile::TempDir,
    salt: String,
}

impl Rig {
    async fn new(hint: &str) -> Rig {
        let server = TestServer::start().await.unwrap();
        let account = server.account(hint).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let salt = format!(
            "{hint}-{}",
            mailer::crypto::Id::random().to_hex().get(..8).unwrap()
        );
        Rig {
            server,
            account,
            dir,
            salt,
        }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("receiver.db")
    }

    fn imap(&self, addr: SocketAddr) -> ImapConfig {
        let mut c = ImapConfig::new(
            &addr.ip().to_string(),
            addr.port(),
            TlsMode::None,
            &self.account.address,
            &self.account.password,
        );
        c.poll_interval = Duration::from_millis(100);
        c.timeout = Duration::from_secs(10);
        c
    }

    fn smtp(&self, addr: SocketAddr) -> SmtpClient {
        SmtpClient::new(&SmtpConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            tls: TlsMode::None,
            username: None,
            password: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
        })
        .unwrap()
    }

    fn watcher(&self, cfg: ImapConfig, handler: Recorder) -> Watcher<Recorder> {
        Watcher::new(cfg, open_db(&self.db_path()), handler).unwrap()
    }

    async fn send(&self, i: u32) {
        self.send_times(i, 1).await;
    }

    /// Sends mails `0..n` and waits until the mailbox shows them.
    async fn deliver(&self, n: u32) {
        for i in 0..n {
            self.send(i).await;
        }
        self.server
            .wait_for(&self.account, "INBOX", n as usize, WAIT)
            .await
            .unwrap();
    }

    /// Delivers the very same mail `i` `times` times (as after an
    /// ambiguous SMTP failure and resend, or a relay's duplicate).
    async fn send_times(&self, i: u32, times: usize) {
        let raw = build_mail(&mail(
            "sender@example.test",
            &self.account.address,
            i,
            &self.salt,
        ))
        .unwrap();
        for _ in 0..times {
            self.server
                .send_raw("sender@example.test", &self.account.address, &raw)
                .await
                .unwrap();
        }
    }

    /// Runs watchers (made by `make`) until `n` distinct mails have an
    /// effect and the mailbox is empty.
    async fn drain(&self, cfg: &ImapConfig, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut w = self.watcher(cfg.clone(), Recorder::default());
            w.run_once().await.unwrap();
            let inbox = self.server.messages(&self.account, "INBOX").await.unwrap();
            if effects(&self.db_path()).len() >= n && inbox.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "timed out draining");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks that exactly mails `0..n` had one effect each, and that the
    /// processed folder holds `processed` mails and the inbox none.
    async fn assert_exactly_once(&self, n: u32, processed: usize) {
        let got = effects(&self.db_path());
        let want: Vec<(Vec<u8>, i64)> = (0..n).map(|i| (tag(i), 1)).collect();
        assert_eq!(got, want, "each mail must have exactly one effect");
        let done = self
            .server
            .messages(&self.account, "Processed")
            .await
            .unwrap();
        assert_eq!(done.len(), processed);
        let inbox = self.server.messages(&self.account, "INBOX").await.unwrap();
        assert!(inbox.is_empty(), "{} mails left in INBOX", inbox.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_to_watcher_each_mail_exactly_once() {
    let rig = Rig::new("once").await;
    const N: u32 = 40;
    // The sending side: queue N mails in one transaction, then drain.
    let sender_db = open_db(&rig.dir.path().join("sender.db"));
    {
        let tx = sender_db.unchecked_transaction().unwrap();
        for i in 0..N {
            outbox::enqueue(
                &tx,
                &mail("sender@example.test", &rig.account.address, i, &rig.salt),
                clock::now(),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let smtp = rig.smtp(rig.server.smtp_addr());
    let report = drain_once(&sender_db, &smtp, &SenderPolicy::default(), clock::now())
        .await
        .unwrap();
    assert_eq!(report.sent, N as usize);
    assert_eq!(outbox::stats(&sender_db).unwrap().sent, u64::from(N));
    // A second pass sends nothing again.
    let again = drain_once(&sender_db, &smtp, &SenderPolicy::default(), clock::now())
        .await
        .unwrap();
    assert_eq!(again.sent, 0);

    rig.server
        .wait_for(&rig.account, "INBOX", N as usize, WAIT)
        .await
        .unwrap();
    let cfg = rig.imap(rig.server.imap_addr());
    rig.drain(&cfg, N as usize).await;
    rig.assert_exactly_once(N, N as usize).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_killed_at_random_moments_loses_and_repeats_nothing() {
    let rig = Rig::new("kill").await;
    const N: u32 = 30;
    rig.deliver(N).await;
    let cfg = rig.imap(rig.server.imap_addr());
    // Start a watcher task and abort it after a short, varying time, again
    // and again: aborts land between FETCH and commit, and between commit
    // and MOVE.
    for round in 0..8u64 {
        let mut w = rig.watcher(cfg.clone(), Recorder::default());
        let task = tokio::spawn(async move {
            let _ = w.run(std::future::pending()).await;
        });
        tokio::time::sleep(Duration::from_millis(15 + round * 11)).await;
        task.abort();
        let _ = task.await;
    }
    rig.drain(&cfg, N as usize).await;
    rig.assert_exactly_once(N, N as usize).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_commit_before_move_is_moved_without_a_second_effect() {
    let rig = Rig::new("aftercommit").await;
    rig.send(0).await;
    let raw = rig
        .server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap()
        .remove(0);
    // The state a crash right after the commit leaves: effect and record
    // committed, mail still in INBOX.
    {
        let conn = open_db(&rig.db_path());
        mailer::inbox::migrate(&conn).unwrap();
        conn.execute("INSERT INTO effects (tag, n) VALUES (?1, 1)", [tag(0)])
            .unwrap();
        mailer::inbox::record(
            &conn,
            &mailer::inbox::mail_key(&raw),
            &mailer::inbox::Seen::Processed,
            clock::now(),
        )
        .unwrap();
    }
    let cfg = rig.imap(rig.server.imap_addr());
    let mut w = rig.watcher(cfg, Recorder::default());
    let report = w.run_once().await.unwrap();
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.processed, 0);
    rig.assert_exactly_once(1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_handler_failures_are_retried_then_bounded() {
    let rig = Rig::new("retry").await;
    rig.send(0).await;
    rig.send(1).await;
    rig.server
        .wait_for(&rig.account, "INBOX", 2, WAIT)
        .await
        .unwrap();
    let mut cfg = rig.imap(rig.server.imap_addr());
    cfg.max_handler_attempts = 3;
    // One failure: rolled back, retried, one effect in the end.
    let rec = Recorder::default();
    rec.fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let mut w = rig.watcher(cfg.clone(), rec);
    let first = w.run_once().await.unwrap();
    assert_eq!(first.deferred, 1);
    assert_eq!(first.processed, 1);
    rig.drain(&cfg, 2).await;
    rig.assert_exactly_once(2, 2).await;

    // A mail that always fails is rejected after 3 attempts, not retried
    // forever, and its effects are rolled back every time.
    rig.send(2).await;
    rig.server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap();
    let rec = Recorder::default();
    rec.fail
        .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let mut w = rig.watcher(cfg.clone(), rec);
    let mut rejected = 0;
    for _ in 0..3 {
        // Each pass counts one attempt (the retry wait is skipped by using a
        // fresh watcher each time).
        rejected += w.run_once().await.unwrap().rejected;
        w = rig.watcher(cfg.clone(), w.handler().clone());
    }
    assert_eq!(rejected, 1);
    let bad = rig.server.messages(&rig.account, "Rejected").await.unwrap();
    assert_eq!(bad.len(), 1);
    assert!(!effects(&rig.db_path()).iter().any(|(t, _)| *t == tag(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_fetch_and_mid_idle_misses_nothing() {
    let rig = Rig::new("drops").await;
    let proxy = rig.server.imap_proxy().await.unwrap();
    let cfg = rig.imap(proxy.addr());
    let mut w = rig.watcher(cfg, Recorder::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        w.run(async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        w
    });
    // Mid-FETCH: the next two FETCHes are cut in the middle of the body.
    proxy.cut_next_fetches(2);
    for i in 0..5 {
        rig.send(i).await;
    }
    wait_effects(&rig, 5).await;
    // Mid-IDLE: every connection is dropped while the watcher idles.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.drop_all();
    for i in 5..10 {
        rig.send(i).await;
    }
    wait_effects(&rig, 10).await;
    stop_tx.send(()).unwrap();
    let w = task.await.unwrap();
    assert!(proxy.connections() >= 3, "the watcher reconnected");
    assert_eq!(w.totals().processed, 10);
    rig.assert_exactly_once(10, 10).await;
}

async fn wait_effects(rig: &Rig, n: usize) {
    let deadline = Instant::now() + WAIT;
    while effects(&rig.db_path()).len() < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} effects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_delivered_twice_has_one_effect() {
    let rig = Rig::new("twice").await;
    // The same mail twice, between two others: one batch, in which the
    // second copy finds the first one's record.
    rig.send(0).await;
    rig.send_times(1, 2).await;
    rig.send(2).await;
    rig.server
        .wait_for(&rig.account, "INBOX", 4, WAIT)
        .await
        .unwrap();
    let cfg = rig.imap(rig.server.imap_addr());
    let mut w = rig.watcher(cfg, Recorder::default());
    let report = w.run_once().await.unwrap();
    assert_eq!((report.processed, report.duplicates), (3, 1));
    rig.assert_exactly_once(3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uidvalidity_change_resyncs_without_loss_or_repeats() {
    let rig = Rig::new("uidv").await;
    for i in 0..3 {
        rig.send(i).await;
    }
    rig.server
        .wait_for(&rig.account, "INBOX", 3, WAIT)
        .await
        .unwrap();
    let cfg = rig.imap(rig.server.imap_addr());
    let mut w = rig.watcher(cfg.clone(), Recorder::default());
    w.run_once().await.unwrap();
    let before = mailer::inbox::position(w.db(), "INBOX").unwrap().unwrap();
    // New mail, then the server renumbers the mailbox.
    for i in 3..6 {
        rig.send(i).await;
    }
    rig.server
        .wait_for(&rig.account, "INBOX", 3, WAIT)
        .await
        .unwrap();
    rig.server.change_uidvalidity(&rig.account).await.unwrap();
    let mut w = rig.watcher(cfg.clone(), Recorder::default());
    let report = w.run_once().await.unwrap();
    let after = mailer::inbox::position(w.db(), "INBOX").unwrap().unwrap();
    assert_ne!(before.0, after.0, "UIDVALIDITY changed");
    assert_eq!(report.processed, 3);
    rig.assert_exactly_once(6, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_4xx_is_retried_and_delivered_once() {
    let rig = Rig::new("4xx").await;
    let proxy = rig.server.smtp_proxy().await.unwrap();
    proxy.refuse_next(1, "421 4.3.2 busy, try again later\r\n");
    let db = open_db(&rig.dir.path().join("sender.db"));
    outbox::enqueue(
        &db,
        &mail("sender@example.test", &rig.account.address, 0, &rig.salt),
        clock::now(),
    )
    .unwrap();
    let smtp = rig.smtp(proxy.addr());
    let policy = SenderPolicy {
        base_delay_secs: 1,
        ..SenderPolicy::default()
    };
    let now = clock::now();
    let first = drain_once(&db, &smtp, &policy, now).await.unwrap();
    assert_eq!((first.sent, first.retrying, first.failed), (0, 1, 0));
    let row = &outbox::list(&db).unwrap()[0];
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.as_deref().unwrap_or("").contains("421"));
    // Not due again at once...
    assert_eq!(drain_once(&db, &smtp, &policy, now).await.unwrap().sent, 0);
    // ...but after the backoff.
    let later = now.saturating_add_secs(5);
    let second = drain_once(&db, &smtp, &policy, later).await.unwrap();
    assert_eq!(second.sent, 1);
    assert_eq!(outbox::list(&db).unwrap()[0].attempts, 2);
    let got = rig
        .server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.server
            .messages(&rig.account, "INBOX")
            .await
            .unwrap()
            .len(),
        1,
        "delivered exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_5xx_is_recorded_as_failed_without_a_loop() {
    let rig = Rig::new("5xx").await;
    let db = open_db(&rig.dir.path().join("sender.db"));
    // A recipient the server does not know: 550 5.1.1 on both servers.
    outbox::enqueue(
        &db,
        &mail(
            "sender@example.test",
            "nobody-here@example.test",
            0,
            &rig.salt,
        ),
        clock::now(),
    )
    .unwrap();
    let smtp = rig.smtp(rig.server.smtp_addr());
    let policy = SenderPolicy::default();
    let now = clock::now();
    let r = drain_once(&db, &smtp, &policy, now).await.unwrap();
    assert_eq!((r.sent, r.retrying, r.failed), (0, 0, 1));
    let row = &outbox::list(&db).unwrap()[0];
    assert_eq!(row.state, "failed");
    assert!(row.last_error.as_deref().unwrap_or("").contains("550"));
    // Never due again.
    let far = now.saturating_add_secs(86_400);
    assert_eq!(
        drain_once(&db, &smtp, &policy, far).await.unwrap(),
        Default::default()
    );
    assert_eq!(outbox::next_due(&db).unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_survives_a_crash_before_sending() {
    let rig = Rig::new("outboxcrash").await;
    let path = rig.dir.path().join("sender.db");
    {
        // Decided and queued, then the process dies before the sender runs.
        let mut db = open_db(&path);
        let tx = db.transaction().unwrap();
        outbox::enqueue(
            &tx,
            &mail("sender@example.test", &rig.account.address, 0, &rig.salt),
            clock::now(),
        )
        .unwrap();
        tx.commit().unwrap();
    }
    // After restart: sent exactly once.
    let db = open_db(&path);
    let smtp = rig.smtp(rig.server.smtp_addr());
    let policy = SenderPolicy::default();
    assert_eq!(
        drain_once(&db, &smtp, &policy, clock::now())
            .await
            .unwrap()
            .sent,
        1
    );
    assert_eq!(
        drain_once(&db, &smtp, &policy, clock::now())
            .await
            .unwrap()
            .sent,
        0
    );
    let got = rig
        .server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_protocol_mail_is_rejected_not_lost() {
    let rig = Rig::new("junk").await;
    let junk = b"From: spam@example.test\r\nTo: x@example.test\r\nSubject: buy now\r\nMessage-ID: <junk1@example.test>\r\n\r\nhello\r\n";
    rig.server
        .send_raw("spam@example.test", &rig.account.address, junk)
        .await
        .unwrap();
    rig.server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap();
    let mut w = rig.watcher(rig.imap(rig.server.imap_addr()), Recorder::default());
    let r = w.run_once().await.unwrap();
    assert_eq!(r.rejected, 1);
    let rejected = rig.server.messages(&rig.account, "Rejected").await.unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(effects(&rig.db_path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_plain_logs_in_and_secrets_stay_out_of_debug_output() {
    let rig = Rig::new("plain").await;
    rig.send(0).await;
    rig.server
        .wait_for(&rig.account, "INBOX", 1, WAIT)
        .await
        .unwrap();
    let mut cfg = rig.imap(rig.server.imap_addr());
    cfg.auth = mailer::imap::ImapAuth::Plain;
    assert!(!format!("{cfg:?}").contains(&rig.account.password));
    let mut w = rig.watcher(cfg.clone(), Recorder::default());
    assert_eq!(w.run_once().await.unwrap().processed, 1);
    // A wrong password is a clear login error, not a hang.
    cfg.password = "wrong".into();
    let mut w = rig.watcher(cfg, Recorder::default());
    let err = w.run_once().await.unwrap_err();
    assert!(
        matches!(err, mailer::imap::WatchError::Login { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_and_copy_expunge_fallbacks_work_too() {
    let rig = Rig::new("fallbacks").await;
    // A watcher that neither idles nor moves, as with a server lacking
    // IDLE and MOVE.
    let mut cfg = rig.imap(rig.server.imap_addr());
    cfg.use_idle = false;
    cfg.use_move = false;
    cfg.poll_interval = Duration::from_millis(200);
    let mut w = rig.watcher(cfg, Recorder::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        w.run(async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        w
    });
    for i in 0..4 {
        rig.send(i).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    wait_effects(&rig, 4).await;
    stop_tx.send(()).unwrap();
    let w = task.await.unwrap();
    assert_eq!(w.totals().processed, 4);
    // COPY + \Deleted + EXPUNGE left nothing behind in INBOX.
    let deadline = Instant::now() + WAIT;
    while !rig
        .server
        .messages(&rig.account, "INBOX")
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "INBOX not emptied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.assert_exactly_once(4, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_mail_in_a_batch_leaves_the_others_committed_and_moved() {
    let rig = Rig::new("batchfail").await;
    rig.deliver(5).await;
    let cfg = rig.imap(rig.server.imap_addr());
    // Mail 2 fails every time; its work is rolled back, the others' stays.
    let rec = Recorder {
        fail_only: Some(2),
        ..Recorder::default()
    };
    rec.fail
        .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let mut w = rig.watcher(cfg.clone(), rec);
    let first = w.run_once().await.unwrap();
    assert_eq!((first.processed, first.deferred), (4, 1));
    let got: Vec<Vec<u8>> = effects(&rig.db_path())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(got, vec![tag(0), tag(1), tag(3), tag(4)]);
    let done = rig.server.messages(&rig.account, "Processed").await;
    assert_eq!(done.unwrap().len(), 4);
    let left = rig.server.messages(&rig.account, "INBOX").await.unwrap();
    assert_eq!(left.len(), 1);
    let attempts: i64 = w
        .db()
        .query_row("SELECT attempts FROM mail_inbox_failures", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 1, "the failure is counted with the batch");
    // Tried again later (a fresh watcher skips the backoff): handled once.
    let mut w = rig.watcher(cfg, Recorder::default());
    assert_eq!(w.run_once().await.unwrap().processed, 1);
    rig.assert_exactly_once(5, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_batch_commit_and_move_handles_each_mail_once() {
    let rig = Rig::new("batchcrash").await;
    const N: u32 = 6;
    rig.deliver(N).await;
    // The connection dies while the batch is being handled: the batch
    // commits, its MOVE cannot be sent, as after a crash at that point.
    let proxy = Arc::new(rig.server.imap_proxy().await.unwrap());
    let cut = proxy.clone();
    let mut rec = Recorder::default();
    let mut seen = 0;
    let handler = move |tx: &Transaction<'_>, m: &IncomingMail<'_>| {
        seen += 1;
        if seen == N {
            cut.drop_all();
            std::thread::sleep(Duration::from_millis(100));
        }
        rec.handle(tx, m)
    };
    let mut w = Watcher::new(rig.imap(proxy.addr()), open_db(&rig.db_path()), handler).unwrap();
    assert!(w.run_once().await.is_err(), "the MOVE went through");
    assert_eq!(w.totals().processed, N as usize, "the batch committed");
    let left = rig.server.messages(&rig.account, "INBOX").await.unwrap();
    assert_eq!(left.len(), N as usize, "nothing was moved");
    // Restarted: every mail is seen handled and only moved.
    let mut w = rig.watcher(rig.imap(rig.server.imap_addr()), Recorder::default());
    let report = w.run_once().await.unwrap();
    assert_eq!((report.processed, report.duplicates), (0, N as usize));
    rig.assert_exactly_once(N, N as usize).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_with_one_permanent_failure() {
    let rig = Rig::new("concurrent").await;
    let db = open_db(&rig.dir.path().join("sender.db"));
    const N: u32 = 12;
    for i in 0..N {
        // Mail 5 goes to a recipient the server does not know (550).
        let to = if i == 5 {
            "nobody-here@example.test"
        } else {
            rig.account.address.as_str()
        };
        outbox::enqueue(
            &db,
            &mail("sender@example.test", to, i, &rig.salt),
            clock::now(),
        )
        .unwrap();
    }
    let smtp = rig.smtp(rig.server.smtp_addr());
    let policy = SenderPolicy {
        concurrency: 8,
        ..SenderPolicy::default()
    };
    let now = clock::now();
    let r = drain_once(&db, &smtp, &policy, now).await.unwrap();
    assert_eq!((r.sent, r.retrying, r.failed), (N as usize - 1, 0, 1));
    let rows = outbox::list(&db).unwrap();
    assert!(rows.iter().all(|r| r.attempts == 1), "{rows:?}");
    let failed: Vec<_> = rows.iter().filter(|r| r.state == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].recipient, "nobody-here@example.test");
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("550"));
    // Nothing is due again, ever.
    let far = now.saturating_add_secs(86_400);
    assert_eq!(
        drain_once(&db, &smtp, &policy, far).await.unwrap(),
        Default::default()
    );
    let got = rig
        .server
        .wait_for(&rig.account, "INBOX", N as usize - 1, WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), N as usize - 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inbox = rig.server.messages(&rig.account, "INBOX").await.unwrap();
    assert_eq!(inbox.len(), N as usize - 1, "each delivered exactly once");
}
