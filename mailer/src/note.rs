//! Notes: an issuance and a chain of payment links, and their offline
//! verification.
//!
//! The issuer signs an [`Issuance`] of a value to a card's payment key. Each
//! payment appends a [`Link`], signed by the payment key that holds the note
//! at that point, naming the payee's payment key, the amount and the payee's
//! challenge. A link may carry part of what its signer held; the rest stays
//! with the signer, who may sign further links from the same state. So a
//! note's history is a tree whose nodes are *states*: the issuance, or a
//! link (held by its payee, worth its amount). A [`Note`] as it travels is the
//! path from the issuance to one state. A state is named by the id of the
//! envelope that created it ([`crate::envelope::Envelope::id`]).

use serde::{Deserialize, Serialize};

use crate::crypto::{verify_batch, Challenge, Digest, Id, PublicKey, SecretKey, Signature};
use crate::envelope::{Body, Envelope, EnvelopeError, Signed};
use crate::license::{LicenseBook, Revocations};
use crate::limits::{MAX_CHAIN, MAX_CLOCK_SKEW_SECS};
use crate::money::{Amount, Currency, Timestamp};

/// The issuer's creation of a note: `value` of `currency`, held by the card
/// whose payment key is `holder`. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Issuance {
    /// Random serial, so that two notes of equal value to one card differ.
    pub serial: Id,
    pub currency: Currency,
    pub value: Amount,
    pub holder: PublicKey,
    pub issued_at: Timestamp,
    /// After this instant the note is no longer accepted in payment; its
    /// holder can still deposit it ([`NotePolicy::accept_expired`]).
    pub expires_at: Timestamp,
}

impl Body for Issuance {
    const KIND: &'static str = "issuance";
}

/// A payment signature: the holder of state `parent` transfers `amount` of it
/// to the card whose payment key is `payee`, against that payee's
/// `challenge`. Signed by the holder of `parent`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Link {
    pub parent: Digest,
    pub payee: PublicKey,
    pub amount: Amount,
    pub challenge: Challenge,
    pub signed_at: Timestamp,
}

impl Body for Link {
    const KIND: &'static str = "link";
}

/// A note as it travels: the issuance and the path of links to its current
/// state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Note {
    pub issuance: Signed<Issuance>,
    pub links: Vec<Signed<Link>>,
}

/// One state on a note's path: who holds it and how much it was worth when
/// created (before any links out of it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StateView {
    pub id: Digest,
    pub holder: PublicKey,
    pub value: Amount,
}

/// What verification established about a note.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NoteView {
    /// The note's identity: the id of its issuance.
    pub note: Digest,
    pub currency: Currency,
    /// The value the issuer issued.
    pub value: Amount,
    pub expires_at: Timestamp,
    /// Every state from the issuance (index 0) to the current one (last).
    pub states: Vec<StateView>,
}

impl NoteView {
    /// The current state (the last on the path).
    pub fn current(&self) -> &StateView {
        // `states` always holds at least the issuance state.
        &self.states[self.states.len() - 1]
    }
}

/// Exactly which check a note failed. `index` counts links from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("note has {len} links, more than the limit of {max}")]
    ChainTooLong { len: usize, max: usize },
    #[error("note is issued by {found}, not by the issuer of this currency ({expected})")]
    UnknownIssuer {
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("issuer's signature on the note does not verify")]
    IssuanceSignature(#[source] EnvelopeError),
    #[error("note is in {found}, expected {expected}")]
    WrongCurrency { expected: Currency, found: Currency },
    #[error("note has no value")]
    ZeroValue,
    #[error("note expires before it is issued")]
    BadLifetime,
    #[error("note is issued in the future ({issued_at}, now {now})")]
    IssuedInFuture {
        issued_at: Timestamp,
        now: Timestamp,
    },
    #[error("note expired at {expires_at} (now {now})")]
    Expired {
        expires_at: Timestamp,
        now: Timestamp,
    },
    #[error("link {index} does not continue the chain (its parent is not the previous state)")]
    BrokenChain { index: usize },
    #[error("link {index} is signed by {found}, but the note was held by {expected}")]
    WrongSigner {
        index: usize,
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("signature of link {index} does not verify")]
    LinkSignature {
        index: usize,
        #[source]
        source: EnvelopeError,
    },
    #[error("link {index} transfers nothing")]
    ZeroAmount { index: usize },
    #[error("link {index} transfers {amount} but its signer held only {held}")]
    AmountExceedsHeld {
        index: usize,
        amount: u64,
        held: u64,
    },
    #[error("link {index} was signed after the note expired")]
    SignedAfterExpiry { index: usize },
    #[error("link {index} is dated before the payment that gave its signer the note")]
    SignedBeforeParent { index: usize },
    #[error("link {index} is dated in the future ({signed_at}, now {now})")]
    SignedInFuture {
        index: usize,
        signed_at: Timestamp,
        now: Timestamp,
    },
    #[error("link {index} is signed by {key}, which has no license from the issuer")]
    NotLicensed { index: usize, key: PublicKey },
    #[error("link {index} is signed by {key} at {at}, outside its license")]
    LicenseNotValid {
        index: usize,
        key: PublicKey,
        at: Timestamp,
    },
    #[error("link {index} is signed by {key}, revoked since {revoked_at}")]
    Revoked {
        index: usize,
        key: PublicKey,
        revoked_at: Timestamp,
    },
    #[error("note was expected to come fresh from the issuer, but carries {0} link(s)")]
    NotFresh(usize),
    #[error("note carries no payment to us (no links)")]
    NoPayment,
    #[error("note is held by {found}, expected {expected}")]
    WrongHolder {
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("last link pays {found}, expected our key {expected}")]
    WrongPayee {
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("last link answers another challenge than ours")]
    WrongChallenge,
}

/// What the verifier expects of the note's current state.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Fresh from the issuer (a withdrawal): no links, issued to `holder`.
    Issued { holder: PublicKey },
    /// Paid to us: the last link pays `payee` against `challenge`.
    Paid {
        payee: PublicKey,
        challenge: Challenge,
    },
    /// Currently held by `holder`, however it got there (a stored note).
    Held { holder: PublicKey },
}

/// Everything a payee needs to check a note offline.
#[derive(Clone, Copy, Debug)]
pub struct NotePolicy<'a> {
    /// The pinned key of the issuer of `currency`.
    pub issuer: &'a PublicKey,
    pub currency: Currency,
    pub now: Timestamp,
    /// Licenses of the cards that signed links (verified).
    pub licenses: &'a LicenseBook,
    /// The newest revocation list the verifier has.
    pub revocations: &'a Revocations,
    pub expect: Expect,
    /// Take notes past their expiry (the issuer does, on deposit: expiry
    /// ends a note's circulation, not its value).
    pub accept_expired: bool,
}

/// How [`Note::verify_with`] treats the signatures of a note.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SignatureCheck {
    /// Verify each signature as the chain is walked (what
    /// [`Note::verify`] does).
    Each,
    /// The caller has verified every signature of [`Note::signed`] at
    /// once ([`verify_signatures`] returned true): every other check is
    /// still made, in the same order.
    Verified,
}

/// Why a payment could not be made from a note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayError {
    #[error("cannot pay nothing")]
    Zero,
    #[error("cannot pay {amount} from a note state worth {held}")]
    ExceedsHeld { amount: u64, held: u64 },
    #[error("this key does not hold the note")]
    NotHolder,
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

impl Note {
    /// A note fresh from its issuance.
    pub fn issued(issuance: Signed<Issuance>) -> Note {
        Note {
            issuance,
            links: Vec::new(),
        }
    }

    /// The note's identity (the id of its issuance).
    pub fn id(&self) -> Digest {
        self.issuance.id()
    }

    /// The id of the current state.
    pub fn state(&self) -> Digest {
        self.links
            .last()
            .map_or_else(|| self.issuance.id(), Signed::id)
    }

    /// Who holds the current state, as the note says (unverified).
    pub fn holder(&self) -> PublicKey {
        self.links
            .last()
            .map_or(self.issuance.unverified().holder, |l| l.unverified().payee)
    }

    /// What the current state was worth when created, as the note says
    /// (unverified). What its holder may still spend is this minus what the
    /// holder has already paid out of it, which only the holder knows.
    pub fn held(&self) -> Amount {
        self.links
            .last()
            .map_or(self.issuance.unverified().value, |l| l.unverified().amount)
    }

    pub fn currency(&self) -> Currency {
        self.issuance.unverified().currency
    }

    /// Pays `amount` of the current state to `payee` against its `challenge`,
    /// returning the note the payee receives. `self` is unchanged: the payer
    /// keeps it (with whatever remains) in its own books.
    pub fn pay(
        &self,
        payer: &SecretKey,
        payee: PublicKey,
        amount: Amount,
        challenge: Challenge,
        now: Timestamp,
    ) -> Result<Note, PayError> {
        if payer.public() != self.holder() {
            return Err(PayError::NotHolder);
        }
        if amount.is_zero() {
            return Err(PayError::Zero);
        }
        if amount > self.held() {
            return Err(PayError::ExceedsHeld {
                amount: amount.minor_units(),
                held: self.held().minor_units(),
            });
        }
        let link = Signed::sign(
            Link {
                parent: self.state(),
                payee,
                amount,
                challenge,
                signed_at: now,
            },
            payer,
        )?;
        let mut links = self.links.clone();
        links.push(link);
        Ok(Note {
            issuance: self.issuance.clone(),
            links,
        })
    }

    /// Checks the chain's own consistency and every signature, without any
    /// policy (issuer identity, currency, time, licenses, revocation).
    /// Returns the states from the issuance to the current one. This is what
    /// an overspend proof relies on: it holds whatever the time.
    pub fn walk(&self) -> Result<Vec<StateView>, NoteError> {
        walk_chain(&self.issuance, &self.links)
    }

    /// Verifies the note as a payee (or the issuer) must before accepting it.
    pub fn verify(&self, policy: &NotePolicy<'_>) -> Result<NoteView, NoteError> {
        verify_note(self, policy, SignatureCheck::Each)
    }

    /// [`Note::verify`], with the signatures verified beforehand when
    /// `signatures` says so. The checks and their order are the same, so a
    /// note refused either way is refused for the same reason, except that
    /// with [`SignatureCheck::Verified`] no signature check can fail.
    pub fn verify_with(
        &self,
        policy: &NotePolicy<'_>,
        signatures: SignatureCheck,
    ) -> Result<NoteView, NoteError> {
        verify_note(self, policy, signatures)
    }

    /// The envelopes whose signatures [`Note::verify`] checks: the issuance
    /// and every link.
    pub fn signed(&self) -> impl Iterator<Item = &Envelope> {
        std::iter::once(self.issuance.envelope()).chain(self.links.iter().map(Signed::envelope))
    }
}

/// Verifies every signature [`Note::verify`] would check in `notes` with one
/// batch verification. True means all are good, and each note may be
/// checked with [`SignatureCheck::Verified`]; false means at least one is
/// not (or a key is not a usable key), and the notes must be checked with
/// [`SignatureCheck::Each`] to learn which and why. Notes with more links
/// than [`MAX_CHAIN`] are left out: [`Note::verify`] refuses them before
/// any signature.
pub fn verify_signatures(notes: &[Note]) -> bool {
    let envelopes: Vec<&Envelope> = notes
        .iter()
        .filter(|n| n.links.len() <= MAX_CHAIN)
        .flat_map(Note::signed)
        .collect();
    let inputs: Vec<Vec<u8>> = envelopes.iter().map(|e| e.signed_bytes()).collect();
    let items: Vec<(&PublicKey, &[u8], &Signature)> = envelopes
        .iter()
        .zip(&inputs)
        .map(|(e, m)| (e.signer(), m.as_slice(), e.signature()))
        .collect();
    items.is_empty() || verify_batch(&items).is_ok()
}

/// See [`Note::walk`]. Works on any prefix of a chain.
pub fn walk_chain(
    issuance: &Signed<Issuance>,
    links: &[Signed<Link>],
) -> Result<Vec<StateView>, NoteError> {
    walk(issuance, links, SignatureCheck::Each)
}

/// [`walk_chain`], with the signatures checked or not (verified beforehand
/// by the caller, see [`SignatureCheck`]).
fn walk(
    issuance: &Signed<Issuance>,
    links: &[Signed<Link>],
    signatures: SignatureCheck,
) -> Result<Vec<StateView>, NoteError> {
    if links.len() > MAX_CHAIN {
        return Err(NoteError::ChainTooLong {
            len: links.len(),
            max: MAX_CHAIN,
        });
    }
    let iss = match signatures {
        SignatureCheck::Each => issuance.verify().map_err(NoteError::IssuanceSignature)?,
        SignatureCheck::Verified => issuance.unverified(),
    };
    if iss.value.is_zero() {
        return Err(NoteError::ZeroValue);
    }
    let mut states = Vec::with_capacity(links.len() + 1);
    let mut current = StateView {
        id: issuance.id(),
        holder: iss.holder,
        value: iss.value,
    };
    states.push(current);
    for (index, link) in links.iter().enumerate() {
        if link.signer() != &current.holder {
            return Err(NoteError::WrongSigner {
                index,
                expected: current.holder,
                found: *link.signer(),
            });
        }
        let l = match signatures {
            SignatureCheck::Each => link
                .verify()
                .map_err(|source| NoteError::LinkSignature { index, source })?,
            SignatureCheck::Verified => link.unverified(),
        };
        if l.parent != current.id {
            return Err(NoteError::BrokenChain { index });
        }
        if l.amount.is_zero() {
            return Err(NoteError::ZeroAmount { index });
        }
        if l.amount > current.value {
            return Err(NoteError::AmountExceedsHeld {
                index,
                amount: l.amount.minor_units(),
                held: current.value.minor_units(),
            });
        }
        current = StateView {
            id: link.id(),
            holder: l.payee,
            value: l.amount,
        };
        states.push(current);
    }
    Ok(states)
}

fn verify_note(
    note: &Note,
    p: &NotePolicy<'_>,
    signatures: SignatureCheck,
) -> Result<NoteView, NoteError> {
    // Cheap refusals first: an over-long chain or a foreign issuer costs no
    // signature verification.
    if note.links.len() > MAX_CHAIN {
        return Err(NoteError::ChainTooLong {
            len: note.links.len(),
            max: MAX_CHAIN,
        });
    }
    if note.issuance.signer() != p.issuer {
        return Err(NoteError::UnknownIssuer {
            expected: *p.issuer,
            found: *note.issuance.signer(),
        });
    }
    let states = walk(&note.issuance, &note.links, signatures)?;
    let iss = note.issuance.unverified();
    if iss.currency != p.currency {
        return Err(NoteError::WrongCurrency {
            expected: p.currency,
            found: iss.currency,
        });
    }
    if iss.expires_at < iss.issued_at {
        return Err(NoteError::BadLifetime);
    }
    let horizon = p.now.saturating_add_secs(MAX_CLOCK_SKEW_SECS);
    if iss.issued_at > horizon {
        return Err(NoteError::IssuedInFuture {
            issued_at: iss.issued_at,
            now: p.now,
        });
    }
    if p.now > iss.expires_at && !p.accept_expired {
        return Err(NoteError::Expired {
            expires_at: iss.expires_at,
            now: p.now,
        });
    }
    let last = note.links.len().checked_sub(1);
    let mut previous_time = iss.issued_at;
    for (index, link) in note.links.iter().enumerate() {
        let l = link.unverified();
        let signer = link.signer();
        if l.signed_at > iss.expires_at {
            return Err(NoteError::SignedAfterExpiry { index });
        }
        if l.signed_at > horizon {
            return Err(NoteError::SignedInFuture {
                index,
                signed_at: l.signed_at,
                now: p.now,
            });
        }
        // Times may only go forward along the chain (within the clock skew
        // people's computers have): a card cannot date its link before the
        // payment that gave it the note, which bounds how far a revoked card
        // can back-date.
        if l.signed_at.saturating_add_secs(MAX_CLOCK_SKEW_SECS) < previous_time {
            return Err(NoteError::SignedBeforeParent { index });
        }
        previous_time = l.signed_at;
        if !p.licenses.knows(signer) {
            return Err(NoteError::NotLicensed {
                index,
                key: *signer,
            });
        }
        if p.licenses.covering(signer, l.signed_at).is_none() {
            return Err(NoteError::LicenseNotValid {
                index,
                key: *signer,
                at: l.signed_at,
            });
        }
        if let Some(revoked_at) = p.revocations.revoked_at(signer) {
            // Links are judged as of the time they were signed; but the card
            // paying us now must not be revoked now, whatever date it
            // writes on its link.
            let paying_us_now = Some(index) == last
                && matches!(p.expect, Expect::Paid { .. })
                && revoked_at <= p.now;
            if revoked_at <= l.signed_at || paying_us_now {
                return Err(NoteError::Revoked {
                    index,
                    key: *signer,
                    revoked_at,
                });
            }
        }
    }
    match p.expect {
        Expect::Issued { holder } => {
            if !note.links.is_empty() {
                return Err(NoteError::NotFresh(note.links.len()));
            }
            if iss.holder != holder {
                return Err(NoteError::WrongHolder {
                    expected: holder,
                    found: iss.holder,
                });
            }
        }
        Expect::Paid { payee, challenge } => {
            let l = note.links.last().ok_or(NoteError::NoPayment)?.unverified();
            if l.payee != payee {
                return Err(NoteError::WrongPayee {
                    expected: payee,
                    found: l.payee,
                });
            }
            if l.challenge != challenge {
                return Err(NoteError::WrongChallenge);
            }
        }
        Expect::Held { holder } => {
            let found = note.holder();
            if found != holder {
                return Err(NoteError::WrongHolder {
                    expected: holder,
                    found,
                });
            }
        }
    }
    Ok(NoteView {
        note: note.id(),
        currency: iss.currency,
        value: iss.value,
        expires_at: iss.expires_at,
        states,
    })
}

/// Which note of a bundle failed, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("the message carries no notes")]
    Empty,
    #[error("note {index}: {error}")]
    Note {
        index: usize,
        #[source]
        error: NoteError,
    },
    #[error("note {index} ends in the same state as note {other}")]
    SameState { index: usize, other: usize },
    #[error("notes {index} and {other} spend more from one state than it held")]
    Overspent { index: usize, other: usize },
    #[error("the notes carry {found} in total, not the {declared} declared")]
    WrongTotal { declared: u64, found: u64 },
    #[error("the notes' total overflows")]
    Overflow,
}

/// What verification established about the notes of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleView {
    pub notes: Vec<NoteView>,
    /// The sum of what the last links (or issuances) transfer.
    pub total: Amount,
}

/// Verifies every note of one message (a payment, a deposit...) under the
/// same policy, and the message as a whole: no two notes end in the same
/// state, no state is spent beyond its value by the notes together (two
/// partial payments out of one state in one message), and, if `declared` is
/// given, the transferred amounts add up to it.
pub fn verify_bundle(
    notes: &[Note],
    policy: &NotePolicy<'_>,
    declared: Option<Amount>,
) -> Result<BundleView, BundleError> {
    if notes.is_empty() {
        return Err(BundleError::Empty);
    }
    let mut views = Vec::with_capacity(notes.len());
    for (index, note) in notes.iter().enumerate() {
        views.push(
            note.verify(policy)
                .map_err(|error| BundleError::Note { index, error })?,
        );
    }
    // Each (state -> first note that spends from it, amount spent) seen.
    let mut ends = std::collections::BTreeMap::new();
    let mut spent: std::collections::BTreeMap<Digest, (usize, u128, Amount)> =
        std::collections::BTreeMap::new();
    for (index, v) in views.iter().enumerate() {
        if let Some(other) = ends.insert(v.current().id, index) {
            return Err(BundleError::SameState { index, other });
        }
        // Each link on the path spends from the state before it.
        for pair in v.states.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            let e = spent.entry(from.id).or_insert((index, 0, from.value));
            // A link shared by two notes' paths (same id) counts once.
            if !ends_contains_link(&views[..index], &to.id) {
                e.1 += u128::from(to.value.minor_units());
            }
            if e.1 > u128::from(e.2.minor_units()) {
                return Err(BundleError::Overspent { index, other: e.0 });
            }
        }
    }
    let total = Amount::checked_sum(views.iter().map(|v| v.current().value))
        .ok_or(BundleError::Overflow)?;
    if let Some(d) = declared {
        if d != total {
            return Err(BundleError::WrongTotal {
                declared: d.minor_units(),
                found: total.minor_units(),
            });
        }
    }
    Ok(BundleView {
        notes: views,
        total,
    })
}

/// Whether any earlier note's path passes through state `id`.
fn ends_contains_link(earlier: &[NoteView], id: &Digest) -> bool {
    earlier.iter().any(|v| v.states.iter().any(|s| &s.id == id))
}
