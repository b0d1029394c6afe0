//! The server driven by the Rust clients the product uses: lettre (SMTP)
//! and async-imap (IMAP).

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use async_imap::extensions::idle::IdleResponse;
use common::*;
use futures::TryStreamExt;
use testmail::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_delivers_to_two_users_async_imap_reads_back_exact_bytes() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    let (m1, m2) = (message(1), message(2));
    send(&smtp, &[ALICE, BOB], &m1).await.unwrap();
    send(&smtp, &[BOB], &m2).await.unwrap();
    assert!(send(&smtp, &["nobody@example.test"], &m1).await.is_err());

    let mut alice = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let mailbox = alice.select("INBOX").await.unwrap();
    assert_eq!(mailbox.exists, 1);
    assert_eq!(fetch_all(&mut alice).await, vec![(1, m1.clone())]);

    let mut bob = imap(server.imap_addr(), BOB, BOB_PW).await;
    bob.select("INBOX").await.unwrap();
    assert_eq!(fetch_all(&mut bob).await, vec![(1, m1), (2, m2)]);

    // Alice cannot log in with Bob's password.
    let stream = tokio::net::TcpStream::connect(server.imap_addr())
        .await
        .unwrap();
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.unwrap();
    assert!(client.login(ALICE, BOB_PW).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_imap_uid_store_move_expunge() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    for n in 1..=4 {
        send(&smtp, &[ALICE], &message(n)).await.unwrap();
    }
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.create("Processed").await.unwrap();
    let inbox = s.select("INBOX").await.unwrap();
    assert_eq!((inbox.exists, inbox.uid_next), (4, Some(5)));

    // Flags.
    let stored: Vec<_> = s
        .uid_store("1:2", "+FLAGS (\\Seen)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|f| f
        .flags()
        .any(|fl| matches!(fl, async_imap::types::Flag::Seen))));
    assert_eq!(
        s.uid_search("UNSEEN").await.unwrap(),
        BTreeSet::from([3, 4]).into_iter().collect()
    );
    let found = s
        .uid_search("HEADER MESSAGE-ID <m3@example.test>")
        .await
        .unwrap();
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec![3]);

    // MOVE: gone from INBOX, present with a new UID in Processed.
    s.uid_mv("2:3", "Processed").await.unwrap();
    let left: BTreeSet<u32> = s.uid_search("ALL").await.unwrap().into_iter().collect();
    assert_eq!(left, BTreeSet::from([1, 4]));

    // EXPUNGE.
    let _: Vec<_> = s
        .uid_store("4", "+FLAGS.SILENT (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let expunged: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
    assert_eq!(expunged, vec![2]);
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);

    let processed = s.select("Processed").await.unwrap();
    assert_eq!(processed.exists, 2);
    assert_eq!(
        fetch_all(&mut s).await,
        vec![(1, message(2)), (2, message(3))]
    );
    // The \Seen set on UID 2 travelled with the move.
    assert_eq!(
        s.uid_search("SEEN")
            .await
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![1]
    );
    s.logout().await.unwrap();
}

/// IDLE in one session must report a delivery at once: the product's
/// latency depends on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_wakes_when_mail_arrives() {
    let server = start().await;
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.select("INBOX").await.unwrap();
    let mut idle = s.idle();
    idle.init().await.unwrap();
    let smtp = transport(server.smtp_addr());
    let sent_at = Instant::now();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&smtp, &[ALICE], &message(1)).await.unwrap();
    });
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(10));
    let response = wait.await.unwrap();
    let latency = sent_at.elapsed();
    let IdleResponse::NewData(data) = response else {
        panic!("IDLE ended without news: {response:?}");
    };
    assert!(
        format!("{:?}", data.parsed()).contains("Exists(1)"),
        "{:?}",
        data.parsed()
    );
    // 100 ms of that is the sender's sleep.
    assert!(latency < Duration::from_secs(2), "IDLE took {latency:?}");
    eprintln!("IDLE reported the delivery {latency:?} after the send started (incl. 100 ms pause)");
    sender.await.unwrap();
    let mut s = idle.done().await.unwrap();
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(1))]);
}

/// Two sessions of one user: one IDLEs, the other MOVEs a message away;
/// the idler hears EXPUNGE at once, and NOOP elsewhere reports it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_one_user_see_each_others_changes() {
    let server = start().await;
    let smtp = transport(server.smtp_addr());
    send(&smtp, &[ALICE], &message(1)).await.unwrap();
    send(&smtp, &[ALICE], &message(2)).await.unwrap();

    let mut idler = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    idler.select("INBOX").await.unwrap();
    let mut other = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    other.create("Done").await.unwrap();
    other.select("INBOX").await.unwrap();
    let mut third = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    third.select("INBOX").await.unwrap();

    let mut idle = idler.idle();
    idle.init().await.unwrap();
    let mover = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        other.uid_mv("1", "Done").await.unwrap();
        other
    });
    let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(10));
    let IdleResponse::NewData(data) = wait.await.unwrap() else {
        panic!("IDLE ended without news");
    };
    assert!(
        format!("{:?}", data.parsed()).contains("Expunge(1)"),
        "{:?}",
        data.parsed()
    );
    let mut other = mover.await.unwrap();
    let mut idler = idle.done().await.unwrap();
    assert_eq!(fetch_all(&mut idler).await, vec![(2, message(2))]);

    // The third session learns on NOOP; until then its numbers stand.
    third.noop().await.unwrap();
    let mut expunges = Vec::new();
    while let Ok(r) = third.unsolicited_responses.try_recv() {
        expunges.push(format!("{r:?}"));
    }
    assert!(
        expunges.iter().any(|r| r.contains("Expunge")),
        "{expunges:?}"
    );
    assert_eq!(fetch_all(&mut third).await, vec![(2, message(2))]);

    other.select("Done").await.unwrap();
    assert_eq!(fetch_all(&mut other).await, vec![(1, message(1))]);
}

/// Stop and start again on the same folder: mail, UIDs, UIDVALIDITY, UIDNEXT
/// and flags are all as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_mail_uids_uidvalidity_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).await.unwrap();
    let smtp = transport(server.smtp_addr());
    for n in 1..=3 {
        send(&smtp, &[ALICE], &message(n)).await.unwrap();
    }
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    s.create("Kept").await.unwrap();
    let before = s.select("INBOX").await.unwrap();
    let _: Vec<_> = s
        .uid_store("2", "+FLAGS (\\Flagged $Label)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _: Vec<_> = s
        .uid_store("1", "+FLAGS (\\Deleted)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _: Vec<_> = s.expunge().await.unwrap().try_collect().await.unwrap();
    s.uid_mv("3", "Kept").await.unwrap();
    let kept = s.select("Kept").await.unwrap();
    s.logout().await.unwrap();
    server.shutdown().await;

    let server = Server::start(config(dir.path())).await.unwrap();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let after = s.select("INBOX").await.unwrap();
    assert_eq!(after.uid_validity, before.uid_validity);
    assert_eq!(after.uid_next, Some(4));
    assert_eq!(after.exists, 1);
    assert_eq!(fetch_all(&mut s).await, vec![(2, message(2))]);
    let flags: Vec<_> = s
        .uid_fetch("2", "FLAGS")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let flags: Vec<String> = flags[0].flags().map(|f| format!("{f:?}")).collect();
    assert!(flags.contains(&"Flagged".to_owned()), "{flags:?}");
    assert!(flags.iter().any(|f| f.contains("$Label")), "{flags:?}");
    let kept_after = s.select("Kept").await.unwrap();
    assert_eq!(kept_after.uid_validity, kept.uid_validity);
    assert_eq!(fetch_all(&mut s).await, vec![(1, message(3))]);
    // New mail continues the numbering.
    send(&transport(server.smtp_addr()), &[ALICE], &message(4))
        .await
        .unwrap();
    s.select("INBOX").await.unwrap();
    let uids: Vec<u32> = fetch_all(&mut s)
        .await
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(uids, vec![2, 4]);
    server.shutdown().await;
}

/// 1,000 messages over SMTP from several connections at once, all visible
/// over IMAP with distinct UIDs and intact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_messages_is_all_visible() {
    const TOTAL: usize = 1000;
    const SENDERS: usize = 8;
    let server = start().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let smtp = transport(server.smtp_addr());
        tasks.push(tokio::spawn(async move {
            for n in (sender..TOTAL).step_by(SENDERS) {
                send(&smtp, &[ALICE], &message(n)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent = started.elapsed();
    let mut s = imap(server.imap_addr(), ALICE, ALICE_PW).await;
    let inbox = s.select("INBOX").await.unwrap();
    assert_eq!(inbox.exists as usize, TOTAL);
    let all = fetch_all(&mut s).await;
    let read = started.elapsed();
    let uids: Vec<u32> = all.iter().map(|(u, _)| *u).collect();
    assert_eq!(uids, (1..=TOTAL as u32).collect::<Vec<_>>());
    let got: BTreeSet<Vec<u8>> = all.into_iter().map(|(_, b)| b).collect();
    let want: BTreeSet<Vec<u8>> = (0..TOTAL).map(message).collect();
    assert!(got == want, "bodies differ from what was sent");
    assert_eq!(server.stats().mails_accepted, TOTAL as u64);
    eprintln!(
        "burst: {TOTAL} mails sent in {sent:?} ({:.0} mails/s over {SENDERS} connections), \
         all fetched back by {read:?}",
        TOTAL as f64 / sent.as_secs_f64()
    );
}
