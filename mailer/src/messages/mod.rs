//! Every protocol message kind, and [`Message`], the decoded form of any
//! envelope that arrives.
//!
//! One file per family: [`card`] (licensing), [`bank`] (enrollment,
//! withdrawal, deposit), [`transfer`] (personal transfers), [`exchange`]
//! (the paper's currency exchange), [`error`] (refusals). Decoding a kind
//! this software does not know gives [`Message::Unknown`], never an error, so
//! a newer peer's mail is answered with a clear "unknown kind" reply.

pub mod bank;
pub mod card;
pub mod error;
pub mod exchange;
pub mod transfer;

use crate::envelope::{Body, Envelope, EnvelopeError, Signed};
use crate::license::{License, RevocationList};
use crate::money::Money;
use crate::note::{Issuance, Link};

pub use bank::{
    Deposit, DepositOutcome, DepositReceipt, DepositResult, EnrollRequest, Enrolled, NotesIssued,
    WithdrawRequest,
};
pub use card::{LicenseGranted, LicenseRequest, RevocationListRequest};
pub use error::{ErrorCode, ErrorReply};
pub use exchange::{
    FirstPayment, Offer, OfferAcceptance, OfferTerms, QuoteAmount, QuoteRequest, RateQuote,
    RateSheet, Refund, SecondPayment, SecondPaymentRequest, SignedOffer,
};
pub use transfer::{Payment, PaymentAddress, PaymentInvite, Receipt};

macro_rules! messages {
    ($($variant:ident($ty:ty),)*) => {
        /// A decoded protocol message. Signatures are not checked by decoding:
        /// each handler checks the signer it requires.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Message {
            $($variant(Signed<$ty>),)*
            /// A kind this software does not know (a newer version's).
            Unknown(Envelope),
        }

        impl Message {
            /// Every kind this software knows, in a fixed order.
            pub const KINDS: &'static [&'static str] = &[$(<$ty as Body>::KIND,)*];

            /// Interprets an envelope by its kind.
            pub fn decode(envelope: Envelope) -> Result<Message, EnvelopeError> {
                match envelope.kind() {
                    $(<$ty as Body>::KIND => Ok(Message::$variant(Signed::from_envelope(envelope)?)),)*
                    _ => Ok(Message::Unknown(envelope)),
                }
            }

            pub fn envelope(&self) -> &Envelope {
                match self {
                    $(Message::$variant(s) => s.envelope(),)*
                    Message::Unknown(e) => e,
                }
            }

            pub fn into_envelope(self) -> Envelope {
                match self {
                    $(Message::$variant(s) => s.into_envelope(),)*
                    Message::Unknown(e) => e,
                }
            }
        }

        $(
            impl From<Signed<$ty>> for Message {
                fn from(s: Signed<$ty>) -> Message {
                    Message::$variant(s)
                }
            }
        )*
    };
}

messages! {
    LicenseRequest(LicenseRequest),
    LicenseGranted(LicenseGranted),
    License(License),
    RevocationListRequest(RevocationListRequest),
    RevocationList(RevocationList),
    EnrollRequest(EnrollRequest),
    Enrolled(Enrolled),
    WithdrawRequest(WithdrawRequest),
    NotesIssued(NotesIssued),
    Deposit(Deposit),
    DepositReceipt(DepositReceipt),
    PaymentInvite(PaymentInvite),
    PaymentAddress(PaymentAddress),
    Payment(Payment),
    Receipt(Receipt),
    RateSheet(RateSheet),
    QuoteRequest(QuoteRequest),
    Offer(Offer),
    OfferAcceptance(OfferAcceptance),
    SignedOffer(SignedOffer),
    FirstPayment(FirstPayment),
    SecondPaymentRequest(SecondPaymentRequest),
    SecondPayment(SecondPayment),
    Refund(Refund),
    Error(ErrorReply),
    Issuance(Issuance),
    Link(Link),
}

impl Message {
    pub fn kind(&self) -> &str {
        self.envelope().kind()
    }

    /// Decodes an envelope from its CBOR bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Message, EnvelopeError> {
        Message::decode(Envelope::from_bytes(bytes)?)
    }

    /// One or two sentences saying what this message is, for the text part
    /// of the email (so a person reading the mailbox understands it). Built
    /// from the body as decoded, whether or not its signature verifies.
    pub fn describe(&self) -> String {
        let signer = self.envelope().signer().fingerprint();
        match self {
            Message::LicenseRequest(s) => format!(
                "A card asks the {} issuer for a license (card key {}).",
                s.unverified().currency,
                s.unverified().card.payment.fingerprint()
            ),
            Message::LicenseGranted(s) => {
                let l = s.unverified().license.unverified();
                format!(
                    "The {} issuer licenses card {} until {}.",
                    l.currency,
                    l.card.payment.fingerprint(),
                    l.expires_at
                )
            }
            Message::License(s) => format!(
                "A {} license for card {}.",
                s.unverified().currency,
                s.unverified().card.payment.fingerprint()
            ),
            Message::RevocationListRequest(s) => format!(
                "A request for the {} revocation list (newer than version {}).",
                s.unverified().currency,
                s.unverified().known_version
            ),
            Message::RevocationList(s) => format!(
                "The {} revocation list, version {}: {} revoked card(s).",
                s.unverified().currency,
                s.unverified().version,
                s.unverified().entries.len()
            ),
            Message::EnrollRequest(s) => format!(
                "A request to bind key {signer} to a {} bank account.",
                s.unverified().currency
            ),
            Message::Enrolled(s) => format!(
                "Key enrolled for account {:?} ({}).",
                s.unverified().account,
                s.unverified().currency
            ),
            Message::WithdrawRequest(s) => format!(
                "A request to withdraw {} into notes.",
                Money::new(s.unverified().amount, s.unverified().currency)
            ),
            Message::NotesIssued(s) => format!(
                "{} note(s) issued for a withdrawal; balance now {}.",
                s.unverified().notes.len(),
                Money::new(s.unverified().balance, s.unverified().currency)
            ),
            Message::Deposit(s) => format!(
                "A deposit of {} {} note(s).",
                s.unverified().notes.len(),
                s.unverified().currency
            ),
            Message::DepositReceipt(s) => format!(
                "Deposit receipt: {} credited; balance now {}.",
                Money::new(s.unverified().credited, s.unverified().currency),
                Money::new(s.unverified().balance, s.unverified().currency)
            ),
            Message::PaymentInvite(s) => format!(
                "An invitation to receive {} (transfer {}). Your wallet answers it automatically.",
                Money::new(s.unverified().amount, s.unverified().currency),
                s.unverified().transfer
            ),
            Message::PaymentAddress(s) => format!(
                "The card and challenge to pay for transfer {}.",
                s.unverified().transfer
            ),
            Message::Payment(s) => format!(
                "A payment of {} (transfer {}).",
                Money::new(s.unverified().amount, s.unverified().currency),
                s.unverified().transfer
            ),
            Message::Receipt(s) => format!(
                "A receipt for {} (transfer {}).",
                Money::new(s.unverified().amount, s.unverified().currency),
                s.unverified().transfer
            ),
            Message::RateSheet(s) => format!(
                "The exchange agent's rates ({} pair(s)), valid until {}.",
                s.unverified().rates.len(),
                s.unverified().valid_until
            ),
            Message::QuoteRequest(s) => {
                let q = s.unverified();
                match q.amount {
                    crate::messages::QuoteAmount::Pay(a) => format!(
                        "A request for an offer: pay {} for {}.",
                        Money::new(a, q.from),
                        q.to
                    ),
                    crate::messages::QuoteAmount::Receive(a) => format!(
                        "A request for an offer: receive {} for {}.",
                        Money::new(a, q.to),
                        q.from
                    ),
                }
            }
            Message::Offer(s) => describe_terms("Offer", &s.unverified().terms),
            Message::OfferAcceptance(s) => format!(
                "Acceptance of offer {}; the receiving card is {}.",
                s.unverified().tr_id,
                s.unverified().receiver.payment.fingerprint()
            ),
            Message::SignedOffer(s) => describe_terms("Signed offer", &s.unverified().terms),
            Message::FirstPayment(s) => {
                format!("First payment for exchange {}.", s.unverified().tr_id)
            }
            Message::SecondPaymentRequest(s) => format!(
                "Request for the second payment of exchange {}.",
                s.unverified().tr_id
            ),
            Message::SecondPayment(s) => {
                format!("Second payment for exchange {}.", s.unverified().tr_id)
            }
            Message::Refund(s) => format!(
                "Refund of a first payment for exchange {}: {}.",
                s.unverified().tr_id,
                s.unverified().reason.text()
            ),
            Message::Error(s) => format!(
                "Your request was refused: {} {}",
                s.unverified().code,
                s.unverified().reason
            ),
            Message::Issuance(s) => format!(
                "A note of {}.",
                Money::new(s.unverified().value, s.unverified().currency)
            ),
            Message::Link(s) => format!(
                "A payment signature for {} minor units.",
                s.unverified().amount.minor_units()
            ),
            Message::Unknown(e) => format!(
                "A message of kind {:?}, which this software does not know.",
                e.kind()
            ),
        }
    }
}

fn describe_terms(what: &str, t: &OfferTerms) -> String {
    format!(
        "{what} {}: pay {} by {}, receive {} (requested by {}).",
        t.tr_id,
        Money::new(t.a1, t.pay_currency),
        t.d1,
        Money::new(t.a2, t.receive_currency),
        t.d2
    )
}
