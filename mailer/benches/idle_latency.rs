//! How long a mail takes from SMTP acceptance to the watcher's handler,
//! with IDLE and with polling, on the embedded server or (with
//! `TESTMAIL_SERVER=real`) on Postfix + Dovecot. Prints p50/p95/max.
//!
//! cargo bench -p mailer --bench idle_latency [-- N POLL_MS]

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark

use std::time::{Duration, Instant};

use mailer::envelope::Envelope;
use mailer::imap::{Disposition, HandlerError, ImapConfig, IncomingMail, Watcher};
use mailer::mime::{build_mail, MessageId, OutgoingMail};
use mailer::smtp::TlsMode;
use rusqlite::{Connection, Transaction};
use testmail::harness::TestServer;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(server: &TestServer, idle: bool, n: usize, poll: Duration) -> Vec<Duration> {
    let account = server
        .account(if idle { "lat-idle" } else { "lat-poll" })
        .await
        .unwrap();
    let addr = server.imap_addr();
    let mut cfg = ImapConfig::new(
        &addr.ip().to_string(),
        addr.port(),
        TlsMode::None,
        &account.address,
        &account.password,
    );
    cfg.use_idle = idle;
    cfg.poll_interval = poll;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let handler =
        move |_: &Transaction<'_>, _: &IncomingMail<'_>| -> Result<Disposition, HandlerError> {
            let _ = tx.send(Instant::now());
            Ok(Disposition::Processed)
        };
    let mut watcher = Watcher::new(cfg, Connection::open_in_memory().unwrap(), handler).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        watcher
            .run(async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // connected and waiting
    let key = mailer::testkit::key(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let raw = build_mail(&OutgoingMail {
            from: "bench@example.test".into(),
            to: account.address.clone(),
            subject: format!("latency {i}"),
            message_id: MessageId::parse(&format!(
                "lat{i}-{}@example.test",
                mailer::crypto::Id::random()
            ))
            .unwrap(),
            in_reply_to: None,
            references: vec![],
            date: mailer::clock::now(),
            text: "latency probe".into(),
            envelopes: vec![Envelope::seal("ping", vec![i as u8], &key).unwrap()],
            auto_reply: false,
        })
        .unwrap();
        server
            .send_raw("bench@example.test", &account.address, &raw)
            .await
            .unwrap();
        let accepted = Instant::now();
        let t = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("handled in time")
            .expect("watcher alive");
        out.push(t.saturating_duration_since(accepted));
        // Random spacing, so that probes land at random points of the
        // polling cycle (or of the IDLE wait).
        let gap = u64::from(mailer::crypto::random_bytes::<2>()[0]) * poll.as_millis() as u64 / 255;
        tokio::time::sleep(Duration::from_millis(gap.max(20))).await;
    }
    let _ = stop_tx.send(());
    let _ = task.await;
    out
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let poll_ms: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start().await.unwrap();
        println!(
            "server: {:?}; {n} mails each; polling interval {poll_ms} ms",
            server.kind()
        );
        println!(
            "{:<10} {:>10} {:>10} {:>10}",
            "mode", "p50 ms", "p95 ms", "max ms"
        );
        for idle in [true, false] {
            let mut lat = measure(&server, idle, n, Duration::from_millis(poll_ms)).await;
            lat.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "{:<10} {:>10.1} {:>10.1} {:>10.1}",
                if idle { "IDLE" } else { "polling" },
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.95)),
                ms(*lat.last().unwrap())
            );
        }
    });
}
