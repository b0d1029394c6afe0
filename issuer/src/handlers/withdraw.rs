//! Withdrawal (protocol 4.2): the account is debited and notes are issued
//! to a licensed card, in one transaction.

use mailer::crypto::Id;
use mailer::envelope::Signed;
use mailer::messages::{ErrorCode, NotesIssued, WithdrawRequest};
use mailer::note::{Issuance, Note};

use super::{account_of, check_currency, check_signature, Answer, Cx};
use crate::error::IssuerError;
use crate::store::{self, EntryKind};

/// `withdraw-request` -> `notes-issued`.
pub fn request(cx: &Cx<'_>, req: &Signed<WithdrawRequest>) -> Result<Answer, IssuerError> {
    check_signed!(check_signature(req, None));
    let account = check!(account_of(cx, req.signer())?);
    let body = req.unverified();
    check!(check_currency(cx, body.currency));
    let money = cx.issuer.money(body.amount);
    if crate::db::to_sql_amount(body.amount).is_err() {
        return Ok(Answer::refuse(
            ErrorCode::BadAmount,
            format!("{money} is more than any account holds"),
        ));
    }
    let values = match cx.issuer.split(body.amount) {
        Ok(v) => v,
        Err(e) => return Ok(Answer::refuse(ErrorCode::BadAmount, e.to_string())),
    };
    let balance = store::balance(cx.conn, &account)?
        .ok_or_else(|| IssuerError::NoSuchAccount(account.clone()))?;
    if balance < body.amount {
        return Ok(Answer::refuse(
            ErrorCode::InsufficientFunds,
            format!(
                "account {account:?} holds {}, less than the {money} asked for; withdraw less or deposit first",
                cx.issuer.money(balance)
            ),
        ));
    }
    let licensed = store::licenses_of(cx.conn, &body.card.payment)?
        .iter()
        .any(|l| l.unverified().card == body.card && l.unverified().covers(cx.now));
    if !licensed {
        return Ok(Answer::refuse(
            ErrorCode::NotLicensed,
            format!(
                "card {} holds no valid license from this issuer; ask for one (license-request), then withdraw again",
                body.card.payment.fingerprint()
            ),
        ));
    }
    if let Some(r) = store::revocation(cx.conn, &body.card.payment)? {
        return Ok(Answer::refuse(
            ErrorCode::Revoked,
            format!(
                "card {} was revoked at {}; withdraw to another card",
                body.card.payment.fingerprint(),
                r.revoked_at
            ),
        ));
    }
    let request = req.id();
    let balance = store::change_balance(
        cx.conn,
        &account,
        body.amount,
        EntryKind::Withdrawal,
        Some(request.as_bytes()),
        None,
        cx.now,
    )?;
    let expires_at = cx
        .now
        .saturating_add_secs(cx.issuer.config().note_lifetime_secs);
    let mut notes = Vec::with_capacity(values.len());
    for value in values {
        let issuance = cx.issuer.sign(Issuance {
            serial: Id::random(),
            currency: cx.issuer.currency(),
            value,
            holder: body.card.payment,
            issued_at: cx.now,
            expires_at,
        })?;
        store::insert_note(cx.conn, &issuance, &account, &request, cx.now)?;
        notes.push(Note::issued(issuance));
    }
    Ok(Answer::reply(cx.issuer.sign(NotesIssued {
        request,
        currency: cx.issuer.currency(),
        notes,
        balance,
    })?))
}
