//! Evidence of an exchange (paper, section 4.2): every envelope of one
//! exchange in one CBOR bundle, and [`verify`], which checks it with public
//! keys alone and says what it proves.
//!
//! The bundle ([`ExchangeEvidence`]) holds the signed offer (the agent's
//! commitment), the offer and the acceptance it answers, the first payment,
//! the second-payment request, the second payment, a refund and error
//! replies, as they were received or sent, plus the issuer keys the holder
//! assumed for each currency. Verification first checks every signature in
//! the bundle (envelopes, nested licenses, every issuance and link of every
//! note, every envelope of evidence inside an error): a bundle with one byte
//! of a signed field changed is refused whole. Then it states, line by line,
//! what is PROVEN, what is NOT PROVEN (present but not what it should be)
//! and what is ABSENT, and which issuer keys were ASSUMED to check notes.
//! Pure: no clock (the caller passes `now`), no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cbor::{self, CborError};
use crate::crypto::{Digest, PublicKey};
use crate::envelope::{Body, Envelope, EnvelopeError, Signed};
use crate::license::{License, LicenseBook, Revocations};
use crate::limits::MAX_ENVELOPE_BYTES;
use crate::messages::{
    ErrorReply, FirstPayment, Offer, OfferAcceptance, OfferTerms, Refund, SecondPayment,
    SecondPaymentRequest, SignedOffer,
};
use crate::money::{Currency, Money, Timestamp};
use crate::note::{verify_bundle, BundleView, Expect, Note, NotePolicy};

/// The bundle format version this code writes and reads.
pub const EVIDENCE_VERSION: u64 = 1;
/// The most error replies one bundle carries.
pub const MAX_EVIDENCE_ERRORS: usize = 16;
/// The most issuer keys one bundle carries.
pub const MAX_EVIDENCE_ISSUERS: usize = 8;
/// The largest bundle read: its envelopes, each at most an envelope's limit.
pub const MAX_EVIDENCE_BYTES: usize = (8 + MAX_EVIDENCE_ERRORS) * MAX_ENVELOPE_BYTES;

/// Every envelope of one exchange, as its holder kept them. Written as a
/// CBOR map with the field names as keys; envelopes as 5-element arrays;
/// `issuers` as `[currency, key]` pairs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ExchangeEvidence {
    /// [`EVIDENCE_VERSION`].
    pub version: u64,
    pub offer: Option<Envelope>,
    pub acceptance: Option<Envelope>,
    /// The agent's commitment: the one envelope a bundle must hold.
    pub signed_offer: Envelope,
    pub first_payment: Option<Envelope>,
    pub second_request: Option<Envelope>,
    pub second_payment: Option<Envelope>,
    pub refund: Option<Envelope>,
    #[serde(default)]
    pub errors: Vec<Envelope>,
    /// The issuer key the holder pins for each currency of the exchange;
    /// notes are checked under these (a reader compares them with the keys
    /// they trust).
    #[serde(default)]
    pub issuers: Vec<(Currency, PublicKey)>,
}

impl ExchangeEvidence {
    /// The bundle as CBOR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CborError> {
        cbor::to_vec(self)
    }

    /// Reads a bundle (bounded by [`MAX_EVIDENCE_BYTES`]). Nothing is
    /// verified: see [`verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<ExchangeEvidence, EvidenceError> {
        cbor::from_slice(bytes, MAX_EVIDENCE_BYTES).map_err(EvidenceError::Decode)
    }
}

/// Why a bundle proves nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("not an evidence bundle: {0}")]
    Decode(#[source] CborError),
    #[error("evidence bundle version {0} is not supported (this program reads version {EVIDENCE_VERSION})")]
    Version(u64),
    #[error("the bundle carries {found} {what}, more than the limit of {max}")]
    TooMany {
        what: &'static str,
        found: usize,
        max: usize,
    },
    #[error("the {what} is not a readable {kind} envelope: {source}")]
    Unreadable {
        what: String,
        kind: &'static str,
        #[source]
        source: Box<EnvelopeError>,
    },
    #[error("a signature in the {what} does not verify (the bundle was altered): {source}")]
    BadSignature {
        what: String,
        #[source]
        source: Box<EnvelopeError>,
    },
}

/// How sure a finding is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Shown by signatures in the bundle.
    Proven,
    /// Present in the bundle, but not what the protocol requires.
    NotProven,
    /// Not in the bundle.
    Absent,
    /// Taken on trust by whoever made the bundle (the issuer keys).
    Assumed,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Proven => "PROVEN",
            Status::NotProven => "NOT PROVEN",
            Status::Absent => "ABSENT",
            Status::Assumed => "ASSUMED",
        })
    }
}

/// One statement about the exchange.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Finding {
    pub status: Status,
    /// What the bundle part is about: `signed-offer`, `first-payment`...
    pub about: String,
    pub text: String,
}

/// What a bundle proves. `Display` gives one line per finding; `Serialize`
/// gives the same for scripts, with the main facts as fields.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Findings {
    /// The transaction id (hex).
    pub tr_id: String,
    /// The agent key named in the terms (hex).
    pub agent: String,
    /// Whether that key signed the signed offer.
    pub agent_signed: bool,
    pub pay_currency: String,
    pub a1_minor: u64,
    pub receive_currency: String,
    pub a2_minor: u64,
    /// What the first payment's notes carry to the agent's card, when they
    /// verify as that payment.
    pub first_paid_minor: Option<u64>,
    /// What the agent's second payment carries to the receiving card, when
    /// it verifies.
    pub second_paid_minor: Option<u64>,
    /// What a refund carries back, when it verifies.
    pub refunded_minor: Option<u64>,
    /// The issuer keys notes were checked under: (currency, key hex).
    pub issuers_assumed: Vec<(String, String)>,
    pub findings: Vec<Finding>,
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Evidence of exchange {}:", self.tr_id)?;
        for x in &self.findings {
            writeln!(f, "{}: {}", x.status, x.text)?;
        }
        Ok(())
    }
}

impl Findings {
    fn add(&mut self, status: Status, about: &str, text: String) {
        self.findings.push(Finding {
            status,
            about: about.to_string(),
            text,
        });
    }
}

/// The first field in which two sets of terms differ, by its wire name.
pub fn terms_difference(a: &OfferTerms, b: &OfferTerms) -> Option<&'static str> {
    let fields: [(&'static str, bool); 13] = [
        ("tr_id", a.tr_id == b.tr_id),
        ("pay_currency", a.pay_currency == b.pay_currency),
        ("a1", a.a1 == b.a1),
        ("d1", a.d1 == b.d1),
        ("receive_currency", a.receive_currency == b.receive_currency),
        ("a2", a.a2 == b.a2),
        ("d2", a.d2 == b.d2),
        ("rate", a.rate == b.rate),
        ("agent", a.agent == b.agent),
        ("pay_to", a.pay_to == b.pay_to),
        ("pay_to_license", a.pay_to_license == b.pay_to_license),
        ("challenge", a.challenge == b.challenge),
        ("payer_license", a.payer_license == b.payer_license),
    ];
    fields.iter().find(|(_, same)| !same).map(|(name, _)| *name)
}

fn hex8(d: &Digest) -> String {
    d.to_hex().chars().take(16).collect()
}

/// Decodes `env` as a `T` and checks its signature under its own signer.
fn open<T: Body>(env: &Envelope, what: &str) -> Result<Signed<T>, EvidenceError> {
    let s =
        Signed::<T>::from_envelope(env.clone()).map_err(|source| EvidenceError::Unreadable {
            what: what.to_string(),
            kind: T::KIND,
            source: Box::new(source),
        })?;
    s.verify().map_err(|source| EvidenceError::BadSignature {
        what: what.to_string(),
        source: Box::new(source),
    })?;
    Ok(s)
}

fn sig(env: &Envelope, what: &str) -> Result<(), EvidenceError> {
    env.verify().map_err(|source| EvidenceError::BadSignature {
        what: what.to_string(),
        source: Box::new(source),
    })
}

fn check_licenses(licenses: &[Signed<License>], what: &str) -> Result<(), EvidenceError> {
    licenses
        .iter()
        .try_for_each(|l| sig(l.envelope(), &format!("{what} (a license)")))
}

fn check_notes(notes: &[Note], what: &str) -> Result<(), EvidenceError> {
    for (i, n) in notes.iter().enumerate() {
        sig(
            n.issuance.envelope(),
            &format!("{what} (note {i}, issuance)"),
        )?;
        for (j, l) in n.links.iter().enumerate() {
            sig(l.envelope(), &format!("{what} (note {i}, link {j})"))?;
        }
    }
    Ok(())
}

/// Checks `notes` as paid to `payee` against `challenge` in `currency`
/// under the assumed issuer key; `Ok` with the verified bundle, or why not.
#[allow(clippy::too_many_arguments)]
fn paid(
    issuers: &[(Currency, PublicKey)],
    currency: Currency,
    notes: &[Note],
    licenses: &[&[Signed<License>]],
    payee: PublicKey,
    challenge: crate::crypto::Challenge,
    now: Timestamp,
) -> Result<BundleView, String> {
    let Some((_, issuer)) = issuers.iter().find(|(c, _)| *c == currency) else {
        return Err(format!(
            "the bundle names no {currency} issuer key, so its notes cannot be checked"
        ));
    };
    let mut book = LicenseBook::new();
    for l in licenses.iter().flat_map(|ls| ls.iter()) {
        // A license of another issuer or currency is simply not used; the
        // note check then says which link lacks a license.
        let _ = book.add_signed(l, issuer, currency);
    }
    let none = Revocations::none();
    let policy = NotePolicy {
        issuer,
        currency,
        now,
        licenses: &book,
        revocations: &none,
        expect: Expect::Paid { payee, challenge },
        accept_expired: true,
    };
    verify_bundle(notes, &policy, None).map_err(|e| e.to_string())
}

/// The payment keys that signed the last links of `notes`, in order, once.
fn last_signers(notes: &[Note]) -> Vec<PublicKey> {
    let mut keys: Vec<PublicKey> = notes
        .iter()
        .filter_map(|n| n.links.last().map(|l| *l.signer()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn keys_text(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.fingerprint().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks every signature in the bundle, then says what it proves. `now`
/// is the reader's clock (notes are judged as of then, expired ones
/// accepted: expiry ends circulation, not what a payment proves).
pub fn verify(e: &ExchangeEvidence, now: Timestamp) -> Result<Findings, EvidenceError> {
    if e.version != EVIDENCE_VERSION {
        return Err(EvidenceError::Version(e.version));
    }
    if e.errors.len() > MAX_EVIDENCE_ERRORS {
        return Err(EvidenceError::TooMany {
            what: "error replies",
            found: e.errors.len(),
            max: MAX_EVIDENCE_ERRORS,
        });
    }
    if e.issuers.len() > MAX_EVIDENCE_ISSUERS {
        return Err(EvidenceError::TooMany {
            what: "issuer keys",
            found: e.issuers.len(),
            max: MAX_EVIDENCE_ISSUERS,
        });
    }

    // 1. Every signature, with public keys alone.
    let so = open::<SignedOffer>(&e.signed_offer, "signed offer")?;
    let so_body = so.verify().map_err(|source| EvidenceError::BadSignature {
        what: "signed offer".into(),
        source: Box::new(source),
    })?;
    let terms = &so_body.terms;
    check_licenses(
        &[terms.pay_to_license.clone(), terms.payer_license.clone()],
        "signed offer",
    )?;
    let offer = e
        .offer
        .as_ref()
        .map(|x| open::<Offer>(x, "offer"))
        .transpose()?;
    if let Some(o) = &offer {
        let t = &o.unverified().terms;
        check_licenses(
            &[t.pay_to_license.clone(), t.payer_license.clone()],
            "offer",
        )?;
    }
    let acceptance = e
        .acceptance
        .as_ref()
        .map(|x| open::<OfferAcceptance>(x, "acceptance"))
        .transpose()?;
    let first = e
        .first_payment
        .as_ref()
        .map(|x| open::<FirstPayment>(x, "first payment"))
        .transpose()?;
    if let Some(f) = &first {
        check_notes(&f.unverified().notes, "first payment")?;
        check_licenses(&f.unverified().licenses, "first payment")?;
    }
    let request = e
        .second_request
        .as_ref()
        .map(|x| open::<SecondPaymentRequest>(x, "second-payment request"))
        .transpose()?;
    let second = e
        .second_payment
        .as_ref()
        .map(|x| open::<SecondPayment>(x, "second payment"))
        .transpose()?;
    if let Some(s) = &second {
        check_notes(&s.unverified().notes, "second payment")?;
        check_licenses(&s.unverified().licenses, "second payment")?;
    }
    let refund = e
        .refund
        .as_ref()
        .map(|x| open::<Refund>(x, "refund"))
        .transpose()?;
    if let Some(r) = &refund {
        check_notes(&r.unverified().notes, "refund")?;
        check_licenses(&r.unverified().licenses, "refund")?;
    }
    let mut errors = Vec::new();
    for (i, x) in e.errors.iter().enumerate() {
        let what = format!("error reply {i}");
        let r = open::<ErrorReply>(x, &what)?;
        for (j, ev) in r.unverified().evidence.iter().enumerate() {
            sig(ev, &format!("{what} (evidence {j})"))?;
        }
        errors.push(r);
    }

    // 2. What the signatures prove.
    let agent = terms.agent;
    let agent_signed = so.signer() == &agent;
    let mut f = Findings {
        tr_id: terms.tr_id.to_hex(),
        agent: agent.to_hex(),
        agent_signed,
        pay_currency: terms.pay_currency.to_string(),
        a1_minor: terms.a1.minor_units(),
        receive_currency: terms.receive_currency.to_string(),
        a2_minor: terms.a2.minor_units(),
        first_paid_minor: None,
        second_paid_minor: None,
        refunded_minor: None,
        issuers_assumed: e
            .issuers
            .iter()
            .map(|(c, k)| (c.to_string(), k.to_hex()))
            .collect(),
        findings: Vec::new(),
    };
    let a1 = Money::new(terms.a1, terms.pay_currency);
    let a2 = Money::new(terms.a2, terms.receive_currency);
    for (c, k) in &e.issuers {
        f.add(
            Status::Assumed,
            "issuers",
            format!(
                "the {c} issuer's key is {}: notes in {c} are checked under it; compare it with the key you trust",
                k.to_hex()
            ),
        );
    }
    let receiver = so_body.receiver;
    if agent_signed {
        f.add(
            Status::Proven,
            "signed-offer",
            format!(
                "agent key {} signed the offer of exchange {} (signed offer {}): the user pays {a1} to card {} by {} against challenge {}; the agent pays {a2} to card {} (auth key {}) when asked by {}",
                agent.to_hex(),
                terms.tr_id.to_hex(),
                hex8(&so.id()),
                terms.pay_to.payment.fingerprint(),
                terms.d1,
                terms.challenge.to_hex(),
                receiver.payment.fingerprint(),
                receiver.auth.fingerprint(),
                terms.d2,
            ),
        );
    } else {
        f.add(
            Status::NotProven,
            "signed-offer",
            format!(
                "the signed offer is signed by {}, not by the agent key its terms name ({}): it binds no agent",
                so.signer().to_hex(),
                agent.to_hex()
            ),
        );
    }

    match &offer {
        Some(o) => {
            let ob = o.unverified();
            if o.signer() != &agent {
                f.add(
                    Status::NotProven,
                    "offer",
                    format!(
                        "the offer {} is signed by {}, not by the agent key {}",
                        hex8(&o.id()),
                        o.signer().fingerprint(),
                        agent.fingerprint()
                    ),
                );
            } else {
                match terms_difference(&ob.terms, terms) {
                    None => f.add(
                        Status::Proven,
                        "offer",
                        format!(
                            "the agent's offer {} (answering quote request {}) carries the same terms as the signed offer",
                            hex8(&o.id()),
                            hex8(&ob.quote)
                        ),
                    ),
                    Some(field) => f.add(
                        Status::Proven,
                        "offer",
                        format!(
                            "the agent signed an offer {} whose terms differ from its signed offer in `{field}`",
                            hex8(&o.id())
                        ),
                    ),
                }
            }
        }
        None => f.add(
            Status::Absent,
            "offer",
            "the offer is not in the bundle".into(),
        ),
    }

    match &acceptance {
        Some(a) => {
            let ab = a.unverified();
            if a.id() != so_body.acceptance {
                f.add(
                    Status::NotProven,
                    "acceptance",
                    format!(
                        "the acceptance {} is not the one the signed offer names ({})",
                        hex8(&a.id()),
                        hex8(&so_body.acceptance)
                    ),
                );
            } else if a.signer() != &receiver.auth || ab.receiver != receiver {
                f.add(
                    Status::NotProven,
                    "acceptance",
                    "the acceptance is not signed by the receiving card it names".into(),
                );
            } else {
                let names_offer = offer.as_ref().map(|o| o.id() == ab.offer);
                f.add(
                    Status::Proven,
                    "acceptance",
                    format!(
                        "the receiving card's auth key {} signed the acceptance {} that the signed offer names{}",
                        receiver.auth.fingerprint(),
                        hex8(&a.id()),
                        match names_offer {
                            Some(true) => ", accepting that offer",
                            Some(false) => ", but it accepts another offer than the one in the bundle",
                            None => "",
                        }
                    ),
                );
            }
        }
        None => f.add(
            Status::Absent,
            "acceptance",
            "the acceptance is not in the bundle".into(),
        ),
    }

    // The first payment.
    match &first {
        Some(p) => {
            let pb = p.unverified();
            if pb.signed_offer != so.id() || pb.tr_id != terms.tr_id {
                f.add(
                    Status::NotProven,
                    "first-payment",
                    format!(
                        "the first payment {} names another exchange or signed offer",
                        hex8(&p.id())
                    ),
                );
            } else {
                match paid(
                    &e.issuers,
                    terms.pay_currency,
                    &pb.notes,
                    &[
                        &pb.licenses,
                        std::slice::from_ref(&terms.pay_to_license),
                    ],
                    terms.pay_to.payment,
                    terms.challenge,
                    now,
                ) {
                    Ok(view) => {
                        f.first_paid_minor = Some(view.total.minor_units());
                        let payers = last_signers(&pb.notes);
                        let bound = pb.licenses.iter().any(|l| {
                            let c = l.unverified().card;
                            payers.contains(&c.payment) && c.auth == *p.signer()
                        });
                        let total = Money::new(view.total, terms.pay_currency);
                        let versus = if view.total == terms.a1 {
                            "exactly A1".to_string()
                        } else if view.total < terms.a1 {
                            format!("SHORT of A1 ({a1})")
                        } else {
                            format!("more than A1 ({a1})")
                        };
                        f.add(
                            Status::Proven,
                            "first-payment",
                            format!(
                                "the first payment {} (signed by auth key {}{}) pays {total}, {versus}, to the agent's card {} against the offer's challenge; its last links are signed by card payment key(s) {}",
                                hex8(&p.id()),
                                p.signer().fingerprint(),
                                if bound { ", the auth key licensed with the paying card" } else { ", which no carried license binds to the paying card" },
                                terms.pay_to.payment.fingerprint(),
                                keys_text(&payers),
                            ),
                        );
                    }
                    Err(why) => f.add(
                        Status::NotProven,
                        "first-payment",
                        format!(
                            "the first payment {}'s notes do not verify as a payment to the agent's card: {why}",
                            hex8(&p.id())
                        ),
                    ),
                }
            }
        }
        None => f.add(
            Status::Absent,
            "first-payment",
            "no first payment is in the bundle".into(),
        ),
    }

    // The second-payment request.
    let mut asked = None;
    match &request {
        Some(r) => {
            let rb = r.unverified();
            if r.signer() != &receiver.auth {
                f.add(
                    Status::NotProven,
                    "second-payment-request",
                    format!(
                        "the second-payment request {} is signed by {}, not by the receiving card's auth key {} fixed in the signed offer",
                        hex8(&r.id()),
                        r.signer().fingerprint(),
                        receiver.auth.fingerprint()
                    ),
                );
            } else if rb.signed_offer != so.id() || rb.tr_id != terms.tr_id {
                f.add(
                    Status::NotProven,
                    "second-payment-request",
                    format!(
                        "the second-payment request {} names another exchange or signed offer",
                        hex8(&r.id())
                    ),
                );
            } else {
                asked = Some((r.id(), rb.challenge));
                f.add(
                    Status::Proven,
                    "second-payment-request",
                    format!(
                        "the receiving card's auth key {} (fixed in the signed offer) signed the second-payment request {}, which names the signed offer and asks for {a2} against challenge {}",
                        receiver.auth.fingerprint(),
                        hex8(&r.id()),
                        rb.challenge.to_hex()
                    ),
                );
            }
        }
        None => f.add(
            Status::Absent,
            "second-payment-request",
            "no second-payment request is in the bundle".into(),
        ),
    }

    // The second payment.
    match &second {
        Some(s) => {
            let sb = s.unverified();
            let payer_card = terms.payer_license.unverified().card.payment;
            let why_not = if s.signer() != &agent {
                Some(format!(
                    "it is signed by {}, not by the agent key",
                    s.signer().fingerprint()
                ))
            } else if sb.tr_id != terms.tr_id {
                Some("it names another exchange".to_string())
            } else {
                match &asked {
                    None => Some(format!(
                        "it answers request {}, which is not in the bundle as a valid request",
                        hex8(&sb.request)
                    )),
                    Some((id, _)) if *id != sb.request => Some(format!(
                        "it answers request {}, not the request in the bundle",
                        hex8(&sb.request)
                    )),
                    Some((_, challenge)) => {
                        match paid(
                            &e.issuers,
                            terms.receive_currency,
                            &sb.notes,
                            &[&sb.licenses, std::slice::from_ref(&terms.payer_license)],
                            receiver.payment,
                            *challenge,
                            now,
                        ) {
                            Err(why) => Some(format!("its notes do not verify: {why}")),
                            Ok(view) => {
                                let signers = last_signers(&sb.notes);
                                if signers.iter().any(|k| *k != payer_card) {
                                    Some(format!(
                                        "its last links are signed by {}, not by the agent's card of the signed offer ({})",
                                        keys_text(&signers),
                                        payer_card.fingerprint()
                                    ))
                                } else {
                                    f.second_paid_minor = Some(view.total.minor_units());
                                    let total = Money::new(view.total, terms.receive_currency);
                                    let versus = if view.total == terms.a2 {
                                        "exactly A2".to_string()
                                    } else if view.total < terms.a2 {
                                        format!("SHORT of A2 ({a2})")
                                    } else {
                                        format!("more than A2 ({a2})")
                                    };
                                    f.add(
                                        Status::Proven,
                                        "second-payment",
                                        format!(
                                            "the agent's second payment {} pays {total}, {versus}, to the receiving card {} against the request's challenge, from the agent's card {}",
                                            hex8(&s.id()),
                                            receiver.payment.fingerprint(),
                                            payer_card.fingerprint()
                                        ),
                                    );
                                    None
                                }
                            }
                        }
                    }
                }
            };
            if let Some(why) = why_not {
                f.add(
                    Status::NotProven,
                    "second-payment",
                    format!(
                        "the second payment {} is not the agent's payment of A2: {why}",
                        hex8(&s.id())
                    ),
                );
            }
        }
        None => f.add(
            Status::Absent,
            "second-payment",
            format!(
                "no second payment is in the bundle: nothing here shows that the agent paid {a2} to the receiving card"
            ),
        ),
    }

    // A refund.
    match &refund {
        Some(r) => {
            let rb = r.unverified();
            let why_not = if r.signer() != &agent {
                Some(format!(
                    "it is signed by {}, not by the agent key",
                    r.signer().fingerprint()
                ))
            } else {
                match &first {
                    None => Some("the first payment it refunds is not in the bundle".into()),
                    Some(p) if p.id() != rb.payment => Some(
                        "it refunds another payment than the first payment in the bundle".into(),
                    ),
                    Some(p) => {
                        let pb = p.unverified();
                        match paid(
                            &e.issuers,
                            terms.pay_currency,
                            &rb.notes,
                            &[
                                &rb.licenses,
                                &pb.licenses,
                                std::slice::from_ref(&terms.pay_to_license),
                            ],
                            pb.refund_to,
                            pb.refund_challenge,
                            now,
                        ) {
                            Err(why) => Some(format!("its notes do not verify: {why}")),
                            Ok(view) => {
                                f.refunded_minor = Some(view.total.minor_units());
                                f.add(
                                    Status::Proven,
                                    "refund",
                                    format!(
                                        "the agent refunded {} of the first payment to the payer's refund key {} ({}: {})",
                                        Money::new(view.total, terms.pay_currency),
                                        pb.refund_to.fingerprint(),
                                        rb.reason,
                                        rb.reason.text()
                                    ),
                                );
                                None
                            }
                        }
                    }
                }
            };
            if let Some(why) = why_not {
                f.add(
                    Status::NotProven,
                    "refund",
                    format!("the refund {} does not count: {why}", hex8(&r.id())),
                );
            }
        }
        None => f.add(
            Status::Absent,
            "refund",
            "no refund is in the bundle".into(),
        ),
    }

    // Error replies.
    for r in &errors {
        let rb = r.unverified();
        let who = if r.signer() == &agent {
            "the agent".to_string()
        } else if r.signer() == &receiver.auth {
            "the receiving card".to_string()
        } else {
            format!("key {}", r.signer().fingerprint())
        };
        let about = rb
            .request
            .map(|d| {
                format!(
                    "{} {}",
                    rb.request_kind.as_deref().unwrap_or("envelope"),
                    hex8(&d)
                )
            })
            .unwrap_or_else(|| "a mail".into());
        let mut text = format!(
            "{who} refused {about} with {}: {}",
            rb.code,
            rb.reason.chars().take(300).collect::<String>()
        );
        for ev in &rb.evidence {
            text.push_str(&format!(
                "; its evidence: a {} {} signed by {}",
                ev.kind(),
                hex8(&ev.id()),
                if ev.signer() == &receiver.auth {
                    "the receiving card's auth key".to_string()
                } else if ev.signer() == &agent {
                    "the agent key".to_string()
                } else {
                    ev.signer().fingerprint().to_string()
                }
            ));
            if let Ok(q) = Signed::<SecondPaymentRequest>::from_envelope(ev.clone()) {
                let qb = q.unverified();
                if qb.signed_offer == so.id() {
                    text.push_str(&format!(
                        " for this signed offer, challenge {}",
                        qb.challenge.to_hex()
                    ));
                }
            }
        }
        f.add(Status::Proven, "error", text);
    }
    if errors.is_empty() {
        f.add(
            Status::Absent,
            "error",
            "no error reply is in the bundle".into(),
        );
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

    use super::*;
    use crate::messages::{ErrorCode, Message};
    use crate::money::Amount;
    use crate::testkit::{sample_messages, NOW};

    fn sample() -> ExchangeEvidence {
        let mut e = ExchangeEvidence {
            version: EVIDENCE_VERSION,
            offer: None,
            acceptance: None,
            signed_offer: sample_messages()
                .into_iter()
                .find(|m| matches!(m, Message::SignedOffer(_)))
                .unwrap()
                .into_envelope(),
            first_payment: None,
            second_request: None,
            second_payment: None,
            refund: None,
            errors: vec![],
            issuers: vec![
                (Currency::JPY, crate::testkit::key(1).public()),
                (Currency::USD, crate::testkit::key(2).public()),
            ],
        };
        let mut second_requests = 0;
        for m in sample_messages() {
            match m {
                Message::Offer(s) => e.offer = Some(s.into_envelope()),
                Message::OfferAcceptance(s) => e.acceptance = Some(s.into_envelope()),
                Message::FirstPayment(s) => e.first_payment = Some(s.into_envelope()),
                Message::SecondPaymentRequest(s) => {
                    if second_requests == 0 {
                        e.second_request = Some(s.into_envelope());
                    }
                    second_requests += 1;
                }
                Message::SecondPayment(s) => e.second_payment = Some(s.into_envelope()),
                Message::Error(s) => e.errors.push(s.into_envelope()),
                _ => {}
            }
        }
        e
    }

    fn status_of(f: &Findings, about: &str) -> Vec<Status> {
        f.findings
            .iter()
            .filter(|x| x.about == about)
            .map(|x| x.status)
            .collect()
    }

    #[test]
    fn a_complete_exchange_is_proven() {
        let e = sample();
        let f = verify(&e, NOW).unwrap();
        assert!(f.agent_signed);
        assert_eq!(f.first_paid_minor, Some(1000));
        assert_eq!(f.second_paid_minor, Some(670));
        for about in [
            "signed-offer",
            "offer",
            "acceptance",
            "first-payment",
            "second-payment-request",
            "second-payment",
            "error",
        ] {
            assert_eq!(status_of(&f, about), vec![Status::Proven], "{about}: {f}");
        }
        assert_eq!(status_of(&f, "refund"), vec![Status::Absent]);
        let text = f.to_string();
        assert!(text.contains("PROVEN: agent key"), "{text}");
        assert!(text.contains("ASSUMED: the JPY issuer's key"), "{text}");
        assert!(text.contains("E507"), "{text}");
        let json = serialized(&f);
        assert!(json.contains("second_paid_minor"));
    }

    /// The findings serialized (as CBOR here): the field names travel as
    /// map keys.
    fn serialized(f: &Findings) -> String {
        let bytes = cbor::to_vec(f).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn a_missing_second_payment_is_absent() {
        let mut e = sample();
        e.second_payment = None;
        let bytes = e.to_bytes().unwrap();
        let back = ExchangeEvidence::from_bytes(&bytes).unwrap();
        assert_eq!(back, e);
        let f = verify(&back, NOW).unwrap();
        assert_eq!(status_of(&f, "second-payment"), vec![Status::Absent]);
        assert_eq!(f.second_paid_minor, None);
        assert_eq!(status_of(&f, "first-payment"), vec![Status::Proven]);
        assert!(f.to_string().contains("ABSENT: no second payment"));
    }

    #[test]
    fn any_changed_byte_of_a_signed_field_fails() {
        let e = sample();
        type Part = fn(&mut ExchangeEvidence) -> &mut Envelope;
        let parts: [(&str, Part); 6] = [
            ("signed offer", |e| &mut e.signed_offer),
            ("offer", |e| e.offer.as_mut().unwrap()),
            ("acceptance", |e| e.acceptance.as_mut().unwrap()),
            ("first payment", |e| e.first_payment.as_mut().unwrap()),
            ("request", |e| e.second_request.as_mut().unwrap()),
            ("second payment", |e| e.second_payment.as_mut().unwrap()),
        ];
        for (name, part) in parts {
            let env = part(&mut e.clone()).clone();
            // Every 7th byte of the body, and the last (keeps the test fast).
            let len = env.body().len();
            for i in (0..len).step_by(7).chain([len - 1]) {
                let mut body = env.body().to_vec();
                body[i] ^= 0x01;
                let forged =
                    Envelope::from_parts(env.kind().into(), body, *env.signer(), *env.signature())
                        .unwrap();
                let mut t = e.clone();
                *part(&mut t) = forged;
                assert!(
                    verify(&t, NOW).is_err(),
                    "{name}: byte {i} changed and the bundle still verified"
                );
            }
        }
        // The error reply's evidence too.
        let mut t = e.clone();
        let r = Signed::<ErrorReply>::from_envelope(t.errors[0].clone()).unwrap();
        let mut body = r.unverified().clone();
        let ev = &body.evidence[0];
        let mut b = ev.body().to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        body.evidence[0] =
            Envelope::from_parts(ev.kind().into(), b, *ev.signer(), *ev.signature()).unwrap();
        t.errors[0] = Signed::sign(body, &crate::testkit::key(3))
            .unwrap()
            .into_envelope();
        assert!(matches!(
            verify(&t, NOW),
            Err(EvidenceError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_wrong_issuer_key_proves_no_payment() {
        let mut e = sample();
        e.issuers = vec![(Currency::JPY, crate::testkit::key(9).public())];
        let f = verify(&e, NOW).unwrap();
        assert_eq!(status_of(&f, "first-payment"), vec![Status::NotProven]);
        assert_eq!(status_of(&f, "second-payment"), vec![Status::NotProven]);
        assert_eq!(f.first_paid_minor, None);
    }

    #[test]
    fn a_refund_is_proven_against_the_first_payment() {
        let mut e = sample();
        let refund = sample_messages()
            .into_iter()
            .find(|m| matches!(m, Message::Refund(_)))
            .unwrap();
        e.refund = Some(refund.into_envelope());
        let f = verify(&e, NOW).unwrap();
        assert_eq!(status_of(&f, "refund"), vec![Status::Proven], "{f}");
        assert_eq!(f.refunded_minor, Some(1000));
        assert!(f
            .to_string()
            .contains(&ErrorCode::FirstPaymentLate.to_string()));
    }

    #[test]
    fn versions_and_garbage_are_refused() {
        let mut e = sample();
        e.version = 2;
        assert!(matches!(verify(&e, NOW), Err(EvidenceError::Version(2))));
        assert!(ExchangeEvidence::from_bytes(b"not cbor").is_err());
    }

    #[test]
    fn terms_difference_names_the_field() {
        let Message::SignedOffer(s) = sample_messages()
            .into_iter()
            .find(|m| matches!(m, Message::SignedOffer(_)))
            .unwrap()
        else {
            panic!()
        };
        let t = s.unverified().terms.clone();
        assert_eq!(terms_difference(&t, &t), None);
        let mut u = t.clone();
        u.a2 = Amount::new(1);
        assert_eq!(terms_difference(&t, &u), Some("a2"));
        let mut u = t.clone();
        u.d1 = NOW;
        assert_eq!(terms_difference(&t, &u), Some("d1"));
    }
}
