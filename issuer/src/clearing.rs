//! Clearing: "the first deposit of a value wins".
//!
//! The issuer keeps every state it has seen (table `states`): the issuance
//! of each note it issued and every link that came back in a deposit. A
//! deposited note (already verified) is walked along its path:
//!
//! - a state seen before is taken as it is stored;
//! - a new link is inserted, and its amount added to its parent's `spent`;
//!   it is *good* iff its parent is good and, now that it is counted, the
//!   parent's links (and any refund) do not exceed the parent's value;
//! - when a new link takes the parent's links over its value (the first
//!   time only: `spent` only grows), the parent's holder has overspent: the
//!   proof is built from the note's own path (which leads to the parent)
//!   and the stored links out of the parent, checked with
//!   [`OverspendProof::verify`], stored, and the guilty card revoked.
//!
//! Each step is a lookup by primary key or by the `states_note_parent` index,
//! so clearing a note costs the same however many notes were cleared
//! before. The proof, the only step that reads more than one row, reads
//! the links out of one state, and only when that state is overspent.

use mailer::crypto::{Digest, PublicKey};
use mailer::license::{Revocation, RevocationReason};
use mailer::limits::{MAX_CONFLICTING, MAX_LINKS_PER_NOTE};
use mailer::messages::ErrorCode;
use mailer::money::{Amount, Timestamp};
use mailer::note::{Note, NoteView};
use mailer::overspend::OverspendProof;
use rusqlite::Connection;

use crate::error::{IssuerError, Refusal};
use crate::store::{self, NewLink, StateRow};
use crate::Issuer;

/// What clearing found for one note's path.
#[derive(Clone, Debug)]
pub enum Cleared {
    /// The note's last state is new and good: the caller credits it.
    New { state: Digest, amount: Amount },
    /// The last state was seen before and is good.
    Seen { state: Digest },
    /// The path passes through a state that is not backed. `overspent` is
    /// the state whose holder signed away more than it held, with its proof
    /// (None when the value was refunded, or the overspend is too large to
    /// prove in one message).
    Bad {
        overspent: Digest,
        proof: Option<Box<OverspendProof>>,
        reason: String,
    },
    /// Nothing was changed: the note cannot be cleared.
    Refused(Refusal),
}

/// The result of clearing one path.
#[derive(Clone, Debug)]
pub struct Clearing {
    pub cleared: Cleared,
    /// Cards revoked by this clearing (their overspend was found here).
    pub revoked: Vec<PublicKey>,
}

/// Walks `note` (verified as `view`) into the issuer's states.
pub fn clear_path(
    conn: &Connection,
    issuer: &Issuer,
    note: &Note,
    view: &NoteView,
    now: Timestamp,
) -> Result<Clearing, IssuerError> {
    let refused = |r: Refusal| Clearing {
        cleared: Cleared::Refused(r),
        revoked: Vec::new(),
    };
    let Some(seen_links) = store::link_count(conn, &view.note)? else {
        return Ok(refused(Refusal::new(
            ErrorCode::BadNote,
            "this issuer has no record of issuing this note; keep it and ask the issuer's operator",
        )));
    };
    // First pass, reads only: what is known of each state on the path.
    let mut known: Vec<Option<StateRow>> = Vec::with_capacity(view.states.len());
    for s in &view.states {
        known.push(store::state(conn, &s.id)?);
    }
    let new_links = known.iter().filter(|k| k.is_none()).count() as u64;
    let last_is_new = matches!(known.last(), Some(None));
    if known.first().and_then(Option::as_ref).is_none() {
        return Err(IssuerError::Corrupt(format!(
            "note {} has no issuance state",
            view.note
        )));
    }
    if seen_links.saturating_add(new_links) > MAX_LINKS_PER_NOTE as u64 {
        return Ok(refused(Refusal::new(
            ErrorCode::LimitExceeded,
            format!(
                "this note has been paid on more than {MAX_LINKS_PER_NOTE} times; the issuer takes no more of its links"
            ),
        )));
    }
    // Second pass: insert what is new, parent before child.
    let mut revoked = Vec::new();
    let mut rows: Vec<StateRow> = Vec::with_capacity(known.len());
    for (i, k) in known.into_iter().enumerate() {
        if let Some(row) = k {
            rows.push(row);
            continue;
        }
        // i >= 1: the issuance state is known (checked above).
        let (Some(parent), Some(link), Some(s)) = (
            rows.last_mut(),
            note.links.get(i.wrapping_sub(1)),
            view.states.get(i),
        ) else {
            return Err(IssuerError::Corrupt("a path without its parent".into()));
        };
        let value = parent.value.minor_units();
        if i + 1 == view.states.len() && parent.spent.saturating_add(s.value.minor_units()) > value
        {
            if let Some(earlier) = redeposit(conn, issuer, parent, link.unverified())? {
                // Nothing is inserted: the value went to the same account
                // before, so there is nothing to credit and nobody to name.
                return Ok(Clearing {
                    cleared: Cleared::Seen { state: earlier },
                    revoked: Vec::new(),
                });
            }
        }
        let before = parent.spent;
        parent.spent = parent.spent.saturating_add(s.value.minor_units());
        let good =
            parent.good && parent.spent.saturating_add(parent.refunded.minor_units()) <= value;
        store::insert_link(
            conn,
            &NewLink {
                id: &s.id,
                note: &view.note,
                parent: &parent.id,
                holder: &s.holder,
                value: s.value,
                good,
                link: link.envelope(),
            },
            now,
        )?;
        store::set_spent(conn, &parent.id, parent.spent)?;
        if before <= value && parent.spent > value {
            let parent = parent.clone();
            if let Some(key) = overspent(conn, issuer, note, &parent, i - 1, now)? {
                revoked.push(key);
            }
        }
        rows.push(StateRow {
            id: s.id,
            note: view.note,
            parent: rows.last().map(|p| p.id),
            holder: s.holder,
            value: s.value,
            spent: 0,
            refunded: Amount::ZERO,
            good,
        });
    }
    if new_links > 0 {
        store::add_link_count(conn, &view.note, new_links)?;
    }
    let cleared = match rows.iter().position(|r| !r.good) {
        Some(bad) => {
            // The first state not backed: its parent is good and was
            // overspent (by links, or past a refund).
            let parent = rows
                .get(bad.wrapping_sub(1))
                .ok_or_else(|| IssuerError::Corrupt("an issuance state is not good".into()))?;
            let proof = store::proof_for_state(conn, &parent.id)?;
            let reason = match &proof {
                Some(_) => format!(
                    "card {} paid out more of this note than it held; the proof names it, and it is revoked",
                    parent.holder
                ),
                None if parent.spent > parent.value.minor_units() => format!(
                    "card {} paid out more of this note than it held (too many payments to prove in one message); it is revoked",
                    parent.holder
                ),
                None => format!(
                    "the value card {} held in this note was refunded to its owner after the card was revoked",
                    parent.holder
                ),
            };
            Cleared::Bad {
                overspent: parent.id,
                proof: proof.map(Box::new),
                reason,
            }
        }
        None => {
            let last = rows
                .last()
                .ok_or_else(|| IssuerError::Corrupt("an empty path".into()))?;
            if last_is_new {
                Cleared::New {
                    state: last.id,
                    amount: last.value,
                }
            } else {
                Cleared::Seen { state: last.id }
            }
        }
    };
    Ok(Clearing { cleared, revoked })
}

/// State `parent` (at position `depth` on the note's path) has just been
/// overspent by links: builds the proof, checks it, stores it and revokes
/// the guilty card. Returns the key revoked, if it was not revoked before.
/// A deposit link that would take its state over its value, where the
/// state was already deposited to the issuer with the same challenge
/// (the same account): a wallet depositing the same note again with a
/// freshly signed deposit link (a rebuilt retry), not an overspend. Its
/// holder gave the value to the same account twice; the first deposit
/// stands and the second credits nothing. Returns the earlier link's id.
fn redeposit(
    conn: &Connection,
    issuer: &Issuer,
    parent: &StateRow,
    link: &mailer::note::Link,
) -> Result<Option<Digest>, IssuerError> {
    let issuer_key = issuer.public_key();
    if link.payee != issuer_key {
        return Ok(None);
    }
    Ok(store::links_out_of(conn, &parent.note, &parent.id)?
        .into_iter()
        .find(|l| {
            let l = l.unverified();
            l.payee == issuer_key && l.challenge == link.challenge
        })
        .map(|l| l.id()))
}

fn overspent(
    conn: &Connection,
    issuer: &Issuer,
    note: &Note,
    parent: &StateRow,
    depth: usize,
    now: Timestamp,
) -> Result<Option<PublicKey>, IssuerError> {
    let mut out: Vec<_> = store::links_out_of(conn, &parent.note, &parent.id)?
        .into_iter()
        .map(|l| (l.unverified().amount, l.id(), l))
        .collect();
    // Largest first, then by id: the shortest prefix that exceeds the
    // value, chosen the same way as `NoteTree` does (protocol 3.10).
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut sum: u128 = 0;
    let mut conflicting = Vec::new();
    for (amount, _, link) in out {
        sum += u128::from(amount.minor_units());
        conflicting.push(link);
        if sum > u128::from(parent.value.minor_units()) {
            break;
        }
    }
    let path = note.links.get(..depth).unwrap_or(&[]).to_vec();
    let proof = OverspendProof {
        issuance: note.issuance.clone(),
        path,
        conflicting,
    };
    let reason = if proof.conflicting.len() <= MAX_CONFLICTING {
        match proof.verify(&issuer.public_key()) {
            Ok(o) => {
                if o.guilty != parent.holder || o.state != parent.id {
                    return Err(IssuerError::Corrupt(format!(
                        "overspend proof for state {} names another state",
                        parent.id
                    )));
                }
                let id = store::insert_overspend(conn, &proof, &o, now)?;
                RevocationReason::Overspend { proof: id }
            }
            // The links were each checked when stored: a proof that does
            // not verify means the stored tree is damaged.
            Err(e) => {
                return Err(IssuerError::Corrupt(format!(
                    "overspend proof for state {} does not verify: {e}",
                    parent.id
                )))
            }
        }
    } else {
        RevocationReason::Operator {
            note: format!(
                "overspent state {} with more than {MAX_CONFLICTING} payments (too many for one proof)",
                parent.id
            ),
        }
    };
    let new = store::revoke(
        conn,
        &Revocation {
            payment_key: parent.holder,
            revoked_at: now,
            reason,
        },
        now,
    )?;
    Ok(new.then_some(parent.holder))
}
