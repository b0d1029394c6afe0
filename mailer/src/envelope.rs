//! Signed envelopes: the unit of everything that travels.
//!
//! An envelope is a CBOR array `[version, kind, body, signer, signature]`.
//! The signature is over a domain-separated encoding of the kind and the body
//! bytes exactly as received ([`signing_input`]), so nothing is ever
//! re-encoded to be checked. [`Signed<T>`] is an envelope whose body decodes as
//! `T`; it keeps the original bytes, so re-sending or nesting it is
//! byte-for-byte faithful.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cbor::{self, CborError};
use crate::crypto::{digest, Digest, PublicKey, SecretKey, Signature, SignatureError};
use crate::limits::{MAX_ENVELOPE_BYTES, MAX_KIND_LEN};

/// The protocol tag that starts every signed input. A signature made for this
/// protocol can never be mistaken for one made for anything else.
pub const PROTOCOL_TAG: &[u8] = b"emoney-mail/1";
/// The envelope format version this code writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// Why an envelope or its body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("envelope is not valid CBOR: {0}")]
    Cbor(#[from] CborError),
    #[error("envelope version {0} is not supported (this software reads version 1)")]
    UnsupportedVersion(u64),
    #[error("{0:?} is not a valid message kind")]
    BadKind(String),
    #[error("expected a {expected:?} envelope, found {found:?}")]
    WrongKind {
        expected: &'static str,
        found: String,
    },
    #[error("bad signature on {kind:?}: {source}")]
    Signature {
        kind: String,
        #[source]
        source: SignatureError,
    },
    #[error("{kind:?} must be signed by {expected}, but is signed by {found}")]
    WrongSigner {
        kind: String,
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("body of {kind:?} does not decode: {source}")]
    Body {
        kind: String,
        #[source]
        source: CborError,
    },
    #[error("body of {kind:?} breaks a limit: {what}")]
    Limit { kind: String, what: String },
}

/// The bytes an envelope's signature covers:
/// `PROTOCOL_TAG || 0x00 || len(kind) as u8 || kind || body`.
pub fn signing_input(kind: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(PROTOCOL_TAG.len() + 2 + kind.len() + body.len());
    v.extend_from_slice(PROTOCOL_TAG);
    v.push(0);
    // Kinds are at most MAX_KIND_LEN (< 256) bytes: checked on every path in.
    v.push(kind.len() as u8);
    v.extend_from_slice(kind.as_bytes());
    v.extend_from_slice(body);
    v
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A signed envelope whose body has not been interpreted yet.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    kind: String,
    body: Vec<u8>,
    signer: PublicKey,
    signature: Signature,
}

impl Envelope {
    /// Signs `body` as a message of `kind` with `key`.
    pub fn seal(kind: &str, body: Vec<u8>, key: &SecretKey) -> Result<Envelope, EnvelopeError> {
        if !valid_kind(kind) {
            return Err(EnvelopeError::BadKind(kind.to_string()));
        }
        let signature = key.sign(&signing_input(kind, &body));
        Ok(Envelope {
            kind: kind.to_string(),
            body,
            signer: key.public(),
            signature,
        })
    }

    /// Assembles an envelope from its parts, as received; nothing is checked
    /// but the kind's syntax. Call [`Envelope::verify`] before trusting it.
    pub fn from_parts(
        kind: String,
        body: Vec<u8>,
        signer: PublicKey,
        signature: Signature,
    ) -> Result<Envelope, EnvelopeError> {
        if !valid_kind(&kind) {
            return Err(EnvelopeError::BadKind(kind.chars().take(64).collect()));
        }
        Ok(Envelope {
            kind,
            body,
            signer,
            signature,
        })
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The bytes the signature covers ([`signing_input`] of kind and body),
    /// for batch verification ([`crate::crypto::verify_batch`]).
    pub fn signed_bytes(&self) -> Vec<u8> {
        signing_input(&self.kind, &self.body)
    }

    /// Checks the signature over the received bytes.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        self.signer
            .verify(&self.signed_bytes(), &self.signature)
            .map_err(|source| EnvelopeError::Signature {
                kind: self.kind.clone(),
                source,
            })
    }

    /// Checks the signature and that it was made by `expected`.
    pub fn verify_signer(&self, expected: &PublicKey) -> Result<(), EnvelopeError> {
        if &self.signer != expected {
            return Err(EnvelopeError::WrongSigner {
                kind: self.kind.clone(),
                expected: *expected,
                found: self.signer,
            });
        }
        self.verify()
    }

    /// The envelope's identity: a digest of kind, body and signer (not of the
    /// signature, so that the identity of what was said does not depend on
    /// how the signature happens to be encoded). Replies name requests by it,
    /// notes name their states by it, and daemons deduplicate by it.
    pub fn id(&self) -> Digest {
        digest(&[
            PROTOCOL_TAG,
            b"envelope-id",
            self.kind.as_bytes(),
            &self.body,
            self.signer.as_bytes(),
        ])
    }

    /// The envelope as it travels (CBOR).
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(cbor::to_vec(self)?)
    }

    /// Reads one envelope, enforcing the size limit and the version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let raw: RawEnvelope = cbor::from_slice(bytes, MAX_ENVELOPE_BYTES)?;
        raw.into_envelope()
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .field("signer", &self.signer.fingerprint())
            .finish()
    }
}

/// The wire shape of an envelope: a 5-element CBOR array.
#[derive(Serialize, Deserialize)]
struct RawEnvelope(
    u64,
    String,
    #[serde(with = "serde_bytes")] Vec<u8>,
    PublicKey,
    Signature,
);

impl RawEnvelope {
    fn into_envelope(self) -> Result<Envelope, EnvelopeError> {
        let RawEnvelope(version, kind, body, signer, signature) = self;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        Envelope::from_parts(kind, body, signer, signature)
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Borrowing the fields would need a second struct; envelopes are
        // small next to the cost of signing them, so a clone is fine.
        RawEnvelope(
            ENVELOPE_VERSION,
            self.kind.clone(),
            self.body.clone(),
            self.signer,
            self.signature,
        )
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RawEnvelope::deserialize(d)?
            .into_envelope()
            .map_err(serde::de::Error::custom)
    }
}

/// A type that travels as the body of a signed envelope of kind `KIND`.
pub trait Body: Serialize + DeserializeOwned + Clone + fmt::Debug {
    /// The envelope kind, e.g. `"link"` or `"offer"`.
    const KIND: &'static str;

    /// Checks the body's own limits (list lengths, text sizes) after decoding.
    fn check_limits(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An envelope whose body decoded as `T`. The signature is NOT checked on
/// decode: reach the body through [`Signed::verify`] or
/// [`Signed::verify_signer`]; [`Signed::unverified`] is for code that has
/// checked the signature another way (a batch) or only displays it.
#[derive(Clone)]
pub struct Signed<T> {
    envelope: Envelope,
    body: T,
}

impl<T: Body> Signed<T> {
    /// Encodes and signs `body` with `key`.
    pub fn sign(body: T, key: &SecretKey) -> Result<Signed<T>, EnvelopeError> {
        let bytes = cbor::to_vec(&body)?;
        let envelope = Envelope::seal(T::KIND, bytes, key)?;
        Ok(Signed { envelope, body })
    }

    /// Interprets an envelope as a `T`: checks the kind, decodes the body and
    /// its limits. Does not check the signature.
    pub fn from_envelope(envelope: Envelope) -> Result<Signed<T>, EnvelopeError> {
        if envelope.kind != T::KIND {
            return Err(EnvelopeError::WrongKind {
                expected: T::KIND,
                found: envelope.kind,
            });
        }
        let body: T = cbor::from_slice(&envelope.body, MAX_ENVELOPE_BYTES).map_err(|source| {
            EnvelopeError::Body {
                kind: T::KIND.to_string(),
                source,
            }
        })?;
        body.check_limits().map_err(|what| EnvelopeError::Limit {
            kind: T::KIND.to_string(),
            what,
        })?;
        Ok(Signed { envelope, body })
    }

    /// Checks the signature, then gives the body.
    pub fn verify(&self) -> Result<&T, EnvelopeError> {
        self.envelope.verify()?;
        Ok(&self.body)
    }

    /// Checks that `expected` signed it, then gives the body.
    pub fn verify_signer(&self, expected: &PublicKey) -> Result<&T, EnvelopeError> {
        self.envelope.verify_signer(expected)?;
        Ok(&self.body)
    }

    /// The body without checking the signature. See the type's docs.
    pub fn unverified(&self) -> &T {
        &self.body
    }

    pub fn signer(&self) -> &PublicKey {
        &self.envelope.signer
    }
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }
    /// See [`Envelope::id`].
    pub fn id(&self) -> Digest {
        self.envelope.id()
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.envelope == other.envelope
    }
}
impl<T> Eq for Signed<T> {}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("signer", &self.envelope.signer.fingerprint())
            .field("body", &self.body)
            .finish()
    }
}

impl<T> Serialize for Signed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.envelope.serialize(s)
    }
}

impl<'de, T: Body> Deserialize<'de> for Signed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let envelope = Envelope::deserialize(d)?;
        Signed::from_envelope(envelope).map_err(serde::de::Error::custom)
    }
}

/// Fails with a limit message when `len > max`.
pub fn check_len(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        Err(format!(
            "{what} has {len} entries, more than the limit of {max}"
        ))
    } else {
        Ok(())
    }
}

/// Fails with a limit message when `text` is longer than `max` bytes.
pub fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        Err(format!(
            "{what} is {} bytes, more than the limit of {max}",
            text.len()
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
    struct Ping {
        n: u32,
        text: String,
    }
    impl Body for Ping {
        const KIND: &'static str = "ping";
        fn check_limits(&self) -> Result<(), String> {
            check_text("text", &self.text, 10)
        }
    }

    fn key() -> SecretKey {
        SecretKey::from_seed([3; 32])
    }

    #[test]
    fn round_trip_keeps_bytes_and_verifies() {
        let s = Signed::sign(
            Ping {
                n: 5,
                text: "hi".into(),
            },
            &key(),
        )
        .unwrap();
        let bytes = s.envelope().to_bytes().unwrap();
        let env = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(env.to_bytes().unwrap(), bytes);
        let back: Signed<Ping> = Signed::from_envelope(env).unwrap();
        assert_eq!(back.verify().unwrap().n, 5);
        back.verify_signer(&key().public()).unwrap();
        assert_eq!(back.id(), s.id());
    }

    #[test]
    fn tampering_any_part_fails() {
        let s = Signed::sign(
            Ping {
                n: 5,
                text: "hi".into(),
            },
            &key(),
        )
        .unwrap();
        let e = s.envelope().clone();
        // Body.
        let mut body = e.body().to_vec();
        let last = body.len() - 1;
        body[last] ^= 1;
        let t = Envelope::from_parts(e.kind().into(), body, *e.signer(), *e.signature()).unwrap();
        assert!(matches!(t.verify(), Err(EnvelopeError::Signature { .. })));
        // Kind (domain separation: same body, other kind).
        let t = Envelope::from_parts(
            "pong".into(),
            e.body().to_vec(),
            *e.signer(),
            *e.signature(),
        )
        .unwrap();
        assert!(t.verify().is_err());
        // Signer.
        let other = SecretKey::from_seed([4; 32]).public();
        let t = Envelope::from_parts(e.kind().into(), e.body().to_vec(), other, *e.signature())
            .unwrap();
        assert!(t.verify().is_err());
        assert!(matches!(
            e.verify_signer(&other),
            Err(EnvelopeError::WrongSigner { .. })
        ));
        // Signature.
        let mut sig = *e.signature();
        sig.0[10] ^= 0x40;
        let t = Envelope::from_parts(e.kind().into(), e.body().to_vec(), *e.signer(), sig).unwrap();
        assert!(t.verify().is_err());
    }

    #[test]
    fn refuses_bad_kinds_versions_and_limits() {
        assert!(Envelope::seal("Bad Kind", vec![], &key()).is_err());
        assert!(Envelope::seal(&"x".repeat(49), vec![], &key()).is_err());
        let good = Envelope::seal("ping", vec![], &key()).unwrap();
        let raw = RawEnvelope(2, "ping".into(), vec![], *good.signer(), *good.signature());
        let bytes = cbor::to_vec(&raw).unwrap();
        assert_eq!(
            Envelope::from_bytes(&bytes),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        let long = Signed::sign(
            Ping {
                n: 1,
                text: "x".repeat(11),
            },
            &key(),
        )
        .unwrap();
        assert!(matches!(
            Signed::<Ping>::from_envelope(long.into_envelope()),
            Err(EnvelopeError::Limit { .. })
        ));
        let wrong = Envelope::seal("pong", vec![], &key()).unwrap();
        assert!(matches!(
            Signed::<Ping>::from_envelope(wrong),
            Err(EnvelopeError::WrongKind { .. })
        ));
        let junk = Envelope::seal("ping", vec![0xff, 0x00], &key()).unwrap();
        assert!(matches!(
            Signed::<Ping>::from_envelope(junk),
            Err(EnvelopeError::Body { .. })
        ));
    }

    #[test]
    fn signing_input_is_domain_separated() {
        assert_ne!(signing_input("ab", b"c"), signing_input("a", b"bc"));
        assert!(signing_input("k", b"b").starts_with(PROTOCOL_TAG));
    }
}
