//! Resolving IMAP sequence sets (`1:5,7,*`) against a session's view of a
//! mailbox, by sequence number or by UID (RFC 3501 6.4.8, 9 `sequence-set`).

use std::{collections::BTreeSet, num::NonZeroU32};

use imap_next::imap_types::{
    extensions::uidplus::{UidElement, UidSet},
    sequence::{SeqOrUid, Sequence, SequenceSet},
};

/// A sequence number outside the mailbox: the command is answered BAD.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OutOfRange;

/// The indices into `view` (ascending UIDs, one per sequence number) that
/// `set` names, ascending and without duplicates.
///
/// By UID, numbers that name no message are ignored, and `*` is the highest
/// UID, so `559:*` always includes the last message (RFC 3501 6.4.8). By
/// sequence number, a number past the end is an error. Neither walks a range
/// number by number, so `1:4294967295` costs no more than `1:5`.
pub(crate) fn resolve(
    set: &SequenceSet,
    view: &[u32],
    by_uid: bool,
) -> Result<Vec<usize>, OutOfRange> {
    if by_uid {
        let Some(&max) = view.last() else {
            return Ok(Vec::new());
        };
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => max,
        };
        let ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|seq| match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
            })
            .collect();
        Ok(view
            .iter()
            .enumerate()
            .filter(|(_, uid)| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(uid)))
            .map(|(i, _)| i)
            .collect())
    } else {
        let len = u32::try_from(view.len()).unwrap_or(u32::MAX);
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) if v.get() <= len => Ok(v.get()),
            SeqOrUid::Asterisk if len > 0 => Ok(len),
            _ => Err(OutOfRange),
        };
        let mut out = BTreeSet::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (value(s)?, value(s)?),
                Sequence::Range(a, b) => (value(a)?, value(b)?),
            };
            out.extend((a.min(b)..=a.max(b)).map(|n| n as usize - 1));
        }
        Ok(out.into_iter().collect())
    }
}

/// Whether a single UID is in `set` (for `SEARCH UID`), with `*` = `max`.
pub(crate) fn contains(set: &SequenceSet, n: u32, max: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => max,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => value(s) == n,
        Sequence::Range(a, b) => (value(a).min(value(b))..=value(a).max(value(b))).contains(&n),
    })
}

/// A compact UID set (`1:3,7`) for COPYUID; `None` if `uids` is empty.
pub(crate) fn uid_set(uids: &[u32]) -> Option<UidSet> {
    let mut elements = Vec::new();
    let mut iter = uids.iter().filter_map(|&u| NonZeroU32::new(u)).peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        // Only ascending runs become ranges: COPYUID pairs source and
        // destination UIDs by position, so the order must be kept.
        while let Some(&next) = iter.peek() {
            if next.get() == end.get().wrapping_add(1) {
                end = next;
                iter.next();
            } else {
                break;
            }
        }
        elements.push(if start == end {
            UidElement::Single(start)
        } else {
            UidElement::Range(start, end)
        });
    }
    imap_next::imap_types::core::Vec1::try_from(elements)
        .ok()
        .map(UidSet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn by_sequence_number() {
        let view = [3, 5, 9, 10];
        assert_eq!(resolve(&set("1:2,4"), &view, false), Ok(vec![0, 1, 3]));
        assert_eq!(resolve(&set("*"), &view, false), Ok(vec![3]));
        assert_eq!(resolve(&set("*:3"), &view, false), Ok(vec![2, 3]));
        assert_eq!(resolve(&set("5"), &view, false), Err(OutOfRange));
        assert_eq!(resolve(&set("1:*"), &[], false), Err(OutOfRange));
    }

    #[test]
    fn by_uid() {
        let view = [3, 5, 9, 10];
        assert_eq!(resolve(&set("4:9"), &view, true), Ok(vec![1, 2]));
        assert_eq!(resolve(&set("100:*"), &view, true), Ok(vec![3]));
        assert_eq!(
            resolve(&set("1:4294967295"), &view, true),
            Ok(vec![0, 1, 2, 3])
        );
        assert_eq!(resolve(&set("6"), &view, true), Ok(vec![]));
        assert_eq!(resolve(&set("1:*"), &[], true), Ok(vec![]));
        assert!(contains(&set("2,5:*"), 7, 7));
        assert!(!contains(&set("2,5:6"), 7, 7));
    }

    #[test]
    fn uid_sets_compress_runs() {
        let s = uid_set(&[1, 2, 3, 7, 9, 10]).unwrap();
        let n = |v| NonZeroU32::new(v).unwrap();
        assert_eq!(
            s.0.as_ref(),
            [
                UidElement::Range(n(1), n(3)),
                UidElement::Single(n(7)),
                UidElement::Range(n(9), n(10))
            ]
        );
        assert!(uid_set(&[]).is_none());
    }
}
