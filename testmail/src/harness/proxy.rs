//! A fault-injecting TCP proxy, so that the same network faults can be put
//! in front of the embedded server and of Dovecot/Postfix, which have no
//! fault hooks of their own.
//!
//! Each connection is one task that copies both ways with fixed buffers.
//! For IMAP it also follows the protocol just enough to cut a FETCH answer
//! in the middle: the client side is split into command lines (skipping
//! literals) to spot `tag [UID] FETCH`; the server side is split into
//! response lines and literals (never buffered whole: only the first bytes
//! of a line and its last few are kept) so that the cut falls inside the
//! first literal of the answer and the tagged completion never gets through.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::HarnessError;

/// Connections open through one proxy at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// The copy buffer of each direction of each connection.
const BUFFER: usize = 16 * 1024;
/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused connection is kept (reading and discarding what the client
/// says, so that closing sends FIN, not RST) at most this long...
const REFUSE_LINGER: Duration = Duration::from_secs(2);
/// ... and for at most this many bytes.
const REFUSE_DRAIN: usize = 64 * 1024;
/// Longest greeting `refuse_next` sends.
const MAX_GREETING: usize = 4096;
/// Longest IMAP tag the proxy recognises (async-imap's are 5 bytes).
const MAX_TAG: usize = 64;
/// Bytes kept from the start of a client command line: enough to read the
/// tag and the command name.
const HEAD: usize = 256;
/// Bytes kept from the end of a line: enough for a literal's `{n}`.
const TAIL: usize = 32;

/// Which protocol a proxy carries: only IMAP is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Imap,
    Smtp,
}

/// A TCP proxy on a free loopback port in front of a server's IMAP or SMTP
/// port, with faults that work the same on every server. Dropping it stops
/// the listener and closes every connection through it.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("protocol", &self.shared.protocol)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

struct Shared {
    protocol: Protocol,
    upstream: SocketAddr,
    cut_fetches: AtomicU32,
    refusals: Mutex<Refusals>,
    /// Cancelled by `drop_all`; each connection watches the one that was
    /// current when it was accepted.
    generation: Mutex<CancellationToken>,
    shutdown: CancellationToken,
    connections: AtomicU64,
    open: Arc<Semaphore>,
}

#[derive(Default)]
struct Refusals {
    remaining: u32,
    greeting: Vec<u8>,
}

impl Shared {
    fn take_refusal(&self) -> Option<Vec<u8>> {
        let mut r = lock(&self.refusals);
        r.remaining = r.remaining.checked_sub(1)?;
        Some(r.greeting.clone())
    }

    fn generation(&self) -> CancellationToken {
        lock(&self.generation).clone()
    }
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub(crate) async fn start(
        protocol: Protocol,
        upstream: SocketAddr,
    ) -> Result<FaultProxy, HarnessError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::io("binding the fault proxy", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("binding the fault proxy", e))?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            protocol,
            upstream,
            cut_fetches: AtomicU32::new(0),
            refusals: Mutex::new(Refusals::default()),
            generation: Mutex::new(shutdown.child_token()),
            shutdown: shutdown.clone(),
            connections: AtomicU64::new(0),
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(listener, Arc::clone(&shared), tasks.clone()));
        tracing::debug!(%addr, %upstream, ?protocol, "fault proxy started");
        Ok(FaultProxy {
            addr,
            shared,
            shutdown,
            tasks,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Closes every connection open through the proxy now (one in IDLE, for
    /// example), without a word to either side. New connections work.
    pub fn drop_all(&self) {
        let mut generation = lock(&self.shared.generation);
        generation.cancel();
        *generation = self.shared.shutdown.child_token();
    }

    /// The next `n` times a client command `TAG FETCH ...` or
    /// `TAG UID FETCH ...` passes through (on any connection), the server's
    /// answer is forwarded only in part, and both sides are then closed:
    /// the answer is cut in the middle of its first literal (a message body,
    /// say), or, if it has none, just before its tagged completion. Replaces
    /// any count left. IMAP proxies only.
    pub fn cut_next_fetches(&self, n: u32) {
        self.shared.cut_fetches.store(n, Ordering::SeqCst);
    }

    /// The next `n` connections are answered by the proxy itself with
    /// `greeting` (for example `"421 4.3.2 busy, try later\r\n"` or
    /// `"* BYE busy\r\n"`) and closed, without reaching the server. The
    /// greeting is sent as given (at most 4096 bytes). Replaces any count
    /// left.
    pub fn refuse_next(&self, n: u32, greeting: &str) {
        let bytes = greeting.as_bytes();
        *lock(&self.shared.refusals) = Refusals {
            remaining: n,
            greeting: bytes[..bytes.len().min(MAX_GREETING)].to_vec(),
        };
    }

    /// Connections accepted so far, refused ones included.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops the proxy and waits (a few seconds at most) until its listener
    /// and every connection are closed. Dropping it stops it too, without
    /// waiting.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tasks.close();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors, say: wait a little, do not spin.
                tracing::debug!(error = %e, "fault proxy: accept failed");
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let Ok(permit) = Arc::clone(&shared.open).try_acquire_owned() else {
            tracing::debug!("fault proxy: too many connections, closing a new one");
            continue;
        };
        if let Some(greeting) = shared.take_refusal() {
            let token = shared.shutdown.clone();
            tasks.spawn(async move {
                refuse(client, &greeting, &token).await;
                drop(permit);
            });
            continue;
        }
        let token = shared.generation();
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            relay(client, &shared, &token).await;
            drop(permit);
        });
    }
}

/// Says `greeting`, closes the sending side, and reads what the client still
/// says (a bounded amount, for a bounded time) so that the close is clean.
async fn refuse(mut client: TcpStream, greeting: &[u8], token: &CancellationToken) {
    let work = async {
        if client.write_all(greeting).await.is_err() {
            return;
        }
        let _ = client.shutdown().await;
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while total < REFUSE_DRAIN {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::select! {
        () = token.cancelled() => {}
        _ = tokio::time::timeout(REFUSE_LINGER, work) => {}
    }
}

/// How one direction of a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The sender closed; the close was passed on. The other direction may
    /// go on.
    Eof,
    /// Close everything now (an error, or a cut).
    Close,
}

async fn relay(client: TcpStream, shared: &Shared, token: &CancellationToken) {
    let upstream = tokio::select! {
        () = token.cancelled() => return,
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream)) => r,
    };
    let upstream = match upstream {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %shared.upstream, error = %e, "fault proxy: cannot connect");
            return;
        }
        Err(_) => {
            tracing::debug!(upstream = %shared.upstream, "fault proxy: connect timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = upstream.into_split();
    // The tag of a FETCH whose answer is to be cut; set by the client side
    // before the command is forwarded, so it is there before the answer.
    let armed: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let up = client_to_server(client_read, server_write, shared, &armed);
    let down = server_to_client(server_read, client_write, shared, &armed);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let end = tokio::select! {
            () = token.cancelled() => return,
            end = &mut up, if !up_done => { up_done = true; end }
            end = &mut down, if !down_done => { down_done = true; end }
        };
        if end == End::Close {
            return;
        }
    }
}

async fn client_to_server(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    armed: &Mutex<Option<Vec<u8>>>,
) -> End {
    let mut buf = vec![0u8; BUFFER];
    let mut scanner = ClientScanner::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Close,
        };
        let chunk = &buf[..n];
        if shared.protocol == Protocol::Imap {
            scanner.feed(chunk, |tag| {
                let mut armed = lock(armed);
                if armed.is_none() && take_one(&shared.cut_fetches) {
                    tracing::debug!("fault proxy: will cut the answer to this FETCH");
                    *armed = Some(tag.to_vec());
                }
            });
        }
        if to.write_all(chunk).await.is_err() {
            return End::Close;
        }
    }
}

async fn server_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    armed: &Mutex<Option<Vec<u8>>>,
) -> End {
    let mut buf = vec![0u8; BUFFER];
    let mut out = Vec::with_capacity(BUFFER + MAX_TAG);
    let mut parser = ServerParser::default();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Close,
        };
        let chunk = &buf[..n];
        if shared.protocol != Protocol::Imap {
            if to.write_all(chunk).await.is_err() {
                return End::Close;
            }
            continue;
        }
        let tag = lock(armed).clone();
        out.clear();
        let cut = parser.feed(chunk, tag.as_deref(), &mut out);
        if to.write_all(&out).await.is_err() {
            return End::Close;
        }
        if cut {
            tracing::debug!("fault proxy: cut a FETCH answer");
            let _ = to.shutdown().await;
            return End::Close;
        }
    }
}

/// The last few bytes of the current line.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn extend(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL)..];
        self.bytes.extend_from_slice(data);
        let excess = self.bytes.len().saturating_sub(TAIL);
        self.bytes.drain(..excess);
    }

    /// `n` if the line (CRLF or LF included) ends with a literal's `{n}`
    /// (or `{n+}`, or `~{n}`).
    fn literal(&self) -> Option<u64> {
        let line = self.bytes.strip_suffix(b"\n")?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.strip_suffix(b"}")?;
        let line = line.strip_suffix(b"+").unwrap_or(line);
        let start = line.iter().rposition(|&b| b == b'{')?;
        let digits = &line[start + 1..];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Splits what an IMAP client says into command lines, skipping literals,
/// and reports the tag of each `TAG FETCH` / `TAG UID FETCH` command.
#[derive(Debug, Default)]
struct ClientScanner {
    /// The first bytes of the current line.
    head: Vec<u8>,
    tail: Tail,
    /// Bytes left in a literal being passed through.
    literal: u64,
    /// The current line continues a command after a literal.
    continuation: bool,
}

impl ClientScanner {
    fn feed(&mut self, data: &[u8], mut on_fetch: impl FnMut(&[u8])) {
        let mut rest = data;
        while !rest.is_empty() {
            if self.literal > 0 {
                let take = clamp(self.literal, rest.len());
                self.literal -= take as u64;
                rest = &rest[take..];
                continue;
            }
            let (part, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[part.len()..];
            let room = HEAD.saturating_sub(self.head.len());
            self.head.extend_from_slice(&part[..part.len().min(room)]);
            self.tail.extend(part);
            if !complete {
                continue;
            }
            if !self.continuation {
                if let Some(tag) = fetch_tag(&self.head) {
                    on_fetch(tag);
                }
            }
            match self.tail.literal() {
                Some(n) => {
                    self.literal = n;
                    self.continuation = true;
                }
                None => self.continuation = false,
            }
            self.head.clear();
            self.tail.clear();
        }
    }
}

/// The tag of a command line `TAG FETCH ...` or `TAG UID FETCH ...`.
fn fetch_tag(line: &[u8]) -> Option<&[u8]> {
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .filter(|w| !w.is_empty());
    let tag = words.next()?;
    if tag.len() > MAX_TAG || tag == b"*" || tag == b"+" {
        return None;
    }
    let mut command = words.next()?;
    if command.eq_ignore_ascii_case(b"UID") {
        command = words.next()?;
    }
    command.eq_ignore_ascii_case(b"FETCH").then_some(tag)
}

/// Follows what an IMAP server says (response lines and literals) and, once
/// a FETCH is armed, decides what of it still gets through.
#[derive(Debug, Default)]
struct ServerParser {
    /// Bytes left in a literal being passed through.
    literal: u64,
    /// While cutting: bytes of a literal still to forward before closing.
    cut_after: Option<u64>,
    tail: Tail,
    /// Bytes of the current line so far.
    line_len: usize,
    /// The current line continues a response after a literal.
    continuation: bool,
    /// While cutting: the start of a response line, held back until it is
    /// known not to be the tagged completion.
    held: Vec<u8>,
}

impl ServerParser {
    /// Appends to `out` what of `data` is to be forwarded; returns true when
    /// the connection is to be closed after that. `tag` is the armed FETCH's.
    fn feed(&mut self, data: &[u8], tag: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
        let mut rest = data;
        while !rest.is_empty() {
            if let Some(left) = self.cut_after {
                let take = clamp(left, rest.len());
                out.extend_from_slice(&rest[..take]);
                let left = left - take as u64;
                if left == 0 {
                    return true;
                }
                self.cut_after = Some(left);
                return false;
            }
            if self.literal > 0 {
                let take = clamp(self.literal, rest.len());
                out.extend_from_slice(&rest[..take]);
                self.literal -= take as u64;
                rest = &rest[take..];
                continue;
            }
            let b = rest[0];
            rest = &rest[1..];
            let holding = !self.continuation && self.line_len == self.held.len();
            self.line_len += 1;
            self.tail.extend(&[b]);
            match tag {
                Some(tag) if holding => {
                    self.held.push(b);
                    let matches = self
                        .held
                        .iter()
                        .zip(tag.iter().chain(b" "))
                        .all(|(a, b)| a == b);
                    if !matches {
                        out.append(&mut self.held);
                    } else if self.held.len() == tag.len() + 1 {
                        // The tagged completion: never forwarded.
                        return true;
                    }
                }
                _ => out.push(b),
            }
            if b == b'\n' {
                let literal = self.tail.literal();
                self.tail.clear();
                self.line_len = 0;
                self.held.clear();
                match literal {
                    Some(n) => {
                        self.continuation = true;
                        if tag.is_some() {
                            // Cut in the middle of the literal.
                            let keep = n / 2;
                            if keep == 0 {
                                return true;
                            }
                            self.cut_after = Some(keep);
                        } else {
                            self.literal = n;
                        }
                    }
                    None => self.continuation = false,
                }
            }
        }
        false
    }
}

/// `min(left, available)` as a slice length.
fn clamp(left: u64, available: usize) -> usize {
    usize::try_from(left).map_or(available, |l| l.min(available))
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

// Plain data behind these mutexes; a panic cannot leave it inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch_tags(chunks: &[&[u8]]) -> Vec<String> {
        let mut scanner = ClientScanner::default();
        let mut tags = Vec::new();
        for chunk in chunks {
            scanner.feed(chunk, |t| {
                tags.push(String::from_utf8_lossy(t).into_owned())
            });
        }
        tags
    }

    #[test]
    fn client_scanner_finds_fetch_commands_across_chunks() {
        assert_eq!(
            fetch_tags(&[
                b"a1 LOGIN x y\r\na2 SELECT INBOX\r\na3 UID FE",
                b"TCH 1:* BODY[]\r\n"
            ]),
            ["a3"]
        );
        assert_eq!(fetch_tags(&[b"b fetch 1 (FLAGS)\n"]), ["b"]);
        assert!(fetch_tags(&[b"c SEARCH SUBJECT FETCH\r\n", b"* FETCH\r\n"]).is_empty());
    }

    #[test]
    fn client_scanner_skips_literals() {
        // An APPEND whose message says "x FETCH": not a command.
        let tags = fetch_tags(&[
            b"a APPEND INBOX {12}\r\n",
            b"x FETCH 1\r\n",
            b"\r\nb FETCH 1 BODY[]\r\n",
        ]);
        assert_eq!(tags, ["b"]);
        let tags = fetch_tags(&[b"a APPEND INBOX {12+}\r\nx FETCH 1\r\n\r\nc UID FETCH 1 UID\r\n"]);
        assert_eq!(tags, ["c"]);
    }

    #[test]
    fn client_scanner_bounds_long_lines() {
        let mut scanner = ClientScanner::default();
        let long = vec![b'x'; 1_000_000];
        scanner.feed(&long, |_| {});
        assert!(scanner.head.len() <= HEAD && scanner.tail.bytes.len() <= TAIL);
    }

    fn run(parser: &mut ServerParser, chunks: &[&[u8]], tag: Option<&[u8]>) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for chunk in chunks {
            if parser.feed(chunk, tag, &mut out) {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn server_parser_passes_everything_when_not_armed() {
        let answer: &[u8] = b"* 1 FETCH (UID 7 BODY[] {10}\r\n0123456789)\r\na5 OK done\r\n";
        let mut p = ServerParser::default();
        let (out, cut) = run(&mut p, &[&answer[..20], &answer[20..]], None);
        assert_eq!(out, answer);
        assert!(!cut);
    }

    #[test]
    fn server_parser_cuts_inside_the_first_literal() {
        let answer: &[u8] = b"* 1 FETCH (UID 7 BODY[] {10}\r\n0123456789)\r\na5 OK done\r\n";
        for split in 1..answer.len() {
            let mut p = ServerParser::default();
            let (out, cut) = run(&mut p, &[&answer[..split], &answer[split..]], Some(b"a5"));
            assert!(cut, "split at {split}");
            assert_eq!(
                out, b"* 1 FETCH (UID 7 BODY[] {10}\r\n01234",
                "split at {split}"
            );
        }
    }

    #[test]
    fn server_parser_withholds_the_tagged_completion() {
        let answer: &[u8] = b"* 3 EXISTS\r\na55 NO nothing\r\na5 OK done\r\n";
        for split in 1..answer.len() {
            let mut p = ServerParser::default();
            let (out, cut) = run(&mut p, &[&answer[..split], &answer[split..]], Some(b"a5"));
            assert!(cut, "split at {split}");
            assert_eq!(out, b"* 3 EXISTS\r\na55 NO nothing\r\n", "split at {split}");
        }
    }

    #[test]
    fn server_parser_arms_only_at_the_next_response() {
        // Armed while an earlier literal is still coming: it passes whole,
        // and the cut falls in the next one.
        let mut p = ServerParser::default();
        let mut out = Vec::new();
        assert!(!p.feed(b"* 1 FETCH (BODY[] {6}\r\nabc", None, &mut out));
        let cut = p.feed(
            b"def)\r\n* 2 FETCH (BODY[] {4}\r\nwxyz)\r\na5 OK\r\n",
            Some(b"a5"),
            &mut out,
        );
        assert!(cut);
        assert_eq!(
            out,
            b"* 1 FETCH (BODY[] {6}\r\nabcdef)\r\n* 2 FETCH (BODY[] {4}\r\nwx"
        );
    }

    #[test]
    fn tail_reads_literal_lengths() {
        let lit = |s: &[u8]| {
            let mut t = Tail::default();
            t.extend(s);
            t.literal()
        };
        assert_eq!(lit(b"* 1 FETCH (BODY[] {123}\r\n"), Some(123));
        assert_eq!(lit(b"a APPEND INBOX {5+}\r\n"), Some(5));
        assert_eq!(lit(b"* 1 FETCH (BINARY[] ~{0}\r\n"), Some(0));
        assert_eq!(lit(b"* OK {x}\r\n"), None);
        assert_eq!(lit(b"* OK {}\r\n"), None);
        assert_eq!(lit(b"* OK done\r\n"), None);
        assert_eq!(lit(b"{99999999999999999999999}\r\n"), None);
    }
}
