//! SMTP command lines (the RFC 5321 subset that lettre, Python's smtplib and
//! Postfix's clients use), parsed into values; no I/O here.

/// One command line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Ehlo(String),
    Helo(String),
    /// Mechanism (upper case) and optional initial response.
    Auth(String, Option<String>),
    Mail {
        from: String,
        size: Option<u64>,
    },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// A known verb with arguments we cannot parse; the text says why.
    Syntax(&'static str),
    /// An unknown verb (or a line that is not text).
    Unknown,
}

/// Parses a command line with its CRLF (or LF) terminator.
pub(crate) fn parse(line: &[u8]) -> Command {
    let Ok(text) = std::str::from_utf8(line) else {
        return Command::Unknown;
    };
    let text = text.trim_end_matches(['\r', '\n']);
    let (verb, rest) = match text.split_once(' ') {
        Some((verb, rest)) => (verb, rest.trim()),
        None => (text, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if rest.is_empty() => Command::Syntax("a domain is required"),
        "EHLO" => Command::Ehlo(rest.to_owned()),
        "HELO" => Command::Helo(rest.to_owned()),
        "AUTH" => {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(mech), initial, None) => {
                    Command::Auth(mech.to_ascii_uppercase(), initial.map(str::to_owned))
                }
                _ => Command::Syntax("AUTH mechanism [initial-response]"),
            }
        }
        "MAIL" => parse_mail(rest),
        "RCPT" => match path_after(rest, "TO:") {
            Some((to, _params)) if !to.is_empty() => Command::Rcpt(to),
            _ => Command::Syntax("RCPT TO:<address>"),
        },
        "DATA" if rest.is_empty() => Command::Data,
        "RSET" if rest.is_empty() => Command::Rset,
        "QUIT" if rest.is_empty() => Command::Quit,
        "DATA" | "RSET" | "QUIT" => Command::Syntax("no parameters allowed"),
        "NOOP" => Command::Noop,
        "VRFY" => Command::Vrfy,
        "HELP" => Command::Help,
        "STARTTLS" => Command::StartTls,
        _ => Command::Unknown,
    }
}

fn parse_mail(rest: &str) -> Command {
    let Some((from, params)) = path_after(rest, "FROM:") else {
        return Command::Syntax("MAIL FROM:<address>");
    };
    let mut size = None;
    for param in params.split_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => match value.parse() {
                Ok(n) => size = Some(n),
                Err(_) => return Command::Syntax("SIZE=<number>"),
            },
            // Accepted and ignored: we store bytes as they come.
            "BODY" | "AUTH" | "SMTPUTF8" => {}
            _ => return Command::Syntax("unsupported MAIL parameter"),
        }
    }
    Command::Mail { from, size }
}

/// Splits `KEYWORD:<path> params` (keyword case-insensitive, spaces after the
/// colon tolerated, angle brackets optional) into the path and the params.
fn path_after<'a>(rest: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        let path = &inner[..end];
        // A source route (`@a,@b:user@c`) is obsolete; keep the mailbox.
        let path = path.rsplit_once(':').map_or(path, |(_, m)| m);
        Some((path.to_owned(), inner[end + 1..].trim()))
    } else {
        let (path, params) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((path.to_owned(), params.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_clients_send() {
        assert_eq!(
            parse(b"EHLO [127.0.0.1]\r\n"),
            Command::Ehlo("[127.0.0.1]".into())
        );
        assert_eq!(
            parse(b"mail FROM:<a@x.test> size=12\r\n"),
            Command::Mail {
                from: "a@x.test".into(),
                size: Some(12)
            }
        );
        assert_eq!(
            parse(b"MAIL FROM:<> BODY=8BITMIME\r\n"),
            Command::Mail {
                from: String::new(),
                size: None
            }
        );
        assert_eq!(
            parse(b"RCPT TO: <b@y.test>\r\n"),
            Command::Rcpt("b@y.test".into())
        );
        assert_eq!(
            parse(b"rcpt to:<@r:b@y.test>\n"),
            Command::Rcpt("b@y.test".into())
        );
        assert_eq!(
            parse(b"AUTH PLAIN AGEAYg==\r\n"),
            Command::Auth("PLAIN".into(), Some("AGEAYg==".into()))
        );
        assert_eq!(parse(b"data\r\n"), Command::Data);
        assert_eq!(parse(b"XYZZY\r\n"), Command::Unknown);
        assert_eq!(parse(b"\xff\r\n"), Command::Unknown);
        assert!(matches!(parse(b"MAIL TO:<a>\r\n"), Command::Syntax(_)));
        assert!(matches!(
            parse(b"MAIL FROM:<a> FOO=1\r\n"),
            Command::Syntax(_)
        ));
        assert!(matches!(parse(b"RCPT TO:<>\r\n"), Command::Syntax(_)));
        assert!(matches!(parse(b"EHLO\r\n"), Command::Syntax(_)));
    }
}
