//! The corpus: every kind of bad mail a stranger could send to the
//! issuers and the agent, each forged to pass every check but the one it
//! aims at, with what the daemon must do about it.

use anyhow::{Context as _, Result};
use mailer::crypto::{Challenge, Id, PublicKey, SecretKey, Signature};
use mailer::envelope::{Envelope, Signed};
use mailer::license::{CardSecret, License};
use mailer::messages::{
    Deposit, EnrollRequest, ErrorCode, ErrorReply, FirstPayment, LicenseRequest, Message, Offer,
    OfferAcceptance, QuoteAmount, QuoteRequest, SecondPaymentRequest, WithdrawRequest,
};
use mailer::money::{Amount, Currency};
use mailer::note::{Issuance, Note};

use super::forge::{self, in_secs, multipart, protocol_mail, sign, Part};
use super::loot::{Keys, Loot};
use super::{Case, Expect, Mail, Target};

/// The addresses and keys a case needs besides the loot.
#[derive(Debug)]
pub struct World<'a> {
    pub stranger: &'a str,
    pub jpy: &'a str,
    pub usd: &'a str,
    pub agent: &'a str,
    pub loot: &'a Loot,
    /// An offer the agent made the stranger, whose D1 has passed.
    pub expired_offer: &'a Signed<Offer>,
}

impl World<'_> {
    fn addr(&self, t: Target) -> &str {
        match t {
            Target::IssuerJpy => self.jpy,
            Target::IssuerUsd => self.usd,
            Target::Agent => self.agent,
        }
    }
}

/// The stranger's own keys: a key no party knows, and a card no issuer
/// licensed.
pub fn stranger_key() -> SecretKey {
    SecretKey::from_seed(forge::tag(&[b"hostile stranger key"]).0)
}

pub fn stranger_card() -> CardSecret {
    CardSecret {
        payment: SecretKey::from_seed(forge::tag(&[b"hostile stranger payment"]).0),
        auth: SecretKey::from_seed(forge::tag(&[b"hostile stranger auth"]).0),
    }
}

fn err(codes: &[ErrorCode]) -> Expect {
    Expect::Error(codes.to_vec())
}

fn one(category: &str, to: Target, raw: Vec<u8>, expect: Expect) -> Case {
    Case {
        category: category.into(),
        mails: vec![Mail { to, raw, expect }],
    }
}

fn to_both(category: &str, make: impl Fn(Target) -> Result<(Vec<u8>, Expect)>) -> Result<Case> {
    let mut mails = Vec::new();
    for t in [Target::IssuerJpy, Target::Agent] {
        let (raw, expect) = make(t)?;
        mails.push(Mail { to: t, raw, expect });
    }
    Ok(Case {
        category: category.into(),
        mails,
    })
}

/// A request each daemon really handles, signed by the stranger: the
/// issuer's is a withdrawal, the agent's a quote request.
fn plausible(w: &World<'_>, t: Target, key: &SecretKey) -> Result<Envelope> {
    match t {
        Target::Agent => sign(
            QuoteRequest {
                request_id: Id::random(),
                from: Currency::JPY,
                to: Currency::USD,
                amount: QuoteAmount::Pay(Amount::new(1_000)),
            },
            key,
        ),
        _ => sign(
            WithdrawRequest {
                request_id: Id::random(),
                currency: Currency::JPY,
                amount: Amount::new(1_000),
                card: w.loot.alice_jpy.card.keys(),
            },
            key,
        ),
    }
}

/// `env` with its signature replaced by one made by another key over the
/// same bytes: the signer field still names the real key.
fn forged(env: &Envelope) -> Result<Envelope> {
    // Made by a key that is not the signer's.
    let wrong = SecretKey::from_seed(forge::tag(&[b"hostile forger", env.signer().as_bytes()]).0)
        .sign(&env.signed_bytes());
    Ok(Envelope::from_parts(
        env.kind().to_string(),
        env.body().to_vec(),
        *env.signer(),
        wrong,
    )?)
}

/// A signature of all zero bytes (not even a valid point).
fn zero_signature(env: &Envelope) -> Result<Envelope> {
    Ok(Envelope::from_parts(
        env.kind().to_string(),
        env.body().to_vec(),
        *env.signer(),
        Signature([0; 64]),
    )?)
}

/// `card` pays the whole of `note` to the issuer as a deposit by
/// `account`, now.
/// A JPY deposit of `note`, paid over to the issuer (`issuer`) by the card
/// of `who` (a new link from the state it holds) and signed by its account
/// key, with `licenses` for the cards in the note.
fn deposit(
    note: &Note,
    who: &Keys,
    issuer: &PublicKey,
    licenses: Vec<Signed<License>>,
) -> Result<Envelope> {
    let link = note.pay(
        &who.card.payment,
        *issuer,
        note.held(),
        Deposit::challenge_for(&who.account.public()),
        mailer::clock::now(),
    )?;
    sign(
        Deposit {
            request_id: Id::random(),
            currency: Currency::JPY,
            notes: vec![link],
            licenses,
        },
        &who.account,
    )
}

/// The licenses of alice's and bob's JPY cards (every card in bob's notes).
fn jpy_licenses(w: &World<'_>) -> Vec<Signed<License>> {
    vec![w.loot.alice_jpy.license.clone(), w.loot.bob.license.clone()]
}

/// The corpus, in the order it is sent. The burst comes last.
pub fn corpus(w: &World<'_>) -> Result<Vec<Case>> {
    let s = w.stranger;
    let loot = w.loot;
    let key = stranger_key();
    let mut cases = Vec::new();

    // ---- not protocol mail: quarantined, never answered -----------------
    cases.push(to_both("not MIME at all", |t| {
        let mut m = forge::headers(s, w.addr(t), "hello").into_bytes();
        m.extend_from_slice(
            b"\r\nCheap watches! Reply to win.\r\n\x01\x02\xff\xfe binary junk\r\n",
        );
        Ok((m, Expect::Quarantine))
    })?);
    cases.push(to_both("MIME, no attachment", |t| {
        let raw = multipart(
            s,
            w.addr(t),
            &[
                Part::text("hello"),
                Part {
                    content_type: "text/html".into(),
                    encoding: None,
                    body: b"<p>hello</p>".to_vec(),
                },
            ],
        );
        Ok((raw, Expect::Quarantine))
    })?);
    cases.push(to_both("wrong content type", |t| {
        let env = plausible(w, t, &key)?.to_bytes()?;
        let raw = multipart(
            s,
            w.addr(t),
            &[
                Part::text("see attached"),
                Part::base64("application/pdf", &env),
            ],
        );
        Ok((raw, Expect::Quarantine))
    })?);
    cases.push(to_both("headers only, no body", |t| {
        let mut m = forge::headers(s, w.addr(t), "nothing").into_bytes();
        m.extend_from_slice(b"\r\n");
        Ok((m, Expect::Quarantine))
    })?);
    cases.push(to_both("multipart bomb, nested 2000 deep", |t| {
        let mut m = forge::headers(s, w.addr(t), "nested").into_bytes();
        m.extend_from_slice(
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n",
        );
        for i in 1..2000 {
            m.extend_from_slice(
                format!(
                    "--b{}\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n",
                    i - 1
                )
                .as_bytes(),
            );
        }
        m.extend_from_slice(b"--b1999\r\nContent-Type: text/plain\r\n\r\ndeep\r\n");
        Ok((m, Expect::Quarantine))
    })?);

    // ---- protocol mail that cannot be read: a signed error ---------------
    cases.push(to_both("bad base64", |t| {
        let raw = multipart(
            s,
            w.addr(t),
            &[
                Part::text("x"),
                Part {
                    content_type: mailer::mime::CBOR_CONTENT_TYPE.into(),
                    encoding: Some("base64".into()),
                    body: b"!!!! this is % not base64 ****\r\n".to_vec(),
                },
            ],
        );
        Ok((raw, err(&[ErrorCode::BadEnvelope])))
    })?);
    cases.push(to_both("truncated CBOR", |t| {
        let env = plausible(w, t, &key)?.to_bytes()?;
        let raw = multipart(
            s,
            w.addr(t),
            &[Part::text("x"), Part::cbor(&env[..env.len() / 2])],
        );
        Ok((raw, err(&[ErrorCode::BadEnvelope])))
    })?);
    cases.push(to_both("oversized CBOR (3 MiB)", |t| {
        // A byte string of 3 MiB: over the 2 MiB envelope limit.
        let mut cbor = vec![0x5a];
        cbor.extend_from_slice(&(3u32 * 1024 * 1024).to_be_bytes());
        cbor.resize(cbor.len() + 3 * 1024 * 1024, 0x41);
        let raw = multipart(s, w.addr(t), &[Part::text("x"), Part::cbor(&cbor)]);
        Ok((raw, err(&[ErrorCode::TooLarge])))
    })?);
    cases.push(to_both("deeply nested CBOR", |t| {
        // 100,000 nested arrays as the envelope, and a properly signed
        // envelope whose body is 10,000 nested arrays.
        let mut deep = vec![0x81u8; 100_000];
        deep.push(0x00);
        let mut body = vec![0x81u8; 10_000];
        body.push(0x00);
        let kind = match t {
            Target::Agent => "quote-request",
            _ => "withdraw-request",
        };
        let env = Envelope::seal(kind, body, &key)?.to_bytes()?;
        let raw = multipart(
            s,
            w.addr(t),
            &[Part::text("x"), Part::cbor(&deep), Part::cbor(&env)],
        );
        Ok((raw, err(&[ErrorCode::BadEnvelope])))
    })?);
    cases.push(to_both("many CBOR attachments (5,000 parts)", |t| {
        let env = plausible(w, t, &key)?.to_bytes()?;
        let mut parts = vec![Part::text("x")];
        parts.extend(std::iter::repeat_with(|| Part::cbor(&env)).take(5_000));
        Ok((
            multipart(s, w.addr(t), &parts),
            err(&[ErrorCode::LimitExceeded]),
        ))
    })?);
    cases.push(to_both("unsupported envelope version", |t| {
        let mut env = plausible(w, t, &key)?.to_bytes()?;
        // [version, ...]: 0x85 then the version, 1, as one byte.
        if env.get(1) == Some(&0x01) {
            env[1] = 0x02;
        }
        let raw = multipart(s, w.addr(t), &[Part::text("x"), Part::cbor(&env)]);
        Ok((raw, err(&[ErrorCode::UnsupportedVersion])))
    })?);
    cases.push(to_both("unknown message kind", |t| {
        let env = Envelope::seal("teleport-request", b"\xa0".to_vec(), &key)?;
        Ok((
            protocol_mail(s, w.addr(t), vec![env])?,
            err(&[ErrorCode::UnknownKind]),
        ))
    })?);
    cases.push(to_both("message of the wrong family", |t| {
        let env = match t {
            Target::Agent => plausible(w, Target::IssuerJpy, &key)?,
            _ => plausible(w, Target::Agent, &key)?,
        };
        Ok((
            protocol_mail(s, w.addr(t), vec![env])?,
            err(&[ErrorCode::NotForUs]),
        ))
    })?);
    cases.push(to_both("body over a limit (memo of 100 kB)", |t| {
        let env = sign(
            mailer::messages::PaymentInvite {
                transfer: Id::random(),
                currency: Currency::JPY,
                amount: Amount::new(1),
                memo: "x".repeat(100_000),
            },
            &key,
        )?;
        Ok((
            protocol_mail(s, w.addr(t), vec![env])?,
            err(&[ErrorCode::LimitExceeded]),
        ))
    })?);

    // ---- who signed it ---------------------------------------------------
    cases.push(Case {
        category: "forged signature".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                // alice's real withdrawal, re-signed by someone else.
                raw: protocol_mail(s, w.jpy, vec![forged(loot.withdraw.envelope())?])?,
                expect: err(&[ErrorCode::BadSignature]),
            },
            Mail {
                to: Target::IssuerJpy,
                raw: protocol_mail(s, w.jpy, vec![zero_signature(loot.withdraw.envelope())?])?,
                expect: err(&[ErrorCode::BadSignature]),
            },
            Mail {
                to: Target::Agent,
                raw: protocol_mail(s, w.agent, vec![forged(loot.second_request.envelope())?])?,
                expect: err(&[ErrorCode::BadSignature]),
            },
        ],
    });
    cases.push(to_both("valid signature by an unknown key", |t| {
        let env = match t {
            Target::Agent => sign(
                OfferAcceptance {
                    tr_id: Id::random(),
                    offer: forge::tag(&[b"no such offer"]),
                    receiver: stranger_card().keys(),
                },
                &stranger_card().auth,
            )?,
            _ => plausible(w, t, &key)?,
        };
        let codes = match t {
            Target::Agent => vec![ErrorCode::UnknownTransaction],
            _ => vec![ErrorCode::UnknownSigner, ErrorCode::UnknownAccount],
        };
        Ok((
            protocol_mail(s, w.addr(t), vec![env])?,
            Expect::Error(codes),
        ))
    })?);
    cases.push(one(
        "note issued by an unknown key",
        Target::Agent,
        {
            // A first payment to the agent's JPY card of a note "issued" by
            // the stranger, for alice's exchange.
            let fake = Signed::sign(
                Issuance {
                    serial: Id::random(),
                    currency: Currency::JPY,
                    value: Amount::new(10_000),
                    holder: stranger_card().keys().payment,
                    issued_at: in_secs(-60),
                    expires_at: in_secs(86_400),
                },
                &key,
            )?;
            let terms = loot.first_payment.unverified();
            let agent_card = terms
                .notes
                .first()
                .and_then(|n| n.links.last())
                .map(|l| l.unverified().payee)
                .context("alice's first payment has no link")?;
            let paid = Note::issued(fake).pay(
                &stranger_card().payment,
                agent_card,
                Amount::new(10_000),
                Challenge::random(),
                mailer::clock::now(),
            )?;
            let env = sign(
                FirstPayment {
                    tr_id: loot.tr_id,
                    signed_offer: loot.signed_offer,
                    notes: vec![paid],
                    licenses: Vec::new(),
                    refund_to: stranger_card().keys().payment,
                    refund_challenge: Challenge::random(),
                },
                &stranger_card().auth,
            )?;
            protocol_mail(s, w.agent, vec![env])?
        },
        err(&[
            ErrorCode::BadNote,
            ErrorCode::NotLicensed,
            ErrorCode::UnknownSigner,
            ErrorCode::WrongKey,
            ErrorCode::OfferMismatch,
            ErrorCode::Replay,
        ]),
    ));
    cases.push(Case {
        category: "key revoked by the issuer".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: protocol_mail(
                    s,
                    w.jpy,
                    vec![LicenseRequest::new(
                        &loot.mallory.card,
                        Currency::JPY,
                        mailer::clock::now(),
                    )?
                    .into_envelope()],
                )?,
                expect: err(&[ErrorCode::Revoked]),
            },
            Mail {
                to: Target::IssuerJpy,
                raw: {
                    let note = loot
                        .mallory
                        .notes
                        .first()
                        .context("mallory holds no note")?;
                    let licenses = vec![loot.mallory.license.clone()];
                    protocol_mail(
                        s,
                        w.jpy,
                        vec![deposit(note, &loot.mallory, &loot.jpy_key, licenses)?],
                    )?
                },
                expect: Expect::Refused(vec![ErrorCode::Revoked]),
            },
        ],
    });
    cases.push(one(
        "enrollment with a guessed code",
        Target::IssuerJpy,
        protocol_mail(
            s,
            w.jpy,
            vec![sign(
                EnrollRequest {
                    currency: Currency::JPY,
                    code: "AAAA-BBBB-CCCC".into(),
                },
                &key,
            )?],
        )?,
        err(&[ErrorCode::BadEnrollmentCode]),
    ));

    // ---- replays ---------------------------------------------------------
    cases.push(Case {
        category: "replay: the same mail again".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: loot.withdraw_mail.clone(),
                expect: Expect::NoReply,
            },
            Mail {
                to: Target::Agent,
                raw: loot.exchange_mail.clone(),
                expect: Expect::NoReply,
            },
        ],
    });
    cases.push(Case {
        category: "replay: old request, new mail".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: protocol_mail(s, w.jpy, vec![loot.withdraw.envelope().clone()])?,
                expect: Expect::SameReply("notes-issued"),
            },
            Mail {
                to: Target::Agent,
                raw: protocol_mail(
                    s,
                    w.agent,
                    vec![
                        loot.first_payment.envelope().clone(),
                        loot.second_request.envelope().clone(),
                    ],
                )?,
                expect: Expect::SameReply("second-payment"),
            },
        ],
    });

    // ---- the request itself ----------------------------------------------
    let alice_withdraw = |amount: u64, currency: Currency| -> Result<Vec<u8>> {
        protocol_mail(
            s,
            w.jpy,
            vec![sign(
                WithdrawRequest {
                    request_id: Id::random(),
                    currency,
                    amount: Amount::new(amount),
                    card: loot.alice_jpy.card.keys(),
                },
                &loot.alice_jpy.account,
            )?],
        )
    };
    let quote = |from: Currency, to: Currency, amount: QuoteAmount| -> Result<Vec<u8>> {
        protocol_mail(
            s,
            w.agent,
            vec![sign(
                QuoteRequest {
                    request_id: Id::random(),
                    from,
                    to,
                    amount,
                },
                &key,
            )?],
        )
    };
    let eur: Currency = "EUR".parse()?;
    cases.push(Case {
        category: "amount that overflows".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: alice_withdraw(u64::MAX, Currency::JPY)?,
                expect: err(&[ErrorCode::BadAmount, ErrorCode::InsufficientFunds]),
            },
            Mail {
                to: Target::Agent,
                raw: quote(
                    Currency::JPY,
                    Currency::USD,
                    QuoteAmount::Pay(Amount::new(u64::MAX)),
                )?,
                expect: err(&[ErrorCode::BadAmount, ErrorCode::OutOfStock]),
            },
            Mail {
                to: Target::Agent,
                raw: quote(
                    Currency::USD,
                    Currency::JPY,
                    QuoteAmount::Receive(Amount::new(u64::MAX)),
                )?,
                expect: err(&[
                    ErrorCode::BadAmount,
                    ErrorCode::OutOfStock,
                    ErrorCode::NoRate,
                ]),
            },
        ],
    });
    cases.push(Case {
        category: "zero amount".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: alice_withdraw(0, Currency::JPY)?,
                expect: err(&[ErrorCode::BadAmount]),
            },
            Mail {
                to: Target::Agent,
                raw: quote(Currency::JPY, Currency::USD, QuoteAmount::Pay(Amount::ZERO))?,
                expect: err(&[ErrorCode::BadAmount]),
            },
        ],
    });
    cases.push(Case {
        category: "currency not served".into(),
        mails: vec![
            Mail {
                to: Target::IssuerJpy,
                raw: alice_withdraw(1_000, eur)?,
                expect: err(&[ErrorCode::WrongCurrency]),
            },
            Mail {
                to: Target::IssuerUsd,
                raw: protocol_mail(
                    s,
                    w.usd,
                    vec![sign(
                        WithdrawRequest {
                            request_id: Id::random(),
                            currency: Currency::JPY,
                            amount: Amount::new(1_000),
                            card: loot.alice_jpy.card.keys(),
                        },
                        &loot.alice_usd_account,
                    )?],
                )?,
                expect: err(&[ErrorCode::WrongCurrency]),
            },
            Mail {
                to: Target::Agent,
                raw: quote(Currency::JPY, eur, QuoteAmount::Pay(Amount::new(1_000)))?,
                expect: err(&[ErrorCode::NoRate, ErrorCode::WrongCurrency]),
            },
        ],
    });
    cases.push(one(
        "expired deadline (offer accepted after D1)",
        Target::Agent,
        protocol_mail(
            s,
            w.agent,
            vec![sign(
                OfferAcceptance {
                    tr_id: w.expired_offer.unverified().terms.tr_id,
                    offer: w.expired_offer.id(),
                    receiver: stranger_card().keys(),
                },
                &stranger_card().auth,
            )?],
        )?,
        err(&[ErrorCode::OfferExpired, ErrorCode::Expired]),
    ));
    cases.push(one(
        "2nd-payment request for someone else's TrID",
        Target::Agent,
        protocol_mail(
            s,
            w.agent,
            vec![sign(
                SecondPaymentRequest {
                    tr_id: loot.tr_id,
                    signed_offer: loot.signed_offer,
                    challenge: Challenge::random(),
                },
                &stranger_card().auth,
            )?],
        )?,
        err(&[ErrorCode::WrongKey]),
    ));
    cases.push(one(
        "double demand (2nd request, paid exchange)",
        Target::Agent,
        protocol_mail(
            s,
            w.agent,
            vec![sign(
                SecondPaymentRequest {
                    tr_id: loot.tr_id,
                    signed_offer: loot.signed_offer,
                    challenge: Challenge::random(),
                },
                &loot.alice_usd.auth,
            )?],
        )?,
        err(&[ErrorCode::DoubleDemand]),
    ));

    // ---- notes ------------------------------------------------------------
    let bob_note = loot
        .bob
        .notes
        .first()
        .context("bob's wallet holds no note")?;
    cases.push(to_both("note chain longer than the limit", |t| {
        // bob's note, passed 40 times from his card to itself.
        let mut n = bob_note.clone();
        for _ in 0..40 {
            n = n.pay(
                &loot.bob.card.payment,
                loot.bob.card.keys().payment,
                n.held(),
                Challenge::random(),
                mailer::clock::now(),
            )?;
        }
        let env = match t {
            Target::Agent => sign(
                FirstPayment {
                    tr_id: loot.tr_id,
                    signed_offer: loot.signed_offer,
                    notes: vec![n],
                    licenses: jpy_licenses(w),
                    refund_to: loot.bob.card.keys().payment,
                    refund_challenge: Challenge::random(),
                },
                &loot.bob.card.auth,
            )?,
            _ => deposit(&n, &loot.bob, &loot.jpy_key, jpy_licenses(w))?,
        };
        Ok((
            protocol_mail(s, w.addr(t), vec![env])?,
            err(&[ErrorCode::LimitExceeded]),
        ))
    })?);
    cases.push(one(
        "deposit of a note already deposited",
        Target::IssuerJpy,
        {
            // bob deposited this note; his card signs it over to the
            // issuer again (a new link from the same state).
            protocol_mail(
                s,
                w.jpy,
                vec![deposit(
                    bob_note,
                    &loot.bob,
                    &loot.jpy_key,
                    jpy_licenses(w),
                )?],
            )?
        },
        Expect::Refused(vec![ErrorCode::Overspent, ErrorCode::AlreadyDeposited]),
    ));

    // ---- mail about mail --------------------------------------------------
    cases.push(to_both("an error reply sent to a daemon", |t| {
        let env = sign(
            ErrorReply {
                request: Some(forge::tag(&[b"some request"])),
                request_kind: Some("withdraw-request".into()),
                code: ErrorCode::Internal,
                reason: "your request was refused".into(),
                evidence: Vec::new(),
            },
            &key,
        )?;
        Ok((protocol_mail(s, w.addr(t), vec![env])?, Expect::NoReply))
    })?);
    cases.push(to_both("forged From: the daemon itself", |t| {
        let me = w.addr(t);
        let env = forged(&plausible(w, t, &key)?)?;
        Ok((protocol_mail(me, me, vec![env])?, Expect::Reflected))
    })?);
    cases.push(to_both("forged From: the other daemon", |t| {
        let other = match t {
            Target::Agent => w.jpy,
            _ => w.agent,
        };
        let env = forged(&plausible(w, t, &key)?)?;
        Ok((
            protocol_mail(other, w.addr(t), vec![env])?,
            Expect::Reflected,
        ))
    })?);
    cases.push(to_both("empty mail", |_| {
        Ok((Vec::new(), Expect::Quarantine))
    })?);

    // ---- size -------------------------------------------------------------
    cases.push(to_both(
        "9 MB attachment (under the server's limit)",
        |t| {
            let raw = multipart(
                s,
                w.addr(t),
                &[Part::text("x"), Part::cbor(&vec![0x41; 7 * 1024 * 1024])],
            );
            Ok((raw, err(&[ErrorCode::TooLarge])))
        },
    )?);
    cases.push(to_both("10 MB attachment", |t| {
        let raw = multipart(
            s,
            w.addr(t),
            &[Part::text("x"), Part::cbor(&vec![0x41; 10_000_000])],
        );
        Ok((raw, Expect::Quarantine))
    })?);

    cases.push(burst(w, &key, 1_000)?);
    Ok(cases)
}

/// `n` mails of mixed junk, alternately to the JPY issuer and the agent.
pub fn burst(w: &World<'_>, key: &SecretKey, n: usize) -> Result<Case> {
    let s = w.stranger;
    let mut mails = Vec::with_capacity(n);
    for i in 0..n {
        let t = if i % 2 == 0 {
            Target::IssuerJpy
        } else {
            Target::Agent
        };
        let to = w.addr(t);
        let (raw, expect) = match (i / 2) % 5 {
            0 => {
                let mut m = forge::headers(s, to, "junk").into_bytes();
                m.extend_from_slice(format!("\r\njunk {i}\r\n").as_bytes());
                (m, Expect::Quarantine)
            }
            1 => (multipart(s, to, &[Part::text("hello")]), Expect::Quarantine),
            2 => (
                multipart(
                    s,
                    to,
                    &[
                        Part::text("x"),
                        Part {
                            content_type: mailer::mime::CBOR_CONTENT_TYPE.into(),
                            encoding: Some("base64".into()),
                            body: b"%%%%\r\n".to_vec(),
                        },
                    ],
                ),
                err(&[ErrorCode::BadEnvelope]),
            ),
            3 => (
                // Each one different: identical junk is answered once.
                protocol_mail(
                    s,
                    to,
                    vec![Envelope::seal(
                        "junk-kind",
                        (i as u64).to_be_bytes().to_vec(),
                        key,
                    )?],
                )?,
                err(&[ErrorCode::UnknownKind]),
            ),
            _ => (
                protocol_mail(s, to, vec![forged(&plausible(w, t, key)?)?])?,
                err(&[ErrorCode::BadSignature]),
            ),
        };
        mails.push(Mail { to: t, raw, expect });
    }
    Ok(Case {
        category: format!("burst of {n} mails, mixed junk"),
        mails,
    })
}

/// Reads the envelopes of a reply mail (for the runner).
pub fn envelopes_of(raw: &[u8]) -> Vec<Message> {
    mailer::mime::parse_mail(raw)
        .map(|m| {
            m.envelopes
                .into_iter()
                .filter_map(|e| Message::decode(e).ok())
                .collect()
        })
        .unwrap_or_default()
}
