//! SEARCH criteria (RFC 3501 6.4.4) evaluated against one message.
//!
//! Strings match as case-insensitive ASCII substrings of the raw bytes; no
//! MIME decoding. `\Recent` is never set, so RECENT and NEW match nothing.
//! SENTBEFORE/SENTON/SENTSINCE use the internal date instead of parsing the
//! Date header: our mail is read moments after it is sent.

use std::path::PathBuf;

use chrono::NaiveDate;
use imap_next::imap_types::search::SearchKey;

use super::{message, sequence};
use crate::store::{Message, DELETED, SEEN};

/// One message being tested; its bytes are read from disk only if a
/// criterion needs them, and then only once.
#[derive(Debug)]
pub(crate) struct Candidate<'a> {
    pub seq: u32,
    pub meta: &'a Message,
    pub path: PathBuf,
    body: Option<Vec<u8>>,
}

/// Bounds the search needs: the highest sequence number and UID in the view.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_seq: u32,
    pub max_uid: u32,
}

impl<'a> Candidate<'a> {
    pub(crate) fn new(seq: u32, meta: &'a Message, path: PathBuf) -> Self {
        Candidate {
            seq,
            meta,
            path,
            body: None,
        }
    }

    fn body(&mut self) -> &[u8] {
        // A message expunged meanwhile reads as empty and so matches no
        // string; std::fs because SEARCH runs to completion anyway.
        self.body
            .get_or_insert_with(|| std::fs::read(&self.path).unwrap_or_default())
    }

    fn has(&self, flag: &str) -> bool {
        self.meta.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    fn date(&self) -> Option<NaiveDate> {
        chrono::DateTime::from_timestamp(self.meta.internal_date, 0).map(|d| d.date_naive())
    }

    fn header_contains(&mut self, field: &[u8], needle: &[u8]) -> bool {
        let body = self.body();
        let (header, _) = message::split(body);
        message::values(header, field)
            .iter()
            .any(|v| message::contains_ci(v, needle))
    }

    pub(crate) fn matches(&mut self, key: &SearchKey<'_>, bounds: Bounds) -> bool {
        use SearchKey as K;
        match key {
            K::And(keys) => keys.as_ref().iter().all(|k| self.matches(k, bounds)),
            K::Or(a, b) => self.matches(a, bounds) || self.matches(b, bounds),
            K::Not(k) => !self.matches(k, bounds),
            K::All => true,
            K::SequenceSet(set) => sequence::contains(set, self.seq, bounds.max_seq),
            K::Uid(set) => sequence::contains(set, self.meta.uid, bounds.max_uid),
            K::Answered => self.has("\\Answered"),
            K::Unanswered => !self.has("\\Answered"),
            K::Deleted => self.has(DELETED),
            K::Undeleted => !self.has(DELETED),
            K::Draft => self.has("\\Draft"),
            K::Undraft => !self.has("\\Draft"),
            K::Flagged => self.has("\\Flagged"),
            K::Unflagged => !self.has("\\Flagged"),
            K::Seen => self.has(SEEN),
            K::Unseen => !self.has(SEEN),
            K::Keyword(k) => self.has(k.as_ref()),
            K::Unkeyword(k) => !self.has(k.as_ref()),
            K::Recent | K::New => false,
            K::Old => true,
            K::Larger(n) => self.meta.size > *n,
            K::Smaller(n) => self.meta.size < *n,
            K::Before(d) | K::SentBefore(d) => self.date().is_some_and(|x| x < *d.as_ref()),
            K::On(d) | K::SentOn(d) => self.date().is_some_and(|x| x == *d.as_ref()),
            K::Since(d) | K::SentSince(d) => self.date().is_some_and(|x| x >= *d.as_ref()),
            K::Header(field, value) => self.header_contains(field.as_ref(), value.as_ref()),
            K::From(s) => self.header_contains(b"from", s.as_ref()),
            K::To(s) => self.header_contains(b"to", s.as_ref()),
            K::Cc(s) => self.header_contains(b"cc", s.as_ref()),
            K::Bcc(s) => self.header_contains(b"bcc", s.as_ref()),
            K::Subject(s) => self.header_contains(b"subject", s.as_ref()),
            K::Body(s) => {
                let needle = s.as_ref().to_vec();
                let (_, text) = message::split(self.body());
                message::contains_ci(text, &needle)
            }
            K::Text(s) => {
                let needle = s.as_ref().to_vec();
                message::contains_ci(self.body(), &needle)
            }
            // Keys behind features we do not enable.
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::{core::AString, sequence::SequenceSet};
    use std::collections::BTreeSet;

    #[test]
    fn flags_headers_and_logic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        std::fs::write(
            &path,
            b"Message-ID: <abc@x>\r\nSubject: Hi\r\n\r\nbody text\r\n",
        )
        .unwrap();
        let meta = Message {
            uid: 42,
            flags: BTreeSet::from(["\\Seen".to_owned()]),
            internal_date: 0,
            size: 10,
        };
        let bounds = Bounds {
            max_seq: 3,
            max_uid: 50,
        };
        let mut c = Candidate::new(3, &meta, path);
        let a = |s: &'static str| AString::try_from(s).unwrap();
        assert!(c.matches(&SearchKey::Seen, bounds));
        assert!(!c.matches(&SearchKey::Unseen, bounds));
        assert!(c.matches(&SearchKey::Header(a("message-id"), a("<ABC@x>")), bounds));
        assert!(!c.matches(&SearchKey::Header(a("message-id"), a("<zzz@x>")), bounds));
        assert!(c.matches(&SearchKey::Body(a("TEXT")), bounds));
        assert!(c.matches(
            &SearchKey::Uid(SequenceSet::try_from("40:*").unwrap()),
            bounds
        ));
        assert!(c.matches(&SearchKey::Not(Box::new(SearchKey::Deleted)), bounds));
        assert!(c.matches(
            &SearchKey::SequenceSet(SequenceSet::try_from("*").unwrap()),
            bounds
        ));
    }
}
