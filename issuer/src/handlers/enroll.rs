//! Enrollment (protocol 4.2): an account key is bound to an account with
//! the one-time code the operator gave the account holder.

use mailer::envelope::Signed;
use mailer::messages::{EnrollRequest, Enrolled, ErrorCode};

use super::{check_currency, check_signature, Answer, Cx};
use crate::error::IssuerError;
use crate::{operator, store};

/// `enroll-request` -> `enrolled`.
pub fn request(cx: &Cx<'_>, req: &Signed<EnrollRequest>) -> Result<Answer, IssuerError> {
    // Signed by the new key, which nobody knows yet: any good signature.
    check_signed!(check_signature(req, None));
    let body = req.unverified();
    check!(check_currency(cx, body.currency));
    let hash = operator::code_hash(&body.code);
    let ask = "ask the issuer's operator for a new code";
    let Some(code) = store::code(cx.conn, &hash)? else {
        return Ok(Answer::refuse(
            ErrorCode::BadEnrollmentCode,
            format!("this enrollment code is not known; check it was typed as given, or {ask}"),
        ));
    };
    if code.used_at.is_some() {
        return Ok(Answer::refuse(
            ErrorCode::BadEnrollmentCode,
            format!("this enrollment code was already used; {ask}"),
        ));
    }
    if cx.now > code.expires_at {
        return Ok(Answer::refuse(
            ErrorCode::BadEnrollmentCode,
            format!("this enrollment code expired at {}; {ask}", code.expires_at),
        ));
    }
    let key = req.signer();
    if let Some(other) = store::account_of_key(cx.conn, key)? {
        if other != code.account {
            return Ok(Answer::refuse(
                ErrorCode::BadRequest,
                "this key is already enrolled for another account; make a new account key for this one",
            ));
        }
    }
    store::bind_key(cx.conn, key, &code.account, &req.id(), cx.now)?;
    store::use_code(cx.conn, &hash, key, cx.now)?;
    let balance = store::balance(cx.conn, &code.account)?
        .ok_or_else(|| IssuerError::NoSuchAccount(code.account.clone()))?;
    Ok(Answer::reply(cx.issuer.sign(Enrolled {
        request: req.id(),
        currency: cx.issuer.currency(),
        account: code.account,
        balance,
    })?))
}
