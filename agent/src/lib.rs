//! The exchange agent: an untrusted party that swaps currencies with users in
//! the three phases of the NTT paper (negotiation with a signed offer, first
//! payment, second payment against a signed request). The protocol it speaks is
//! defined in `mailer`.
