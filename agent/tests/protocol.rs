//! The agent's side of the exchange, in process, on a fixed clock: the
//! agent on a temporary database with JPY and USD cards licensed by the
//! testkit issuers and a float of notes; the user's messages signed by
//! hand with testkit cards, exactly as a wallet signs them. Every refusal
//! of docs/protocol.md 4.4 and every replay, checked on the replies the
//! agent queues and on its float.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

#[path = "support/world.rs"]
mod world;

use agent::{exchange, float, handle_mail, status, store, Agent};
use mailer::crypto::{Challenge, Id};
use mailer::envelope::{Body, Envelope, Signed};
use mailer::license::CardSecret;
use mailer::messages::{
    ErrorCode, ErrorReply, FirstPayment, Offer, OfferAcceptance, QuoteAmount, QuoteRequest, Refund,
    SecondPayment, SecondPaymentRequest, SignedOffer,
};
use mailer::money::{Amount, Currency, Timestamp};
use mailer::note::Note;
use mailer::testkit::{card, pay, verify_paid, TestIssuer, NOW};
use rusqlite::Connection;
use wallet::{ops, store as wstore};

struct Rig {
    _dir: tempfile::TempDir,
    agent: Agent,
    conn: Connection,
    jpy: TestIssuer,
    usd: TestIssuer,
    seen: i64,
    n: u64,
    withhold: bool,
    /// The user's cards: JPY pays, USD receives.
    uj: CardSecret,
    uu: CardSecret,
    user_jpy_notes: Vec<Note>,
}

const USER: &str = "alice@example.test";

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let mut jpy = TestIssuer::new(1, Currency::JPY);
        let mut usd = TestIssuer::new(2, Currency::USD);
        let (agent, conn) = world::licensed_agent(dir.path(), &mut jpy, &mut usd);
        let mut r = Rig {
            _dir: dir,
            agent,
            conn,
            jpy,
            usd,
            seen: 0,
            // The license mails were 1 and 2.
            n: 2,
            withhold: false,
            uj: card(10),
            uu: card(11),
            user_jpy_notes: Vec::new(),
        };
        r.jpy.license(&r.uj.keys());
        r.usd.license(&r.uu.keys());
        let n = r.jpy.issue(20_000, &r.uj.keys());
        r.user_jpy_notes.push(n);
        r.outbox();
        r
    }

    /// Float notes straight onto the agent's card.
    fn float(&mut self, c: Currency, values: &[u64]) {
        let issuer = if c == Currency::JPY {
            &mut self.jpy
        } else {
            &mut self.usd
        };
        world::float(&mut self.conn, issuer, values);
    }

    fn receive(&mut self, from: &str, envelopes: Vec<Envelope>, now: Timestamp) {
        self.n += 1;
        let raw = world::incoming(from, self.n, envelopes, now);
        let tx = self.conn.transaction().unwrap();
        handle_mail(&tx, &self.agent, &raw, now, self.withhold).unwrap();
        tx.commit().unwrap();
    }

    /// Envelopes queued since the last call.
    fn outbox(&mut self) -> Vec<Envelope> {
        world::queued_envelopes(&self.conn, &mut self.seen)
    }

    fn one<T: Body>(&mut self) -> Signed<T> {
        let mut out = self.outbox();
        assert_eq!(
            out.len(),
            1,
            "expected one reply, got {:?}",
            out.iter().map(|e| e.kind().to_string()).collect::<Vec<_>>()
        );
        let e = out.remove(0);
        assert_eq!(e.kind(), T::KIND, "{e:?}");
        let s = Signed::<T>::from_envelope(e).unwrap();
        s.verify_signer(&self.agent.public_key()).unwrap();
        s
    }

    fn error(&mut self) -> ErrorReply {
        self.one::<ErrorReply>().unverified().clone()
    }

    fn quote(&mut self, amount: QuoteAmount, now: Timestamp) -> Signed<QuoteRequest> {
        let q = Signed::sign(
            QuoteRequest {
                request_id: Id::random(),
                from: Currency::JPY,
                to: Currency::USD,
                amount,
            },
            &self.uj.auth,
        )
        .unwrap();
        self.receive(USER, vec![q.envelope().clone()], now);
        q
    }

    fn accept(&mut self, offer: &Signed<Offer>, now: Timestamp) -> Signed<OfferAcceptance> {
        let a = Signed::sign(
            OfferAcceptance {
                tr_id: offer.unverified().terms.tr_id,
                offer: offer.id(),
                receiver: self.uu.keys(),
            },
            &self.uu.auth,
        )
        .unwrap();
        self.receive(USER, vec![a.envelope().clone()], now);
        a
    }

    /// Negotiates an exchange paying `a1` JPY; returns the signed offer.
    fn negotiate(&mut self, a1: u64) -> Signed<SignedOffer> {
        self.quote(QuoteAmount::Pay(Amount::new(a1)), NOW);
        let offer = self.one::<Offer>();
        self.accept(&offer, NOW);
        let so = self.one::<SignedOffer>();
        assert_eq!(so.unverified().terms, offer.unverified().terms);
        so
    }

    /// The first payment of `amount` out of the user's note, against
    /// `challenge`.
    fn first_payment(
        &mut self,
        so: &Signed<SignedOffer>,
        amount: u64,
        challenge: Challenge,
    ) -> Signed<FirstPayment> {
        let t = &so.unverified().terms;
        let note = pay(
            &self.user_jpy_notes[0],
            &self.uj,
            &t.pay_to,
            amount,
            challenge,
        );
        Signed::sign(
            FirstPayment {
                tr_id: t.tr_id,
                signed_offer: so.id(),
                notes: vec![note],
                licenses: vec![self.jpy.licenses[1].clone()],
                refund_to: self.uj.keys().payment,
                refund_challenge: mailer::testkit::challenge(77),
            },
            &self.uj.auth,
        )
        .unwrap()
    }

    fn request(
        &self,
        so: &Signed<SignedOffer>,
        challenge: Challenge,
        by: &CardSecret,
    ) -> Signed<SecondPaymentRequest> {
        Signed::sign(
            SecondPaymentRequest {
                tr_id: so.unverified().terms.tr_id,
                signed_offer: so.id(),
                challenge,
            },
            &by.auth,
        )
        .unwrap()
    }

    fn free(&self, c: Currency) -> u64 {
        exchange::available(&self.conn, c, NOW)
            .unwrap()
            .minor_units()
    }

    fn trade_state(&self, tr_id: &Id) -> String {
        store::trade(&self.conn, tr_id).unwrap().unwrap().state
    }
}

/// Verifies `note` as paid to `to` against `chall` at `now`; its value.
fn verify_at(
    issuer: &TestIssuer,
    note: &Note,
    to: &mailer::license::CardKeys,
    chall: Challenge,
    now: Timestamp,
) -> u64 {
    let book = issuer.book();
    let none = mailer::license::Revocations::none();
    let pk = issuer.key.public();
    note.verify(&mailer::note::NotePolicy {
        issuer: &pk,
        currency: issuer.currency,
        now,
        licenses: &book,
        revocations: &none,
        expect: mailer::note::Expect::Paid {
            payee: to.payment,
            challenge: chall,
        },
        accept_expired: false,
    })
    .unwrap()
    .current()
    .value
    .minor_units()
}

#[test]
fn an_exchange_from_quote_to_second_payment() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[5_000, 5_000]);
    assert_eq!(r.free(Currency::USD), 10_000);

    let q = r.quote(QuoteAmount::Pay(Amount::new(10_000)), NOW);
    let offer = r.one::<Offer>();
    let t = offer.unverified().terms.clone();
    assert_eq!(offer.unverified().quote, q.id());
    assert_eq!((t.a1.minor_units(), t.a2.minor_units()), (10_000, 6_666));
    assert_eq!(t.pay_currency, Currency::JPY);
    assert_eq!(t.agent, r.agent.public_key());
    assert_eq!(t.d1, NOW.saturating_add_secs(3_600));
    assert_eq!(t.d2, t.d1.saturating_add_secs(86_400));
    // The same quote request again: the same offer, byte for byte.
    r.receive(USER, vec![q.envelope().clone()], NOW);
    assert_eq!(r.one::<Offer>().envelope(), offer.envelope());
    // Offers do not reserve; signed offers do.
    assert_eq!(r.free(Currency::USD), 10_000);

    // The rate changes before the acceptance: the offer's amounts hold.
    store::set_rate(
        &r.conn,
        &agent::pricing::Pricing {
            pay: Currency::JPY,
            receive: Currency::USD,
            mid: "0.0050".parse().unwrap(),
            spread_bp: 50,
            min: Amount::new(100),
            max: Amount::new(1_000_000),
        },
        NOW,
    )
    .unwrap();
    let acc = r.accept(&offer, NOW);
    let so = r.one::<SignedOffer>();
    assert_eq!(so.unverified().terms, t);
    assert_eq!(so.unverified().receiver, r.uu.keys());
    assert_eq!(so.unverified().acceptance, acc.id());
    assert_eq!(r.free(Currency::USD), 10_000 - 6_666);
    assert_eq!(r.trade_state(&t.tr_id), "signed");

    // The first payment: taken, no reply.
    let fp = r.first_payment(&so, 10_000, t.challenge);
    r.receive(USER, vec![fp.envelope().clone()], NOW);
    assert!(r.outbox().is_empty());
    assert_eq!(r.trade_state(&t.tr_id), "paid");
    assert_eq!(
        wstore::spendable_total(&r.conn, Currency::JPY)
            .unwrap()
            .minor_units(),
        10_000
    );
    // Delivered again: nothing changes.
    r.receive(USER, vec![fp.envelope().clone()], NOW);
    assert!(r.outbox().is_empty());
    assert_eq!(
        wstore::spendable_total(&r.conn, Currency::JPY)
            .unwrap()
            .minor_units(),
        10_000
    );

    // The second payment, against the receiving card's fresh challenge.
    let cu = Challenge::random();
    let req = r.request(&so, cu, &r.uu.clone());
    r.receive(USER, vec![req.envelope().clone()], NOW);
    let sp = r.one::<SecondPayment>();
    assert_eq!(sp.unverified().request, req.id());
    let mut total = 0;
    for n in &sp.unverified().notes {
        verify_paid(&r.usd, n, &r.uu.keys(), cu).unwrap();
        total += verify_at(&r.usd, n, &r.uu.keys(), cu, NOW);
    }
    assert_eq!(total, 6_666);
    assert_eq!(r.trade_state(&t.tr_id), "delivered");
    assert_eq!(
        wstore::spendable_total(&r.conn, Currency::USD)
            .unwrap()
            .minor_units(),
        10_000 - 6_666
    );

    // The same request again: the same payment, byte for byte.
    r.receive(USER, vec![req.envelope().clone()], NOW);
    assert_eq!(r.one::<SecondPayment>().envelope(), sp.envelope());
    // A different request: a double demand, with the stored one as evidence.
    let req2 = r.request(&so, Challenge::random(), &r.uu.clone());
    r.receive(USER, vec![req2.envelope().clone()], NOW);
    let e = r.error();
    assert_eq!(e.code, ErrorCode::DoubleDemand);
    assert_eq!(e.evidence, vec![req.envelope().clone()]);
    assert_eq!(
        wstore::spendable_total(&r.conn, Currency::USD)
            .unwrap()
            .minor_units(),
        10_000 - 6_666
    );
}

#[test]
fn a_request_signed_by_another_key_is_refused() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    let so = r.negotiate(10_000);
    let t = so.unverified().terms.clone();
    let fp = r.first_payment(&so, 10_000, t.challenge);
    r.receive(USER, vec![fp.envelope().clone()], NOW);
    let thief = card(50);
    let req = r.request(&so, Challenge::random(), &thief);
    r.receive("thief@example.test", vec![req.envelope().clone()], NOW);
    assert_eq!(r.error().code, ErrorCode::WrongKey);
    assert_eq!(r.trade_state(&t.tr_id), "paid");
    // The valid receiver still gets paid.
    let req = r.request(&so, Challenge::random(), &r.uu.clone());
    r.receive(USER, vec![req.envelope().clone()], NOW);
    r.one::<SecondPayment>();
}

#[test]
fn a_request_before_the_first_payment_waits_for_it() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    let so = r.negotiate(10_000);
    let t = so.unverified().terms.clone();
    let req = r.request(&so, Challenge::random(), &r.uu.clone());
    r.receive(USER, vec![req.envelope().clone()], NOW);
    assert_eq!(r.error().code, ErrorCode::FirstPaymentMissing);
    // Not recorded: once paid, the same request is served.
    let fp = r.first_payment(&so, 10_000, t.challenge);
    r.receive(
        USER,
        vec![fp.envelope().clone(), req.envelope().clone()],
        NOW,
    );
    r.one::<SecondPayment>();
}

#[test]
fn late_short_and_wrong_challenge_payments_are_refunded() {
    for (case, amount, challenge, late, code) in [
        ("late", 10_000, None, true, ErrorCode::FirstPaymentLate),
        ("short", 9_000, None, false, ErrorCode::FirstPaymentShort),
        (
            "challenge",
            10_000,
            Some(Challenge::random()),
            false,
            ErrorCode::WrongChallenge,
        ),
    ] {
        let mut r = Rig::new();
        r.float(Currency::USD, &[10_000]);
        let so = r.negotiate(10_000);
        let t = so.unverified().terms.clone();
        let fp = r.first_payment(&so, amount, challenge.unwrap_or(t.challenge));
        let at = if late {
            t.d1.saturating_add_secs(1)
        } else {
            NOW
        };
        r.receive(USER, vec![fp.envelope().clone()], at);
        let refund = r.one::<Refund>();
        let f = refund.unverified();
        assert_eq!(f.reason, code, "{case}");
        assert_eq!(f.payment, fp.id());
        let mut back = 0;
        for n in &f.notes {
            back += verify_at(&r.jpy, n, &r.uj.keys(), mailer::testkit::challenge(77), at);
        }
        assert_eq!(back, amount, "{case}: everything received goes back");
        assert_eq!(
            wstore::spendable_total(&r.conn, Currency::JPY)
                .unwrap()
                .minor_units(),
            0,
            "{case}"
        );
        assert_eq!(r.trade_state(&t.tr_id), "refunded", "{case}");
        // The reservation is released and the second payment refused.
        assert_eq!(r.free(Currency::USD), 10_000, "{case}");
        let req = r.request(&so, Challenge::random(), &r.uu.clone());
        r.receive(USER, vec![req.envelope().clone()], NOW);
        assert_eq!(r.error().code, code, "{case}");
        assert_eq!(
            wstore::spendable_total(&r.conn, Currency::USD)
                .unwrap()
                .minor_units(),
            10_000,
            "{case}"
        );
    }
}

#[test]
fn an_offer_beyond_the_float_is_out_of_stock() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[5_000]);
    r.quote(QuoteAmount::Pay(Amount::new(10_000)), NOW);
    assert_eq!(r.error().code, ErrorCode::OutOfStock);
    let s = status::status(&r.conn, &r.agent, NOW).unwrap();
    assert!(
        s.warnings.iter().any(|(_, w)| w.contains("out of stock")),
        "{:?}",
        s.warnings
    );
    // Reservations count: two offers of 33.33 fit in 50.00, the third's
    // acceptance does not.
    let a = {
        r.quote(QuoteAmount::Pay(Amount::new(5_000)), NOW);
        r.one::<Offer>()
    };
    let b = {
        r.quote(QuoteAmount::Pay(Amount::new(5_000)), NOW);
        r.one::<Offer>()
    };
    r.accept(&a, NOW);
    r.one::<SignedOffer>();
    r.accept(&b, NOW);
    assert_eq!(r.error().code, ErrorCode::OutOfStock);
}

#[test]
fn quotes_to_receive_unknown_pairs_and_bad_amounts() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    r.quote(QuoteAmount::Receive(Amount::new(5_000)), NOW);
    let t = r.one::<Offer>().unverified().terms.clone();
    assert_eq!((t.a1.minor_units(), t.a2.minor_units()), (7_501, 5_000));
    r.quote(QuoteAmount::Pay(Amount::ZERO), NOW);
    assert_eq!(r.error().code, ErrorCode::BadAmount);
    let q = Signed::sign(
        QuoteRequest {
            request_id: Id::random(),
            from: Currency::USD,
            to: Currency::EUR,
            amount: QuoteAmount::Pay(Amount::new(100)),
        },
        &r.uu.auth,
    )
    .unwrap();
    r.receive(USER, vec![q.into_envelope()], NOW);
    assert_eq!(r.error().code, ErrorCode::NoRate);
}

#[test]
fn lapsed_offers_release_their_reservation_and_recharge_withdraws() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    let so = r.negotiate(10_000);
    let t = so.unverified().terms.clone();
    assert_eq!(r.free(Currency::USD), 10_000 - 6_666);
    let later = t.d1.saturating_add_secs(1);
    let round = float::round(&r.conn, &r.agent, later).unwrap();
    assert_eq!(round.lapsed, 1);
    assert_eq!(r.trade_state(&t.tr_id), "expired");
    assert_eq!(
        exchange::available(&r.conn, Currency::USD, later)
            .unwrap()
            .minor_units(),
        10_000
    );
    // A payment after that is refunded.
    let fp = r.first_payment(&so, 10_000, t.challenge);
    r.receive(USER, vec![fp.envelope().clone()], later);
    assert_eq!(
        r.one::<Refund>().unverified().reason,
        ErrorCode::FirstPaymentLate
    );
    // The trade's record says so: it lapsed, then its payment went back.
    assert_eq!(r.trade_state(&t.tr_id), "refunded");

    // Below the low mark with an enrolled account: a withdrawal to the middle.
    let op = ops::enroll(&r.conn, &r.agent.wallet, Currency::USD, "CODE", later).unwrap();
    let request = ops::op(&r.conn, op).unwrap().request.unwrap();
    let enrolled = Signed::sign(
        mailer::messages::Enrolled {
            request,
            currency: Currency::USD,
            account: "agent".into(),
            balance: Amount::new(1_000_000),
        },
        &r.usd.key,
    )
    .unwrap();
    r.receive("usd@example.test", vec![enrolled.into_envelope()], later);
    r.outbox();
    store::set_limits(
        &r.conn,
        Currency::USD,
        Amount::new(20_000),
        Amount::new(60_000),
    )
    .unwrap();
    let round = float::round(&r.conn, &r.agent, later).unwrap();
    assert_eq!(
        round.withdrawals,
        vec![(Currency::USD, Amount::new(30_000))]
    );
    let mails = r.outbox();
    assert!(
        mails.iter().any(|e| e.kind() == "withdraw-request"),
        "{mails:?}"
    );
    // Not twice while one is under way.
    assert!(float::round(&r.conn, &r.agent, later)
        .unwrap()
        .withdrawals
        .is_empty());
}

#[test]
fn a_cheating_agent_takes_the_first_payment_and_withholds_the_second() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    r.withhold = true;
    let so = r.negotiate(10_000);
    let t = so.unverified().terms.clone();
    let fp = r.first_payment(&so, 10_000, t.challenge);
    let req = r.request(&so, Challenge::random(), &r.uu.clone());
    r.receive(
        USER,
        vec![fp.envelope().clone(), req.envelope().clone()],
        NOW,
    );
    assert!(r.outbox().is_empty());
    assert_eq!(r.trade_state(&t.tr_id), "paid");
}

#[test]
fn a_surplus_in_many_small_notes_is_deposited_as_much_as_one_deposit_carries() {
    let mut r = Rig::new();
    // 100 notes of 100 JPY: 10,000 JPY, far above the high mark.
    r.float(Currency::JPY, &[100; 100]);
    let later = NOW.saturating_add_secs(1);
    let op = ops::enroll(&r.conn, &r.agent.wallet, Currency::JPY, "CODE", later).unwrap();
    let request = ops::op(&r.conn, op).unwrap().request.unwrap();
    let enrolled = Signed::sign(
        mailer::messages::Enrolled {
            request,
            currency: Currency::JPY,
            account: "agent".into(),
            balance: Amount::ZERO,
        },
        &r.jpy.key,
    )
    .unwrap();
    r.receive("jpy@example.test", vec![enrolled.into_envelope()], later);
    r.outbox();
    store::set_limits(&r.conn, Currency::JPY, Amount::new(0), Amount::new(1_000)).unwrap();
    // The surplus (10,000 - 500) would take 95 notes; one deposit carries 64.
    let round = float::round(&r.conn, &r.agent, later).unwrap();
    assert_eq!(round.deposits, vec![(Currency::JPY, Amount::new(6_400))]);
    let deposits: Vec<_> = r
        .outbox()
        .into_iter()
        .filter(|e| e.kind() == "deposit")
        .collect();
    assert_eq!(deposits.len(), 1, "{deposits:?}");
    let body = Signed::<mailer::messages::Deposit>::from_envelope(deposits[0].clone())
        .unwrap()
        .unverified()
        .clone();
    assert_eq!(body.notes.len(), mailer::limits::MAX_NOTES);
    // One deposit operation, nothing left half made; none more while it is under way.
    let open: Vec<_> = wallet::ops::open_ops(&r.conn)
        .unwrap()
        .into_iter()
        .filter(|o| o.kind == "deposit")
        .collect();
    assert_eq!(open.len(), 1);
    assert!(float::round(&r.conn, &r.agent, later)
        .unwrap()
        .deposits
        .is_empty());
}

/// What the agent never takes is refused with a signed reason, not
/// dropped in silence (found by the hostile-mail corpus): an unknown
/// kind, a request meant for an issuer, a body over a limit.
#[test]
fn unknown_kinds_issuer_requests_and_broken_bodies_get_a_signed_error() {
    let mut r = Rig::new();
    let stranger = mailer::testkit::key(77);
    let unknown = Envelope::seal("teleport-request", vec![0xa0], &stranger).unwrap();
    r.receive("stranger@example.test", vec![unknown], NOW);
    assert_eq!(r.error().code, ErrorCode::UnknownKind);
    let withdraw = Signed::sign(
        mailer::messages::WithdrawRequest {
            request_id: Id::random(),
            currency: Currency::JPY,
            amount: Amount::new(1_000),
            card: r.uj.keys(),
        },
        &stranger,
    )
    .unwrap();
    r.receive("stranger@example.test", vec![withdraw.into_envelope()], NOW);
    assert_eq!(r.error().code, ErrorCode::NotForUs);
    let mut deep = vec![0x81u8; 10_000];
    deep.push(0);
    let broken = Envelope::seal("quote-request", deep, &stranger).unwrap();
    r.receive("stranger@example.test", vec![broken], NOW);
    assert_eq!(r.error().code, ErrorCode::BadEnvelope);
    let long = Signed::sign(
        mailer::messages::PaymentInvite {
            transfer: Id::random(),
            currency: Currency::JPY,
            amount: Amount::new(1),
            memo: "x".repeat(100_000),
        },
        &stranger,
    )
    .unwrap();
    r.receive("stranger@example.test", vec![long.into_envelope()], NOW);
    assert_eq!(r.error().code, ErrorCode::LimitExceeded);
    // An error reply is still never answered.
    let e = Signed::sign(
        ErrorReply {
            request: None,
            request_kind: None,
            code: ErrorCode::Internal,
            reason: "no".into(),
            evidence: Vec::new(),
        },
        &stranger,
    )
    .unwrap();
    r.receive("stranger@example.test", vec![e.into_envelope()], NOW);
    assert!(r.outbox().is_empty());
}

/// The envelope id does not cover the signature: a copy of a decided
/// request with a forged signature is refused as forged, not answered
/// with the stored reply (found by the hostile-mail corpus).
#[test]
fn a_copy_of_a_decided_request_with_a_forged_signature_is_refused() {
    let mut r = Rig::new();
    r.float(Currency::USD, &[10_000]);
    let q = r.quote(QuoteAmount::Pay(Amount::new(10_000)), NOW);
    r.one::<Offer>();
    let env = q.envelope();
    let forged = Envelope::from_parts(
        env.kind().to_string(),
        env.body().to_vec(),
        *env.signer(),
        mailer::testkit::key(99).sign(&env.signed_bytes()),
    )
    .unwrap();
    r.receive("stranger@example.test", vec![forged], NOW);
    assert_eq!(r.error().code, ErrorCode::BadSignature);
    // The real request still gets its offer again.
    r.receive(USER, vec![env.clone()], NOW);
    r.one::<Offer>();
}
