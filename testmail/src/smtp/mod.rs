//! The SMTP side: accepts mail for known users on loopback and hands it to
//! [`crate::delivery`].
//!
//! A subset of RFC 5321 with PIPELINING, 8BITMIME, SIZE and AUTH PLAIN/LOGIN
//! (RFC 4954). Like a relay on loopback it also accepts unauthenticated
//! submission; AUTH only checks passwords so that clients configured with
//! credentials work.

mod command;
mod line;

use std::sync::Arc;

use base64::Engine as _;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, TcpListener, TcpStream},
};

use crate::{delivery, faults::SmtpStage, server::Context};
use command::Command;
use line::{Line, LineReader};

const HOSTNAME: &str = "testmail";

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ctx.limits.max_smtp_connections));
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "smtp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.faults.count_smtp_connection();
        // Replies are small and each one is awaited by the client.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            let _ = stream
                .write_all(b"421 4.7.0 testmail: too many connections\r\n")
                .await;
            continue;
        };
        let ctx2 = Arc::clone(&ctx);
        ctx.tasks.spawn(async move {
            tracing::debug!(%peer, "smtp connection");
            if let Err(e) = Session::new(stream, ctx2).run().await {
                tracing::debug!(%peer, error = %e, "smtp connection ended");
            }
            drop(permit);
        });
    }
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Eof,
    #[error("timed out")]
    Timeout,
    #[error("server shutting down")]
    Shutdown,
}

struct Transaction {
    recipients: Vec<String>,
    /// A fault refusal applied at RCPT; repeated for every RCPT of this
    /// transaction.
    refused_rcpt: Option<String>,
}

struct Session<W> {
    reader: LineReader<OwnedReadHalf>,
    writer: W,
    ctx: Arc<Context>,
    greeted: bool,
    authenticated: bool,
    transaction: Option<Transaction>,
    bad_commands: u32,
}

impl Session<tokio::net::tcp::OwnedWriteHalf> {
    fn new(stream: TcpStream, ctx: Arc<Context>) -> Self {
        let (r, w) = stream.into_split();
        Session {
            reader: LineReader::new(r),
            writer: w,
            ctx,
            greeted: false,
            authenticated: false,
            transaction: None,
            bad_commands: 0,
        }
    }
}

impl<W: AsyncWrite + Unpin> Session<W> {
    async fn reply(&mut self, text: &str) -> Result<(), End> {
        // One write per reply: two small writes would meet Nagle's
        // algorithm and the client's delayed ACK, costing ~40 ms a reply.
        let mut line = Vec::with_capacity(text.len() + 2);
        line.extend_from_slice(text.as_bytes());
        line.extend_from_slice(b"\r\n");
        let write = async {
            self.writer.write_all(&line).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.ctx.limits.write_timeout, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(End::Timeout),
        }
    }

    async fn read_line(&mut self, limit: usize) -> Result<Line, End> {
        quick_ack(self.reader.get_ref());
        let timeout = self.ctx.limits.smtp_timeout;
        tokio::select! {
            () = self.ctx.shutdown.cancelled() => Err(End::Shutdown),
            read = tokio::time::timeout(timeout, self.reader.read_line(limit)) => match read {
                Err(_) => Err(End::Timeout),
                Ok(Ok(Line::Eof)) => Err(End::Eof),
                Ok(line) => Ok(line?),
            },
        }
    }

    async fn run(mut self) -> Result<(), End> {
        self.reply(&format!("220 {HOSTNAME} ESMTP ready")).await?;
        let result = self.commands().await;
        match &result {
            Err(End::Shutdown) => {
                let _ = self.reply("421 4.3.2 testmail shutting down").await;
            }
            Err(End::Timeout) => {
                let _ = self.reply("421 4.4.2 timeout").await;
            }
            _ => {}
        }
        result
    }

    async fn commands(&mut self) -> Result<(), End> {
        loop {
            let limit = self.ctx.limits.max_smtp_command_line;
            let command = match self.read_line(limit).await? {
                Line::Complete(line) => command::parse(&line),
                Line::TooLong => {
                    self.bad("500 5.5.2 line too long").await?;
                    continue;
                }
                Line::Eof => return Err(End::Eof),
            };
            match command {
                Command::Ehlo(domain) => {
                    self.greeted = true;
                    self.transaction = None;
                    let max = self.ctx.limits.max_message_size;
                    self.reply(&format!(
                        "250-{HOSTNAME} greets {domain}\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                         250-ENHANCEDSTATUSCODES\r\n250-SIZE {max}\r\n250 AUTH PLAIN LOGIN"
                    ))
                    .await?;
                }
                Command::Helo(domain) => {
                    self.greeted = true;
                    self.transaction = None;
                    self.reply(&format!("250 {HOSTNAME} greets {domain}"))
                        .await?;
                }
                Command::Auth(mechanism, initial) => self.auth(&mechanism, initial).await?,
                Command::Mail { from, size } => self.mail(&from, size).await?,
                Command::Rcpt(to) => self.rcpt(to).await?,
                Command::Data => self.data().await?,
                Command::Rset => {
                    self.transaction = None;
                    self.reply("250 2.0.0 reset").await?;
                }
                Command::Noop => self.reply("250 2.0.0 ok").await?,
                Command::Quit => {
                    self.reply("221 2.0.0 bye").await?;
                    return Ok(());
                }
                Command::Vrfy => {
                    self.reply("252 2.5.2 cannot verify, but will try delivery")
                        .await?;
                }
                Command::Help => self.reply("214 2.0.0 see RFC 5321").await?,
                Command::StartTls => self.bad("502 5.5.1 STARTTLS not offered").await?,
                Command::Syntax(why) => self.bad(&format!("501 5.5.4 syntax: {why}")).await?,
                Command::Unknown => self.bad("500 5.5.2 command unrecognized").await?,
            }
        }
    }

    /// Replies with an error and counts it; too many and we hang up.
    async fn bad(&mut self, text: &str) -> Result<(), End> {
        self.bad_commands += 1;
        if self.bad_commands > self.ctx.limits.max_bad_commands {
            self.reply("421 4.7.0 too many errors").await?;
            return Err(End::Eof);
        }
        self.reply(text).await
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Result<(), End> {
        if !self.greeted {
            return self.bad("503 5.5.1 send EHLO first").await;
        }
        if self.authenticated || self.transaction.is_some() {
            return self.bad("503 5.5.1 AUTH not allowed now").await;
        }
        let credentials = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => match self.challenge("").await? {
                        Some(r) => r,
                        None => return self.bad("501 5.7.0 authentication cancelled").await,
                    },
                };
                decode(&response).and_then(|plain| {
                    let mut parts = plain.split(|&b| b == 0);
                    let (_authz, user, pass) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((
                        String::from_utf8(user.to_vec()).ok()?,
                        String::from_utf8(pass.to_vec()).ok()?,
                    ))
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(u) => Some(u),
                    None => self.challenge("VXNlcm5hbWU6").await?,
                };
                let Some(user) = user else {
                    return self.bad("501 5.7.0 authentication cancelled").await;
                };
                let Some(pass) = self.challenge("UGFzc3dvcmQ6").await? else {
                    return self.bad("501 5.7.0 authentication cancelled").await;
                };
                decode(&user).zip(decode(&pass)).and_then(|(u, p)| {
                    Some((String::from_utf8(u).ok()?, String::from_utf8(p).ok()?))
                })
            }
            _ => return self.bad("504 5.5.4 unrecognized authentication type").await,
        };
        let ok = credentials
            .is_some_and(|(user, pass)| self.ctx.store.authenticate(&user, &pass).is_some());
        if ok {
            self.authenticated = true;
            self.reply("235 2.7.0 authentication successful").await
        } else {
            self.bad("535 5.7.8 authentication credentials invalid")
                .await
        }
    }

    /// Sends a `334` challenge, returns the answer, or `None` if the client
    /// cancelled with `*` (or sent something unreadable).
    async fn challenge(&mut self, text: &str) -> Result<Option<String>, End> {
        self.reply(&format!("334 {text}")).await?;
        let limit = self.ctx.limits.max_smtp_command_line;
        match self.read_line(limit).await? {
            Line::Complete(line) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                Ok((text != "*").then_some(text))
            }
            Line::TooLong | Line::Eof => Ok(None),
        }
    }

    async fn mail(&mut self, from: &str, size: Option<u64>) -> Result<(), End> {
        if !self.greeted {
            return self.bad("503 5.5.1 send EHLO first").await;
        }
        if self.transaction.is_some() {
            return self.bad("503 5.5.1 nested MAIL command").await;
        }
        let max = self.ctx.limits.max_message_size;
        if size.is_some_and(|s| s > max as u64) {
            return self
                .reply(&format!(
                    "552 5.3.4 message size exceeds fixed limit of {max}"
                ))
                .await;
        }
        self.transaction = Some(Transaction {
            recipients: Vec::new(),
            refused_rcpt: None,
        });
        tracing::trace!(%from, "mail from");
        self.reply("250 2.1.0 ok").await
    }

    async fn rcpt(&mut self, to: String) -> Result<(), End> {
        let max = self.ctx.limits.max_recipients;
        let Some(tx) = self.transaction.as_mut() else {
            return self.bad("503 5.5.1 need MAIL before RCPT").await;
        };
        if tx.refused_rcpt.is_none() {
            if let Some(refusal) = self.ctx.faults.take_refusal(SmtpStage::Rcpt) {
                self.ctx.faults.count_refused();
                tx.refused_rcpt = Some(refusal.reply());
            }
        }
        if let Some(reply) = tx.refused_rcpt.clone() {
            return self.reply(&reply).await;
        }
        if !self.ctx.store.has_user(&to) {
            return self.reply("550 5.1.1 no such user here").await;
        }
        if tx.recipients.len() >= max {
            return self.reply("452 4.5.3 too many recipients").await;
        }
        tx.recipients.push(to);
        self.reply("250 2.1.5 ok").await
    }

    async fn data(&mut self) -> Result<(), End> {
        let Some(tx) = self.transaction.take() else {
            return self.bad("503 5.5.1 need MAIL before DATA").await;
        };
        if tx.recipients.is_empty() {
            return self.reply("554 5.5.1 no valid recipients").await;
        }
        if let Some(refusal) = self.ctx.faults.take_refusal(SmtpStage::Data) {
            self.ctx.faults.count_refused();
            return self.reply(&refusal.reply()).await;
        }
        self.reply("354 end data with <CR><LF>.<CR><LF>").await?;

        let max = self.ctx.limits.max_message_size;
        let line_limit = self.ctx.limits.max_smtp_data_line;
        let mut message = Vec::new();
        let (mut too_big, mut too_long) = (false, false);
        loop {
            let line = match self.read_line(line_limit).await? {
                Line::Complete(line) => line,
                Line::TooLong => {
                    too_long = true;
                    continue;
                }
                Line::Eof => return Err(End::Eof),
            };
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            // Dot-unstuffing (RFC 5321 4.5.2).
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if message.len() + line.len() > max {
                too_big = true;
                message.clear();
            } else if !too_big {
                message.extend_from_slice(line);
            }
        }

        if too_big {
            return self
                .reply(&format!(
                    "552 5.3.4 message size exceeds fixed limit of {max}"
                ))
                .await;
        }
        if too_long {
            return self.reply("500 5.5.6 line too long").await;
        }
        // IMAP literals cannot carry NUL, so such a message could never be
        // read back; refuse it now rather than store it.
        if message.contains(&0) {
            return self.reply("554 5.6.0 message contains NUL bytes").await;
        }
        if let Some(refusal) = self.ctx.faults.take_refusal(SmtpStage::EndOfData) {
            self.ctx.faults.count_refused();
            return self.reply(&refusal.reply()).await;
        }
        match delivery::deliver(&self.ctx, tx.recipients, message) {
            Ok(()) => {
                self.ctx.faults.count_accepted();
                self.reply("250 2.0.0 ok: queued").await
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery failed");
                self.reply("451 4.3.0 local error in processing").await
            }
        }
    }
}

/// Asks the kernel to acknowledge what we read at once instead of delaying
/// the ACK (Linux only; the kernel turns this off again by itself, hence
/// before every read).
///
/// Why: lettre writes a message and its final `\r\n.\r\n` in two writes
/// without TCP_NODELAY, so Nagle's algorithm holds the dot back until the
/// message is acknowledged, while a delayed ACK waits up to 40 ms for a
/// reply that cannot come before the dot. That stall made every mail cost
/// ~50 ms; the burst test went from 150 to over 2000 mails/s without it.
fn quick_ack(stream: &OwnedReadHalf) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream.as_ref()).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

fn decode(b64: &str) -> Option<Vec<u8>> {
    if b64 == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
}
