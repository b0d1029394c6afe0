//! Deposits (protocol 4.2, 3.8, 3.9): notes paid back to the issuer's key
//! against the depositing account's challenge are verified one by one,
//! cleared ([`crate::clearing`]), and what is new and backed is credited.
//!
//! Each note gets its own outcome, so one bad note does not block the
//! others: it is verified alone ([`mailer::note::Note::verify`], the check
//! [`mailer::note::verify_bundle`] makes for each note) and cleared before
//! the next is verified, so a card found overspending by one note is
//! already revoked when the next is checked. The signatures of all the
//! notes are verified first in one batch
//! ([`mailer::note::verify_signatures`], about half the cost of one by
//! one); only when the batch fails is each note verified with its own
//! signatures, which names the bad note and why, exactly as without the
//! batch. The bundle-wide checks of
//! `verify_bundle` (two notes ending in one state, two notes overspending
//! one state) are made by clearing itself, which answers them better: the
//! second copy of a deposit link is "already credited", an overspend gets
//! its proof.

use std::collections::BTreeSet;

use mailer::crypto::PublicKey;
use mailer::envelope::Signed;
use mailer::license::{LicenseBook, LicenseError, RevocationList, Revocations};
use mailer::messages::{Deposit, DepositOutcome, DepositReceipt, DepositResult, ErrorCode};
use mailer::money::Amount;
use mailer::note::{verify_signatures, Expect, NotePolicy, SignatureCheck};

use super::{account_of, check_currency, check_signature, Answer, Cx};
use crate::clearing::{clear_path, Cleared};
use crate::error::{IssuerError, Refusal};
use crate::store::{self, EntryKind};

/// `deposit` -> `deposit-receipt`.
pub fn request(cx: &Cx<'_>, req: &Signed<Deposit>) -> Result<Answer, IssuerError> {
    check_signed!(check_signature(req, None));
    let account_key = *req.signer();
    let account = check!(account_of(cx, &account_key)?);
    let body = req.unverified();
    check!(check_currency(cx, body.currency));
    if body.notes.is_empty() {
        return Ok(Answer::refuse(
            ErrorCode::BadAmount,
            "the deposit carries no notes",
        ));
    }
    let issuer_key = cx.issuer.public_key();
    let currency = cx.issuer.currency();
    let mut book = match LicenseBook::from_signed(&body.licenses, &issuer_key, currency) {
        Ok(b) => b,
        Err(e) => {
            let code = match &e {
                LicenseError::Envelope(e) => ErrorCode::for_envelope(e),
                LicenseError::WrongCurrency { .. } => ErrorCode::WrongCurrency,
                LicenseError::TooMany(_) => ErrorCode::LimitExceeded,
                _ => ErrorCode::BadRequest,
            };
            return Ok(Answer::refuse(
                code,
                format!("a license carried with the notes is not valid ({e}); send the deposit again without it"),
            ));
        }
    };
    // Only the cards that signed links in this deposit are looked up, so
    // the cost does not grow with the number of cards or revocations.
    let signers: BTreeSet<PublicKey> = body
        .notes
        .iter()
        .flat_map(|n| n.links.iter().map(|l| *l.signer()))
        .collect();
    for key in &signers {
        for l in store::licenses_of(cx.conn, key)? {
            book.add_trusted(l.unverified().clone());
        }
    }
    let mut revocations = revocations_of(cx, &signers)?;
    let challenge = Deposit::challenge_for(&account_key);
    let request = req.id();
    let signatures = if verify_signatures(&body.notes) {
        SignatureCheck::Verified
    } else {
        SignatureCheck::Each
    };
    let mut credited = Amount::ZERO;
    let mut results = Vec::with_capacity(body.notes.len());
    for note in &body.notes {
        let policy = NotePolicy {
            issuer: &issuer_key,
            currency,
            now: cx.now,
            licenses: &book,
            revocations: &revocations,
            expect: Expect::Paid {
                payee: issuer_key,
                challenge,
            },
            accept_expired: true,
        };
        let result = match note.verify_with(&policy, signatures) {
            Err(e) => refused(Refusal::new(
                ErrorCode::for_note(&e),
                format!("{e}; this note was not credited"),
            )),
            Ok(view) => {
                let clearing = clear_path(cx.conn, cx.issuer, note, &view, cx.now)?;
                if !clearing.revoked.is_empty() {
                    revocations = revocations_of(cx, &signers)?;
                }
                match clearing.cleared {
                    Cleared::New { state, amount } => {
                        store::insert_credit(cx.conn, &state, &account, amount, &request, cx.now)?;
                        credited = credited.checked_add(amount).ok_or_else(|| {
                            IssuerError::BadAmount("a deposit's total overflows".into())
                        })?;
                        DepositOutcome::Credited
                    }
                    Cleared::Seen { state } => {
                        if store::is_credited(cx.conn, &state)? {
                            DepositOutcome::AlreadyCredited
                        } else {
                            refused(Refusal::new(
                                ErrorCode::AlreadyDeposited,
                                "this payment to the issuer was seen before but not credited",
                            ))
                        }
                    }
                    Cleared::Bad {
                        proof: Some(proof), ..
                    } => DepositOutcome::Overspent { proof },
                    Cleared::Bad {
                        proof: None,
                        reason,
                        ..
                    } => refused(Refusal::new(ErrorCode::Overspent, reason)),
                    Cleared::Refused(r) => refused(r),
                }
            }
        };
        results.push(DepositResult {
            note: note.id(),
            state: note.state(),
            amount: note.held(),
            result,
        });
    }
    let balance = if credited.is_zero() {
        store::balance(cx.conn, &account)?
            .ok_or_else(|| IssuerError::NoSuchAccount(account.clone()))?
    } else {
        store::change_balance(
            cx.conn,
            &account,
            credited,
            EntryKind::Deposit,
            Some(request.as_bytes()),
            None,
            cx.now,
        )?
    };
    Ok(Answer::reply(cx.issuer.sign(DepositReceipt {
        request,
        currency,
        credited,
        balance,
        results,
    })?))
}

fn refused(r: Refusal) -> DepositOutcome {
    DepositOutcome::Refused {
        code: r.code,
        reason: r.reason,
    }
}

/// The issuer's revocations of these keys, as the verifier reads them.
fn revocations_of(cx: &Cx<'_>, keys: &BTreeSet<PublicKey>) -> Result<Revocations, IssuerError> {
    let mut entries = Vec::new();
    for k in keys {
        if let Some(r) = store::revocation(cx.conn, k)? {
            entries.push(r);
        }
    }
    Ok(Revocations::from_list(&RevocationList {
        currency: cx.issuer.currency(),
        version: 0,
        issued_at: cx.now,
        entries,
    }))
}
