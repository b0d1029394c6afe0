//! Fixed keys and ready-made objects for tests (this crate's and others',
//! through the `testkit` feature). Keys come from fixed seeds, so that
//! signatures, ids and golden vectors are the same on every run.

#![allow(clippy::expect_used)] // test fixtures: a failure here is a broken test, not input

use crate::crypto::{Challenge, Id, SecretKey};
use crate::envelope::Signed;
use crate::license::{CardKeys, CardSecret, License, LicenseBook, Revocations};
use crate::money::{Amount, Currency, Timestamp};
use crate::note::{Expect, Issuance, Note, NotePolicy};

/// The instant tests call "now": 2026-11-23T00:00:00Z.
pub const NOW: Timestamp = Timestamp::from_unix(1_795_392_000);
/// Notes issued in tests live this long.
pub const NOTE_LIFETIME_SECS: u64 = 365 * 86_400;

/// A key from a one-byte seed.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// A card whose keys come from `seed` (payment) and `seed + 128` (auth).
pub fn card(seed: u8) -> CardSecret {
    CardSecret {
        payment: key(seed),
        auth: key(seed.wrapping_add(128)),
    }
}

/// A fixed challenge.
pub fn challenge(seed: u8) -> Challenge {
    Challenge([seed; 32])
}

/// A fixed id.
pub fn id(seed: u8) -> Id {
    Id([seed; 16])
}

/// An issuer of one currency with fixed keys, and the cards it licensed.
#[derive(Debug)]
pub struct TestIssuer {
    pub key: SecretKey,
    pub currency: Currency,
    pub licenses: Vec<Signed<License>>,
    serial: u64,
}

impl TestIssuer {
    pub fn new(seed: u8, currency: Currency) -> TestIssuer {
        TestIssuer {
            key: key(seed),
            currency,
            licenses: Vec::new(),
            serial: 0,
        }
    }

    /// Licenses `card` for a year from a day before [`NOW`].
    pub fn license(&mut self, card: &CardKeys) -> Signed<License> {
        let l = Signed::sign(
            License {
                currency: self.currency,
                card: *card,
                issued_at: NOW.saturating_sub_secs(86_400),
                expires_at: NOW.saturating_add_secs(365 * 86_400),
            },
            &self.key,
        )
        .expect("sign license");
        self.licenses.push(l.clone());
        l
    }

    /// Issues a note of `value` to `card`'s payment key.
    pub fn issue(&mut self, value: u64, card: &CardKeys) -> Note {
        self.serial += 1;
        // The first 255 serials are the fixed ids of the golden vectors;
        // after them, the counter itself (never all one byte).
        let serial = match u8::try_from(self.serial) {
            Ok(s) if s < u8::MAX => id(s),
            _ => {
                let mut b = [0xff; 16];
                b[8..].copy_from_slice(&self.serial.to_be_bytes());
                Id(b)
            }
        };
        let iss = Signed::sign(
            Issuance {
                serial,
                currency: self.currency,
                value: Amount::new(value),
                holder: card.payment,
                issued_at: NOW.saturating_sub_secs(3_600),
                expires_at: NOW.saturating_add_secs(NOTE_LIFETIME_SECS),
            },
            &self.key,
        )
        .expect("sign issuance");
        Note::issued(iss)
    }

    /// A book of every license this issuer gave.
    pub fn book(&self) -> LicenseBook {
        LicenseBook::from_signed(&self.licenses, &self.key.public(), self.currency)
            .expect("valid licenses")
    }
}

/// Pays `amount` from `note` (held by `from`) to `to` at [`NOW`].
pub fn pay(note: &Note, from: &CardSecret, to: &CardKeys, amount: u64, chall: Challenge) -> Note {
    note.pay(&from.payment, to.payment, Amount::new(amount), chall, NOW)
        .expect("pay")
}

/// Verifies `note` as paid to `to` against `chall`, at [`NOW`], with no
/// revocations.
pub fn verify_paid(
    issuer: &TestIssuer,
    note: &Note,
    to: &CardKeys,
    chall: Challenge,
) -> Result<crate::note::NoteView, crate::note::NoteError> {
    let book = issuer.book();
    let none = Revocations::none();
    let pk = issuer.key.public();
    note.verify(&NotePolicy {
        issuer: &pk,
        currency: issuer.currency,
        now: NOW,
        licenses: &book,
        revocations: &none,
        expect: Expect::Paid {
            payee: to.payment,
            challenge: chall,
        },
        accept_expired: false,
    })
}

/// One deterministic, valid instance of every message kind, in the order of
/// [`crate::messages::Message::KINDS`]. The cast: issuer JPY (seed 1),
/// issuer USD (seed 2), agent (seed 3), alice's JPY card (10), alice's USD
/// card (11), bob's JPY card (12), the agent's JPY and USD cards (20, 21),
/// alice's JPY account key (30).
pub fn sample_messages() -> Vec<crate::messages::Message> {
    use crate::messages::*;
    use crate::money::Rate;
    use crate::overspend::find_overspends;

    let mut jpy = TestIssuer::new(1, Currency::JPY);
    let mut usd = TestIssuer::new(2, Currency::USD);
    let agent = key(3);
    let (alice_jpy, alice_usd, bob_jpy) = (card(10), card(11), card(12));
    let (agent_jpy, agent_usd) = (card(20), card(21));
    let account = key(30);
    let lic_alice_jpy = jpy.license(&alice_jpy.keys());
    let lic_bob_jpy = jpy.license(&bob_jpy.keys());
    let lic_agent_jpy = jpy.license(&agent_jpy.keys());
    let _lic_alice_usd = usd.license(&alice_usd.keys());
    let lic_agent_usd = usd.license(&agent_usd.keys());

    fn s<T>(r: Result<T, crate::envelope::EnvelopeError>) -> T {
        r.expect("sign sample")
    }

    let note500 = jpy.issue(500, &alice_jpy.keys());
    let note1000 = jpy.issue(1000, &alice_jpy.keys());
    let usd_note = usd.issue(10_000, &agent_usd.keys());

    let license_request = s(LicenseRequest::new(&alice_jpy, Currency::JPY, NOW));
    let mut msgs: Vec<Message> = vec![license_request.clone().into()];
    msgs.push(
        s(Signed::sign(
            LicenseGranted {
                request: license_request.id(),
                license: lic_alice_jpy.clone(),
            },
            &jpy.key,
        ))
        .into(),
    );
    msgs.push(lic_alice_jpy.clone().into());
    let rl_request = s(Signed::sign(
        RevocationListRequest {
            currency: Currency::JPY,
            known_version: 0,
        },
        &alice_jpy.auth,
    ));
    msgs.push(rl_request.into());

    // A double spend by alice, for the revocation list and deposit receipt.
    let x = pay(&note500, &alice_jpy, &bob_jpy.keys(), 500, challenge(1));
    let y = pay(&note500, &alice_jpy, &agent_jpy.keys(), 500, challenge(2));
    let links: Vec<_> = x.links.iter().chain(y.links.iter()).cloned().collect();
    let proof = find_overspends(&note500.issuance, &links)
        .expect("sample tree")
        .remove(0);
    let rl = s(Signed::sign(
        crate::license::RevocationList {
            currency: Currency::JPY,
            version: 1,
            issued_at: NOW,
            entries: vec![crate::license::Revocation {
                payment_key: alice_jpy.keys().payment,
                revoked_at: NOW.saturating_add_secs(60),
                reason: crate::license::RevocationReason::Overspend { proof: proof.id() },
            }],
        },
        &jpy.key,
    ));
    msgs.push(rl.into());

    let enroll = s(Signed::sign(
        EnrollRequest {
            currency: Currency::JPY,
            code: "K7QF-2M9X-PL4D".into(),
        },
        &account,
    ));
    msgs.push(enroll.clone().into());
    msgs.push(
        s(Signed::sign(
            Enrolled {
                request: enroll.id(),
                currency: Currency::JPY,
                account: "alice".into(),
                balance: Amount::new(50_000),
            },
            &jpy.key,
        ))
        .into(),
    );
    let withdraw = s(Signed::sign(
        WithdrawRequest {
            request_id: id(1),
            currency: Currency::JPY,
            amount: Amount::new(1_500),
            card: alice_jpy.keys(),
        },
        &account,
    ));
    msgs.push(withdraw.clone().into());
    msgs.push(
        s(Signed::sign(
            NotesIssued {
                request: withdraw.id(),
                currency: Currency::JPY,
                notes: vec![note500.clone(), note1000.clone()],
                balance: Amount::new(48_500),
            },
            &jpy.key,
        ))
        .into(),
    );
    let deposit_link = pay(
        &note1000,
        &alice_jpy,
        &CardKeys {
            payment: jpy.key.public(),
            auth: jpy.key.public(),
        },
        1000,
        Deposit::challenge_for(&account.public()),
    );
    // The agent's card passes on the note alice also paid to bob.
    let y_dep = pay(
        &y,
        &agent_jpy,
        &CardKeys {
            payment: jpy.key.public(),
            auth: jpy.key.public(),
        },
        500,
        Deposit::challenge_for(&account.public()),
    );
    let deposit = s(Signed::sign(
        Deposit {
            request_id: id(2),
            currency: Currency::JPY,
            notes: vec![deposit_link.clone(), y_dep.clone()],
            licenses: vec![lic_alice_jpy.clone(), lic_agent_jpy.clone()],
        },
        &account,
    ));
    msgs.push(deposit.clone().into());
    msgs.push(
        s(Signed::sign(
            DepositReceipt {
                request: deposit.id(),
                currency: Currency::JPY,
                credited: Amount::new(1000),
                balance: Amount::new(49_500),
                results: vec![
                    DepositResult {
                        note: deposit_link.id(),
                        state: deposit_link.state(),
                        amount: Amount::new(1000),
                        result: DepositOutcome::Credited,
                    },
                    DepositResult {
                        note: note500.id(),
                        state: y_dep.state(),
                        amount: Amount::new(500),
                        result: DepositOutcome::Overspent {
                            proof: Box::new(proof.clone()),
                        },
                    },
                ],
            },
            &jpy.key,
        ))
        .into(),
    );

    let invite = s(Signed::sign(
        PaymentInvite {
            transfer: id(3),
            currency: Currency::JPY,
            amount: Amount::new(700),
            memo: "dinner".into(),
        },
        &alice_jpy.auth,
    ));
    msgs.push(invite.clone().into());
    msgs.push(
        s(Signed::sign(
            PaymentAddress {
                transfer: id(3),
                invite: invite.id(),
                card: bob_jpy.keys(),
                license: lic_bob_jpy.clone(),
                challenge: challenge(4),
            },
            &bob_jpy.auth,
        ))
        .into(),
    );
    let to_bob = pay(&note1000, &alice_jpy, &bob_jpy.keys(), 700, challenge(4));
    let payment = s(Signed::sign(
        Payment {
            transfer: id(3),
            currency: Currency::JPY,
            amount: Amount::new(700),
            notes: vec![to_bob],
            licenses: vec![lic_alice_jpy.clone()],
            memo: "dinner".into(),
        },
        &alice_jpy.auth,
    ));
    msgs.push(payment.clone().into());
    msgs.push(
        s(Signed::sign(
            Receipt {
                transfer: id(3),
                payment: payment.id(),
                currency: Currency::JPY,
                amount: Amount::new(700),
            },
            &bob_jpy.auth,
        ))
        .into(),
    );

    let rate = Rate {
        mantissa: 67,
        scale: 4,
    };
    msgs.push(
        s(Signed::sign(
            RateSheet {
                issued_at: NOW,
                valid_until: NOW.saturating_add_secs(3_600),
                rates: vec![RateQuote {
                    from: Currency::JPY,
                    to: Currency::USD,
                    rate,
                    min: Amount::new(100),
                    max: Amount::new(1_000_000),
                }],
            },
            &agent,
        ))
        .into(),
    );
    let quote = s(Signed::sign(
        QuoteRequest {
            request_id: id(4),
            from: Currency::JPY,
            to: Currency::USD,
            amount: QuoteAmount::Pay(Amount::new(1000)),
        },
        &alice_jpy.auth,
    ));
    msgs.push(quote.clone().into());
    let terms = OfferTerms {
        tr_id: id(5),
        pay_currency: Currency::JPY,
        a1: Amount::new(1000),
        d1: NOW.saturating_add_secs(3_600),
        receive_currency: Currency::USD,
        a2: Amount::new(670),
        d2: NOW.saturating_add_secs(7_200),
        rate,
        agent: agent.public(),
        pay_to: agent_jpy.keys(),
        pay_to_license: lic_agent_jpy.clone(),
        challenge: challenge(6),
        payer_license: lic_agent_usd.clone(),
    };
    let offer = s(Signed::sign(
        Offer {
            quote: quote.id(),
            terms: terms.clone(),
        },
        &agent,
    ));
    msgs.push(offer.clone().into());
    let acceptance = s(Signed::sign(
        OfferAcceptance {
            tr_id: id(5),
            offer: offer.id(),
            receiver: alice_usd.keys(),
        },
        &alice_usd.auth,
    ));
    msgs.push(acceptance.clone().into());
    let signed_offer = s(Signed::sign(
        SignedOffer {
            terms: terms.clone(),
            receiver: alice_usd.keys(),
            acceptance: acceptance.id(),
        },
        &agent,
    ));
    msgs.push(signed_offer.clone().into());
    let to_agent = pay(&note1000, &alice_jpy, &agent_jpy.keys(), 1000, challenge(6));
    let first = s(Signed::sign(
        FirstPayment {
            tr_id: id(5),
            signed_offer: signed_offer.id(),
            notes: vec![to_agent.clone()],
            licenses: vec![lic_alice_jpy.clone()],
            refund_to: alice_jpy.keys().payment,
            refund_challenge: challenge(7),
        },
        &alice_jpy.auth,
    ));
    msgs.push(first.clone().into());
    let request = s(Signed::sign(
        SecondPaymentRequest {
            tr_id: id(5),
            signed_offer: signed_offer.id(),
            challenge: challenge(8),
        },
        &alice_usd.auth,
    ));
    msgs.push(request.clone().into());
    let to_alice = pay(&usd_note, &agent_usd, &alice_usd.keys(), 670, challenge(8));
    msgs.push(
        s(Signed::sign(
            SecondPayment {
                tr_id: id(5),
                request: request.id(),
                notes: vec![to_alice],
                licenses: vec![lic_agent_usd.clone()],
            },
            &agent,
        ))
        .into(),
    );
    let back = pay(&to_agent, &agent_jpy, &alice_jpy.keys(), 1000, challenge(7));
    msgs.push(
        s(Signed::sign(
            Refund {
                tr_id: id(5),
                payment: first.id(),
                reason: ErrorCode::FirstPaymentLate,
                notes: vec![back],
                licenses: vec![lic_alice_jpy.clone(), lic_agent_jpy.clone()],
            },
            &agent,
        ))
        .into(),
    );
    // A second, different request for the paid exchange: a double demand,
    // refused with the request that was paid as evidence.
    let second_request = s(Signed::sign(
        SecondPaymentRequest {
            tr_id: id(5),
            signed_offer: signed_offer.id(),
            challenge: challenge(9),
        },
        &alice_usd.auth,
    ));
    msgs.push(
        s(Signed::sign(
            ErrorReply {
                request: Some(second_request.id()),
                request_kind: Some("second-payment-request".into()),
                code: ErrorCode::DoubleDemand,
                reason: "exchange already paid against another request".into(),
                evidence: vec![request.envelope().clone()],
            },
            &agent,
        ))
        .into(),
    );
    msgs.push(note500.issuance.clone().into());
    msgs.push(x.links[0].clone().into());
    msgs
}
