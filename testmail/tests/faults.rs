//! Each fault hook does what it says, seen from the clients.

mod common;

use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use common::*;
use futures::TryStreamExt;
use testmail::{Server, SmtpStage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mid_fetch_cuts_the_next_fetches_after_partial_data() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    send(&smtp, &[ALICE], &message(1)).await.unwrap();
    server.faults().drop_connections_mid_fetch(2);

    // 1: a raw client sees the response begin, then the connection end.
    let mut raw = Raw::connect(server.imap_addr()).await;
    raw.line().await;
    raw.send(format!("a LOGIN {ALICE} {ALICE_PW}\r\nb SELECT INBOX\r\n").as_bytes())
        .await;
    raw.until("b OK").await;
    raw.send(b"c UID FETCH 1 (UID BODY.PEEK[])\r\n").await;
    let partial = raw.rest().await;
    assert!(partial.starts_with(b"* 1 FETCH (UID 1"), "{partial:?}");
    assert!(!partial.windows(4).any(|w| w == b"c OK"));
    assert!(partial.len() < message(1).len());

    // 2: async-imap gets an error instead of the message.
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    let result: Result<Vec<_>, _> = match s.uid_fetch("1:*", "(UID BODY.PEEK[])").await {
        Ok(stream) => stream.try_collect().await,
        Err(e) => Err(e),
    };
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|v| v.is_empty()),
        "{result:?}"
    );
    assert_eq!(server.stats().imap_connections_dropped, 2);

    // 3: used up; the next FETCH works, and nothing was marked \Seen.
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);
    assert_eq!(server.stats().imap_connections_dropped, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_idle_connections_closes_idlers_only() {
    let server = start().await;
    // A raw idler: the connection ends with no BYE.
    let mut raw = Raw::connect(server.imap_addr()).await;
    raw.line().await;
    raw.send(format!("a LOGIN {ALICE} {ALICE_PW}\r\nb SELECT INBOX\r\nc IDLE\r\n").as_bytes())
        .await;
    raw.until("+ ").await;
    // An async-imap idler.
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    let mut idle = s.idle();
    idle.init().await.unwrap();
    // A session that is not idling.
    let mut busy = imap(server.imap_addr(), BOB, BOB_PW).await;
    busy.select("INBOX").await.unwrap();

    server.faults().drop_idle_connections();
    assert!(raw.rest().await.is_empty());
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(5));
    let started = Instant::now();
    // async-imap reports a closed stream as ManualInterrupt (or an error).
    let r = wait.await;
    assert!(
        matches!(r, Ok(IdleResponse::ManualInterrupt) | Err(_)),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(idle.done().await.is_err());
    busy.noop().await.unwrap();
    assert_eq!(server.stats().imap_connections_dropped, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_delivers_two_identical_messages() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    server.faults().duplicate_next_deliveries(1);
    send(&smtp, &[ALICE, BOB], &message(1)).await.unwrap();
    send(&smtp, &[ALICE], &message(2)).await.unwrap();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(
        fetch_all(&mut s).await,
        vec![(1, message(1)), (2, message(1)), (3, message(2))]
    );
    let mut b = imap(server.imap_addr(), BOB, BOB_PW).await;
    b.select("INBOX").await.unwrap();
    assert_eq!(
        fetch_all(&mut b).await,
        vec![(1, message(1)), (2, message(1))]
    );
    let stats = server.stats();
    assert_eq!((stats.mails_accepted, stats.messages_delivered), (2, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_accepts_now_and_delivers_later() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    // Long enough that a slow machine still answers the SMTP client first.
    let delay = Duration::from_millis(1500);
    server.faults().delay_deliveries(delay);
    let sent = Instant::now();
    send(&smtp, &[ALICE], &message(1)).await.unwrap();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    assert_eq!(s.select("INBOX").await.unwrap().exists, 0);
    assert_eq!(server.stats().mails_accepted, 1);
    assert_eq!(server.stats().messages_delivered, 0);

    // IDLE hears about it when it finally lands.
    let mut idle = s.idle();
    idle.init().await.unwrap();
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(5));
    assert!(matches!(wait.await.unwrap(), IdleResponse::NewData(_)));
    let waited = sent.elapsed();
    assert!(waited >= delay, "delivered after {waited:?}");
    let mut s = idle.done().await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);

    server.faults().delay_deliveries(Duration::ZERO);
    send(&smtp, &[ALICE], &message(2)).await.unwrap();
    assert_eq!(s.select("INBOX").await.unwrap().exists, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_mail_is_delivered_on_shutdown_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    server.faults().delay_deliveries(Duration::from_secs(3600));
    send(&transport(server.smtp_addr()), &[ALICE], &message(1))
        .await
        .unwrap();
    server.shutdown().await;
    let server = Server::start(config(dir.path())).await.unwrap();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_smtp_at_rcpt_data_and_end_of_data() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    let faults = server.faults();
    assert!(faults.refuse_smtp(1, 250, SmtpStage::Rcpt).is_err());
    assert!(faults.refuse_smtp(1, 600, SmtpStage::Rcpt).is_err());

    faults.refuse_smtp(1, 451, SmtpStage::Rcpt).unwrap();
    let e = send(&smtp, &[ALICE], &message(1)).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(e.status().map(|c| c.to_string()), Some("451".into()));

    faults.refuse_smtp(2, 554, SmtpStage::Data).unwrap();
    for _ in 0..2 {
        let e = send(&smtp, &[ALICE], &message(2)).await.unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert_eq!(e.status().map(|c| c.to_string()), Some("554".into()));
    }

    faults.refuse_smtp(1, 452, SmtpStage::EndOfData).unwrap();
    let e = send(&smtp, &[ALICE], &message(3)).await.unwrap_err();
    assert_eq!(e.status().map(|c| c.to_string()), Some("452".into()));

    // All used up: the next one goes through, and only it was stored.
    let ok = send(&smtp, &[ALICE], &message(4)).await.unwrap();
    assert!(ok.is_positive(), "{ok:?}");
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(4))]);
    let stats = server.stats();
    assert_eq!((stats.mails_refused, stats.mails_accepted), (4, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_uidvalidity_renumbers_and_disconnects_selected_sessions() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    for n in 1..=3 {
        send(&smtp, &[ALICE], &message(n)).await.unwrap();
    }
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let before = s.select("INBOX").await.unwrap();
    let _: Vec<_> = s
        .uid_store("1", "+FLAGS (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _: Vec<_> = s
        .uid_store("3", "+FLAGS (\\Seen)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
    // One session idles, one is just selected.
    let mut idler = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    idler.select("INBOX").await.unwrap();
    let mut idle = idler.idle();
    idle.init().await.unwrap();

    let new = server.faults().change_uidvalidity(ALICE, "INBOX").unwrap();
    assert_ne!(Some(new), before.uid_validity);
    assert!(server.faults().change_uidvalidity(ALICE, "Nope").is_err());

    // The idler is told BYE at once.
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(5));
    let r = wait.await;
    assert!(
        matches!(&r, Ok(IdleResponse::NewData(d)) if format!("{:?}", d.parsed()).contains("Bye")),
        "{r:?}"
    );
    // The other session at its next command.
    // The other session at its next command (async-imap's NOOP does not
    // notice the end of the stream; the BYE and the next command do).
    let _ = s.noop().await;
    let bye = s.unsolicited_responses.try_recv();
    assert!(format!("{bye:?}").contains("Bye"), "{bye:?}");
    assert!(s.select("INBOX").await.is_err());

    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let after = s.select("INBOX").await.unwrap();
    assert_eq!(after.uid_validity, Some(new));
    assert_eq!(after.uid_next, Some(3));
    assert_eq!(
        fetch_all(&mut s).await,
        vec![(1, message(2)), (2, message(3))]
    );
    let seen: Vec<u32> = s.uid_search("SEEN").await.unwrap().into_iter().collect();
    assert_eq!(seen, vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_connections() {
    let server = start().await;
    let before = server.stats();
    send(&transport(server.smtp_addr()), &[ALICE], &message(1))
        .await
        .unwrap();
    let _s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let after = server.stats();
    assert_eq!(after.smtp_connections, before.smtp_connections + 1);
    assert_eq!(after.imap_connections, before.imap_connections + 1);
    assert_eq!(after.messages_delivered, 1);
    server.faults().clear();
}
