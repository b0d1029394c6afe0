//! The reasoning, over facts already read: every note's tree of states
//! rebuilt from everything anyone holds, and each state's value found a
//! place (see the module docs of [`super`]).

use std::collections::{BTreeMap, BTreeSet};

use mailer::crypto::{Digest, PublicKey};

use super::read::{Books, Facts};
use super::{CurrencyLine, Place, Report, StateLine};

/// A state as somebody knows it.
#[derive(Clone, Debug)]
struct Node {
    parent: Option<Digest>,
    holder: PublicKey,
    value: u64,
}

/// One note: its issuer, its states.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<Digest, Node>,
    /// Wallets holding each state, with what they may still pay out of it.
    held: BTreeMap<Digest, BTreeMap<String, u64>>,
    /// What carries each state to its holder (deduplicated).
    carried: BTreeMap<Digest, BTreeSet<String>>,
}

fn short(d: &Digest) -> String {
    d.to_hex().chars().take(12).collect()
}

fn key_short(k: &PublicKey) -> String {
    k.to_hex().chars().take(12).collect()
}

/// Adds `b` to `a`, noting an overflow (it cannot happen with u64 values
/// summed in u128, but every sum is checked).
fn add(a: &mut u128, b: u64) {
    *a = a.checked_add(u128::from(b)).unwrap_or(u128::MAX);
}

pub(crate) fn tally(facts: Facts) -> Report {
    let mut problems = facts.problems;
    // Which issuer issued each note.
    let mut issued_by: BTreeMap<Digest, usize> = BTreeMap::new();
    let mut trees: BTreeMap<Digest, Tree> = BTreeMap::new();
    for (i, b) in facts.issuers.iter().enumerate() {
        for p in &b.audit.problems {
            problems.push(format!("{} ({}) books: {p}", b.name, b.currency));
        }
        for s in &b.states {
            if s.parent.is_none() {
                issued_by.insert(s.note, i);
            }
            trees.entry(s.note).or_default().nodes.insert(
                s.id,
                Node {
                    parent: s.parent,
                    holder: s.holder,
                    value: s.value.minor_units(),
                },
            );
        }
    }
    let issuer_keys: BTreeMap<PublicKey, usize> = facts
        .issuers
        .iter()
        .enumerate()
        .map(|(i, b)| (b.key, i))
        .collect();

    // The paths wallets hold and mail carries, walked (every signature
    // checked) into the trees.
    for h in &facts.holdings {
        let note = h.note.id();
        let signer = *h.note.issuance.signer();
        if !issued_by.contains_key(&note) {
            let whose = issuer_keys
                .get(&signer)
                .map_or("an issuer not in this deployment".to_string(), |i| {
                    format!("{}, which has no record of it", facts.issuers[*i].name)
                });
            if !h.rest.is_zero() {
                problems.push(format!(
                    "value created: {} holds {} {} of note {} signed by {whose}",
                    h.party,
                    h.rest.minor_units(),
                    h.note.currency(),
                    short(&note)
                ));
            }
            continue;
        }
        match h.note.walk() {
            Ok(states) => {
                let Some(last) = states.last() else { continue };
                if last.id != h.state {
                    problems.push(format!(
                        "{} files note {} under state {}, but the note leads to {}",
                        h.party,
                        short(&note),
                        short(&h.state),
                        short(&last.id)
                    ));
                }
                if h.card != Some(last.holder) {
                    problems.push(format!(
                        "{} holds state {} of note {} paid to card {}, not to a card of its own",
                        h.party,
                        short(&last.id),
                        short(&note),
                        key_short(&last.holder)
                    ));
                }
                let tree = trees.entry(note).or_default();
                insert_path(tree, &states);
                let rest = tree
                    .held
                    .entry(last.id)
                    .or_default()
                    .entry(h.party.clone())
                    .or_default();
                *rest = (*rest).max(h.rest.minor_units());
            }
            Err(e) => problems.push(format!(
                "{} holds note {} that does not verify: {e}",
                h.party,
                short(&note)
            )),
        }
    }
    for c in &facts.carried {
        let note = c.note.id();
        // What no issuer here issued, or what does not verify, carries
        // nothing (a forgery).
        if !issued_by.contains_key(&note) {
            continue;
        }
        let Ok(states) = c.note.walk() else { continue };
        let Some(last) = states.last() else { continue };
        let tree = trees.entry(note).or_default();
        insert_path(tree, &states);
        tree.carried
            .entry(last.id)
            .or_default()
            .insert(c.place.clone());
    }

    // Each issuer's rows by state, for what it knows of each.
    let mut rows: BTreeMap<Digest, &issuer::store::StateRow> = BTreeMap::new();
    for b in &facts.issuers {
        for s in &b.states {
            rows.insert(s.id, s);
        }
    }

    let mut lines: Vec<Totals> = facts.issuers.iter().map(|_| Totals::default()).collect();
    let mut states = Vec::new();
    for (note, tree) in &trees {
        let Some(&i) = issued_by.get(note) else {
            continue;
        };
        let books = &facts.issuers[i];
        let t = &mut lines[i];
        t.notes += 1;
        let mut out: BTreeMap<Digest, u64> = BTreeMap::new();
        for n in tree.nodes.values() {
            if let Some(p) = n.parent {
                let o = out.entry(p).or_default();
                *o = o.saturating_add(n.value);
            }
            if n.parent.is_none() {
                add(&mut t.issued, n.value);
            }
        }
        for (id, n) in &tree.nodes {
            t.states += 1;
            let row = rows.get(id).copied();
            let refunded = row.map_or(0, |r| r.refunded.minor_units());
            add(&mut t.refunded, refunded);
            let passed = out.get(id).copied().unwrap_or(0).saturating_add(refunded);
            let ctx = Ctx { books, id, node: n };
            let (claim, place) = place_of(&ctx, tree, row, refunded, t);
            let kept = passed.saturating_add(claim);
            if kept > n.value {
                let created = kept - n.value;
                let proven = books.proofs.get(id).is_some_and(|g| g.contains(&n.holder))
                    && books.revoked.contains(&n.holder);
                if proven {
                    add(&mut t.overspent, created);
                } else {
                    add(&mut t.created, created);
                    problems.push(format!(
                        "value created: state {} of {} note {} ({} held by card {}) is worth {}, but {} of it was paid on and {} is {}{}",
                        short(id),
                        books.currency,
                        short(note),
                        n.value,
                        key_short(&n.holder),
                        n.value,
                        passed,
                        claim,
                        place.describe(),
                        if books.proofs.contains_key(id) {
                            " (the issuer's proof names another card, or the card is not revoked)"
                        } else {
                            " (no overspend proof at the issuer)"
                        }
                    ));
                }
            } else if kept < n.value {
                let lost = n.value - kept;
                add(&mut t.lost, lost);
                problems.push(format!(
                    "value lost: state {} of {} note {} (worth {} to card {}) has {} paid on{}; {lost} of it is nowhere ({})",
                    short(id),
                    books.currency,
                    short(note),
                    n.value,
                    key_short(&n.holder),
                    passed,
                    if claim > 0 {
                        format!(" and {claim} {}", place.describe())
                    } else {
                        String::new()
                    },
                    place.nowhere_why()
                ));
            }
            states.push(StateLine {
                currency: books.currency.to_string(),
                note: note.to_hex(),
                state: id.to_hex(),
                holder: n.holder.to_hex(),
                value: n.value,
                passed_on: passed,
                amount: claim,
                place,
            });
        }
    }
    // Every issued note, even one nobody else mentions (its issuance
    // state alone), is in `trees` through the issuer's own rows.
    let currencies = facts
        .issuers
        .iter()
        .zip(lines)
        .map(|(b, t)| t.line(b))
        .collect::<Vec<_>>();
    let mut currencies = currencies;
    currencies.sort_by(|a, b| a.currency.cmp(&b.currency).then(a.issuer.cmp(&b.issuer)));
    Report {
        currencies,
        problems,
        states,
    }
}

fn insert_path(tree: &mut Tree, states: &[mailer::note::StateView]) {
    let mut parent = None;
    for s in states {
        tree.nodes.entry(s.id).or_insert(Node {
            parent,
            holder: s.holder,
            value: s.value.minor_units(),
        });
        parent = Some(s.id);
    }
}

struct Ctx<'a> {
    books: &'a Books,
    id: &'a Digest,
    node: &'a Node,
}

/// What the place of a state's value is, and how much of it is there.
fn place_of(
    ctx: &Ctx<'_>,
    tree: &Tree,
    row: Option<&issuer::store::StateRow>,
    refunded: u64,
    t: &mut Totals,
) -> (u64, Place) {
    let n = ctx.node;
    if n.holder == ctx.books.key {
        // A deposit link: the issuer's once it has it.
        if let Some(r) = row {
            if let Some(c) = ctx.books.credits.get(ctx.id) {
                add(&mut t.deposited, c.minor_units());
                return (c.minor_units(), Place::Deposited);
            }
            if !r.good {
                add(&mut t.unbacked, n.value);
                return (n.value, Place::Unbacked);
            }
            return (
                0,
                Place::Nowhere("the issuer has it backed but never credited it".into()),
            );
        }
    }
    if let Some(by) = tree.held.get(ctx.id) {
        // Counted once however many hold it: each holder's claim is real
        // value only once (a second holder is value created, see tally).
        let sum = by
            .values()
            .fold(0u64, |a, v| a.saturating_add(*v))
            .saturating_sub(refunded);
        add(&mut t.held, sum);
        return (sum, Place::Held(by.keys().cloned().collect()));
    }
    if let Some(by) = tree.carried.get(ctx.id) {
        let passed_here = tree
            .nodes
            .values()
            .filter(|c| c.parent == Some(*ctx.id))
            .fold(0u64, |a, c| a.saturating_add(c.value))
            .saturating_add(refunded);
        let v = n.value.saturating_sub(passed_here);
        add(&mut t.in_flight, v);
        return (v, Place::InFlight(by.iter().cloned().collect()));
    }
    if row.is_some_and(|r| !r.good) {
        // Unbacked value (below an overspend the issuer proved, or a
        // refund) that nobody holds any more: nothing real was lost.
        let v = n.value;
        add(&mut t.unbacked, v);
        return (v, Place::Unbacked);
    }
    (
        0,
        Place::Nowhere(if n.holder == ctx.books.key {
            "a deposit the issuer never received, carried by nothing".into()
        } else {
            "held by no wallet, carried by no mail or pending request".into()
        }),
    )
}

#[derive(Debug, Default)]
struct Totals {
    issued: u128,
    deposited: u128,
    refunded: u128,
    unbacked: u128,
    held: u128,
    in_flight: u128,
    overspent: u128,
    created: u128,
    lost: u128,
    notes: usize,
    states: usize,
}

fn clamp(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Totals {
    fn line(&self, b: &Books) -> CurrencyLine {
        let found = self
            .deposited
            .saturating_add(self.refunded)
            .saturating_add(self.unbacked)
            .saturating_add(self.held)
            .saturating_add(self.in_flight);
        let owed = self.issued.saturating_add(self.overspent);
        let difference = i128::try_from(found)
            .unwrap_or(i128::MAX)
            .saturating_sub(i128::try_from(owed).unwrap_or(i128::MAX));
        CurrencyLine {
            currency: b.currency.to_string(),
            issuer: b.name.clone(),
            issued: clamp(self.issued),
            overspent: clamp(self.overspent),
            deposited: clamp(self.deposited),
            refunded: clamp(self.refunded),
            unbacked: clamp(self.unbacked),
            held: clamp(self.held),
            in_flight: clamp(self.in_flight),
            created: clamp(self.created),
            lost: clamp(self.lost),
            difference,
            notes: self.notes,
            states: self.states,
        }
    }
}
