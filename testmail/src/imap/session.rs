//! One IMAP connection's state (not authenticated, authenticated, selected,
//! idling) and the handling of every command.
//!
//! Each session keeps its own view of the selected mailbox: the UIDs it has
//! told the client about, in sequence-number order. Other sessions and SMTP
//! change the store at any time; [`Session::sync`] reports the difference
//! (`EXISTS`, `EXPUNGE`) only where RFC 3501 7.4.1 allows it, so sequence
//! numbers never shift under the client's feet.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    sync::Arc,
};

use imap_next::{
    imap_types::{
        auth::{AuthMechanism, AuthenticateData},
        command::{Command, CommandBody},
        core::{AString, Charset, QuotedChar, Tag, Vec1},
        extensions::binary::LiteralOrLiteral8,
        fetch::MacroOrMessageDataItemNames,
        flag::{Flag, FlagNameAttribute, StoreResponse, StoreType},
        mailbox::{ListMailbox, Mailbox},
        response::{Code, CommandContinuationRequest, Data, Greeting, GreetingKind, StatusKind},
        search::SearchKey,
        sequence::SequenceSet,
        status::{StatusDataItem, StatusDataItemName},
    },
    server::{Error as ProtocolError, Event, Options, Server},
    types::CommandAuthenticate,
};
use tokio::{net::TcpStream, sync::watch};

use super::{
    conn::{Conn, End, Input, Waits},
    fetch::{flag_list, Plan},
    response::{self as r, bad, bye, no, ok},
    search::{Bounds, Candidate},
    sequence::{self, OutOfRange},
};
use crate::{
    error::Error,
    server::Context,
    store::{self, FlagOp, Snapshot, DELIMITER, INBOX, SEEN},
};

/// What the main loop does after handling something.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Write what is queued (a BYE, usually), then close.
    Close,
}

#[derive(Debug)]
struct Selected {
    name: String,
    read_only: bool,
    uidvalidity: u32,
    /// The UIDs the client knows, in sequence-number order.
    uids: Vec<u32>,
    changes: watch::Receiver<u64>,
}

pub(crate) struct Session {
    ctx: Arc<Context>,
    conn: Conn,
    /// Lower-case address once logged in.
    user: Option<String>,
    selected: Option<Selected>,
    idling: Option<Tag<'static>>,
    authenticating: Option<Tag<'static>>,
    bad_commands: u32,
    idle_kill: watch::Receiver<u64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("selected", &self.selected)
            .finish_non_exhaustive()
    }
}

fn nz(n: usize) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

fn continuation(text: &'static str) -> CommandContinuationRequest<'static> {
    CommandContinuationRequest::basic(None, text)
        .unwrap_or_else(|_| CommandContinuationRequest::base64(Vec::new()))
}

fn lossy(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

/// The flags a client may set; `\Recent` and unknown `\System` flags are
/// dropped.
fn flag_strings(flags: &[Flag<'_>]) -> BTreeSet<String> {
    flags
        .iter()
        .filter(|f| !matches!(f, Flag::Extension(_)))
        .map(ToString::to_string)
        .collect()
}

/// `*` matches anything, `%` anything but the hierarchy delimiter.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != DELIMITER as u8)
            .any(|i| wildcard(rest, &name[i..])),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

fn list_matches(pattern: &str, name: &str) -> bool {
    // INBOX is case-insensitive, so a pattern that spells it in any case
    // must find it.
    if name == INBOX && pattern.len() >= INBOX.len() && pattern.is_char_boundary(INBOX.len()) {
        let (head, tail) = pattern.split_at(INBOX.len());
        if head.eq_ignore_ascii_case(INBOX) {
            return wildcard(format!("{INBOX}{tail}").as_bytes(), name.as_bytes());
        }
    }
    wildcard(pattern.as_bytes(), name.as_bytes())
}

impl Session {
    pub(crate) fn new(stream: TcpStream, ctx: Arc<Context>) -> Session {
        let limits = &ctx.limits;
        let mut options = Options::default();
        // Lenient about bare LF, so a person can talk to us with netcat.
        options.crlf_relaxed = true;
        options.max_literal_size = u32::try_from(limits.max_message_size).unwrap_or(u32::MAX / 2);
        options.max_command_size = options
            .max_literal_size
            .saturating_add(limits.max_imap_command);
        let greeting = Greeting {
            kind: GreetingKind::Ok,
            code: Some(Code::Capability(r::capabilities())),
            text: r::text("testmail IMAP4rev1 ready"),
        };
        let server = Server::new(options, greeting);
        let idle_kill = ctx.faults.idle_kill();
        Session {
            conn: Conn::new(stream, server, limits.write_timeout),
            ctx,
            user: None,
            selected: None,
            idling: None,
            authenticating: None,
            bad_commands: 0,
            idle_kill,
        }
    }

    /// Serves the connection until the client logs out, goes away, or a
    /// fault or shutdown ends it.
    pub(crate) async fn run(mut self) -> Result<(), End> {
        loop {
            let idling = self.idling.is_some();
            let waits = Waits {
                shutdown: &self.ctx.shutdown,
                autologout: self.ctx.limits.imap_autologout,
                mailbox: self
                    .selected
                    .as_mut()
                    .filter(|_| idling)
                    .map(|s| &mut s.changes),
                idle_kill: idling.then_some(&mut self.idle_kill),
            };
            let input = match self.conn.next(waits).await {
                Ok(input) => input,
                Err(End::Cut) => {
                    // Counted before the socket closes (when `self` drops),
                    // so a test that saw the cut also sees the count.
                    self.ctx.faults.count_dropped();
                    return Err(End::Cut);
                }
                Err(e) => return Err(e),
            };
            let flow = match input {
                Input::Event(event) => self.event(event).await,
                Input::Error(e) => self.protocol_error(e),
                Input::MailboxChanged => {
                    if self.sync(true) {
                        Flow::Continue
                    } else {
                        Flow::Close
                    }
                }
                Input::IdleKilled => {
                    self.ctx.faults.count_dropped();
                    return Ok(());
                }
                Input::Shutdown => {
                    self.conn.server.enqueue_status(bye("server shutting down"));
                    Flow::Close
                }
                Input::Timeout => {
                    self.conn.server.enqueue_status(bye("autologout"));
                    Flow::Close
                }
            };
            if flow == Flow::Close {
                return self.conn.flush().await;
            }
        }
    }

    async fn event(&mut self, event: Event) -> Flow {
        match event {
            Event::CommandReceived { command } => self.command(command).await,
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                self.authenticate(command_authenticate);
                Flow::Continue
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                if let Some(tag) = self.authenticating.take() {
                    match authenticate_data {
                        AuthenticateData::Continue(data) => {
                            self.finish_plain(tag, data.declassify())
                        }
                        AuthenticateData::Cancel => {
                            self.finish_auth(bad(tag, "authentication cancelled"));
                        }
                    }
                }
                Flow::Continue
            }
            Event::IdleCommandReceived { tag } => self.idle(tag),
            Event::IdleDoneReceived => {
                if let Some(tag) = self.idling.take() {
                    self.conn.server.enqueue_status(ok(tag, "IDLE terminated"));
                }
                Flow::Continue
            }
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => Flow::Continue,
        }
    }

    fn protocol_error(&mut self, e: ProtocolError) -> Flow {
        self.bad_commands += 1;
        let (what, bytes) = match &e {
            ProtocolError::MalformedMessage { discarded_bytes } => (
                "syntax error or unknown command",
                Some(discarded_bytes.declassify()),
            ),
            ProtocolError::ExpectedCrlfGotLf { discarded_bytes } => (
                "lines must end with CRLF",
                Some(discarded_bytes.declassify()),
            ),
            ProtocolError::CommandTooLong { discarded_bytes } => {
                ("command too long", Some(discarded_bytes.declassify()))
            }
            // imap-next has already answered BAD to the literal.
            ProtocolError::LiteralTooLong { .. } => ("literal too long", None),
        };
        tracing::debug!(error = %e, "bad IMAP input");
        if let Some(tag) = self.authenticating.take() {
            self.finish_auth(bad(tag, "invalid base64"));
        } else if let Some(bytes) = bytes {
            // Answer with the client's tag if the line has a usable one.
            let tag = bytes
                .split(|&b| b == b' ')
                .next()
                .filter(|_| self.idling.is_none())
                .and_then(|t| Tag::try_from(t.to_vec()).ok());
            let status = match tag {
                Some(tag) => bad(tag, what),
                None => r::untagged(StatusKind::Bad, None, what),
            };
            self.conn.server.enqueue_status(status);
        }
        if self.bad_commands > self.ctx.limits.max_bad_commands {
            self.conn
                .server
                .enqueue_status(bye("too many bad commands"));
            return Flow::Close;
        }
        Flow::Continue
    }

    fn reply(&mut self, status: imap_next::imap_types::response::Status<'static>) -> Flow {
        self.conn.server.enqueue_status(status);
        Flow::Continue
    }

    fn data(&mut self, data: Data<'static>) {
        self.conn.server.enqueue_data(data);
    }

    async fn command(&mut self, command: Command<'static>) -> Flow {
        let tag = command.tag;
        match command.body {
            CommandBody::Capability => {
                self.data(r::capability_data());
                self.reply(ok(tag, "CAPABILITY completed"))
            }
            CommandBody::Noop | CommandBody::Check => {
                if !self.sync(true) {
                    return Flow::Close;
                }
                self.reply(ok(tag, "done"))
            }
            CommandBody::Logout => {
                self.conn.server.enqueue_status(bye("logging out"));
                self.conn.server.enqueue_status(ok(tag, "LOGOUT completed"));
                Flow::Close
            }
            CommandBody::Login { username, password } => {
                let password = lossy(password.declassify());
                self.login(tag, &lossy(&username), &password)
            }
            _ if self.user.is_none() => self.reply(bad(tag, "log in first")),

            CommandBody::Select { mailbox, .. } => self.select(tag, &mailbox, false),
            CommandBody::Examine { mailbox, .. } => self.select(tag, &mailbox, true),
            CommandBody::Create { mailbox } => {
                self.mailbox_op(tag, &mailbox, |s, user, name| s.create(user, name))
            }
            CommandBody::Delete { mailbox } => {
                self.mailbox_op(tag, &mailbox, |s, user, name| s.delete(user, name))
            }
            CommandBody::Rename { from, to } => {
                let Some(to) = r::mailbox_name(&to) else {
                    return self.reply(no(tag, "mailbox names must be UTF-8"));
                };
                self.mailbox_op(tag, &from, |s, user, name| s.rename(user, name, &to))
            }
            // Every mailbox counts as subscribed; LSUB lists them all.
            CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => {
                self.reply(ok(tag, "done"))
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, false),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(tag, &reference, &mailbox_wildcard, true),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(tag, &mailbox, &item_names),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let bytes = match &message {
                    LiteralOrLiteral8::Literal(l) => l.data(),
                    LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
                };
                let date = date.map(|d| d.as_ref().timestamp());
                self.append(tag, &mailbox, &flags, date, bytes)
            }
            _ if self.selected.is_none() => self.reply(bad(tag, "select a mailbox first")),

            CommandBody::Close => {
                if let Some(sel) = self.selected.take() {
                    if !sel.read_only {
                        // CLOSE expunges silently (RFC 3501 6.4.2).
                        let user = self.user.clone().unwrap_or_default();
                        let _ = self
                            .ctx
                            .store
                            .expunge(&user, &sel.name, sel.uidvalidity, None);
                    }
                }
                self.reply(ok(tag, "CLOSE completed"))
            }
            CommandBody::Unselect => {
                self.selected = None;
                self.reply(ok(tag, "UNSELECT completed"))
            }
            CommandBody::Expunge => self.expunge(tag, None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(tag, Some(&sequence_set)),
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(tag, charset.as_ref(), &criteria, uid),
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(tag, &sequence_set, macro_or_item_names, uid)
                    .await
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => self.store(tag, &sequence_set, &kind, &response, &flags, uid),
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, false),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(tag, &sequence_set, &mailbox, uid, true),
            _ => self.reply(bad(tag, "command not supported by testmail")),
        }
    }

    // ----- not authenticated -----

    fn login(&mut self, tag: Tag<'static>, user: &str, password: &str) -> Flow {
        if self.user.is_some() {
            return self.reply(bad(tag, "already logged in"));
        }
        match self.ctx.store.authenticate(user, password) {
            Some(user) => {
                self.user = Some(user);
                let code = Code::Capability(r::capabilities());
                self.reply(r::tagged(tag, StatusKind::Ok, Some(code), "logged in"))
            }
            None => self.reply(no(tag, "invalid user name or password")),
        }
    }

    fn authenticate(&mut self, command: CommandAuthenticate) {
        let tag = command.tag;
        if self.user.is_some() {
            self.finish_auth(bad(tag, "already logged in"));
        } else if command.mechanism != AuthMechanism::Plain {
            self.finish_auth(no(tag, "only AUTHENTICATE PLAIN is supported"));
        } else if let Some(initial) = command.initial_response {
            self.finish_plain(tag, initial.declassify());
        } else {
            self.authenticating = Some(tag);
            let empty = CommandContinuationRequest::base64(Vec::new());
            if let Err(c) = self.conn.server.authenticate_continue(empty) {
                self.conn.server.enqueue_continuation_request(c);
            }
        }
    }

    /// Checks a SASL PLAIN response (`authzid NUL authcid NUL password`).
    fn finish_plain(&mut self, tag: Tag<'static>, response: &[u8]) {
        let mut parts = response.split(|&b| b == 0);
        let credentials = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(user), Some(pass), None) if authz.is_empty() || authz == user => {
                Some((String::from_utf8_lossy(user), String::from_utf8_lossy(pass)))
            }
            _ => None,
        };
        let user = credentials.and_then(|(u, p)| self.ctx.store.authenticate(&u, &p));
        let status = match user {
            Some(user) => {
                self.user = Some(user);
                let code = Code::Capability(r::capabilities());
                r::tagged(tag, StatusKind::Ok, Some(code), "logged in")
            }
            None => no(tag, "invalid user name or password"),
        };
        self.finish_auth(status);
    }

    fn finish_auth(&mut self, status: imap_next::imap_types::response::Status<'static>) {
        if let Err(status) = self.conn.server.authenticate_finish(status) {
            self.conn.server.enqueue_status(status);
        }
    }

    // ----- authenticated -----

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or_default()
    }

    fn idle(&mut self, tag: Tag<'static>) -> Flow {
        if self.user.is_none() {
            if let Err(status) = self.conn.server.idle_reject(bad(tag, "log in first")) {
                self.conn.server.enqueue_status(status);
            }
            return Flow::Continue;
        }
        if let Err(c) = self.conn.server.idle_accept(continuation("idling")) {
            self.conn.server.enqueue_continuation_request(c);
        }
        self.idling = Some(tag);
        // Only faults and changes from now on count; whatever happened
        // before is covered by the sync below.
        self.idle_kill.borrow_and_update();
        if let Some(sel) = self.selected.as_mut() {
            sel.changes.borrow_and_update();
        }
        if self.sync(true) {
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    fn select(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>, read_only: bool) -> Flow {
        // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
        self.selected = None;
        let Some(name) = r::mailbox_name(mailbox) else {
            return self.reply(no(tag, "mailbox names must be UTF-8"));
        };
        let name = store::canonical_mailbox(&name);
        let user = self.user().to_owned();
        // Watch before the snapshot, so no change can fall between them.
        let (changes, snap) = match self
            .ctx
            .store
            .watch(&user, &name)
            .and_then(|w| Ok((w, self.ctx.store.snapshot(&user, &name)?)))
        {
            Ok(x) => x,
            Err(e) => return self.reply(no(tag, e.to_string())),
        };
        self.data(Data::Flags(r::system_flags()));
        let permanent = if read_only {
            Vec::new()
        } else {
            r::permanent_flags()
        };
        self.conn.server.enqueue_status(r::untagged(
            StatusKind::Ok,
            Some(Code::PermanentFlags(permanent)),
            "flags permitted",
        ));
        self.data(Data::Exists(
            u32::try_from(snap.messages.len()).unwrap_or(u32::MAX),
        ));
        self.data(Data::Recent(0));
        if let Some(i) = snap.messages.iter().position(|m| !m.flags.contains(SEEN)) {
            self.conn.server.enqueue_status(r::untagged(
                StatusKind::Ok,
                Some(Code::Unseen(nz(i + 1))),
                "first unseen",
            ));
        }
        for code in [
            Code::UidValidity(nz(snap.uidvalidity as usize)),
            Code::UidNext(nz(snap.uidnext as usize)),
        ] {
            self.conn
                .server
                .enqueue_status(r::untagged(StatusKind::Ok, Some(code), "ok"));
        }
        self.selected = Some(Selected {
            name,
            read_only,
            uidvalidity: snap.uidvalidity,
            uids: snap.messages.iter().map(|m| m.uid).collect(),
            changes,
        });
        let (code, text) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        self.reply(r::tagged(tag, StatusKind::Ok, Some(code), text))
    }

    fn mailbox_op(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        op: impl FnOnce(&store::Store, &str, &str) -> Result<(), Error>,
    ) -> Flow {
        let Some(name) = r::mailbox_name(mailbox) else {
            return self.reply(no(tag, "mailbox names must be UTF-8"));
        };
        let user = self.user().to_owned();
        match op(&self.ctx.store, &user, &name) {
            Ok(()) => self.reply(ok(tag, "done")),
            Err(e) => self.reply(no(tag, e.to_string())),
        }
    }

    fn list(
        &mut self,
        tag: Tag<'static>,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> Flow {
        let reference = r::mailbox_name(reference).unwrap_or_default();
        let pattern = String::from_utf8_lossy(match pattern {
            ListMailbox::Token(t) => t.as_ref(),
            ListMailbox::String(s) => s.as_ref(),
        })
        .into_owned();
        let delimiter = QuotedChar::try_from(DELIMITER).ok();
        if pattern.is_empty() {
            // RFC 3501 6.3.8: an empty pattern asks for the delimiter.
            if !lsub {
                if let Ok(root) = Mailbox::try_from(String::new()) {
                    self.data(Data::List {
                        items: vec![FlagNameAttribute::Noselect],
                        delimiter,
                        mailbox: root,
                    });
                }
            }
            return self.reply(ok(tag, "LIST completed"));
        }
        let full = format!("{reference}{pattern}");
        let names = self.ctx.store.list(self.user()).unwrap_or_default();
        for name in names.iter().filter(|n| list_matches(&full, n)) {
            let Some(mailbox) = r::mailbox(name) else {
                continue;
            };
            self.data(if lsub {
                Data::Lsub {
                    items: Vec::new(),
                    delimiter,
                    mailbox,
                }
            } else {
                Data::List {
                    items: Vec::new(),
                    delimiter,
                    mailbox,
                }
            });
        }
        self.reply(ok(
            tag,
            if lsub {
                "LSUB completed"
            } else {
                "LIST completed"
            },
        ))
    }

    fn status(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        names: &[StatusDataItemName],
    ) -> Flow {
        let Some(name) = r::mailbox_name(mailbox) else {
            return self.reply(no(tag, "mailbox names must be UTF-8"));
        };
        let snap = match self.ctx.store.snapshot(self.user(), &name) {
            Ok(s) => s,
            Err(e) => return self.reply(no(tag, e.to_string())),
        };
        let count = |f: &dyn Fn(&store::Message) -> bool| {
            u32::try_from(snap.messages.iter().filter(|m| f(m)).count()).unwrap_or(u32::MAX)
        };
        let items: Vec<StatusDataItem> = names
            .iter()
            .filter_map(|n| {
                Some(match n {
                    StatusDataItemName::Messages => StatusDataItem::Messages(count(&|_| true)),
                    StatusDataItemName::Recent => StatusDataItem::Recent(0),
                    StatusDataItemName::UidNext => {
                        StatusDataItem::UidNext(nz(snap.uidnext as usize))
                    }
                    StatusDataItemName::UidValidity => {
                        StatusDataItem::UidValidity(nz(snap.uidvalidity as usize))
                    }
                    StatusDataItemName::Unseen => {
                        StatusDataItem::Unseen(count(&|m| !m.flags.contains(SEEN)))
                    }
                    StatusDataItemName::Deleted => {
                        StatusDataItem::Deleted(count(&|m| m.flags.contains(store::DELETED)))
                    }
                    #[allow(unreachable_patterns)]
                    _ => return None,
                })
            })
            .collect();
        if let Some(mailbox) = r::mailbox(&store::canonical_mailbox(&name)) {
            self.data(Data::Status {
                mailbox,
                items: items.into(),
            });
        }
        self.reply(ok(tag, "STATUS completed"))
    }

    fn append(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<i64>,
        bytes: &[u8],
    ) -> Flow {
        let Some(name) = r::mailbox_name(mailbox) else {
            return self.reply(no(tag, "mailbox names must be UTF-8"));
        };
        if bytes.len() > self.ctx.limits.max_message_size {
            return self.reply(r::tagged(
                tag,
                StatusKind::No,
                Some(Code::TooBig),
                "message too big",
            ));
        }
        if bytes.contains(&0) {
            return self.reply(no(tag, "message contains NUL bytes"));
        }
        let date = date.map_or_else(std::time::SystemTime::now, store::system_time);
        let user = self.user().to_owned();
        match self
            .ctx
            .store
            .append(&user, &name, bytes, flag_strings(flags), date)
        {
            Ok((uidvalidity, uid)) => {
                if !self.sync(true) {
                    return Flow::Close;
                }
                let code = Code::AppendUid {
                    uid_validity: nz(uidvalidity as usize),
                    uid: nz(uid as usize),
                };
                self.reply(r::tagged(
                    tag,
                    StatusKind::Ok,
                    Some(code),
                    "APPEND completed",
                ))
            }
            Err(Error::UnknownMailbox(_)) => self.reply(r::tagged(
                tag,
                StatusKind::No,
                Some(Code::TryCreate),
                "no such mailbox",
            )),
            Err(e) => self.reply(no(tag, e.to_string())),
        }
    }

    // ----- selected -----

    /// The selected mailbox's current snapshot, or `None` (with a BYE
    /// queued) if it was deleted or renumbered: the client's UIDs and
    /// sequence numbers then mean nothing, and IMAP has no way to say so
    /// mid-session except hanging up.
    fn current(&mut self) -> Option<Snapshot> {
        let sel = self.selected.as_ref()?;
        match self.ctx.store.snapshot(self.user(), &sel.name) {
            Ok(snap) if snap.uidvalidity == sel.uidvalidity => Some(snap),
            _ => {
                self.conn.server.enqueue_status(bye(
                    "selected mailbox was deleted or got a new UIDVALIDITY; please reconnect",
                ));
                None
            }
        }
    }

    /// Reports messages added (EXISTS) and, if allowed, removed (EXPUNGE)
    /// since the client last heard. Returns false if the session must end.
    fn sync(&mut self, allow_expunge: bool) -> bool {
        if self.selected.is_none() {
            return true;
        }
        let Some(snap) = self.current() else {
            return false;
        };
        let Some(sel) = self.selected.as_mut() else {
            return true;
        };
        let mut responses = Vec::new();
        if allow_expunge {
            let mut i = 0;
            while i < sel.uids.len() {
                if snap.find(sel.uids[i]).is_some() {
                    i += 1;
                } else {
                    // Reported lowest first; each shifts the ones after it.
                    responses.push(Data::Expunge(nz(i + 1)));
                    sel.uids.remove(i);
                }
            }
        }
        let last = sel.uids.last().copied().unwrap_or(0);
        let before = sel.uids.len();
        sel.uids
            .extend(snap.messages.iter().map(|m| m.uid).filter(|&u| u > last));
        if sel.uids.len() != before {
            responses.push(Data::Exists(
                u32::try_from(sel.uids.len()).unwrap_or(u32::MAX),
            ));
        }
        for data in responses {
            self.data(data);
        }
        true
    }

    /// The selected mailbox's name, view and flags, cloned so that the
    /// handlers can use `self` freely.
    fn view(&self) -> Option<(String, Vec<u32>, bool, u32)> {
        self.selected
            .as_ref()
            .map(|s| (s.name.clone(), s.uids.clone(), s.read_only, s.uidvalidity))
    }

    fn expunge(&mut self, tag: Tag<'static>, only: Option<&SequenceSet>) -> Flow {
        let Some((name, view, read_only, uidvalidity)) = self.view() else {
            return Flow::Continue;
        };
        if read_only {
            return self.reply(no(tag, "mailbox is read-only"));
        }
        let only: Option<Vec<u32>> = only.map(|set| {
            sequence::resolve(set, &view, true)
                .unwrap_or_default()
                .into_iter()
                .map(|i| view[i])
                .collect()
        });
        let user = self.user().to_owned();
        match self
            .ctx
            .store
            .expunge(&user, &name, uidvalidity, only.as_deref())
        {
            Ok(_) => {
                if !self.sync(true) {
                    return Flow::Close;
                }
                self.reply(ok(tag, "EXPUNGE completed"))
            }
            Err(Error::UidValidityChanged(_)) => self.gone(),
            Err(e) => self.reply(no(tag, e.to_string())),
        }
    }

    fn gone(&mut self) -> Flow {
        if self.current().is_some() {
            // Raced with a change that is already over; say so and go on.
            self.conn
                .server
                .enqueue_status(bye("mailbox changed, please reconnect"));
        }
        Flow::Close
    }

    fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<&Charset<'_>>,
        criteria: &Vec1<SearchKey<'_>>,
        uid: bool,
    ) -> Flow {
        if let Some(charset) = charset {
            let c = charset.as_ref();
            if !c.eq_ignore_ascii_case("UTF-8") && !c.eq_ignore_ascii_case("US-ASCII") {
                let code = Code::BadCharset {
                    allowed: Charset::try_from("UTF-8").ok().into_iter().collect(),
                };
                return self.reply(r::tagged(
                    tag,
                    StatusKind::No,
                    Some(code),
                    "unsupported charset",
                ));
            }
        }
        let Some((_, view, _, _)) = self.view() else {
            return Flow::Continue;
        };
        let Some(snap) = self.current() else {
            return Flow::Close;
        };
        let bounds = Bounds {
            max_seq: u32::try_from(view.len()).unwrap_or(u32::MAX),
            max_uid: view.last().copied().unwrap_or(0),
        };
        let mut hits = Vec::new();
        for (i, &u) in view.iter().enumerate() {
            let Some(meta) = snap.find(u) else { continue };
            let mut candidate =
                Candidate::new(u32::try_from(i + 1).unwrap_or(u32::MAX), meta, snap.path(u));
            if criteria
                .as_ref()
                .iter()
                .all(|k| candidate.matches(k, bounds))
            {
                hits.push(if uid { nz(u as usize) } else { nz(i + 1) });
            }
        }
        self.data(Data::Search(hits));
        if !self.sync(uid) {
            return Flow::Close;
        }
        self.reply(ok(tag, "SEARCH completed"))
    }

    async fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Flow {
        let plan = match Plan::new(items, uid) {
            Ok(plan) => plan,
            Err(why) => return self.reply(bad(tag, why)),
        };
        let Some((name, view, read_only, uidvalidity)) = self.view() else {
            return Flow::Continue;
        };
        let Some(snap) = self.current() else {
            return Flow::Close;
        };
        let Ok(indices) = sequence::resolve(set, &view, uid) else {
            return self.reply(bad(tag, "invalid message sequence number"));
        };
        let mut found = Vec::with_capacity(indices.len());
        for i in indices {
            let u = view[i];
            // Expunged by another session and not reported yet: skip.
            let Some(meta) = snap.find(u) else { continue };
            let body = if plan.needs_body {
                match tokio::fs::read(snap.path(u)).await {
                    Ok(bytes) => Some(bytes),
                    Err(_) => continue,
                }
            } else {
                None
            };
            found.push((i, meta.clone(), body));
        }

        let mut new_flags = BTreeMap::new();
        if plan.sets_seen && !read_only {
            let unseen: Vec<u32> = found
                .iter()
                .filter(|(_, m, _)| !m.flags.contains(SEEN))
                .map(|(_, m, _)| m.uid)
                .collect();
            if !unseen.is_empty() {
                let user = self.user().to_owned();
                let seen = BTreeSet::from([SEEN.to_owned()]);
                match self.ctx.store.store_flags(
                    &user,
                    &name,
                    uidvalidity,
                    &unseen,
                    FlagOp::Add,
                    &seen,
                ) {
                    Ok(list) => new_flags.extend(list),
                    Err(Error::UidValidityChanged(_)) => return self.gone(),
                    Err(e) => return self.reply(no(tag, e.to_string())),
                }
            }
        }

        if !found.is_empty() && self.ctx.faults.take_drop_fetch() {
            tracing::info!("fault: cutting connection mid-FETCH");
            self.conn.cut_next_output = true;
        }
        for (i, meta, body) in found {
            let (flags, changed) = match new_flags.get(&meta.uid) {
                Some(flags) => (flags, true),
                None => (&meta.flags, false),
            };
            if let Some(items) = plan.render(&meta, flags, changed, body.as_deref()) {
                self.data(Data::Fetch {
                    seq: nz(i + 1),
                    items,
                });
            }
        }
        if !self.sync(uid) {
            return Flow::Close;
        }
        self.reply(ok(tag, "FETCH completed"))
    }

    fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
    ) -> Flow {
        let Some((name, view, read_only, uidvalidity)) = self.view() else {
            return Flow::Continue;
        };
        if read_only {
            return self.reply(no(tag, "mailbox is read-only"));
        }
        let Ok(indices) = sequence::resolve(set, &view, uid) else {
            return self.reply(bad(tag, "invalid message sequence number"));
        };
        let uids: Vec<u32> = indices.iter().map(|&i| view[i]).collect();
        let op = match kind {
            StoreType::Replace => FlagOp::Replace,
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
        };
        let user = self.user().to_owned();
        let changed = match self.ctx.store.store_flags(
            &user,
            &name,
            uidvalidity,
            &uids,
            op,
            &flag_strings(flags),
        ) {
            Ok(changed) => changed,
            Err(Error::UidValidityChanged(_)) => return self.gone(),
            Err(e) => return self.reply(no(tag, e.to_string())),
        };
        if *response == StoreResponse::Answer {
            for (u, flags) in changed {
                let Ok(pos) = view.binary_search(&u) else {
                    continue;
                };
                let mut items = vec![imap_next::imap_types::fetch::MessageDataItem::Flags(
                    flag_list(&flags),
                )];
                if uid {
                    items.push(imap_next::imap_types::fetch::MessageDataItem::Uid(nz(
                        u as usize
                    )));
                }
                if let Ok(items) = Vec1::try_from(items) {
                    self.data(Data::Fetch {
                        seq: nz(pos + 1),
                        items,
                    });
                }
            }
        }
        if !self.sync(uid) {
            return Flow::Close;
        }
        self.reply(ok(tag, "STORE completed"))
    }

    /// COPY, or MOVE when `and_remove` (RFC 6851: copy, then expunge the
    /// originals, with COPYUID sent untagged before the EXPUNGEs).
    fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        target: &Mailbox<'_>,
        uid: bool,
        and_remove: bool,
    ) -> Flow {
        let Some((name, view, read_only, uidvalidity)) = self.view() else {
            return Flow::Continue;
        };
        if and_remove && read_only {
            return self.reply(no(tag, "mailbox is read-only"));
        }
        let Some(target) = r::mailbox_name(target) else {
            return self.reply(no(tag, "mailbox names must be UTF-8"));
        };
        let uids: Vec<u32> = match sequence::resolve(set, &view, uid) {
            Ok(indices) => indices.iter().map(|&i| view[i]).collect(),
            Err(OutOfRange) => return self.reply(bad(tag, "invalid message sequence number")),
        };
        let user = self.user().to_owned();
        let store = &self.ctx.store;
        let (target_validity, pairs) = match store.copy(&user, &name, uidvalidity, &uids, &target) {
            Ok(x) => x,
            Err(Error::UnknownMailbox(m)) if m == target => {
                return self.reply(r::tagged(
                    tag,
                    StatusKind::No,
                    Some(Code::TryCreate),
                    "no such mailbox",
                ))
            }
            Err(Error::UidValidityChanged(_)) => return self.gone(),
            Err(e) => return self.reply(no(tag, e.to_string())),
        };
        let source: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dest: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = sequence::uid_set(&source)
            .zip(sequence::uid_set(&dest))
            .map(|(source, destination)| Code::CopyUid {
                uid_validity: nz(target_validity as usize),
                source,
                destination,
            });
        if !and_remove {
            if !self.sync(true) {
                return Flow::Close;
            }
            return self.reply(r::tagged(tag, StatusKind::Ok, code, "COPY completed"));
        }
        if let Err(e) = store.remove(&user, &name, uidvalidity, &source) {
            tracing::warn!(error = %e, "MOVE could not remove the originals");
            return self.reply(no(tag, e.to_string()));
        }
        if let Some(code) = code {
            self.conn
                .server
                .enqueue_status(r::untagged(StatusKind::Ok, Some(code), "moved"));
        }
        if !self.sync(true) {
            return Flow::Close;
        }
        self.reply(ok(tag, "MOVE completed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(list_matches("*", "a/b"));
        assert!(list_matches("%", "Archive"));
        assert!(!list_matches("%", "a/b"));
        assert!(list_matches("a/%", "a/b"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(list_matches("InBoX*", "INBOX"));
        assert!(!list_matches("Arch", "Archive"));
        assert!(list_matches("Arch*", "Archive"));
    }
}
