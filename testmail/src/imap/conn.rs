//! The I/O half of an IMAP connection: feeds socket bytes to imap-next's
//! sans-I/O server state machine and writes what it wants written.
//!
//! We drive imap-next ourselves instead of using its `Stream`, for two
//! reasons: while a client IDLEs we must also wake up for mailbox changes,
//! fault hooks and shutdown; and the drop-mid-FETCH fault needs to write
//! part of one response and then hang up, which only the writer can do.

use std::time::Duration;

use imap_next::{
    server::{Error as ProtocolError, Event, Server},
    Interrupt, Io, State,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// What woke the session up.
#[derive(Debug)]
pub(crate) enum Input {
    Event(Event),
    /// imap-next could not make sense of the input (already discarded).
    Error(ProtocolError),
    /// The selected mailbox changed; only reported while idling.
    MailboxChanged,
    /// The drop-IDLE fault fired; only reported while idling.
    IdleKilled,
    Shutdown,
    /// Nothing from the client for the autologout time.
    Timeout,
}

/// Why the connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum End {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("write timed out")]
    WriteTimeout,
    #[error("cut mid-response by fault injection")]
    Cut,
}

/// What to wait for besides client input.
#[derive(Debug)]
pub(crate) struct Waits<'a> {
    pub shutdown: &'a CancellationToken,
    pub autologout: Duration,
    /// Set while idling.
    pub mailbox: Option<&'a mut watch::Receiver<u64>>,
    /// Set while idling.
    pub idle_kill: Option<&'a mut watch::Receiver<u64>>,
}

pub(crate) struct Conn {
    stream: TcpStream,
    pub server: Server,
    write_timeout: Duration,
    /// Set by the drop-mid-FETCH fault: write part of the next output, then
    /// hang up.
    pub cut_next_output: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, server: Server, write_timeout: Duration) -> Self {
        Conn {
            stream,
            server,
            write_timeout,
            cut_next_output: false,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let bytes = if self.cut_next_output {
            // At least one byte and never all of them, so the client sees
            // a response that has begun and will never end.
            &bytes[..(bytes.len() / 2).max(1).min(bytes.len().saturating_sub(1))]
        } else {
            bytes
        };
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Err(_) => return Err(End::WriteTimeout),
            Ok(result) => result?,
        }
        if self.cut_next_output {
            // Closing without shutdown(): no orderly FIN handshake matters
            // here, the client just sees the connection end.
            return Err(End::Cut);
        }
        Ok(())
    }

    /// Writes everything queued, then waits for the next thing to handle.
    pub(crate) async fn next(&mut self, waits: Waits<'_>) -> Result<Input, End> {
        let Waits {
            shutdown,
            autologout,
            mut mailbox,
            mut idle_kill,
        } = waits;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.server.next() {
                Ok(Event::GreetingSent { .. } | Event::ResponseSent { .. }) => {}
                Ok(event) => return Ok(Input::Event(event)),
                Err(Interrupt::Io(Io::Output(bytes))) => self.write(&bytes).await?,
                Err(Interrupt::Error(e)) => return Ok(Input::Error(e)),
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let changed = async {
                        match mailbox.as_deref_mut() {
                            // A closed channel (mailbox deleted) is a change too.
                            Some(rx) => rx.changed().await.unwrap_or(()),
                            None => std::future::pending().await,
                        }
                    };
                    let killed = async {
                        if let Some(rx) = idle_kill.as_deref_mut() {
                            if rx.changed().await.is_ok() {
                                return;
                            }
                        }
                        std::future::pending::<()>().await;
                    };
                    quick_ack(&self.stream);
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(Input::Shutdown),
                        () = killed => return Ok(Input::IdleKilled),
                        () = changed => return Ok(Input::MailboxChanged),
                        read = tokio::time::timeout(autologout, self.stream.read(&mut buf)) => {
                            match read {
                                Err(_) => return Ok(Input::Timeout),
                                Ok(Ok(0)) => return Err(End::Closed),
                                Ok(Ok(n)) => self.server.enqueue_input(&buf[..n]),
                                Ok(Err(e)) => return Err(e.into()),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes everything queued (a last BYE, say) before the connection is
    /// closed; input still buffered is ignored.
    pub(crate) async fn flush(&mut self) -> Result<(), End> {
        loop {
            match self.server.next() {
                Err(Interrupt::Io(Io::Output(bytes))) => self.write(&bytes).await?,
                Err(Interrupt::Io(Io::NeedMoreInput) | Interrupt::Error(_)) => return Ok(()),
                Ok(Event::GreetingSent { .. } | Event::ResponseSent { .. }) => {}
                Ok(_) => {}
            }
        }
    }
}

/// Asks the kernel to acknowledge what we read at once instead of delaying
/// the ACK (Linux only; the kernel turns this off again by itself, hence
/// before every read).
///
/// Why: async-imap writes a command in more than one write without
/// TCP_NODELAY, so Nagle's algorithm holds the rest of the line back until
/// its start is acknowledged, while a delayed ACK waits up to 40 ms for a
/// reply that cannot come before the line is whole: every command cost
/// 44 ms. Dovecot shows no such stall; see also `smtp::quick_ack`.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}
