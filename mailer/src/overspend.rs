//! Overspend detection and self-verifying proofs.
//!
//! Software cards are not tamper-proof, so a holder can sign links out of one
//! state worth more than the state held. Nobody can see that offline; the
//! issuer sees it when the links come back in deposits. [`NoteTree`] gathers
//! the links seen for one note; a state whose outgoing links add up to more
//! than its value names its holder as an overspender, and
//! [`OverspendProof`] carries the evidence: the path proving what the state
//! held, and the conflicting links its holder signed. Anyone can check a proof
//! with the issuer's public key alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{digest, Digest, PublicKey};
use crate::envelope::{Signed, PROTOCOL_TAG};
use crate::limits::{MAX_CHAIN, MAX_CONFLICTING, MAX_LINKS_PER_NOTE};
use crate::money::Amount;
use crate::note::{walk_chain, Issuance, Link, NoteError, StateView};

/// Why a link could not be placed in a tree, or a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverspendError {
    #[error("the note's chain is invalid: {0}")]
    Chain(#[from] NoteError),
    #[error("link {link} names a parent state {parent} that is not in the tree")]
    UnknownParent { link: Digest, parent: Digest },
    #[error("link {link} is signed by {found}, but its parent state is held by {expected}")]
    WrongSigner {
        link: Digest,
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("link {link} does not verify")]
    Signature { link: Digest },
    #[error("link {link} transfers nothing, or more than its parent state held")]
    BadAmount { link: Digest },
    #[error("more than {MAX_LINKS_PER_NOTE} links for one note")]
    TooManyLinks,
    #[error("proof is issued by {found}, not by {expected}")]
    WrongIssuer {
        expected: PublicKey,
        found: PublicKey,
    },
    #[error("proof names fewer than two conflicting links, or more than {MAX_CONFLICTING}")]
    ConflictCount,
    #[error("proof names the same link twice")]
    DuplicateConflict,
    #[error("the conflicting links add up to {spent}, which does not exceed the {held} held")]
    NotAnOverspend { held: u64, spent: u128 },
}

/// A node of the tree: a state, and what has been seen leaving it.
#[derive(Clone, Debug)]
struct Node {
    holder: PublicKey,
    value: Amount,
    /// The link that created this state (None for the issuance).
    created_by: Option<Signed<Link>>,
    parent: Option<Digest>,
    /// Links out of this state, by id (deterministic order).
    outgoing: BTreeMap<Digest, Amount>,
    /// Sum of `outgoing`; u128 so that hostile amounts cannot overflow it.
    spent: u128,
}

/// What inserting a link did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A link not seen before, within what its parent state held.
    New,
    /// A link seen before (same id): nothing changed.
    Duplicate,
    /// A link not seen before that takes its parent state's outgoing total
    /// over the value: the state's holder overspent.
    Overspend(Box<OverspendProof>),
}

/// All links seen for one note, as a tree of states.
#[derive(Clone, Debug)]
pub struct NoteTree {
    issuance: Signed<Issuance>,
    root: Digest,
    nodes: BTreeMap<Digest, Node>,
}

impl NoteTree {
    /// A tree holding only the issuance, whose signature is checked here.
    pub fn new(issuance: Signed<Issuance>) -> Result<NoteTree, OverspendError> {
        let states = walk_chain(&issuance, &[])?;
        let root = states[0];
        let mut nodes = BTreeMap::new();
        nodes.insert(
            root.id,
            Node {
                holder: root.holder,
                value: root.value,
                created_by: None,
                parent: None,
                outgoing: BTreeMap::new(),
                spent: 0,
            },
        );
        Ok(NoteTree {
            issuance,
            root: root.id,
            nodes,
        })
    }

    /// Number of states (the issuance plus every distinct link).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Adds a link, checking its signature and its place in the tree.
    pub fn insert(&mut self, link: &Signed<Link>) -> Result<Inserted, OverspendError> {
        let id = link.id();
        if self.nodes.contains_key(&id) {
            return Ok(Inserted::Duplicate);
        }
        if self.nodes.len() > MAX_LINKS_PER_NOTE {
            return Err(OverspendError::TooManyLinks);
        }
        let l = link.unverified();
        let parent = self
            .nodes
            .get(&l.parent)
            .ok_or(OverspendError::UnknownParent {
                link: id,
                parent: l.parent,
            })?;
        if link.signer() != &parent.holder {
            return Err(OverspendError::WrongSigner {
                link: id,
                expected: parent.holder,
                found: *link.signer(),
            });
        }
        link.verify()
            .map_err(|_| OverspendError::Signature { link: id })?;
        if l.amount.is_zero() || l.amount > parent.value {
            return Err(OverspendError::BadAmount { link: id });
        }
        let parent_id = l.parent;
        self.nodes.insert(
            id,
            Node {
                holder: l.payee,
                value: l.amount,
                created_by: Some(link.clone()),
                parent: Some(parent_id),
                outgoing: BTreeMap::new(),
                spent: 0,
            },
        );
        let Some(p) = self.nodes.get_mut(&parent_id) else {
            return Err(OverspendError::UnknownParent {
                link: id,
                parent: parent_id,
            });
        };
        p.outgoing.insert(id, l.amount);
        p.spent += u128::from(l.amount.minor_units());
        if p.spent > u128::from(p.value.minor_units()) {
            Ok(Inserted::Overspend(Box::new(self.proof_for(&parent_id)?)))
        } else {
            Ok(Inserted::New)
        }
    }

    /// Adds every link of a note's path (the issuance must be this tree's).
    /// Returns what each insertion did, in path order.
    pub fn insert_path(&mut self, links: &[Signed<Link>]) -> Result<Vec<Inserted>, OverspendError> {
        links.iter().map(|l| self.insert(l)).collect()
    }

    /// Every overspent state, with its proof, in a deterministic order.
    pub fn overspends(&self) -> Result<Vec<OverspendProof>, OverspendError> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.spent > u128::from(n.value.minor_units()))
            .map(|(id, _)| self.proof_for(id))
            .collect()
    }

    /// The path of links from the issuance to `state` (empty for the root).
    fn path_to(&self, state: &Digest) -> Result<Vec<Signed<Link>>, OverspendError> {
        let mut path = Vec::new();
        let mut at = *state;
        while at != self.root {
            let node = self.nodes.get(&at).ok_or(OverspendError::UnknownParent {
                link: at,
                parent: at,
            })?;
            match (&node.created_by, node.parent) {
                (Some(link), Some(parent)) => {
                    path.push(link.clone());
                    at = parent;
                }
                _ => break,
            }
        }
        path.reverse();
        Ok(path)
    }

    fn proof_for(&self, state: &Digest) -> Result<OverspendProof, OverspendError> {
        let node = self.nodes.get(state).ok_or(OverspendError::UnknownParent {
            link: *state,
            parent: *state,
        })?;
        // The smallest prefix of the outgoing links, largest first, that
        // exceeds the value: a short proof, chosen deterministically.
        let mut out: Vec<(&Digest, &Amount)> = node.outgoing.iter().collect();
        out.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut sum: u128 = 0;
        let mut conflicting = Vec::new();
        for (id, amount) in out {
            sum += u128::from(amount.minor_units());
            if let Some(link) = self.nodes.get(id).and_then(|n| n.created_by.clone()) {
                conflicting.push(link);
            }
            if sum > u128::from(node.value.minor_units()) {
                break;
            }
        }
        Ok(OverspendProof {
            issuance: self.issuance.clone(),
            path: self.path_to(state)?,
            conflicting,
        })
    }
}

/// Finds every overspend among the links seen for one note. Links may come
/// in any order; a link whose parent never appears is an error (the caller
/// gave an incomplete set).
pub fn find_overspends(
    issuance: &Signed<Issuance>,
    links: &[Signed<Link>],
) -> Result<Vec<OverspendProof>, OverspendError> {
    let mut tree = NoteTree::new(issuance.clone())?;
    let mut pending: Vec<&Signed<Link>> = links.iter().collect();
    // Place links whose parent is known, until no progress: order-independent
    // and at most quadratic in the (bounded) depth of the tree.
    loop {
        let before = pending.len();
        let mut rest = Vec::new();
        for l in pending {
            match tree.insert(l) {
                Ok(_) => {}
                Err(OverspendError::UnknownParent { .. }) => rest.push(l),
                Err(e) => return Err(e),
            }
        }
        pending = rest;
        if pending.is_empty() {
            break;
        }
        if pending.len() == before {
            let l = pending[0];
            return Err(OverspendError::UnknownParent {
                link: l.id(),
                parent: l.unverified().parent,
            });
        }
    }
    tree.overspends()
}

/// Evidence that the holder of one state of a note signed links out of it
/// worth more than it held.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OverspendProof {
    pub issuance: Signed<Issuance>,
    /// Links from the issuance to the overspent state (empty: the issuance).
    pub path: Vec<Signed<Link>>,
    /// Two or more distinct links out of that state, signed by its holder.
    pub conflicting: Vec<Signed<Link>>,
}

/// What a valid proof establishes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Overspend {
    /// The payment key of the card that overspent.
    pub guilty: PublicKey,
    pub note: Digest,
    pub state: Digest,
    pub held: Amount,
    /// What the conflicting links add up to (> held).
    pub spent: u128,
}

impl OverspendProof {
    /// The proof's identity: stable across re-encodings and whatever order
    /// the conflicting links are listed in.
    pub fn id(&self) -> Digest {
        let mut parts: Vec<Vec<u8>> = vec![
            PROTOCOL_TAG.to_vec(),
            b"overspend-proof".to_vec(),
            self.issuance.id().0.to_vec(),
        ];
        parts.extend(self.path.iter().map(|l| l.id().0.to_vec()));
        parts.push(b"conflicting".to_vec());
        let mut conflicting: Vec<Vec<u8>> =
            self.conflicting.iter().map(|l| l.id().0.to_vec()).collect();
        conflicting.sort();
        parts.extend(conflicting);
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        digest(&refs)
    }

    /// Checks the proof's sizes (for a proof decoded from outside).
    pub fn check_limits(&self) -> Result<(), String> {
        crate::envelope::check_len("proof path", self.path.len(), MAX_CHAIN)?;
        crate::envelope::check_len("conflicting links", self.conflicting.len(), MAX_CONFLICTING)
    }

    /// Checks the proof with public keys alone: the issuance is signed by
    /// `issuer`, the path is a valid chain, and the conflicting links are
    /// distinct, signed by the holder of the path's last state, out of that
    /// state, and add up to more than it held.
    pub fn verify(&self, issuer: &PublicKey) -> Result<Overspend, OverspendError> {
        if self.issuance.signer() != issuer {
            return Err(OverspendError::WrongIssuer {
                expected: *issuer,
                found: *self.issuance.signer(),
            });
        }
        if self.path.len() > MAX_CHAIN {
            return Err(NoteError::ChainTooLong {
                len: self.path.len(),
                max: MAX_CHAIN,
            }
            .into());
        }
        if self.conflicting.len() < 2 || self.conflicting.len() > MAX_CONFLICTING {
            return Err(OverspendError::ConflictCount);
        }
        let states = walk_chain(&self.issuance, &self.path)?;
        let state: StateView = states[states.len() - 1];
        let mut seen = std::collections::BTreeSet::new();
        let mut spent: u128 = 0;
        for link in &self.conflicting {
            let id = link.id();
            if !seen.insert(id) {
                return Err(OverspendError::DuplicateConflict);
            }
            if link.signer() != &state.holder {
                return Err(OverspendError::WrongSigner {
                    link: id,
                    expected: state.holder,
                    found: *link.signer(),
                });
            }
            let l = link
                .verify()
                .map_err(|_| OverspendError::Signature { link: id })?;
            if l.parent != state.id {
                return Err(OverspendError::UnknownParent {
                    link: id,
                    parent: l.parent,
                });
            }
            spent += u128::from(l.amount.minor_units());
        }
        if spent <= u128::from(state.value.minor_units()) {
            return Err(OverspendError::NotAnOverspend {
                held: state.value.minor_units(),
                spent,
            });
        }
        Ok(Overspend {
            guilty: state.holder,
            note: self.issuance.id(),
            state: state.id,
            held: state.value,
            spent,
        })
    }
}
