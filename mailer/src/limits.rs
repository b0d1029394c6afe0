//! Hard limits on everything that comes from outside.
//!
//! Each is checked before the work it bounds, so hostile input costs us at
//! most these amounts of memory and time. They are part of the protocol:
//! a peer that exceeds one gets a clear error, never a partial result.

/// Largest encoded envelope (one CBOR attachment), in bytes.
pub const MAX_ENVELOPE_BYTES: usize = 2 * 1024 * 1024;
/// Largest email we parse at all, in bytes (base64 costs 4/3).
pub const MAX_MAIL_BYTES: usize = 12 * 1024 * 1024;
/// Most CBOR attachments one email may carry.
pub const MAX_ATTACHMENTS: usize = 4;
/// Longest message kind, in bytes.
pub const MAX_KIND_LEN: usize = 48;
/// Most links in one note's path from its issuance to its holder.
pub const MAX_CHAIN: usize = 32;
/// Most notes in one message (payment, withdrawal, deposit).
pub const MAX_NOTES: usize = 64;
/// Most licenses carried beside the notes of one message.
pub const MAX_LICENSES: usize = 256;
/// Most entries in a revocation list.
pub const MAX_REVOCATIONS: usize = 100_000;
/// Most rates in a rate sheet.
pub const MAX_RATES: usize = 256;
/// Longest free text (memo, reason, account name), in bytes.
pub const MAX_TEXT: usize = 2_000;
/// Most pieces of evidence attached to an error reply.
pub const MAX_EVIDENCE: usize = 8;
/// Most links one overspend proof may name as conflicting.
pub const MAX_CONFLICTING: usize = 1_024;
/// Most links the overspend check accepts for one note.
pub const MAX_LINKS_PER_NOTE: usize = 100_000;
/// How far a signed time may lie in the future before we call it a lie
/// (clocks of people's computers drift).
pub const MAX_CLOCK_SKEW_SECS: u64 = 15 * 60;
