//! The revocation list (protocol 3.2, 4.1): asked for by anyone, always
//! answered with the current list.

use mailer::envelope::Signed;
use mailer::license::RevocationList;
use mailer::messages::RevocationListRequest;
use rusqlite::Connection;

use super::{check_currency, check_signature, Answer, Cx};
use crate::error::IssuerError;
use crate::{store, Issuer};

/// `revocation-list-request` -> `revocation-list`.
pub fn request(cx: &Cx<'_>, req: &Signed<RevocationListRequest>) -> Result<Answer, IssuerError> {
    check_signed!(check_signature(req, None));
    check!(check_currency(cx, req.unverified().currency));
    Ok(Answer::reply(current_list(cx.conn, cx.issuer)?))
}

/// The current list, signed. The same version always gives the same
/// envelope (its time is the time of the version; signing is
/// deterministic), so resending it is resending the same bytes.
pub fn current_list(
    conn: &Connection,
    issuer: &Issuer,
) -> Result<Signed<RevocationList>, IssuerError> {
    let (version, issued_at) = store::revocation_version(conn)?;
    issuer.sign(RevocationList {
        currency: issuer.currency(),
        version,
        issued_at,
        entries: store::revocations(conn)?,
    })
}
