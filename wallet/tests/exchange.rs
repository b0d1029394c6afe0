//! The user's side of a currency exchange, in process: a wallet on a
//! temporary database with a JPY and a USD card, test issuers, and a small
//! scripted agent (an agent key, a JPY and a USD card) that signs offers,
//! signed offers, second payments, refunds and errors exactly as
//! docs/protocol.md section 4.4 says, or with one thing wrong. Mail goes
//! from the wallet's outbox to the agent's script and back into the
//! wallet's handler.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::process::Command;

use mailer::crypto::{Challenge, SecretKey};
use mailer::envelope::{Envelope, Signed};
use mailer::evidence::{self, ExchangeEvidence, Status};
use mailer::imap::Disposition;
use mailer::license::{CardSecret, License};
use mailer::messages::{
    ErrorCode, ErrorReply, FirstPayment, LicenseGranted, Offer, OfferAcceptance, OfferTerms,
    QuoteAmount, QuoteRequest, Refund, SecondPayment, SecondPaymentRequest, SignedOffer,
};
use mailer::mime::{build_mail, parse_mail, MessageId, OutgoingMail};
use mailer::money::{Amount, Currency, Rate, Timestamp};
use mailer::note::Note;
use mailer::testkit::{card, key, TestIssuer, NOTE_LIFETIME_SECS, NOW};
use rusqlite::Connection;
use wallet::exchange::{self, Policy};
use wallet::{handler::handle_mail, ops, store, view, Home, Wallet};

const AGENT: &str = "fx@agent.example.test";
const WALLET: &str = env!("CARGO_BIN_EXE_wallet");

/// The user's wallet, with licensed JPY and USD cards and the agent pinned.
struct W {
    dir: tempfile::TempDir,
    w: Wallet,
    conn: Connection,
    seen: i64,
    n: u32,
}

impl W {
    fn new(jpy: &mut TestIssuer, usd: &mut TestIssuer, agent: &SecretKey) -> W {
        let dir = tempfile::tempdir().unwrap();
        let (w, conn) = Home::new(dir.path())
            .create("alice@example.test", None, NOW)
            .unwrap();
        let mut me = W {
            dir,
            w,
            conn,
            seen: 0,
            n: 0,
        };
        for issuer in [jpy, usd] {
            let c = issuer.currency;
            ops::add_issuer(
                &me.conn,
                c,
                &format!("issuer-{}@example.test", c.as_str().to_lowercase()),
                issuer.key.public(),
                NOW,
            )
            .unwrap();
            let op = ops::new_card(&me.conn, &me.w, c, NOW).unwrap();
            let keys = store::card(&me.conn, c).unwrap().unwrap().keys;
            let request = ops::op(&me.conn, op).unwrap().request.unwrap();
            let granted = Signed::sign(
                LicenseGranted {
                    request,
                    license: issuer.license(&keys),
                },
                &issuer.key,
            )
            .unwrap();
            me.outbox();
            me.receive(vec![granted.into_envelope()]);
        }
        assert!(exchange::add_agent(&me.conn, AGENT, agent.public(), NOW).unwrap());
        me
    }

    /// Envelopes of each mail queued since the last call.
    fn outbox(&mut self) -> Vec<Vec<Envelope>> {
        let rows = mailer::outbox::queued_after(&self.conn, self.seen).unwrap();
        if let Some(last) = rows.last() {
            self.seen = last.id;
        }
        rows.into_iter()
            .map(|q| parse_mail(&q.raw).unwrap().envelopes)
            .collect()
    }

    /// The one mail queued since the last call, with one envelope.
    fn sent_one(&mut self) -> Envelope {
        let mut mails = self.outbox();
        assert_eq!(mails.len(), 1, "{mails:?}");
        let mut envs = mails.remove(0);
        assert_eq!(envs.len(), 1, "{envs:?}");
        envs.remove(0)
    }

    fn receive_at(&mut self, envelopes: Vec<Envelope>, now: Timestamp) -> Disposition {
        self.n += 1;
        let raw = build_mail(&OutgoingMail {
            from: AGENT.into(),
            to: "alice@example.test".into(),
            subject: "exchange".into(),
            message_id: MessageId::parse(&format!(
                "m{}-{}@agent.example.test",
                self.n,
                envelopes[0].id().to_hex()
            ))
            .unwrap(),
            in_reply_to: None,
            references: vec![],
            date: now,
            text: "exchange".into(),
            envelopes,
            auto_reply: true,
        })
        .unwrap();
        let tx = self.conn.transaction().unwrap();
        let d = handle_mail(&tx, &self.w, &raw, now).unwrap();
        tx.commit().unwrap();
        d
    }

    fn receive(&mut self, envelopes: Vec<Envelope>) -> Disposition {
        self.receive_at(envelopes, NOW)
    }

    fn card(&self, c: Currency) -> store::CardRow {
        store::card(&self.conn, c).unwrap().unwrap()
    }

    fn spendable(&self, c: Currency) -> u64 {
        store::spendable_total(&self.conn, c).unwrap().minor_units()
    }

    fn give(&self, issuer: &mut TestIssuer, values: &[u64]) {
        let card = self.card(issuer.currency);
        for v in values {
            let n = issuer.issue(*v, &card.keys);
            store::insert_note(
                &self.conn,
                &n,
                &n.id(),
                card.id,
                Amount::new(*v),
                NOW.saturating_add_secs(NOTE_LIFETIME_SECS),
                0,
                NOW,
            )
            .unwrap();
        }
    }

    fn op(&self, id: i64) -> ops::Op {
        ops::op(&self.conn, id).unwrap()
    }

    fn start(&mut self, amount: QuoteAmount, policy: Policy) -> (i64, Signed<QuoteRequest>) {
        let (from, to) = (Currency::JPY, Currency::USD);
        let id =
            exchange::start(&self.conn, &self.w, AGENT, from, to, amount, policy, NOW).unwrap();
        let quote = Signed::<QuoteRequest>::from_envelope(self.sent_one()).unwrap();
        (id, quote)
    }
}

/// The scripted agent: its key, a JPY card (paid by users) and a USD card
/// (pays users), each licensed by the test issuers.
struct Agent {
    key: SecretKey,
    jpy: CardSecret,
    usd: CardSecret,
    jpy_license: Signed<License>,
    usd_license: Signed<License>,
    float: Vec<Note>,
    challenge: Challenge,
}

impl Agent {
    fn new(jpy: &mut TestIssuer, usd: &mut TestIssuer) -> Agent {
        let (jc, uc) = (card(20), card(21));
        let jpy_license = jpy.license(&jc.keys());
        let usd_license = usd.license(&uc.keys());
        let float = vec![usd.issue(10_000, &uc.keys()), usd.issue(5_000, &uc.keys())];
        Agent {
            key: key(3),
            jpy: jc,
            usd: uc,
            jpy_license,
            usd_license,
            float,
            challenge: Challenge::random(),
        }
    }

    fn terms(&self, a1: u64, a2: u64) -> OfferTerms {
        OfferTerms {
            tr_id: mailer::crypto::Id::random(),
            pay_currency: Currency::JPY,
            a1: Amount::new(a1),
            d1: NOW.saturating_add_secs(3_600),
            receive_currency: Currency::USD,
            a2: Amount::new(a2),
            d2: NOW.saturating_add_secs(7_200),
            rate: "0.0067".parse().unwrap(),
            agent: self.key.public(),
            pay_to: self.jpy.keys(),
            pay_to_license: self.jpy_license.clone(),
            challenge: self.challenge,
            payer_license: self.usd_license.clone(),
        }
    }

    fn offer(&self, quote: &Signed<QuoteRequest>, terms: OfferTerms) -> Signed<Offer> {
        Signed::sign(
            Offer {
                quote: quote.id(),
                terms,
            },
            &self.key,
        )
        .unwrap()
    }

    fn signed_offer(&self, acceptance: &Envelope, terms: OfferTerms) -> Signed<SignedOffer> {
        let a = Signed::<OfferAcceptance>::from_envelope(acceptance.clone()).unwrap();
        // The acceptance is signed by the receiving card it names.
        let body = a.verify_signer(&a.unverified().receiver.auth).unwrap();
        Signed::sign(
            SignedOffer {
                terms,
                receiver: body.receiver,
                acceptance: a.id(),
            },
            &self.key,
        )
        .unwrap()
    }

    /// Pays `a2` from the float to the request's receiver and challenge.
    fn second_payment(
        &self,
        so: &Signed<SignedOffer>,
        request: &Envelope,
        a2: u64,
        challenge: Option<Challenge>,
    ) -> Signed<SecondPayment> {
        let r = Signed::<SecondPaymentRequest>::from_envelope(request.clone()).unwrap();
        let body = r.verify_signer(&so.unverified().receiver.auth).unwrap();
        let note = self.float[0]
            .pay(
                &self.usd.payment,
                so.unverified().receiver.payment,
                Amount::new(a2),
                challenge.unwrap_or(body.challenge),
                NOW,
            )
            .unwrap();
        Signed::sign(
            SecondPayment {
                tr_id: body.tr_id,
                request: r.id(),
                notes: vec![note],
                licenses: vec![self.usd_license.clone()],
            },
            &self.key,
        )
        .unwrap()
    }

    /// Pays the first payment's notes back to its refund key.
    fn refund(&self, first: &Envelope, reason: ErrorCode) -> Signed<Refund> {
        let f = Signed::<FirstPayment>::from_envelope(first.clone()).unwrap();
        let body = f.verify().unwrap();
        let notes = body
            .notes
            .iter()
            .map(|n| {
                n.pay(
                    &self.jpy.payment,
                    body.refund_to,
                    n.held(),
                    body.refund_challenge,
                    NOW,
                )
                .unwrap()
            })
            .collect();
        let mut licenses = body.licenses.clone();
        licenses.push(self.jpy_license.clone());
        Signed::sign(
            Refund {
                tr_id: body.tr_id,
                payment: f.id(),
                reason,
                notes,
                licenses,
            },
            &self.key,
        )
        .unwrap()
    }

    fn error(&self, about: &Envelope, code: ErrorCode, evidence: Vec<Envelope>) -> Envelope {
        Signed::sign(
            ErrorReply {
                request: Some(about.id()),
                request_kind: Some(about.kind().into()),
                code,
                reason: format!("refused: {}", code.text()),
                evidence,
            },
            &self.key,
        )
        .unwrap()
        .into_envelope()
    }
}

struct Rig {
    jpy: TestIssuer,
    agent: Agent,
    user: W,
}

fn rig() -> Rig {
    let mut jpy = TestIssuer::new(1, Currency::JPY);
    let mut usd = TestIssuer::new(2, Currency::USD);
    let agent = Agent::new(&mut jpy, &mut usd);
    let user = W::new(&mut jpy, &mut usd, &agent.key);
    user.give(&mut jpy, &[600, 600, 800]);
    Rig { jpy, agent, user }
}

/// Where an exchange stands after its signed offer was paid: the op, the
/// signed offer, and the mail's two envelopes.
struct Paid {
    op: i64,
    so: Signed<SignedOffer>,
    first: Envelope,
    request: Envelope,
}

/// Quote, offer (accepted by `--yes`), signed offer, payment.
fn pay_1000(r: &mut Rig) -> Paid {
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
    let terms = r.agent.terms(1000, 670);
    let offer = r.agent.offer(&quote, terms.clone());
    assert_eq!(
        r.user.receive(vec![offer.into_envelope()]),
        Disposition::Processed
    );
    let acceptance = r.user.sent_one();
    assert_eq!(r.user.op(op).state, "accepting");
    let so = r.agent.signed_offer(&acceptance, terms);
    assert_eq!(
        r.user.receive(vec![so.envelope().clone()]),
        Disposition::Processed
    );
    let mut mails = r.user.outbox();
    assert_eq!(mails.len(), 1);
    let envs = mails.remove(0);
    let kinds: Vec<&str> = envs.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["first-payment", "second-payment-request"]);
    Paid {
        op,
        so,
        first: envs[0].clone(),
        request: envs[1].clone(),
    }
}

#[test]
fn pay_side_exchange_completes_and_lands_on_the_usd_card() {
    let mut r = rig();
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Ask);
    let jpy = r.user.card(Currency::JPY);
    let usd = r.user.card(Currency::USD);
    // The quote is signed by the paying card's authentication key.
    quote.verify_signer(&jpy.keys.auth).unwrap();
    assert_eq!(
        quote.unverified().amount,
        QuoteAmount::Pay(Amount::new(1000))
    );
    assert_eq!(r.user.op(op).state, "quoting");

    let terms = r.agent.terms(1000, 670);
    let offer = r.agent.offer(&quote, terms.clone());
    assert_eq!(
        r.user.receive(vec![offer.envelope().clone()]),
        Disposition::Processed
    );
    let o = r.user.op(op);
    assert_eq!(o.state, "offered");
    assert_eq!(o.transfer, Some(terms.tr_id));
    assert_eq!(o.amount, Amount::new(1000));
    assert!(
        r.user.outbox().is_empty(),
        "nothing is sent before the user agrees"
    );
    let line = view::pending(&r.user.conn).unwrap().pop().unwrap();
    assert!(line.waits_for_user);
    assert!(
        line.detail.contains("wallet exchange accept"),
        "{}",
        line.detail
    );
    // The same offer again changes nothing.
    r.user.receive(vec![offer.envelope().clone()]);
    assert_eq!(r.user.op(op).state, "offered");

    assert_eq!(
        exchange::accept(&r.user.conn, &r.user.w, op, NOW).unwrap(),
        "accepting"
    );
    let acceptance = r.user.sent_one();
    assert_eq!(acceptance.kind(), "offer-acceptance");
    // Signed by the RECEIVING card's authentication key.
    acceptance.verify_signer(&usd.keys.auth).unwrap();
    let bal = view::balances(&r.user.conn).unwrap();
    let usd_bal = bal.iter().find(|b| b.currency == "USD").unwrap();
    assert_eq!(usd_bal.incoming_minor, 670);

    let so = r.agent.signed_offer(&acceptance, terms.clone());
    r.user.receive(vec![so.envelope().clone()]);
    let mut mails = r.user.outbox();
    assert_eq!(mails.len(), 1, "one mail with both envelopes");
    let envs = mails.remove(0);
    assert_eq!(envs[0].kind(), "first-payment");
    assert_eq!(envs[1].kind(), "second-payment-request");
    let first = Signed::<FirstPayment>::from_envelope(envs[0].clone()).unwrap();
    let fb = first.verify_signer(&jpy.keys.auth).unwrap();
    assert_eq!(fb.signed_offer, so.id());
    assert_eq!(fb.refund_to, jpy.keys.payment);
    // The notes pay the agent's card against the offer's challenge, A1 in all.
    let view = mailer::note::verify_bundle(
        &fb.notes,
        &mailer::note::NotePolicy {
            issuer: &r.jpy.key.public(),
            currency: Currency::JPY,
            now: NOW,
            licenses: &mailer::license::LicenseBook::from_signed(
                &fb.licenses,
                &r.jpy.key.public(),
                Currency::JPY,
            )
            .unwrap(),
            revocations: &mailer::license::Revocations::none(),
            expect: mailer::note::Expect::Paid {
                payee: terms.pay_to.payment,
                challenge: terms.challenge,
            },
            accept_expired: false,
        },
        Some(Amount::new(1000)),
    )
    .unwrap();
    assert_eq!(view.total, Amount::new(1000));
    assert!(
        fb.licenses
            .iter()
            .all(|l| l.unverified().card.payment != terms.pay_to.payment),
        "the agent's own license is not sent back to it"
    );
    let request = Signed::<SecondPaymentRequest>::from_envelope(envs[1].clone()).unwrap();
    request.verify_signer(&usd.keys.auth).unwrap();
    assert_eq!(request.unverified().signed_offer, so.id());

    let o = r.user.op(op);
    assert_eq!(o.state, "paying");
    assert_eq!(o.request, Some(request.id()));
    assert_eq!(r.user.spendable(Currency::JPY), 1000);
    assert_eq!(r.user.card(Currency::USD).locked_by, Some(op));
    assert_eq!(r.user.card(Currency::JPY).locked_by, None);
    let bal = view::balances(&r.user.conn).unwrap();
    let jpy_bal = bal.iter().find(|b| b.currency == "JPY").unwrap();
    assert_eq!(jpy_bal.outgoing_minor, 1000);

    let second = r.agent.second_payment(&so, &envs[1], 670, None);
    assert_eq!(
        r.user.receive(vec![second.envelope().clone()]),
        Disposition::Processed
    );
    let o = r.user.op(op);
    assert_eq!(o.state, "done", "{}", o.detail);
    assert!(o.is_final);
    assert_eq!(r.user.spendable(Currency::USD), 670);
    assert_eq!(r.user.spendable(Currency::JPY), 1000);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
    // The same second payment again: nothing more.
    r.user.receive(vec![second.envelope().clone()]);
    assert_eq!(r.user.spendable(Currency::USD), 670);
    assert!(r.user.outbox().is_empty());
    let h = view::history(&r.user.conn).unwrap().pop().unwrap();
    assert_eq!(h.kind, "exchange");
    assert!(
        h.detail.contains("received 6.70 USD for 1000 JPY"),
        "{}",
        h.detail
    );
    let st = exchange::status(&r.user.conn, op).unwrap();
    assert_eq!(st.tr_id, Some(terms.tr_id.to_hex()));
    assert_eq!(st.a2.as_deref(), Some("6.70 USD"));
    let roles: Vec<&str> = st.envelopes.iter().map(|e| e.role.as_str()).collect();
    assert_eq!(
        roles,
        [
            "quote-request",
            "offer",
            "offer-acceptance",
            "signed-offer",
            "first-payment",
            "second-payment-request",
            "second-payment"
        ]
    );
    // A finished exchange proves both payments.
    let f = evidence::verify(&exchange::evidence(&r.user.conn, op).unwrap(), NOW).unwrap();
    assert_eq!(f.first_paid_minor, Some(1000));
    assert_eq!(f.second_paid_minor, Some(670));
}

#[test]
fn receive_side_quote_fixes_a2() {
    let mut r = rig();
    let (op, quote) = r
        .user
        .start(QuoteAmount::Receive(Amount::new(1000)), Policy::Any);
    assert_eq!(r.user.op(op).amount, Amount::ZERO);
    // An offer that does not give the amount asked for is refused.
    let wrong = r.agent.offer(&quote, r.agent.terms(1493, 999));
    assert!(matches!(
        r.user.receive(vec![wrong.into_envelope()]),
        Disposition::Rejected { .. }
    ));
    let o = r.user.op(op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("A2"), "{}", o.detail);

    let (op, quote) = r
        .user
        .start(QuoteAmount::Receive(Amount::new(1000)), Policy::Any);
    let terms = r.agent.terms(1493, 1000);
    r.user
        .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
    assert_eq!(r.user.op(op).amount, Amount::new(1493));
    let acceptance = r.user.sent_one();
    let so = r.agent.signed_offer(&acceptance, terms);
    r.user.receive(vec![so.envelope().clone()]);
    let envs = r.user.outbox().remove(0);
    assert_eq!(r.user.card(Currency::USD).locked_by, Some(op));
    assert_eq!(r.user.spendable(Currency::JPY), 2000 - 1493);
    let second = r.agent.second_payment(&so, &envs[1], 1000, None);
    r.user.receive(vec![second.into_envelope()]);
    assert_eq!(r.user.op(op).state, "done");
    assert_eq!(r.user.spendable(Currency::USD), 1000);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
}

#[test]
fn max_rate_accepts_within_and_waits_beyond() {
    let mut r = rig();
    // 1000 JPY for 6.70 USD is 149.2537... JPY per USD.
    let (op, quote) = r.user.start(
        QuoteAmount::Pay(Amount::new(1000)),
        Policy::MaxRate("149.2538".parse().unwrap()),
    );
    r.user.receive(vec![r
        .agent
        .offer(&quote, r.agent.terms(1000, 670))
        .into_envelope()]);
    assert_eq!(r.user.op(op).state, "accepting");
    assert_eq!(r.user.sent_one().kind(), "offer-acceptance");

    let (op, quote) = r.user.start(
        QuoteAmount::Pay(Amount::new(1000)),
        Policy::MaxRate("149.2537".parse().unwrap()),
    );
    let terms = r.agent.terms(1000, 670);
    r.user
        .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
    assert_eq!(r.user.op(op).state, "offered");
    assert!(r.user.outbox().is_empty());
    // The clock moving on does not accept it either; past D1 it expires.
    exchange::advance(&r.user.conn, &r.user.w, NOW.saturating_add_secs(60)).unwrap();
    assert_eq!(r.user.op(op).state, "offered");
    exchange::advance(&r.user.conn, &r.user.w, terms.d1.saturating_add_secs(1)).unwrap();
    assert_eq!(r.user.op(op).state, "expired");

    // Exactly the limit is within it.
    let t = r.agent.terms(1500, 1000);
    assert!(exchange::price_at_most(&t, &"150".parse::<Rate>().unwrap()));
    assert!(!exchange::price_at_most(
        &t,
        &"149.99".parse::<Rate>().unwrap()
    ));
    assert_eq!(exchange::price_text(&t), "150 JPY per USD");
}

#[test]
fn a_signed_offer_that_differs_from_the_offer_aborts_and_pays_nothing() {
    for field in ["a2", "d1", "challenge", "pay_to"] {
        let mut r = rig();
        let (op, quote) = r
            .user
            .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
        let terms = r.agent.terms(1000, 670);
        r.user
            .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
        let acceptance = r.user.sent_one();
        let mut changed = terms.clone();
        match field {
            "a2" => changed.a2 = Amount::new(600),
            "d1" => changed.d1 = changed.d1.saturating_add_secs(1),
            "challenge" => changed.challenge = Challenge::random(),
            _ => changed.pay_to = card(22).keys(),
        }
        let so = r.agent.signed_offer(&acceptance, changed);
        assert!(matches!(
            r.user.receive(vec![so.into_envelope()]),
            Disposition::Rejected { .. }
        ));
        let o = r.user.op(op);
        assert_eq!(o.state, "failed", "{field}");
        assert!(
            o.detail.contains("signed offer differs from its offer")
                && o.detail.contains(&format!("`{field}`")),
            "{field}: {}",
            o.detail
        );
        assert!(r.user.outbox().is_empty(), "{field}: nothing more is sent");
        assert_eq!(r.user.spendable(Currency::JPY), 2000, "{field}");
        assert_eq!(r.user.card(Currency::USD).locked_by, None);
    }
}

#[test]
fn answers_signed_by_another_key_are_ignored() {
    let mut r = rig();
    let mallory = key(4);
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
    let terms = r.agent.terms(1000, 670);
    // An offer signed by another key, even naming that key as the agent.
    let mut forged_terms = terms.clone();
    forged_terms.agent = mallory.public();
    let forged = Signed::sign(
        Offer {
            quote: quote.id(),
            terms: forged_terms,
        },
        &mallory,
    )
    .unwrap();
    assert!(matches!(
        r.user.receive(vec![forged.into_envelope()]),
        Disposition::Rejected { .. }
    ));
    assert_eq!(r.user.op(op).state, "quoting");

    r.user
        .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
    let acceptance = r.user.sent_one();
    let good = r.agent.signed_offer(&acceptance, terms.clone());
    let forged = Signed::sign(good.unverified().clone(), &mallory).unwrap();
    assert!(matches!(
        r.user.receive(vec![forged.into_envelope()]),
        Disposition::Rejected { .. }
    ));
    assert_eq!(r.user.op(op).state, "accepting");
    assert!(r.user.outbox().is_empty());

    r.user.receive(vec![good.envelope().clone()]);
    let envs = r.user.outbox().remove(0);
    assert_eq!(r.user.op(op).state, "paying");
    let second = r.agent.second_payment(&good, &envs[1], 670, None);
    let forged = Signed::sign(second.unverified().clone(), &mallory).unwrap();
    assert!(matches!(
        r.user.receive(vec![forged.into_envelope()]),
        Disposition::Rejected { .. }
    ));
    let error = Signed::sign(
        ErrorReply {
            request: Some(envs[1].id()),
            request_kind: Some("second-payment-request".into()),
            code: ErrorCode::OfferExpired,
            reason: "forged".into(),
            evidence: vec![],
        },
        &mallory,
    )
    .unwrap();
    r.user.receive(vec![error.into_envelope()]);
    let o = r.user.op(op);
    assert_eq!(o.state, "paying");
    assert_eq!(r.user.spendable(Currency::USD), 0);
    assert_eq!(r.user.card(Currency::USD).locked_by, Some(op));
    // The genuine one still completes the exchange.
    r.user.receive(vec![second.into_envelope()]);
    assert_eq!(r.user.op(op).state, "done");
}

/// One change to an honest offer's terms.
type Change = Box<dyn Fn(&Agent, &mut OfferTerms)>;

#[test]
fn offers_failing_their_checks_are_refused() {
    let cases: Vec<(&str, Change)> = vec![
        ("a1", Box::new(|_, t| t.a1 = Amount::new(999))),
        (
            "currencies",
            Box::new(|_, t| t.receive_currency = Currency::EUR),
        ),
        ("D1", Box::new(|_, t| t.d1 = NOW)),
        ("D2", Box::new(|_, t| t.d2 = t.d1.saturating_sub_secs(1))),
        ("zero", Box::new(|_, t| t.a2 = Amount::ZERO)),
        (
            "license",
            Box::new(|a, t| t.pay_to_license = a.usd_license.clone()),
        ),
        ("pay_to", Box::new(|a, t| t.pay_to = a.usd.keys())),
        (
            "payer license",
            Box::new(|a, t| t.payer_license = a.jpy_license.clone()),
        ),
    ];
    for (what, change) in cases {
        let mut r = rig();
        let (op, quote) = r
            .user
            .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
        let mut terms = r.agent.terms(1000, 670);
        change(&r.agent, &mut terms);
        assert!(
            matches!(
                r.user
                    .receive(vec![r.agent.offer(&quote, terms).into_envelope()]),
                Disposition::Rejected { .. }
            ),
            "{what}"
        );
        let o = r.user.op(op);
        assert_eq!(o.state, "failed", "{what}");
        assert!(
            o.detail.starts_with("the agent's offer was refused"),
            "{what}: {}",
            o.detail
        );
        assert!(r.user.outbox().is_empty(), "{what}");
    }
}

#[test]
fn a_second_payment_that_does_not_verify_fails_and_keeps_nothing() {
    let mut r = rig();
    let p = pay_1000(&mut r);
    // Paid against another challenge than the request's.
    let bad = r
        .agent
        .second_payment(&p.so, &p.request, 670, Some(Challenge::random()));
    assert!(matches!(
        r.user.receive(vec![bad.into_envelope()]),
        Disposition::Rejected { .. }
    ));
    let o = r.user.op(p.op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("does not verify"), "{}", o.detail);
    assert!(o.detail.contains("wallet evidence"), "{}", o.detail);
    assert_eq!(r.user.spendable(Currency::USD), 0);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);

    // Short of A2.
    let mut r = rig();
    let p = pay_1000(&mut r);
    let short = r.agent.second_payment(&p.so, &p.request, 600, None);
    r.user.receive(vec![short.into_envelope()]);
    assert_eq!(r.user.op(p.op).state, "failed");
    assert_eq!(r.user.spendable(Currency::USD), 0);
}

#[test]
fn a_refund_brings_the_first_payment_back_once() {
    let mut r = rig();
    let p = pay_1000(&mut r);
    assert_eq!(r.user.spendable(Currency::JPY), 1000);
    let refund = r.agent.refund(&p.first, ErrorCode::FirstPaymentLate);
    assert_eq!(
        r.user.receive(vec![refund.envelope().clone()]),
        Disposition::Processed
    );
    let o = r.user.op(p.op);
    assert_eq!(o.state, "refunded", "{}", o.detail);
    assert!(o.is_final);
    assert!(o.detail.contains("E505"), "{}", o.detail);
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
    r.user.receive(vec![refund.into_envelope()]);
    assert_eq!(r.user.spendable(Currency::JPY), 2000);

    // An error first (the exchange fails), then the refund: still taken.
    let mut r = rig();
    let p = pay_1000(&mut r);
    let error = r.agent.error(&p.first, ErrorCode::FirstPaymentLate, vec![]);
    r.user.receive(vec![error]);
    let o = r.user.op(p.op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("refund may follow"), "{}", o.detail);
    let refund = r.agent.refund(&p.first, ErrorCode::FirstPaymentLate);
    r.user.receive(vec![refund.envelope().clone()]);
    assert_eq!(r.user.op(p.op).state, "refunded");
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
    r.user.receive(vec![refund.into_envelope()]);
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
}

#[test]
fn first_payment_missing_keeps_waiting_and_both_are_sent_again() {
    let mut r = rig();
    let p = pay_1000(&mut r);
    let error = r
        .agent
        .error(&p.request, ErrorCode::FirstPaymentMissing, vec![]);
    assert_eq!(r.user.receive(vec![error]), Disposition::Processed);
    let o = r.user.op(p.op);
    assert_eq!(o.state, "paying");
    assert!(!o.is_final);
    assert_eq!(r.user.card(Currency::USD).locked_by, Some(p.op));
    let later = NOW.saturating_add_secs(ops::RESEND_AFTER_SECS);
    assert_eq!(ops::resend_due(&r.user.conn, &r.user.w, later).unwrap(), 1);
    let mut mails = r.user.outbox();
    let envs = mails.remove(0);
    assert_eq!(envs, vec![p.first.clone(), p.request.clone()]);
    // The second payment then arrives.
    let second = r.agent.second_payment(&p.so, &p.request, 670, None);
    r.user.receive(vec![second.into_envelope()]);
    assert_eq!(r.user.op(p.op).state, "done");
    let st = exchange::status(&r.user.conn, p.op).unwrap();
    assert_eq!(st.envelopes.iter().filter(|e| e.role == "error").count(), 1);
}

#[test]
fn other_agent_errors_end_the_exchange() {
    // A refusal of the quote: nothing paid.
    let mut r = rig();
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
    r.user.receive(vec![r.agent.error(
        quote.envelope(),
        ErrorCode::OutOfStock,
        vec![],
    )]);
    let o = r.user.op(op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("E502"), "{}", o.detail);
    assert!(o.detail.contains("nothing was paid"), "{}", o.detail);

    // A double demand, with the stored request as evidence: kept.
    let mut r = rig();
    let p = pay_1000(&mut r);
    let other = Signed::sign(
        SecondPaymentRequest {
            tr_id: p.so.unverified().terms.tr_id,
            signed_offer: p.so.id(),
            challenge: Challenge::random(),
        },
        &key(5),
    )
    .unwrap()
    .into_envelope();
    let error = r
        .agent
        .error(&p.request, ErrorCode::DoubleDemand, vec![other.clone()]);
    r.user.receive(vec![error.clone()]);
    let o = r.user.op(p.op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("double demand"), "{}", o.detail);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
    let bundle = exchange::evidence(&r.user.conn, p.op).unwrap();
    assert_eq!(bundle.errors, vec![error]);
    let f = evidence::verify(&bundle, NOW).unwrap();
    assert!(f.to_string().contains("E507"), "{f}");
}

#[test]
fn a_signed_offer_after_d1_expires_and_pays_nothing() {
    let mut r = rig();
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
    let terms = r.agent.terms(1000, 670);
    r.user
        .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
    let acceptance = r.user.sent_one();
    let so = r.agent.signed_offer(&acceptance, terms.clone());
    r.user
        .receive_at(vec![so.into_envelope()], terms.d1.saturating_add_secs(1));
    let o = r.user.op(op);
    assert_eq!(o.state, "expired", "{}", o.detail);
    assert!(o.is_final);
    assert!(r.user.outbox().is_empty());
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
}

#[test]
fn declining_and_insufficient_funds_pay_nothing() {
    let mut r = rig();
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Ask);
    r.user.receive(vec![r
        .agent
        .offer(&quote, r.agent.terms(1000, 670))
        .into_envelope()]);
    exchange::decline(&r.user.conn, op, NOW).unwrap();
    assert_eq!(r.user.op(op).state, "declined");
    assert!(exchange::accept(&r.user.conn, &r.user.w, op, NOW).is_err());

    // Asking to pay more than is held is refused at once.
    assert!(matches!(
        exchange::start(
            &r.user.conn,
            &r.user.w,
            AGENT,
            Currency::JPY,
            Currency::USD,
            QuoteAmount::Pay(Amount::new(5000)),
            Policy::Any,
            NOW
        ),
        Err(wallet::WalletError::InsufficientFunds { .. })
    ));
    // An agent nobody pinned is refused.
    assert!(exchange::start(
        &r.user.conn,
        &r.user.w,
        "other@agent.example.test",
        Currency::JPY,
        Currency::USD,
        QuoteAmount::Pay(Amount::new(100)),
        Policy::Any,
        NOW
    )
    .is_err());
    // A pinned key is never replaced.
    assert!(exchange::add_agent(&r.user.conn, AGENT, key(4).public(), NOW).is_err());
    assert!(!exchange::add_agent(&r.user.conn, AGENT, r.agent.key.public(), NOW).unwrap());

    // A receive-side offer whose A1 is more than is held: failed, nothing paid.
    let (op, quote) = r
        .user
        .start(QuoteAmount::Receive(Amount::new(5000)), Policy::Any);
    let terms = r.agent.terms(7463, 5000);
    r.user
        .receive(vec![r.agent.offer(&quote, terms.clone()).into_envelope()]);
    let acceptance = r.user.sent_one();
    r.user.receive(vec![r
        .agent
        .signed_offer(&acceptance, terms)
        .into_envelope()]);
    let o = r.user.op(op);
    assert_eq!(o.state, "failed");
    assert!(o.detail.contains("not enough JPY"), "{}", o.detail);
    assert!(r.user.outbox().is_empty());
    assert_eq!(r.user.spendable(Currency::JPY), 2000);
    assert_eq!(r.user.card(Currency::USD).locked_by, None);
}

fn wallet_cli(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(WALLET)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn evidence_against_an_agent_that_took_the_first_payment_and_never_paid() {
    let mut r = rig();
    let p = pay_1000(&mut r);
    let tr = p.so.unverified().terms.tr_id.to_hex();
    // A week after D2 the exchange is given up, and says to keep the evidence.
    let late =
        p.so.unverified()
            .terms
            .d2
            .saturating_add_secs(exchange::SECOND_PAYMENT_GRACE_SECS + 1);
    exchange::advance(&r.user.conn, &r.user.w, late).unwrap();
    let o = r.user.op(p.op);
    assert_eq!(o.state, "failed");
    assert!(
        o.detail.contains(&format!("wallet evidence {tr}")),
        "{}",
        o.detail
    );
    assert_eq!(r.user.card(Currency::USD).locked_by, None);

    let bundle = exchange::evidence(&r.user.conn, p.op).unwrap();
    assert_eq!(bundle.signed_offer, *p.so.envelope());
    assert_eq!(bundle.first_payment.as_ref(), Some(&p.first));
    assert_eq!(bundle.second_request.as_ref(), Some(&p.request));
    assert!(bundle.second_payment.is_none());
    let f = evidence::verify(&bundle, NOW).unwrap();
    let status = |about: &str| {
        f.findings
            .iter()
            .find(|x| x.about == about)
            .map(|x| x.status)
            .unwrap()
    };
    assert_eq!(status("signed-offer"), Status::Proven);
    assert_eq!(status("first-payment"), Status::Proven);
    assert_eq!(status("second-payment-request"), Status::Proven);
    assert_eq!(status("second-payment"), Status::Absent);
    assert_eq!(f.first_paid_minor, Some(1000));
    assert_eq!(f.second_paid_minor, None);

    // The same through the command line, from the wallet's home.
    let home = r.user.dir.path().to_path_buf();
    let file = home.join("exchange.evidence");
    let out = wallet_cli(&home, &["evidence", &tr, "--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wallet_cli(&home, &["evidence", "verify", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PROVEN: agent key"), "{text}");
    assert!(text.contains("ABSENT: no second payment"), "{text}");
    let out = wallet_cli(
        &home,
        &["evidence", "verify", file.to_str().unwrap(), "--json"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["first_paid_minor"], 1000);
    assert!(json["second_paid_minor"].is_null());
    let out = wallet_cli(&home, &["exchange", "status", &tr, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["a1"], "1000 JPY");

    // One byte changed in the signed offer's body: the bundle proves nothing.
    let so = &bundle.signed_offer;
    let mut body = so.body().to_vec();
    let i = body.len() / 2;
    body[i] ^= 0x40;
    let mut tampered = bundle.clone();
    tampered.signed_offer =
        Envelope::from_parts(so.kind().into(), body, *so.signer(), *so.signature()).unwrap();
    assert!(evidence::verify(&tampered, NOW).is_err());
    // And in the first payment's.
    let fp = bundle.first_payment.as_ref().unwrap();
    let mut body = fp.body().to_vec();
    let last = body.len() - 3;
    body[last] ^= 0x01;
    let mut tampered = bundle.clone();
    tampered.first_payment =
        Some(Envelope::from_parts(fp.kind().into(), body, *fp.signer(), *fp.signature()).unwrap());
    assert!(evidence::verify(&tampered, NOW).is_err());
    std::fs::write(&file, tampered.to_bytes().unwrap()).unwrap();
    let out = wallet_cli(&home, &["evidence", "verify", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let bytes = std::fs::read(&file).unwrap();
    assert!(ExchangeEvidence::from_bytes(&bytes).is_ok());
}

#[test]
fn a_policy_kept_in_the_op_still_accepts_after_a_restart() {
    let mut r = rig();
    let (op, quote) = r
        .user
        .start(QuoteAmount::Pay(Amount::new(1000)), Policy::Any);
    // The offer was stored while the wallet had not accepted yet (as if the
    // process stopped between the two): put the op back to `offered`.
    r.user.receive(vec![r
        .agent
        .offer(&quote, r.agent.terms(1000, 670))
        .into_envelope()]);
    r.user.outbox();
    r.user
        .conn
        .execute("UPDATE ops SET state = 'offered' WHERE id = ?1", [op])
        .unwrap();
    // Reopened from its home, the wallet's next advance accepts.
    let home = Home::new(r.user.dir.path());
    let (w2, conn2) = home.open(None).unwrap();
    exchange::advance(&conn2, &w2, NOW).unwrap();
    assert_eq!(ops::op(&conn2, op).unwrap().state, "accepting");
}
