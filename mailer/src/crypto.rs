//! Keys, signatures, digests and random identifiers.
//!
//! The only place that touches ed25519-dalek and sha2 directly. Byte-string
//! newtypes serialize as CBOR byte strings (not arrays of integers) and refuse
//! any other length on decode.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};

/// Failure to verify a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("public key {0} is not a valid ed25519 key")]
    BadKey(Fingerprint),
    #[error("public key {0} is a weak (small-order) key and is refused")]
    WeakKey(Fingerprint),
    #[error("signature does not verify under key {0}")]
    Invalid(Fingerprint),
}

macro_rules! fixed_bytes {
    ($(#[$m:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $len]>::try_from(b).ok().map($name)
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            pub fn from_hex(s: &str) -> Option<Self> {
                let v = hex::decode(s.trim()).ok()?;
                Self::from_slice(&v)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes ({})", $len, $what)
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        $name::from_slice(v).ok_or_else(|| E::invalid_length(v.len(), &self))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    };
}

fixed_bytes!(
    /// An ed25519 public key. Cards, issuers and agents are known only by
    /// their public keys (pseudonyms).
    PublicKey,
    32,
    "an ed25519 public key"
);
fixed_bytes!(
    /// An ed25519 signature.
    Signature,
    64,
    "an ed25519 signature"
);
fixed_bytes!(
    /// A SHA-256 digest: identifies envelopes, note states and messages.
    Digest,
    32,
    "a SHA-256 digest"
);
fixed_bytes!(
    /// A payee's payment challenge: fresh random bytes chosen by whoever is to
    /// be paid, so that a payment signature is good for that payee, that
    /// occasion, and nothing else.
    Challenge,
    32,
    "a payment challenge"
);
fixed_bytes!(
    /// A random identifier (transaction id, request id, note serial).
    Id,
    16,
    "a random identifier"
);

impl PublicKey {
    /// The short form shown to people and used in logs: the first 16 hex
    /// digits. Pinning always uses the full key ([`PublicKey::to_hex`]).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(*self)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        let vk = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| SignatureError::BadKey(self.fingerprint()))?;
        if vk.is_weak() {
            return Err(SignatureError::WeakKey(self.fingerprint()));
        }
        Ok(vk)
    }

    /// Verifies `sig` over `msg` under this key.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let vk = self.verifying_key()?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify(msg, &sig)
            .map_err(|_| SignatureError::Invalid(self.fingerprint()))
    }
}

/// Verifies many (key, message, signature) triples at once, which costs
/// about 40% of verifying them one by one. All must be valid; on failure the
/// caller re-verifies one by one to learn which.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &Signature)]) -> Result<(), SignatureError> {
    let mut keys = Vec::with_capacity(items.len());
    let mut msgs = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    for (k, m, s) in items {
        if !canonical_r(s) {
            return Err(SignatureError::Invalid(k.fingerprint()));
        }
        keys.push(k.verifying_key()?);
        msgs.push(*m);
        sigs.push(ed25519_dalek::Signature::from_bytes(&s.0));
    }
    ed25519_dalek::verify_batch(&msgs, &sigs, &keys).map_err(|_| {
        SignatureError::Invalid(
            items
                .first()
                .map_or(Fingerprint(PublicKey([0; 32])), |(k, _, _)| k.fingerprint()),
        )
    })
}

/// Whether the first half of `sig` (the point R) is in its one canonical
/// encoding. [`PublicKey::verify`] compares R's encoding with the one it
/// computes, so it refuses any other encoding; the batch equation decodes R
/// and would take one (y at or above the field's prime, or x = 0 with the
/// sign bit set). Refusing them here keeps the batch from accepting a
/// signature that one-by-one verification refuses.
fn canonical_r(sig: &Signature) -> bool {
    let r = &sig.0[..32];
    let sign = r[31] & 0x80 != 0;
    let top = r[31] & 0x7f;
    let middle_all = |b: u8| r[1..31].iter().all(|&x| x == b);
    // p = 2^255 - 19: 0xed, 30 bytes of 0xff, 0x7f (little-endian).
    let at_least_p = top == 0x7f && middle_all(0xff) && r[0] >= 0xed;
    let y_is_one = top == 0 && middle_all(0) && r[0] == 1;
    let y_is_minus_one = top == 0x7f && middle_all(0xff) && r[0] == 0xec;
    !at_least_p && !(sign && (y_is_one || y_is_minus_one))
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", &self.to_hex()[..16])
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Challenge({})", self.to_hex())
    }
}
impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.to_hex())
    }
}
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The short printable form of a public key (first 8 bytes in hex).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(PublicKey);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0 .0[..8]))
    }
}
impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A secret signing key. Debug output never shows the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> SecretKey {
        SecretKey(SigningKey::generate(&mut OsRng))
    }
    /// The key with this 32-byte seed (for stored keys and test vectors).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }
    /// The 32-byte seed, for storing the key. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().fingerprint())
    }
}

/// SHA-256 over the concatenation of `parts`, each prefixed by its length so
/// that no two different lists of parts hash alike.
pub fn digest(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    Digest(h.finalize().into())
}

/// Fresh random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsRng.fill_bytes(&mut b);
    b
}

impl Challenge {
    pub fn random() -> Challenge {
        Challenge(random_bytes())
    }
}

impl Id {
    pub fn random() -> Id {
        Id(random_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let k = SecretKey::from_seed([7; 32]);
        let sig = k.sign(b"hello");
        k.public().verify(b"hello", &sig).unwrap();
        assert!(matches!(
            k.public().verify(b"hellO", &sig),
            Err(SignatureError::Invalid(_))
        ));
        let other = SecretKey::from_seed([8; 32]).public();
        assert!(other.verify(b"hello", &sig).is_err());
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let sig = Signature([0; 64]);
        assert!(matches!(
            PublicKey(identity).verify(b"x", &sig),
            Err(SignatureError::WeakKey(_))
        ));
        // Not a point on the curve.
        let mut bad = [0xffu8; 32];
        bad[31] = 0x7f;
        assert!(PublicKey(bad).verify(b"x", &sig).is_err());
    }

    #[test]
    fn batch_verification_agrees() {
        let keys: Vec<SecretKey> = (0..5u8).map(|i| SecretKey::from_seed([i; 32])).collect();
        let pubs: Vec<PublicKey> = keys.iter().map(SecretKey::public).collect();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
        let items: Vec<(&PublicKey, &[u8], &Signature)> = pubs
            .iter()
            .zip(&msgs)
            .zip(&sigs)
            .map(|((p, m), s)| (p, m.as_slice(), s))
            .collect();
        verify_batch(&items).unwrap();
        let mut bad = items.clone();
        bad[3].1 = b"tampered";
        assert!(verify_batch(&bad).is_err());
    }

    #[test]
    fn batch_refuses_what_single_verification_refuses() {
        use curve25519_dalek::scalar::Scalar;
        use sha2::Sha512;
        // A signature whose R is the identity written with the sign bit set
        // (a non-canonical encoding), made by the key's owner: s = H(R, A, M) a.
        let seed = [3u8; 32];
        let key = SecretKey::from_seed(seed);
        let public = key.public();
        let msg = b"the same message";
        let mut expanded = [0u8; 32];
        expanded.copy_from_slice(&Sha512::digest(seed)[..32]);
        expanded[0] &= 248;
        expanded[31] &= 127;
        expanded[31] |= 64;
        let a = Scalar::from_bytes_mod_order(expanded);
        let mut r = [0u8; 32];
        r[0] = 1;
        r[31] = 0x80;
        let mut h = Sha512::new();
        h.update(r);
        h.update(public.as_bytes());
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice((k * a).as_bytes());
        let sig = Signature(sig);
        assert!(public.verify(msg, &sig).is_err());
        assert!(verify_batch(&[(&public, msg.as_slice(), &sig)]).is_err());
        // The same with the canonical encoding of the identity is good both ways.
        let mut canonical = sig;
        canonical.0[31] = 0;
        let mut h = Sha512::new();
        h.update(&canonical.0[..32]);
        h.update(public.as_bytes());
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        canonical.0[32..].copy_from_slice((k * a).as_bytes());
        public.verify(msg, &canonical).unwrap();
        verify_batch(&[(&public, msg.as_slice(), &canonical)]).unwrap();
    }

    #[test]
    fn digest_is_length_prefixed() {
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(digest(&[b"ab"]), digest(&[b"ab"]));
    }

    #[test]
    fn secret_key_debug_hides_secret() {
        let k = SecretKey::from_seed([9; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.contains(&hex::encode([9u8; 32])));
    }
}
