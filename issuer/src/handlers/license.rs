//! Licensing (protocol 4.1): a card asks for a license over its two keys.

use mailer::envelope::Signed;
use mailer::license::License;
use mailer::limits::MAX_CLOCK_SKEW_SECS;
use mailer::messages::{ErrorCode, LicenseGranted, LicenseRequest};

use super::{check_currency, check_signature, Answer, Cx};
use crate::error::IssuerError;
use crate::store;

/// `license-request` -> `license-granted`.
pub fn request(cx: &Cx<'_>, req: &Signed<LicenseRequest>) -> Result<Answer, IssuerError> {
    let body = req.unverified();
    check_signed!(check_signature(req, Some(&body.card.auth)));
    if body.verify_pop().is_err() {
        return Ok(Answer::refuse(
            ErrorCode::BadSignature,
            "the proof of possession (payment_pop) does not verify under the card's payment key; sign it with that key",
        ));
    }
    check!(check_currency(cx, body.currency));
    if body.requested_at > cx.now.saturating_add_secs(MAX_CLOCK_SKEW_SECS) {
        return Ok(Answer::refuse(
            ErrorCode::BadRequest,
            format!(
                "the request is dated {}, in the future of the issuer's clock ({}); set your computer's clock and ask again",
                body.requested_at, cx.now
            ),
        ));
    }
    if let Some(r) = store::revocation(cx.conn, &body.card.payment)? {
        return Ok(Answer::refuse(
            ErrorCode::Revoked,
            format!(
                "card {} was revoked at {}; make a new card",
                body.card.payment.fingerprint(),
                r.revoked_at
            ),
        ));
    }
    // Valid from when the card asked (its clock may be a little behind
    // ours, and it signs its first links by its own clock), but never
    // dated back more than the allowed clock skew.
    let issued_at = body
        .requested_at
        .min(cx.now)
        .max(cx.now.saturating_sub_secs(MAX_CLOCK_SKEW_SECS));
    let license = cx.issuer.sign(License {
        currency: cx.issuer.currency(),
        card: body.card,
        issued_at,
        expires_at: cx
            .now
            .saturating_add_secs(cx.issuer.config().license_lifetime_secs),
    })?;
    store::insert_license(cx.conn, &license)?;
    Ok(Answer::reply(cx.issuer.sign(LicenseGranted {
        request: req.id(),
        license,
    })?))
}
