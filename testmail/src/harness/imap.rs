//! What the harness does over IMAP, with async-imap (the product's client),
//! so that it reads mailboxes the way the product will: list, read, empty,
//! and read UIDVALIDITY.

use std::net::SocketAddr;

use async_imap::{error::Error as ImapError, types::NameAttribute};
use futures::TryStreamExt;
use tokio::net::TcpStream;

use super::HarnessError;

pub(crate) type Session = async_imap::Session<TcpStream>;

/// Connects in clear text and logs in.
pub(crate) async fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Session, HarnessError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| HarnessError::io(format!("connecting to IMAP at {addr}"), e))?;
    // async-imap writes a command in pieces: without this, Nagle's
    // algorithm and a delayed ACK can stall each command by 40 ms.
    let _ = stream.set_nodelay(true);
    let mut client = async_imap::Client::new(stream);
    match client.read_response().await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(HarnessError::Unexpected(format!(
                "IMAP at {addr} closed the connection before its greeting"
            )))
        }
        Err(e) => {
            return Err(HarnessError::io(
                format!("reading the IMAP greeting of {addr}"),
                e,
            ))
        }
    }
    client
        .login(user, password)
        .await
        .map_err(|(e, _)| HarnessError::imap(format!("logging in as {user}"), e))
}

/// Says LOGOUT; the answer does not matter any more.
pub(crate) async fn logout(mut session: Session) {
    let _ = session.logout().await;
}

/// EXAMINEs `folder`: its message count and UIDVALIDITY, or `None` if the
/// server says NO (the folder does not exist).
pub(crate) async fn examine(
    session: &mut Session,
    folder: &str,
) -> Result<Option<(u32, u32)>, HarnessError> {
    match session.examine(folder).await {
        // async-imap takes the end of the connection for the end of the
        // answer; a real answer always has a UIDVALIDITY.
        Ok(mailbox) => match mailbox.uid_validity {
            Some(uidvalidity) => Ok(Some((mailbox.exists, uidvalidity))),
            None => Err(HarnessError::imap(
                format!("EXAMINE {folder} (no UIDVALIDITY in the answer)"),
                ImapError::ConnectionLost,
            )),
        },
        Err(ImapError::No(_)) => Ok(None),
        Err(e) => Err(HarnessError::imap(format!("EXAMINE {folder}"), e)),
    }
}

/// `folder`'s UIDNEXT, from EXAMINE.
pub(crate) async fn uid_next(session: &mut Session, folder: &str) -> Result<u32, HarnessError> {
    let what = format!("EXAMINE {folder}");
    session
        .examine(folder)
        .await
        .map_err(|e| HarnessError::imap(what.clone(), e))?
        .uid_next
        .ok_or_else(|| HarnessError::Unexpected(format!("{what}: no UIDNEXT in the answer")))
}

/// The raw bytes of every message of the selected folder, in UID order.
pub(crate) async fn fetch_all(session: &mut Session) -> Result<Vec<Vec<u8>>, HarnessError> {
    let what = "UID FETCH 1:* BODY.PEEK[]";
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await
        .map_err(|e| HarnessError::imap(what, e))?
        .try_collect()
        .await
        .map_err(|e| HarnessError::imap(what, e))?;
    let mut messages = Vec::with_capacity(fetches.len());
    for fetch in &fetches {
        // A FETCH without a body is an unsolicited flag update, not a message.
        if let (Some(uid), Some(body)) = (fetch.uid, fetch.body()) {
            messages.push((uid, body.to_vec()));
        }
    }
    messages.sort_by_key(|(uid, _)| *uid);
    Ok(messages.into_iter().map(|(_, body)| body).collect())
}

/// The raw bytes of every message in `folder` (none if it does not exist).
pub(crate) async fn messages(
    session: &mut Session,
    folder: &str,
) -> Result<Vec<Vec<u8>>, HarnessError> {
    match examine(session, folder).await? {
        None | Some((0, _)) => Ok(Vec::new()),
        Some(_) => {
            let messages = fetch_all(session).await?;
            // async-imap also ends a FETCH quietly when the connection ends
            // between two responses: make sure it is still there, so that a
            // cut answer is an error and not a short list.
            session
                .run_command_and_check_ok("NOOP")
                .await
                .map_err(|e| HarnessError::imap("NOOP after FETCH", e))?;
            Ok(messages)
        }
    }
}

/// The size (RFC822.SIZE) of every message in `folder` (none if it does
/// not exist).
pub(crate) async fn sizes(session: &mut Session, folder: &str) -> Result<Vec<u32>, HarnessError> {
    match examine(session, folder).await? {
        None | Some((0, _)) => Ok(Vec::new()),
        Some(_) => {
            let what = "UID FETCH 1:* RFC822.SIZE";
            let fetches: Vec<_> = session
                .uid_fetch("1:*", "(UID RFC822.SIZE)")
                .await
                .map_err(|e| HarnessError::imap(what, e))?
                .try_collect()
                .await
                .map_err(|e| HarnessError::imap(what, e))?;
            Ok(fetches.iter().filter_map(|f| f.size).collect())
        }
    }
}

/// Deletes every folder but INBOX and expunges everything in INBOX, then
/// checks that that is what the server now shows.
pub(crate) async fn empty_account(session: &mut Session) -> Result<(), HarnessError> {
    let mut folders = list(session).await?;
    // Children before their parents (a server may refuse to delete a parent).
    folders.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, _) in &folders {
        if name.eq_ignore_ascii_case("INBOX") {
            continue;
        }
        match session.delete(name).await {
            // A placeholder parent (\Noselect) may not be deletable; what
            // matters is checked below.
            Ok(()) | Err(ImapError::No(_)) => {}
            Err(e) => return Err(HarnessError::imap(format!("DELETE {name}"), e)),
        }
        let _ = session.unsubscribe(name).await;
    }
    let inbox = session
        .select("INBOX")
        .await
        .map_err(|e| HarnessError::imap("SELECT INBOX", e))?;
    if inbox.exists > 0 {
        session
            .store("1:*", "+FLAGS.SILENT (\\Deleted)")
            .await
            .map_err(|e| HarnessError::imap("STORE 1:* +FLAGS (\\Deleted)", e))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| HarnessError::imap("STORE 1:* +FLAGS (\\Deleted)", e))?;
        session
            .expunge()
            .await
            .map_err(|e| HarnessError::imap("EXPUNGE", e))?
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| HarnessError::imap("EXPUNGE", e))?;
    }
    let _ = session.close().await;

    let left: Vec<String> = list(session)
        .await?
        .into_iter()
        .filter(|(name, selectable)| *selectable && !name.eq_ignore_ascii_case("INBOX"))
        .map(|(name, _)| name)
        .collect();
    if !left.is_empty() {
        return Err(HarnessError::Unexpected(format!(
            "folders {left:?} are still there after DELETE"
        )));
    }
    match examine(session, "INBOX").await? {
        Some((0, _)) => Ok(()),
        Some((n, _)) => Err(HarnessError::Unexpected(format!(
            "INBOX still holds {n} messages after EXPUNGE"
        ))),
        None => Err(HarnessError::Unexpected("INBOX cannot be examined".into())),
    }
}

/// Every folder name, with whether it can be selected.
pub(crate) async fn list(session: &mut Session) -> Result<Vec<(String, bool)>, HarnessError> {
    let names: Vec<_> = session
        .list(Some(""), Some("*"))
        .await
        .map_err(|e| HarnessError::imap("LIST \"\" *", e))?
        .try_collect()
        .await
        .map_err(|e| HarnessError::imap("LIST \"\" *", e))?;
    Ok(names
        .iter()
        .map(|n| {
            let selectable = !n.attributes().iter().any(|a| match a {
                NameAttribute::NoSelect => true,
                NameAttribute::Extension(x) => x.eq_ignore_ascii_case("\\NonExistent"),
                _ => false,
            });
            (n.name().to_owned(), selectable)
        })
        .collect())
}
