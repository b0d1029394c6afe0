//! The IMAP side: IMAP4rev1 (RFC 3501) with IDLE (RFC 2177), MOVE (RFC
//! 6851), UIDPLUS (RFC 4315), LITERAL+ (RFC 7888), SASL-IR and UNSELECT.
//!
//! Commands are parsed by imap-codec through imap-next's server state
//! machine (literals, AUTHENTICATE and IDLE continuations); `conn` does the
//! socket I/O around it and `session` the semantics.
//!
//! Not supported (answered BAD): ENVELOPE, BODYSTRUCTURE, BODY, BINARY,
//! multipart section numbers beyond `1`, STARTTLS, COMPRESS, ENABLE.

mod conn;
mod fetch;
mod message;
mod response;
mod search;
mod sequence;
mod session;

use std::sync::Arc;

use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::server::Context;

/// Accepts connections until shutdown.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(ctx.limits.max_imap_connections));
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "imap accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.faults.count_imap_connection();
        // Responses are written whole; don't let Nagle hold back the tail.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            let _ = stream.write_all(b"* BYE too many connections\r\n").await;
            continue;
        };
        let ctx2 = Arc::clone(&ctx);
        ctx.tasks.spawn(async move {
            tracing::debug!(%peer, "imap connection");
            if let Err(e) = session::Session::new(stream, ctx2).run().await {
                tracing::debug!(%peer, error = %e, "imap connection ended");
            }
            drop(permit);
        });
    }
}
