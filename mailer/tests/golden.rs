//! Golden test vectors: one envelope of every message kind, built from fixed
//! keys, kept as hex in `docs/protocol.md`. A change to any wire format
//! shows up here as a mismatch. After an intended change, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p mailer --test golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::PathBuf;

use mailer::envelope::Envelope;
use mailer::messages::Message;
use mailer::testkit::sample_messages;

const BEGIN: &str = "<!-- golden-vectors:begin -->";
const END: &str = "<!-- golden-vectors:end -->";
const WRAP: usize = 96;

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md")
}

fn render() -> String {
    let mut out = String::new();
    for msg in sample_messages() {
        let env = msg.envelope();
        let hex = hex::encode(env.to_bytes().unwrap());
        out.push_str(&format!(
            "\n#### `{}`\n\nSigner `{}`, envelope id `{}`, {} bytes.\n\n```text\n",
            env.kind(),
            env.signer(),
            env.id(),
            hex.len() / 2
        ));
        for chunk in hex.as_bytes().chunks(WRAP) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str("```\n");
    }
    out
}

fn block(doc: &str) -> Option<(usize, usize)> {
    let b = doc.find(BEGIN)? + BEGIN.len();
    let e = doc.find(END)?;
    (b <= e).then_some((b, e))
}

/// One test, not two: with UPDATE_GOLDEN the document is rewritten first
/// and then read back, and nothing runs against a half-written file.
#[test]
fn golden_vectors() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).expect("docs/protocol.md exists");
    let (b, e) = block(&doc).expect("docs/protocol.md has the golden-vectors markers");
    let want = render();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let new = format!("{}{}{}", &doc[..b], want, &doc[e..]);
        std::fs::write(&path, new).unwrap();
    } else {
        assert!(
            doc[b..e] == want,
            "docs/protocol.md test vectors differ from what the code encodes; if the \
             change is intended, run `UPDATE_GOLDEN=1 cargo test -p mailer --test golden`"
        );
    }
    vectors_decode_verify_and_reencode_byte_for_byte();
}

/// Reads the vectors back from the document (not from the code) and checks
/// that each decodes, verifies, re-encodes to the same bytes and is the kind
/// its heading says.
fn vectors_decode_verify_and_reencode_byte_for_byte() {
    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let (b, e) = block(&doc).unwrap();
    let mut kinds = Vec::new();
    let mut lines = doc[b..e].lines();
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .strip_prefix("#### `")
            .and_then(|l| l.strip_suffix('`'))
        else {
            continue;
        };
        let hex: String = lines
            .by_ref()
            .skip_while(|l| *l != "```text")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect();
        let bytes = hex::decode(&hex).unwrap();
        let env = Envelope::from_bytes(&bytes).unwrap();
        assert_eq!(env.kind(), kind);
        env.verify().unwrap();
        assert_eq!(
            env.to_bytes().unwrap(),
            bytes,
            "{kind}: re-encoding differs"
        );
        let msg = Message::decode(env).unwrap();
        assert!(!matches!(msg, Message::Unknown(_)), "{kind} is unknown");
        assert_eq!(msg.envelope().to_bytes().unwrap(), bytes);
        kinds.push(kind.to_string());
    }
    let all: Vec<String> = Message::KINDS.iter().map(|k| k.to_string()).collect();
    assert_eq!(kinds, all, "one vector per kind, in order");
}
