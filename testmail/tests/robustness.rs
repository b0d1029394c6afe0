//! What no polite client sends, over raw sockets: the server answers BAD /
//! NO / 5xx, keeps limits, and keeps serving.

// Helpers outside #[test] fns panic on failure too: that is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use testmail::{Config, Limits, Server};

/// Small limits so they are cheap to hit.
async fn small() -> (Server2, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_message_size = 2000;
    limits.max_imap_command = 1000;
    limits.max_smtp_command_line = 200;
    limits.max_smtp_data_line = 300;
    limits.max_bad_commands = 20;
    limits.max_imap_connections = 3;
    limits.max_smtp_connections = 3;
    let mut config: Config = config(dir.path());
    config.limits = limits;
    (Server::start(config).await.unwrap(), dir)
}
type Server2 = testmail::RunningServer;

async fn imap_logged_in(server: &Server2) -> Raw {
    let mut raw = Raw::connect(server.imap_addr()).await;
    assert!(raw.line().await.starts_with("* OK [CAPABILITY IMAP4REV1"));
    raw.send(format!("l LOGIN {ALICE} {ALICE_PW}\r\n").as_bytes())
        .await;
    raw.until("l OK").await;
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_garbage_gets_bad_and_the_session_goes_on() {
    let (server, _dir) = small().await;
    let mut raw = imap_logged_in(&server).await;
    for (line, reply) in [
        (&b"a1 FROBNICATE\r\n"[..], "a1 BAD"),
        (b"a2 SELECT\r\n", "a2 BAD"),
        (b"a3 FETCH 1 (FLAGS)\r\n", "a3 BAD"),
        (b"a4 SELECT INBOX\r\n", "a4 OK"),
        (b"a5 FETCH 0 (FLAGS)\r\n", "a5 BAD"),
        (b"a6 FETCH 1:* (FLAGS\r\n", "a6 BAD"),
        (
            b"a7 UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS ()])\r\n",
            "a7 BAD",
        ),
        (b"a8 STORE 1 +FLAGS (\\Seen)\r\n", "a8 BAD"),
        (b"a9 SEARCH UID 1:* NOT\r\n", "a9 BAD"),
        (b"\x00\x01\x02\xff\r\n", "* BAD"),
        (b"a10 NOOP\r\n", "a10 OK"),
        (b"\r\n", "* BAD"),
        (b"a11 LIST \"\" \"\"\r\n", "a11 OK"),
    ] {
        raw.send(line).await;
        let lines = raw.until(reply.split(' ').next().unwrap()).await;
        assert!(
            lines.last().unwrap().starts_with(reply),
            "{:?} -> {lines:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_literals_sync_nonsync_and_too_big() {
    let (server, _dir) = small().await;
    let mut raw = Raw::connect(server.imap_addr()).await;
    raw.line().await;
    // Synchronising literals: wait for "+" before each.
    raw.send(format!("a LOGIN {{{}}}\r\n", ALICE.len()).as_bytes())
        .await;
    assert!(raw.line().await.starts_with("+ "));
    raw.send(format!("{ALICE} {{{}}}\r\n", ALICE_PW.len()).as_bytes())
        .await;
    assert!(raw.line().await.starts_with("+ "));
    raw.send(format!("{ALICE_PW}\r\n").as_bytes()).await;
    assert!(raw.line().await.starts_with("a OK"));
    // LITERAL+: no "+" wait.
    let msg = "Subject: x\r\n\r\nhello\r\n";
    raw.send(format!("b APPEND INBOX (\\Seen) {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes())
        .await;
    let reply = raw.line().await;
    assert!(reply.starts_with("b OK [APPENDUID "), "{reply}");
    // Too big for the limit: refused before the data is sent.
    raw.send(b"c APPEND INBOX {999999}\r\n").await;
    assert!(raw.line().await.starts_with("c BAD"));
    raw.send(b"d SELECT INBOX\r\n").await;
    let lines = raw.until("d ").await;
    assert!(lines.iter().any(|l| l == "* 1 EXISTS\r\n"), "{lines:?}");
    raw.send(b"e FETCH 1 BODY.PEEK[]\r\n").await;
    let lines = raw.until("e ").await;
    assert!(
        lines[0].ends_with(&format!("{{{}}}\r\n", msg.len())),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().starts_with("e OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_command_too_long_and_too_many_errors() {
    let (server, _dir) = small().await;
    let mut raw = imap_logged_in(&server).await;
    let mut long = b"x SELECT ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 5000));
    long.extend_from_slice(b"\r\n");
    raw.send(&long).await;
    assert!(raw.line().await.contains("BAD"));
    raw.send(b"y NOOP\r\n").await;
    assert!(raw.until("y ").await.last().unwrap().starts_with("y OK"));
    // Past max_bad_commands the server hangs up with BYE.
    // Exactly enough to pass the limit of 20 (the long line was the first):
    // unread input at close would turn the FIN into a RST and lose the BYE.
    let burst: String = (0..20).map(|i| format!("z{i} BLAH\r\n")).collect();
    raw.send(burst.as_bytes()).await;
    let rest = String::from_utf8(raw.rest().await).unwrap();
    assert!(rest.contains("* BYE too many bad commands"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_connection_limit() {
    let (server, _dir) = small().await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(server.imap_addr()).await;
        assert!(raw.line().await.starts_with("* OK"));
        open.push(raw);
    }
    let mut extra = Raw::connect(server.imap_addr()).await;
    assert_eq!(extra.line().await, "* BYE too many connections\r\n");
    drop(open);
    // Slots free up once the sessions end.
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            let mut raw = Raw::connect(server.imap_addr()).await;
            raw.line().await.starts_with("* OK")
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_protocol_errors_and_limits() {
    let (server, _dir) = small().await;
    let mut s = Raw::connect(server.smtp_addr()).await;
    assert!(s.line().await.starts_with("220 "));
    let mut talk = async |line: &str, expect: &str| {
        s.send(line.as_bytes()).await;
        let lines = s.until(&format!("{} ", &expect[..3])).await;
        assert!(
            lines.last().unwrap().starts_with(expect),
            "{line:?} -> {lines:?}"
        );
    };
    talk("MAIL FROM:<a@x>\r\n", "503").await; // before EHLO
    talk("EHLO\r\n", "501").await;
    talk("EHLO client.test\r\n", "250 AUTH PLAIN LOGIN").await;
    talk("FOO bar\r\n", "500").await;
    talk("RCPT TO:<alice@example.test>\r\n", "503").await; // before MAIL
    talk("DATA\r\n", "503").await;
    talk("VRFY alice\r\n", "252").await;
    talk("NOOP\r\n", "250").await;
    talk(&format!("NOOP {}\r\n", "x".repeat(300)), "500").await; // line too long
    talk("MAIL FROM:<a@x> SIZE=5000\r\n", "552").await;
    talk("MAIL FROM:<a@x> FOO=BAR\r\n", "501").await;
    talk("MAIL FROM:<a@x>\r\n", "250").await;
    talk("MAIL FROM:<a@x>\r\n", "503").await; // nested
    talk("RCPT TO:<nobody@example.test>\r\n", "550").await;
    talk("DATA\r\n", "554").await; // no valid recipients
    talk("MAIL FROM:<a@x>\r\n", "250").await;
    talk("RCPT TO:<alice@example.test>\r\n", "250").await;
    talk("DATA\r\n", "354").await;
    // Too big: the whole message is read, then refused.
    let big = "y".repeat(250);
    let mut data = String::new();
    for _ in 0..20 {
        data.push_str(&big);
        data.push_str("\r\n");
    }
    talk(&format!("{data}.\r\n"), "552").await;
    // A line over the data line limit.
    talk(
        "MAIL FROM:<a@x>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
        "354",
    )
    .await;
    talk(&format!("{}\r\n.\r\n", "z".repeat(400)), "500").await;
    // NUL bytes could never be served over IMAP.
    talk(
        "MAIL FROM:<a@x>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
        "354",
    )
    .await;
    talk("a\0b\r\n.\r\n", "554").await;
    // AUTH: wrong, cancelled, right (LOGIN with the password challenge).
    talk("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw==\r\n", "535").await;
    talk("AUTH LOGIN\r\n", "334").await;
    talk("*\r\n", "501").await;
    talk("AUTH CRAM-MD5\r\n", "504").await;
    // Pipelined transaction with bare-LF lines and dot-stuffing: stored
    // exactly as sent, unstuffed.
    talk(
        "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
        "354",
    )
    .await;
    talk("Subject: lf\n\n..dot\nend\n.\n", "250").await;
    talk("QUIT\r\n", "221").await;
    assert!(s.rest().await.is_empty());

    let mut m = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    m.select("INBOX").await.unwrap();
    assert_eq!(
        fetch_all(&mut m).await,
        vec![(1, b"Subject: lf\n\n.dot\nend\n".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_too_many_errors_and_connection_limit() {
    let (server, _dir) = small().await;
    let mut s = Raw::connect(server.smtp_addr()).await;
    s.line().await;
    // One write of exactly 21 (limit 20): more would be unread at close, and
    // the RST that causes could lose the 421.
    s.send(&b"BOGUS\r\n".repeat(21)).await;
    let rest = String::from_utf8(s.rest().await).unwrap();
    assert!(rest.ends_with("421 4.7.0 too many errors\r\n"), "{rest}");

    let mut open = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(server.smtp_addr()).await;
        assert!(raw.line().await.starts_with("220"));
        open.push(raw);
    }
    let mut extra = Raw::connect(server.smtp_addr()).await;
    assert!(extra.line().await.starts_with("421"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_to_open_connections() {
    let (server, _dir) = small().await;
    let mut i = imap_logged_in(&server).await;
    let mut s = Raw::connect(server.smtp_addr()).await;
    s.line().await;
    server.shutdown().await;
    assert!(String::from_utf8(i.rest().await)
        .unwrap()
        .starts_with("* BYE"));
    assert!(String::from_utf8(s.rest().await)
        .unwrap()
        .starts_with("421"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_logged_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.limits.imap_autologout = std::time::Duration::from_millis(300);
    config.limits.smtp_timeout = std::time::Duration::from_millis(300);
    let server = Server::start(config).await.unwrap();
    let mut i = imap_logged_in(&server).await;
    let mut s = Raw::connect(server.smtp_addr()).await;
    s.line().await;
    assert_eq!(
        String::from_utf8(i.rest().await).unwrap(),
        "* BYE autologout\r\n"
    );
    assert_eq!(
        String::from_utf8(s.rest().await).unwrap(),
        "421 4.4.2 timeout\r\n"
    );
}
