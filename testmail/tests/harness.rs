//! The test harness (`testmail::harness`), on the embedded server, and on
//! Postfix + Dovecot when `TESTMAIL_SERVER=real`:
//!
//! ```sh
//! testmail/real-server.sh install && testmail/real-server.sh start
//! eval "$(testmail/real-server.sh env)"
//! cargo test -p testmail --test harness
//! testmail/real-server.sh stop
//! ```
//!
//! Every harness function is used here, and every proxy fault is shown to
//! do what it says with the product's clients (lettre, async-imap).

// A failure here is a test failure, so panicking is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use async_imap::extensions::idle::IdleResponse;
use futures::TryStreamExt;
use lettre::{address::Envelope, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use testmail::harness::{Account, HarnessError, ServerKind, TestServer};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(15);
const SENDER: &str = "sender@example.test";

type Imap = async_imap::Session<TcpStream>;

/// A message with a unique subject and a body of about `body_len` bytes.
fn message(to: &str, subject: &str, body_len: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\n\r\n"
    );
    while m.len() < body_len {
        m.push_str("The quick brown fox jumps over the lazy dog. 0123456789\r\n");
    }
    m.into_bytes()
}

/// The stored message that ends with `raw` (real servers prepend headers).
fn assert_holds(stored: &[Vec<u8>], raw: &[u8]) {
    assert!(
        stored.iter().any(|m| m.ends_with(raw)),
        "no stored message ends with {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(120)])
    );
}

async fn imap(addr: SocketAddr, account: &Account) -> Imap {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.unwrap().unwrap();
    client
        .login(&account.address, &account.password)
        .await
        .map_err(|(e, _)| e)
        .unwrap()
}

async fn fetch_bodies(session: &mut Imap) -> Result<Vec<Vec<u8>>, async_imap::error::Error> {
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await?
        .try_collect()
        .await?;
    Ok(fetches
        .iter()
        .filter_map(|f| f.body().map(<[u8]>::to_vec))
        .collect())
}

fn smtp(addr: SocketAddr) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

async fn lettre_send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    to: &str,
    raw: &[u8],
) -> Result<(), lettre::transport::smtp::Error> {
    let envelope = Envelope::new(Some(SENDER.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    transport
        .send_raw(&envelope, raw.strip_suffix(b"\r\n").unwrap_or(raw))
        .await
        .map(drop)
}

/// Reads `stream` to EOF (at most `limit` bytes, within 10 s).
async fn read_to_eof(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            if all.len() > limit {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the connection was not closed within 10 s");
    all
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn start_gives_the_server_the_environment_asks_for() {
    let server = TestServer::start().await.unwrap();
    assert_eq!(server.kind(), TestServer::kind_from_env().unwrap());
    for (addr, greeting) in [(server.smtp_addr(), "220 "), (server.imap_addr(), "* OK")] {
        let mut line = String::new();
        let stream = TcpStream::connect(addr).await.unwrap();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        assert!(line.starts_with(greeting), "{addr}: {line:?}");
    }
    match server.kind() {
        ServerKind::Embedded => {
            assert!(server.faults().is_some() && server.embedded_server().is_some());
            assert_eq!(server.imaps_addr(), None);
            assert_eq!(server.submissions_addr(), None);
            assert_eq!(server.ca_file(), None);
        }
        ServerKind::Real => {
            assert!(server.faults().is_none() && server.embedded_server().is_none());
            assert!(server.imaps_addr().is_some() && server.submissions_addr().is_some());
            assert!(server.ca_file().unwrap().is_file());
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn accounts_are_distinct_and_start_empty() {
    let server = TestServer::start().await.unwrap();
    let accounts = futures::future::try_join_all((0..6).map(|i| {
        let server = &server;
        async move { server.account(&format!("distinct {i}")).await }
    }))
    .await
    .unwrap();
    let mut addresses: Vec<_> = accounts.iter().map(|a| a.address.clone()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), accounts.len(), "{addresses:?}");
    for account in &accounts {
        assert!(server.messages(account, "INBOX").await.unwrap().is_empty());
        let mut session = imap(server.imap_addr(), account).await;
        let names: Vec<_> = session
            .list(Some(""), Some("*"))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let names: Vec<_> = names.iter().map(|n| n.name().to_owned()).collect();
        assert_eq!(names, ["INBOX"], "{}", account.address);
        session.logout().await.unwrap();
    }
}

/// A used account comes back empty: on the real servers, claiming pool
/// accounts (holding each) until the one just released comes round again.
#[tokio::test]
async fn a_released_account_is_emptied_for_the_next_test() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("used").await.unwrap();
    let raw = message(&account.address, "left-behind", 200);
    server
        .send_raw(SENDER, &account.address, &raw)
        .await
        .unwrap();
    server.wait_for(&account, "INBOX", 1, WAIT).await.unwrap();
    let mut session = imap(server.imap_addr(), &account).await;
    session.create("Archive").await.unwrap();
    session.append("Archive", None, None, &raw).await.unwrap();
    session.logout().await.unwrap();
    assert_eq!(server.messages(&account, "Archive").await.unwrap().len(), 1);

    // `empty` itself.
    server.empty(&account).await.unwrap();
    assert!(server.messages(&account, "INBOX").await.unwrap().is_empty());
    assert!(server
        .messages(&account, "Archive")
        .await
        .unwrap()
        .is_empty());

    if server.kind() == ServerKind::Real {
        // Leave mail again, release, and claim until it comes back.
        server
            .send_raw(SENDER, &account.address, &raw)
            .await
            .unwrap();
        server.wait_for(&account, "INBOX", 1, WAIT).await.unwrap();
        let address = account.address.clone();
        drop(account);
        // Holding what it claims, the loop goes round the pool. Other test
        // processes may hold accounts too (the one released, even): then a
        // claim waits, and the loop gives up instead of deadlocking with
        // theirs; every account it got was still checked empty.
        let mut held = Vec::new();
        loop {
            let next =
                tokio::time::timeout(Duration::from_secs(2), server.account("reclaim")).await;
            let Ok(next) = next else {
                eprintln!(
                    "pool busy: {address} not seen again after {} claims",
                    held.len()
                );
                break;
            };
            let next = next.unwrap();
            assert!(server.messages(&next, "INBOX").await.unwrap().is_empty());
            assert!(server.messages(&next, "Archive").await.unwrap().is_empty());
            let found = next.address == address;
            held.push(next);
            if found || held.len() > 200 {
                assert!(found, "{address} never came back");
                break;
            }
        }
    }
}

#[tokio::test]
async fn send_raw_then_wait_for_and_messages_read_it_back() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("send raw").await.unwrap();
    let sent: Vec<_> = (0..3)
        .map(|i| message(&account.address, &format!("raw-{i}"), 300))
        .collect();
    for raw in &sent {
        server
            .send_raw(SENDER, &account.address, raw)
            .await
            .unwrap();
    }
    let got = server.wait_for(&account, "INBOX", 3, WAIT).await.unwrap();
    assert_eq!(got.len(), 3);
    for raw in &sent {
        assert_holds(&got, raw);
    }
    if server.kind() == ServerKind::Embedded {
        assert_eq!(got, sent, "the embedded server stores the bytes as sent");
    }
    assert_eq!(server.messages(&account, "INBOX").await.unwrap(), got);
    assert!(server.messages(&account, "Nope").await.unwrap().is_empty());
    assert!(server
        .wait_for(&account, "Nope", 0, WAIT)
        .await
        .unwrap()
        .is_empty());

    // Not enough mail: a timeout error, on time.
    let t = Instant::now();
    let err = server
        .wait_for(&account, "INBOX", 4, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("3 were there"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let err = server
        .send_raw("not an address", &account.address, b"x\r\n")
        .await
        .unwrap_err();
    assert!(matches!(err, HarnessError::Address { .. }), "{err}");
}

#[tokio::test]
async fn imap_proxy_cuts_the_next_fetch_in_the_middle_of_the_body() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("cut fetch").await.unwrap();
    let raw = message(&account.address, "to-be-cut", 8000);
    server
        .send_raw(SENDER, &account.address, &raw)
        .await
        .unwrap();
    let stored = server.wait_for(&account, "INBOX", 1, WAIT).await.unwrap();
    let proxy = server.imap_proxy().await.unwrap();

    // On the wire: the literal's header gets through, then part of the
    // body, never the tagged completion.
    proxy.cut_next_fetches(1);
    let mut raw_client = TcpStream::connect(proxy.addr()).await.unwrap();
    let commands = format!(
        "a1 LOGIN \"{}\" \"{}\"\r\na2 SELECT INBOX\r\na3 UID FETCH 1:* (BODY.PEEK[])\r\n",
        account.address, account.password
    );
    raw_client.write_all(commands.as_bytes()).await.unwrap();
    let seen = read_to_eof(&mut raw_client, 1 << 20).await;
    let header = format!("{{{}}}\r\n", stored[0].len());
    let at = find(&seen, header.as_bytes()).unwrap_or_else(|| {
        panic!(
            "no literal header {header:?} in {:?}",
            String::from_utf8_lossy(&seen)
        )
    });
    let body_seen = seen.len() - at - header.len();
    assert!(
        body_seen > 0 && body_seen < stored[0].len(),
        "{body_seen} of {} body bytes got through",
        stored[0].len()
    );
    assert!(find(&seen, b"a3 OK").is_none());

    // With async-imap: the cut FETCH fails, the next one works.
    proxy.cut_next_fetches(1);
    let mut session = imap(proxy.addr(), &account).await;
    session.select("INBOX").await.unwrap();
    let cut = fetch_bodies(&mut session).await;
    assert!(cut.is_err(), "the cut FETCH succeeded: {cut:?}");
    let mut session = imap(proxy.addr(), &account).await;
    session.select("INBOX").await.unwrap();
    assert_eq!(fetch_bodies(&mut session).await.unwrap(), stored);
    session.logout().await.unwrap();
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn imap_proxy_drop_all_ends_an_idle() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("drop idle").await.unwrap();
    let proxy = server.imap_proxy().await.unwrap();
    proxy.drop_all(); // nothing open: no effect
    let mut session = imap(proxy.addr(), &account).await;
    session.select("INBOX").await.unwrap();
    let mut idle = session.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(60));
    let t = Instant::now();
    let (result, ()) = tokio::join!(wait, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.drop_all();
    });
    // async-imap reports the end of the connection during IDLE as
    // `ManualInterrupt`, as if the client had stopped it; DONE then fails.
    assert!(
        matches!(result, Err(_) | Ok(IdleResponse::ManualInterrupt)),
        "IDLE did not end when its connection was dropped: {result:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(idle.done().await.is_err(), "the connection survived");

    // New connections work.
    let mut session = imap(proxy.addr(), &account).await;
    session.select("INBOX").await.unwrap();
    session.logout().await.unwrap();
    assert_eq!(proxy.connections(), 2);
}

#[tokio::test]
async fn smtp_proxy_refuses_the_next_connections_with_the_given_greeting() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("refuse").await.unwrap();
    let proxy = server.smtp_proxy().await.unwrap();
    let transport = smtp(proxy.addr());
    let raw = message(&account.address, "after-421", 100);

    proxy.refuse_next(1, "421 4.3.2 busy, try later\r\n");
    let err = lettre_send(&transport, &account.address, &raw)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    lettre_send(&transport, &account.address, &raw)
        .await
        .unwrap();
    assert_eq!(proxy.connections(), 2);
    let got = server.wait_for(&account, "INBOX", 1, WAIT).await.unwrap();
    assert_holds(&got, &raw);

    proxy.refuse_next(1, "554 5.3.2 go away\r\n");
    // A new transport: with lettre's `pool` feature on (the workspace
    // enables it), the old one would reuse its open connection.
    let transport = smtp(proxy.addr());
    let err = lettre_send(&transport, &account.address, &raw)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert_eq!(proxy.connections(), 3);
}

#[tokio::test]
async fn a_dropped_proxy_closes_its_port_and_connections() {
    let server = TestServer::start().await.unwrap();
    let proxy = server.imap_proxy().await.unwrap();
    let addr = proxy.addr();
    assert_eq!(proxy.upstream(), server.imap_addr());
    let mut open = TcpStream::connect(addr).await.unwrap();
    let mut greeting = [0u8; 4];
    open.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"* OK");
    drop(proxy);
    read_to_eof(&mut open, 1 << 16).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "{addr} still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // `shutdown` waits for the same.
    let proxy = server.smtp_proxy().await.unwrap();
    let addr = proxy.addr();
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.read_exact(&mut greeting[..3]).await.unwrap();
    assert_eq!(&greeting[..3], b"220");
    proxy.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    read_to_eof(&mut open, 1 << 16).await;
}

#[tokio::test]
async fn change_uidvalidity_changes_what_select_reports() {
    let server = TestServer::start().await.unwrap();
    let account = server.account("uidvalidity").await.unwrap();
    for i in 0..2 {
        let raw = message(&account.address, &format!("uv-{i}"), 100);
        server
            .send_raw(SENDER, &account.address, &raw)
            .await
            .unwrap();
    }
    let before = server.wait_for(&account, "INBOX", 2, WAIT).await.unwrap();
    let mut old = imap(server.imap_addr(), &account).await;
    let v0 = old.select("INBOX").await.unwrap().uid_validity.unwrap();

    server.change_uidvalidity(&account).await.unwrap();

    let mut session = imap(server.imap_addr(), &account).await;
    let mailbox = session.select("INBOX").await.unwrap();
    let v1 = mailbox.uid_validity.unwrap();
    assert_ne!(v0, v1);
    assert_eq!(mailbox.exists, 2);
    let mut uids: Vec<u32> = session
        .uid_search("ALL")
        .await
        .unwrap()
        .into_iter()
        .collect();
    uids.sort_unstable();
    assert_eq!(uids, [1, 2], "renumbered from 1");
    session.logout().await.unwrap();
    let mut after = server.messages(&account, "INBOX").await.unwrap();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(after, before, "the messages are kept");

    // The session that had INBOX selected was thrown out. (async-imap's
    // SEARCH takes the end of the connection for the end of the results, so
    // the command after it is what fails.)
    let search = old.uid_search("ALL").await;
    assert!(
        !matches!(&search, Ok(uids) if !uids.is_empty()),
        "the old session still answers: {search:?}"
    );
    assert!(
        old.subscribe("INBOX").await.is_err(),
        "the old session still works"
    );

    // Twice in a row works too.
    server.change_uidvalidity(&account).await.unwrap();
}

/// The embedded server's own fault hooks, reached through the harness.
#[tokio::test]
async fn faults_reach_the_embedded_server() {
    let server = TestServer::start().await.unwrap();
    let Some(faults) = server.faults() else {
        assert_eq!(server.kind(), ServerKind::Real);
        return;
    };
    let account = server.account("faults").await.unwrap();
    faults.duplicate_next_deliveries(1);
    let raw = message(&account.address, "twice", 100);
    server
        .send_raw(SENDER, &account.address, &raw)
        .await
        .unwrap();
    let got = server.wait_for(&account, "INBOX", 2, WAIT).await.unwrap();
    assert_eq!(got, [raw.clone(), raw.clone()]);

    // `wait_for` gets over a fetch cut by the server: it reconnects.
    faults.drop_connections_mid_fetch(1);
    let again = server.wait_for(&account, "INBOX", 2, WAIT).await.unwrap();
    assert_eq!(again, got);
    assert_eq!(
        server
            .embedded_server()
            .unwrap()
            .stats()
            .imap_connections_dropped,
        1
    );
    // `messages` reports it.
    faults.drop_connections_mid_fetch(1);
    assert!(server.messages(&account, "INBOX").await.is_err());
}

/// The real servers' TLS ports, trusting `ca_file`: IMAP login over
/// implicit TLS, and a submission with AUTH over implicit TLS.
#[tokio::test]
async fn tls_ports_work_with_the_ca_file() {
    let server = TestServer::start().await.unwrap();
    let (Some(imaps), Some(submissions), Some(ca)) = (
        server.imaps_addr(),
        server.submissions_addr(),
        server.ca_file(),
    ) else {
        assert_eq!(server.kind(), ServerKind::Embedded);
        return;
    };
    let account = server.account("tls").await.unwrap();
    let pem = std::fs::read(&ca).unwrap();

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(imaps).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut client = async_imap::Client::new(tls);
    client.read_response().await.unwrap().unwrap();
    let mut session = client
        .login(&account.address, &account.password)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    session.select("INBOX").await.unwrap();
    session.logout().await.unwrap();

    use lettre::transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    };
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&pem).unwrap())
        .build_rustls()
        .unwrap();
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(submissions.ip().to_string())
            .port(submissions.port())
            .tls(Tls::Wrapper(params))
            .credentials(Credentials::new(
                account.address.clone(),
                account.password.clone(),
            ))
            .timeout(Some(Duration::from_secs(10)))
            .build();
    let raw = message(&account.address, "over-tls", 100);
    lettre_send(&transport, &account.address, &raw)
        .await
        .unwrap();
    let got = server.wait_for(&account, "INBOX", 1, WAIT).await.unwrap();
    assert_holds(&got, &raw);
}
