//! Shared helpers for the integration tests: a server in a temp folder, the
//! Rust clients the product uses (lettre, async-imap), and a way to run
//! Python's stdlib clients.

// Test helpers: a failure here is a test failure, so panicking is the point.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use lettre::{address::Envelope, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tempfile::TempDir;
use testmail::{Config, RunningServer, Server};
use tokio::net::TcpStream;

pub const ALICE: &str = "alice@example.test";
pub const ALICE_PW: &str = "alice-secret";
pub const BOB: &str = "bob@example.test";
pub const BOB_PW: &str = "bob:secret";

pub type Imap = async_imap::Session<TcpStream>;

/// A server on free loopback ports with Alice and Bob, and its folder.
pub struct TestServer {
    pub server: RunningServer,
    pub dir: TempDir,
}

impl std::ops::Deref for TestServer {
    type Target = RunningServer;
    fn deref(&self) -> &RunningServer {
        &self.server
    }
}

pub fn config(dir: &Path) -> Config {
    Config::new(dir).user(ALICE, ALICE_PW).user(BOB, BOB_PW)
}

pub async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    TestServer { server, dir }
}

/// A message with a unique Message-ID and lines that need dot-stuffing.
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: sender@example.test\r\nTo: {ALICE}\r\nMessage-ID: <m{n}@example.test>\r\n\
         Subject: message {n}\r\n\r\n.this line starts with a dot\r\n..and this with two\r\n\
         body of message {n}\r\n.\r\nend\r\n"
    )
    .into_bytes()
}

pub fn transport(addr: SocketAddr) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

/// Sends raw bytes with lettre, the product's SMTP client.
///
/// lettre always ends DATA with `\r\n.\r\n`, and by RFC 5321 the first
/// CRLF of that ends the last line, so a message that already ends in CRLF
/// arrives with an extra empty line (at Postfix as at testmail). We strip
/// the final CRLF here so that what the server stores is exactly `raw`.
pub async fn send(
    smtp: &AsyncSmtpTransport<Tokio1Executor>,
    to: &[&str],
    raw: &[u8],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    let envelope = Envelope::new(
        Some("sender@example.test".parse().unwrap()),
        to.iter().map(|a| a.parse().unwrap()).collect(),
    )
    .unwrap();
    let raw = raw.strip_suffix(b"\r\n").unwrap_or(raw);
    smtp.send_raw(&envelope, raw).await
}

/// Logs in with async-imap, the product's IMAP client.
pub async fn imap(addr: SocketAddr, user: &str, password: &str) -> Imap {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.unwrap().unwrap();
    client
        .login(user, password)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

/// (UID, full message bytes) of every message in the selected mailbox.
pub async fn fetch_all(session: &mut Imap) -> Vec<(u32, Vec<u8>)> {
    use futures::TryStreamExt;
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out: Vec<(u32, Vec<u8>)> = fetches
        .iter()
        .map(|f| (f.uid.unwrap(), f.body().unwrap().to_vec()))
        .collect();
    out.sort();
    out
}

/// Polls `check` until it is true or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a Python 3 script (stdlib only) with the SMTP port as `sys.argv[1]`
/// and the IMAP port as `sys.argv[2]`, then `extra`. Panics with the
/// script's output if it fails; returns its stdout.
pub async fn python(server: &RunningServer, script: &str, extra: &[&str]) -> String {
    let output = tokio::process::Command::from({
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(script)
            .arg(server.smtp_addr().port().to_string())
            .arg(server.imap_addr().port().to_string())
            .args(extra);
        c
    })
    .output()
    .await
    .expect("python3 must be installed to run these tests");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A raw line-based conversation, for what no polite client sends.
pub struct Raw {
    stream: tokio::io::BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: tokio::io::BufReader::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// One line, or "" at EOF. Fails after 5 s.
    pub async fn line(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_line(&mut line))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        line
    }

    /// Lines up to and including the first that starts with `prefix`.
    pub async fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            assert!(!line.is_empty(), "EOF before {prefix:?}; got {lines:?}");
            let done = line.starts_with(prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Everything until the server closes the connection (fails after 5 s).
    pub async fn rest(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("connection still open after 5 s");
        rest
    }
}
