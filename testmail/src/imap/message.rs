//! Just enough RFC 5322 to serve IMAP sections and SEARCH: where the header
//! ends, and which header lines belong to which field. Bytes are never
//! decoded or rewritten.

/// Splits a message into header (with its terminating blank line) and text.
pub(crate) fn split(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return message.split_at(2);
    }
    if message.starts_with(b"\n") {
        return message.split_at(1);
    }
    let crlf = find(message, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(message, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => message.split_at(a.min(b)),
        (Some(a), None) | (None, Some(a)) => message.split_at(a),
        (None, None) => (message, &[]),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header fields, each as (name, raw bytes including continuation lines
/// and line ends).
pub(crate) fn fields(header: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out: Vec<(&[u8], &[u8])> = Vec::new();
    let mut start = None;
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| pos + i + 1);
        let line = &header[pos..end];
        let blank = line == b"\r\n" || line == b"\n";
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            if let Some(s) = start.take() {
                out.push(field(&header[s..pos]));
            }
            if !blank {
                start = Some(pos);
            }
        }
        pos = end;
    }
    if let Some(s) = start {
        out.push(field(&header[s..]));
    }
    out
}

fn field(raw: &[u8]) -> (&[u8], &[u8]) {
    let name = raw
        .iter()
        .position(|&b| b == b':')
        .map_or(raw, |i| &raw[..i]);
    (name.trim_ascii(), raw)
}

/// The header lines whose field name is (or, with `keep = false`, is not)
/// in `names`, followed by a blank line, as BODY[HEADER.FIELDS (...)]
/// returns them.
pub(crate) fn header_fields(header: &[u8], names: &[&[u8]], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, raw) in fields(header) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) == keep {
            out.extend_from_slice(raw);
            if !raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The unfolded value of each field called `name`.
pub(crate) fn values<'a>(header: &'a [u8], name: &[u8]) -> Vec<Vec<u8>> {
    fields(header)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, raw): (&[u8], &'a [u8])| {
            let value = raw
                .iter()
                .position(|&b| b == b':')
                .map_or(&raw[..0], |i| &raw[i + 1..]);
            value
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect::<Vec<u8>>()
                .trim_ascii()
                .to_vec()
        })
        .collect()
}

/// Case-insensitive (ASCII) substring test, as SEARCH uses.
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"From: a@x\r\nMessage-ID: <1@x>\r\nSubject: long\r\n subject\r\n\r\nbody\r\n";

    #[test]
    fn splits_header_and_text() {
        let (h, t) = split(MSG);
        assert!(h.ends_with(b"subject\r\n\r\n"));
        assert_eq!(t, b"body\r\n");
        assert_eq!(split(b"no body"), (&b"no body"[..], &b""[..]));
        assert_eq!(split(b"\r\nonly body"), (&b"\r\n"[..], &b"only body"[..]));
    }

    #[test]
    fn picks_fields() {
        let (h, _) = split(MSG);
        assert_eq!(
            header_fields(h, &[b"message-id"], true),
            b"Message-ID: <1@x>\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &[b"MESSAGE-ID", b"from"], false),
            b"Subject: long\r\n subject\r\n\r\n"
        );
        assert_eq!(values(h, b"subject"), vec![b"long subject".to_vec()]);
        assert!(contains_ci(b"Hello World", b"wORLD"));
    }
}
