//! Small constructors for imap-types responses. imap-types validates text
//! and refuses empty lists; our texts and lists are fixed or built from
//! validated parts, so the fallbacks here never show, but they keep the
//! server free of panics.

use imap_next::imap_types::{
    auth::AuthMechanism,
    core::{Atom, Tag, Text, Vec1},
    flag::{Flag, FlagPerm},
    mailbox::Mailbox,
    response::{Bye, Capability, Code, Data, Status, StatusBody, StatusKind, Tagged},
};

use crate::store::{INBOX, SYSTEM_FLAGS};

pub(crate) fn text(s: impl Into<String>) -> Text<'static> {
    Text::try_from(s.into()).unwrap_or_else(|_| Text::unvalidated("..."))
}

pub(crate) fn tagged(
    tag: Tag<'static>,
    kind: StatusKind,
    code: Option<Code<'static>>,
    msg: impl Into<String>,
) -> Status<'static> {
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind,
            code,
            text: text(msg),
        },
    })
}

pub(crate) fn ok(tag: Tag<'static>, msg: impl Into<String>) -> Status<'static> {
    tagged(tag, StatusKind::Ok, None, msg)
}

pub(crate) fn no(tag: Tag<'static>, msg: impl Into<String>) -> Status<'static> {
    tagged(tag, StatusKind::No, None, msg)
}

pub(crate) fn bad(tag: Tag<'static>, msg: impl Into<String>) -> Status<'static> {
    tagged(tag, StatusKind::Bad, None, msg)
}

pub(crate) fn untagged(
    kind: StatusKind,
    code: Option<Code<'static>>,
    msg: impl Into<String>,
) -> Status<'static> {
    Status::Untagged(StatusBody {
        kind,
        code,
        text: text(msg),
    })
}

pub(crate) fn bye(msg: impl Into<String>) -> Status<'static> {
    Status::Bye(Bye {
        code: None,
        text: text(msg),
    })
}

pub(crate) fn capabilities() -> Vec1<Capability<'static>> {
    Vec1::unvalidated(vec![
        Capability::Imap4Rev1,
        Capability::LiteralPlus,
        Capability::SaslIr,
        Capability::Auth(AuthMechanism::Plain),
        Capability::Idle,
        Capability::Move,
        Capability::UidPlus,
        Capability::Unselect,
    ])
}

pub(crate) fn capability_data() -> Data<'static> {
    Data::Capability(capabilities())
}

/// A stored flag string as an imap-types flag.
pub(crate) fn flag(s: &str) -> Option<Flag<'static>> {
    match s.strip_prefix('\\') {
        Some(system) => Some(Flag::system(Atom::try_from(system.to_owned()).ok()?)),
        None => Some(Flag::keyword(Atom::try_from(s.to_owned()).ok()?)),
    }
}

pub(crate) fn system_flags() -> Vec<Flag<'static>> {
    SYSTEM_FLAGS.iter().filter_map(|f| flag(f)).collect()
}

pub(crate) fn permanent_flags() -> Vec<FlagPerm<'static>> {
    let mut flags: Vec<FlagPerm<'static>> =
        system_flags().into_iter().map(FlagPerm::Flag).collect();
    flags.push(FlagPerm::Asterisk);
    flags
}

/// A mailbox name as it goes on the wire.
pub(crate) fn mailbox(name: &str) -> Option<Mailbox<'static>> {
    if name == INBOX {
        return Some(Mailbox::Inbox);
    }
    Mailbox::try_from(name.to_owned()).ok()
}

/// A mailbox name from the wire, or `None` if it is not UTF-8 (we do not
/// decode modified UTF-7; clients send it as ASCII, which we keep as is).
pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>) -> Option<String> {
    match mailbox {
        Mailbox::Inbox => Some(INBOX.to_owned()),
        Mailbox::Other(other) => String::from_utf8(other.as_ref().to_vec()).ok(),
    }
}
