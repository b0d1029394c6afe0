//! TLS and authentication against real servers: implicit TLS and STARTTLS
//! for both SMTP (with AUTH) and IMAP, trusting the test CA, and refusing a
//! server whose certificate the CA did not sign. The embedded server speaks
//! no TLS, so this suite needs `TESTMAIL_SERVER=real` and is built only with
//! the `real-server-tests` feature (`.ci/run` runs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::time::Duration;

use mailer::envelope::Envelope;
use mailer::imap::{Disposition, HandlerError, ImapAuth, ImapConfig, IncomingMail, Watcher};
use mailer::mime::{build_mail, MessageId, OutgoingMail};
use mailer::smtp::{SendError, SmtpClient, SmtpConfig, TlsMode};
use rusqlite::{Connection, Transaction};
use testmail::harness::{ServerKind, TestServer};

fn raw_mail(to: &str, n: u8) -> Vec<u8> {
    build_mail(&OutgoingMail {
        from: "tls@example.test".into(),
        to: to.into(),
        subject: "tls".into(),
        message_id: MessageId::parse(&format!(
            "tls{n}-{}@example.test",
            mailer::crypto::Id::random()
        ))
        .unwrap(),
        in_reply_to: None,
        references: vec![],
        date: mailer::clock::now(),
        text: "tls".into(),
        envelopes: vec![Envelope::seal("ping", vec![n], &mailer::testkit::key(1)).unwrap()],
        auto_reply: false,
    })
    .unwrap()
}

async fn real() -> TestServer {
    let s = TestServer::start().await.unwrap();
    assert_eq!(
        s.kind(),
        ServerKind::Real,
        "this suite needs TESTMAIL_SERVER=real"
    );
    s
}

fn smtp(
    addr: std::net::SocketAddr,
    tls: TlsMode,
    user: &str,
    pw: &str,
    ca: Option<std::path::PathBuf>,
) -> SmtpClient {
    SmtpClient::new(&SmtpConfig {
        // The certificate names localhost and 127.0.0.1.
        host: "localhost".into(),
        port: addr.port(),
        tls,
        username: Some(user.into()),
        password: Some(pw.into()),
        ca_file: ca,
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_over_implicit_tls_and_starttls_with_auth() {
    let server = real().await;
    let a = server.account("tls-smtp").await.unwrap();
    let ca = server.ca_file();
    let implicit = smtp(
        server.submissions_addr().unwrap(),
        TlsMode::Implicit,
        &a.address,
        &a.password,
        ca.clone(),
    );
    implicit
        .send("tls@example.test", &a.address, &raw_mail(&a.address, 1))
        .await
        .unwrap();
    let starttls = smtp(
        server.smtp_addr(),
        TlsMode::Starttls,
        &a.address,
        &a.password,
        ca.clone(),
    );
    starttls
        .send("tls@example.test", &a.address, &raw_mail(&a.address, 2))
        .await
        .unwrap();
    let got = server
        .wait_for(&a, "INBOX", 2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    // Without the test CA, the server's certificate is not trusted: a
    // (retryable) failure, never a silent plaintext fallback.
    let untrusted = smtp(
        server.submissions_addr().unwrap(),
        TlsMode::Implicit,
        &a.address,
        &a.password,
        None,
    );
    let err = untrusted
        .send("tls@example.test", &a.address, &raw_mail(&a.address, 3))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err}");
    // A wrong password is kept for a retry (the operator fixes the config).
    let wrong = smtp(
        server.submissions_addr().unwrap(),
        TlsMode::Implicit,
        &a.address,
        "wrong",
        ca,
    );
    let err = wrong
        .send("tls@example.test", &a.address, &raw_mail(&a.address, 4))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Transient(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_over_implicit_tls_and_starttls() {
    let server = real().await;
    let a = server.account("tls-imap").await.unwrap();
    for n in 0..2 {
        server
            .send_raw("tls@example.test", &a.address, &raw_mail(&a.address, n))
            .await
            .unwrap();
    }
    server
        .wait_for(&a, "INBOX", 2, Duration::from_secs(30))
        .await
        .unwrap();
    let handler = |_: &Transaction<'_>,
                   _: &IncomingMail<'_>|
     -> Result<Disposition, HandlerError> { Ok(Disposition::Processed) };
    let cfg = |addr: std::net::SocketAddr, tls, auth| {
        let mut c = ImapConfig::new("localhost", addr.port(), tls, &a.address, &a.password);
        c.ca_file = server.ca_file();
        c.auth = auth;
        c.timeout = Duration::from_secs(10);
        c
    };
    // IMAPS with AUTHENTICATE PLAIN handles the first mail...
    let db = tempfile::tempdir().unwrap();
    let path = db.path().join("w.db");
    let mut w = Watcher::new(
        cfg(
            server.imaps_addr().unwrap(),
            TlsMode::Implicit,
            ImapAuth::Plain,
        ),
        Connection::open(&path).unwrap(),
        handler,
    )
    .unwrap();
    assert_eq!(w.run_once().await.unwrap().processed, 2);
    // ...STARTTLS with LOGIN sees a clean mailbox (same database).
    server
        .send_raw("tls@example.test", &a.address, &raw_mail(&a.address, 9))
        .await
        .unwrap();
    server
        .wait_for(&a, "INBOX", 1, Duration::from_secs(30))
        .await
        .unwrap();
    let mut w = Watcher::new(
        cfg(server.imap_addr(), TlsMode::Starttls, ImapAuth::Login),
        Connection::open(&path).unwrap(),
        handler,
    )
    .unwrap();
    assert_eq!(w.run_once().await.unwrap().processed, 1);
    // Without the CA: refused.
    let mut untrusted = cfg(
        server.imaps_addr().unwrap(),
        TlsMode::Implicit,
        ImapAuth::Login,
    );
    untrusted.ca_file = None;
    let mut w = Watcher::new(untrusted, Connection::open(&path).unwrap(), handler).unwrap();
    let err = w.run_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            mailer::imap::WatchError::Io(_) | mailer::imap::WatchError::Tls(_)
        ),
        "{err}"
    );
}
