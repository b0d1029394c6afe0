//! FETCH: which data items a request names, and rendering them for one
//! message (RFC 3501 6.4.5 and 7.4.2).

use std::{collections::BTreeSet, num::NonZeroU32};

use imap_next::imap_types::{
    core::{AString, Literal, NString, Vec1},
    datetime::DateTime,
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section},
    flag::FlagFetch,
    ToStatic,
};

use super::{message, response::flag};
use crate::store::Message;

/// A parsed FETCH request.
#[derive(Debug)]
pub(crate) struct Plan {
    items: Vec<MessageDataItemName<'static>>,
    /// Whether the message bytes must be read.
    pub needs_body: bool,
    /// Whether fetching sets `\Seen` (a body item without `.PEEK`).
    pub sets_seen: bool,
    wants_flags: bool,
}

impl Plan {
    /// Expands macros, adds UID for UID FETCH, and refuses the items testmail
    /// does not compute (ENVELOPE, BODYSTRUCTURE, BINARY).
    pub(crate) fn new(
        request: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Result<Plan, &'static str> {
        let mut items = match request {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().iter().map(ToStatic::to_static).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
        };
        if uid && !items.contains(&MessageDataItemName::Uid) {
            items.insert(0, MessageDataItemName::Uid);
        }
        let mut plan = Plan {
            needs_body: false,
            sets_seen: false,
            wants_flags: false,
            items: Vec::with_capacity(items.len()),
        };
        for item in items {
            match &item {
                MessageDataItemName::Uid
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::InternalDate => {}
                MessageDataItemName::Flags => plan.wants_flags = true,
                MessageDataItemName::BodyExt { peek, .. } => {
                    plan.needs_body = true;
                    plan.sets_seen |= !peek;
                }
                MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => {
                    plan.needs_body = true;
                    plan.sets_seen = true;
                }
                MessageDataItemName::Rfc822Header => plan.needs_body = true,
                _ => {
                    return Err(
                        "ENVELOPE, BODYSTRUCTURE, BODY and BINARY are not supported by testmail",
                    )
                }
            }
            plan.items.push(item.clone());
        }
        Ok(plan)
    }

    /// The data items for one message. `flags_changed` adds FLAGS when this
    /// fetch set `\Seen` and the client did not ask for FLAGS (RFC 3501
    /// 6.4.5 says the change is reported).
    pub(crate) fn render(
        &self,
        meta: &Message,
        flags: &BTreeSet<String>,
        flags_changed: bool,
        body: Option<&[u8]>,
    ) -> Option<Vec1<MessageDataItem<'static>>> {
        let body = body.unwrap_or_default();
        let (header, text) = message::split(body);
        let mut out = Vec::with_capacity(self.items.len() + 1);
        for item in &self.items {
            out.push(match item {
                MessageDataItemName::Uid => MessageDataItem::Uid(NonZeroU32::new(meta.uid)?),
                MessageDataItemName::Flags => MessageDataItem::Flags(flag_list(flags)),
                MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(meta.size),
                MessageDataItemName::InternalDate => {
                    MessageDataItem::InternalDate(internal_date(meta.internal_date)?)
                }
                MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(body.to_vec())),
                MessageDataItemName::Rfc822Header => {
                    MessageDataItem::Rfc822Header(nstring(header.to_vec()))
                }
                MessageDataItemName::Rfc822Text => {
                    MessageDataItem::Rfc822Text(nstring(text.to_vec()))
                }
                MessageDataItemName::BodyExt {
                    section, partial, ..
                } => {
                    let bytes = section_bytes(body, section.as_ref());
                    let (bytes, origin) = match partial {
                        Some((start, len)) => {
                            let start = (*start as usize).min(bytes.len());
                            let end = start.saturating_add(len.get() as usize).min(bytes.len());
                            (bytes[start..end].to_vec(), Some(start as u32))
                        }
                        None => (bytes, None),
                    };
                    MessageDataItem::BodyExt {
                        section: section.clone(),
                        origin,
                        data: nstring(bytes),
                    }
                }
                // Refused in `new`.
                _ => continue,
            });
        }
        if flags_changed && !self.wants_flags {
            out.push(MessageDataItem::Flags(flag_list(flags)));
        }
        Vec1::try_from(out).ok()
    }
}

/// The bytes a BODY[section] names. Messages are treated as single-part:
/// part 1 is the text, other parts are empty.
fn section_bytes(body: &[u8], section: Option<&Section<'_>>) -> Vec<u8> {
    let (header, text) = message::split(body);
    let names = |list: &Vec1<AString<'_>>| -> Vec<Vec<u8>> {
        list.as_ref().iter().map(|n| n.as_ref().to_vec()).collect()
    };
    match section {
        None => body.to_vec(),
        Some(Section::Header(None)) => header.to_vec(),
        Some(Section::Text(None)) => text.to_vec(),
        Some(Section::HeaderFields(None, list)) => {
            let names = names(list);
            let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            message::header_fields(header, &names, true)
        }
        Some(Section::HeaderFieldsNot(None, list)) => {
            let names = names(list);
            let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
            message::header_fields(header, &names, false)
        }
        Some(Section::Part(part)) if part.0.as_ref().iter().map(|n| n.get()).eq([1]) => {
            text.to_vec()
        }
        Some(_) => Vec::new(),
    }
}

/// A literal for message data. IMAP4rev1 literals cannot carry NUL; SMTP and
/// APPEND never store one, so NIL only shows for files put there by hand.
fn nstring(bytes: Vec<u8>) -> NString<'static> {
    Literal::try_from(bytes).map_or(NString(None), NString::from)
}

pub(crate) fn flag_list(flags: &BTreeSet<String>) -> Vec<FlagFetch<'static>> {
    flags
        .iter()
        .filter_map(|f| flag(f))
        .map(FlagFetch::Flag)
        .collect()
}

pub(crate) fn internal_date(unix: i64) -> Option<DateTime> {
    let t = chrono::DateTime::from_timestamp(unix, 0)?.fixed_offset();
    DateTime::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::fetch::Macro;

    const MSG: &[u8] = b"Message-ID: <a@b>\r\nSubject: s\r\n\r\nhello\r\n";

    fn meta() -> Message {
        Message {
            uid: 7,
            flags: BTreeSet::new(),
            internal_date: 1_700_000_000,
            size: MSG.len() as u32,
        }
    }

    #[test]
    fn uid_fetch_adds_uid_and_macros_expand() {
        let plan = Plan::new(Macro::Fast.into(), true).unwrap();
        assert!(!plan.needs_body);
        let items = plan.render(&meta(), &BTreeSet::new(), false, None).unwrap();
        assert!(matches!(items.as_ref()[0], MessageDataItem::Uid(u) if u.get() == 7));
        assert_eq!(items.as_ref().len(), 4);
        assert!(Plan::new(Macro::All.into(), false).is_err());
    }

    #[test]
    fn sections() {
        assert_eq!(section_bytes(MSG, None), MSG);
        assert_eq!(section_bytes(MSG, Some(&Section::Text(None))), b"hello\r\n");
        assert_eq!(
            section_bytes(MSG, Some(&Section::Header(None))),
            b"Message-ID: <a@b>\r\nSubject: s\r\n\r\n"
        );
        let names = Vec1::from(AString::try_from("MESSAGE-ID").unwrap());
        assert_eq!(
            section_bytes(MSG, Some(&Section::HeaderFields(None, names))),
            b"Message-ID: <a@b>\r\n\r\n"
        );
    }
}
