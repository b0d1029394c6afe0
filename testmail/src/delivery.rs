//! Putting accepted mail into INBOXes, with the delivery faults (duplicate,
//! delay) applied. SMTP calls this after it has the whole message; IMAP
//! never does.

use std::sync::Arc;

use crate::{error::Result, server::Context};

/// Delivers `message` to each recipient's INBOX, now or after the delay
/// fault. An error is returned only for an immediate delivery; a delayed one
/// can only be logged, since SMTP has already said yes.
pub(crate) fn deliver(ctx: &Arc<Context>, recipients: Vec<String>, message: Vec<u8>) -> Result<()> {
    let copies = if ctx.faults.take_duplicate() { 2 } else { 1 };
    let delay = ctx.faults.delay();
    if delay.is_zero() {
        return store_all(ctx, &recipients, &message, copies);
    }
    let ctx2 = Arc::clone(ctx);
    ctx.tasks.spawn(async move {
        // On shutdown, deliver at once rather than lose mail we said 250 to.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx2.shutdown.cancelled() => {}
        }
        if let Err(e) = store_all(&ctx2, &recipients, &message, copies) {
            tracing::error!(error = %e, "delayed delivery failed");
        }
    });
    Ok(())
}

fn store_all(ctx: &Context, recipients: &[String], message: &[u8], copies: u32) -> Result<()> {
    for recipient in recipients {
        for _ in 0..copies {
            let uid = ctx.store.deliver(recipient, message)?;
            ctx.faults.count_delivered();
            tracing::debug!(%recipient, uid, bytes = message.len(), "delivered");
        }
    }
    Ok(())
}
