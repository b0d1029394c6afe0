//! The server driven by independent clients: Python's stdlib `smtplib` and
//! `imaplib`, which share no code with testmail or with our Rust clients.

mod common;

use common::{message, python, start, ALICE, ALICE_PW, BOB, BOB_PW};

/// Two recipients over smtplib (with and without AUTH), read back over
/// imaplib byte for byte; dot-stuffing, unknown users and bad passwords.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_delivers_to_two_users_and_imaplib_reads_back_exact_bytes() {
    let server = start().await;
    let script = r#"
import smtplib, imaplib, sys
smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
alice, alice_pw, bob, bob_pw = sys.argv[3:7]
msg = sys.argv[7].encode()

s = smtplib.SMTP("127.0.0.1", smtp_port)
code, caps = s.ehlo()
assert code == 250, caps
for ext in (b"PIPELINING", b"8BITMIME", b"SIZE", b"AUTH PLAIN LOGIN"):
    assert ext in caps, caps
# Unauthenticated local submission, like a relay on loopback.
assert s.sendmail("sender@example.test", [alice, bob], msg) == {}
# A refused recipient does not spoil the others.
refused = s.sendmail("sender@example.test", [alice, "nobody@example.test"], msg)
assert refused == {"nobody@example.test": (550, b"5.1.1 no such user here")}, refused
try:
    s.sendmail("sender@example.test", ["nobody@example.test"], msg)
    raise SystemExit("unknown user was accepted")
except smtplib.SMTPRecipientsRefused:
    pass
# SIZE= over the limit is refused at MAIL.
code, _ = s.docmd("MAIL FROM:<a@example.test> SIZE=999999999999")
assert code == 552, code
s.rset()
s.quit()

# AUTH PLAIN and AUTH LOGIN, right and wrong.
s = smtplib.SMTP("127.0.0.1", smtp_port)
s.ehlo()
try:
    s.login(alice, "wrong")
    raise SystemExit("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
s.user, s.password = bob, bob_pw
code, _ = s.auth("LOGIN", s.auth_login)
assert code == 235, code
s.quit()
s = smtplib.SMTP("127.0.0.1", smtp_port)
s.login(alice, alice_pw)
assert s.sendmail(alice, [bob], msg) == {}
s.quit()

def read_all(user, pw):
    m = imaplib.IMAP4("127.0.0.1", imap_port)
    m.login(user, pw)
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    typ, data = m.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    assert typ == "OK", data
    bodies = [part[1] for part in data if isinstance(part, tuple)]
    m.logout()
    return bodies

a = read_all(alice, alice_pw)
b = read_all(bob, bob_pw)
assert a == [msg, msg], a
assert b == [msg, msg], b
print("ok")
"#;
    let msg = String::from_utf8(message(1)).unwrap();
    let out = python(&server, script, &[ALICE, ALICE_PW, BOB, BOB_PW, &msg]).await;
    assert_eq!(out.trim(), "ok");
    // 1 + 1 + 1 transactions accepted; 2 + 1 + 1 copies stored.
    let stats = server.stats();
    assert_eq!(stats.mails_accepted, 3);
    assert_eq!(stats.messages_delivered, 4);
    // Bytes on disk are the bytes sent, dot-stuffing undone.
    let inbox = server.dir.path().join(ALICE).join("INBOX");
    let stored: Vec<_> = std::fs::read_dir(inbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    assert_eq!(stored.len(), 2);
    for p in stored {
        assert_eq!(std::fs::read(p).unwrap(), message(1));
    }
}

/// The IMAP commands the product uses, over imaplib: SELECT, UID FETCH,
/// UID STORE, UID SEARCH, UID MOVE (with COPYUID), EXPUNGE, plus
/// AUTHENTICATE PLAIN in its continuation form, APPEND with a synchronising
/// literal, LIST, STATUS, EXAMINE and CLOSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_select_fetch_store_move_expunge() {
    let server = start().await;
    let script = r#"
import imaplib, smtplib, sys, re
smtp_port, imap_port = int(sys.argv[1]), int(sys.argv[2])
alice, alice_pw = sys.argv[3:5]

s = smtplib.SMTP("127.0.0.1", smtp_port)
for i in range(1, 4):
    s.sendmail("x@example.test", [alice], ("Message-ID: <%d@t>\r\nSubject: n%d\r\n\r\nbody %d\r\n" % (i, i, i)).encode())
s.quit()

m = imaplib.IMAP4("127.0.0.1", imap_port)
for cap in ("IMAP4REV1", "IDLE", "MOVE", "UIDPLUS", "LITERAL+", "AUTH=PLAIN"):
    assert cap in m.capabilities, m.capabilities
# AUTHENTICATE PLAIN: imaplib sends the command, waits for "+", then the data.
typ, data = m.authenticate("PLAIN", lambda _: ("\0%s\0%s" % (alice, alice_pw)).encode())
assert typ == "OK", data

typ, data = m.select("INBOX")
assert typ == "OK" and data == [b"3"], data
uidvalidity = m.untagged_responses["UIDVALIDITY"][0]
assert m.untagged_responses["UIDNEXT"] == [b"4"]

typ, data = m.uid("FETCH", "2:*", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
assert typ == "OK", data
heads = [p for p in data if isinstance(p, tuple)]
assert len(heads) == 2, data
assert b"UID 2" in heads[0][0] and b"RFC822.SIZE 42" in heads[0][0], heads[0][0]
assert b"INTERNALDATE" in heads[0][0]
assert heads[0][1] == b"Message-ID: <2@t>\r\n\r\n", heads[0][1]
assert heads[1][1] == b"Message-ID: <3@t>\r\n\r\n"

# Peek leaves \Seen alone; a plain BODY[] sets it.
typ, data = m.uid("SEARCH", None, "UNSEEN")
assert data == [b"1 2 3"], data
typ, data = m.uid("FETCH", "1", "(BODY[])")
assert typ == "OK" and b"\\Seen" in data[-1] + data[0][0], data
typ, data = m.uid("SEARCH", None, "SEEN")
assert data == [b"1"], data
typ, data = m.uid("SEARCH", None, 'HEADER Message-ID "<3@t>"')
assert data == [b"3"], data
typ, data = m.search(None, "ALL")
assert data == [b"1 2 3"], data

typ, data = m.uid("STORE", "2", "+FLAGS", "(\\Flagged $Custom)")
assert typ == "OK" and b"UID 2" in data[0] and b"$Custom" in data[0], data
typ, data = m.uid("STORE", "2", "-FLAGS.SILENT", "(\\Flagged)")
assert typ == "OK" and data == [None], data
typ, data = m.uid("FETCH", "2", "(FLAGS)")
assert b"FLAGS ($Custom)" in data[0], data
typ, data = m.uid("STORE", "1:*", "FLAGS", "(\\Answered)")
assert typ == "OK" and len(data) == 3, data

# MOVE to a new mailbox, with COPYUID.
assert m.create("Archive")[0] == "OK"
assert m.create("Archive")[0] == "NO"
typ, data = m.uid("MOVE", "2", "Archive")
assert typ == "OK", data
copyuid = m.untagged_responses.get("COPYUID") or []
assert any(re.match(rb"\d+ 2 1$", c) for c in copyuid), m.untagged_responses
typ, data = m.uid("MOVE", "2", "Nowhere")
assert typ == "NO" and b"TRYCREATE" in data[0], data
typ, data = m.uid("SEARCH", None, "ALL")
assert data == [b"1 3"], data

# EXPUNGE of \Deleted, reporting sequence numbers.
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.uid("SEARCH", None, "DELETED")
assert data == [b"1"], data
typ, data = m.expunge()
# imaplib keeps the EXPUNGE of the MOVE above too: seq 2, then seq 1 now.
assert typ == "OK" and data == [b"2", b"1"], data
typ, data = m.uid("SEARCH", None, "UNDELETED")
assert data == [b"3"], data

# APPEND sends the message as a synchronising literal.
typ, data = m.append("Archive", "(\\Seen)", None, b"Subject: appended\r\n\r\nhi\r\n")
assert typ == "OK" and b"APPENDUID" in data[0], data
typ, data = m.status("Archive", "(MESSAGES UIDNEXT UNSEEN)")
assert typ == "OK" and b"MESSAGES 2" in data[0] and b"UIDNEXT 3" in data[0] and b"UNSEEN 1" in data[0], data
typ, data = m.list()
assert typ == "OK" and sorted(data) == [b'() "/" Archive', b'() "/" INBOX'], data

# EXAMINE is read-only: no \Seen, no STORE.
typ, data = m.select("Archive", readonly=True)
assert typ == "OK" and data == [b"2"], data
m.fetch("1", "(BODY[])")
typ, data = m.uid("SEARCH", None, "UNSEEN")
assert data == [b"1"], data
typ, data = m.store("1", "+FLAGS", "(\\Deleted)")
assert typ == "NO", data
assert m.close()[0] == "OK"

assert m.select("INBOX")[1] == [b"1"]
assert m.delete("Archive")[0] == "OK"
assert m.delete("INBOX")[0] == "NO"
assert m.logout()[0] == "BYE"
print("ok")
"#;
    let out = python(&server, script, &[ALICE, ALICE_PW]).await;
    assert_eq!(out.trim(), "ok");
}

/// What no library sends: garbage, unknown commands, commands in the wrong
/// state. Every one gets BAD or NO, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_bad_commands_get_bad_or_no() {
    let server = start().await;
    let script = r#"
import imaplib, sys
imap_port = int(sys.argv[2])
alice, alice_pw = sys.argv[3:5]
m = imaplib.IMAP4("127.0.0.1", imap_port)

def status(*args):
    tag = m._new_tag()
    m.send(tag + b" " + b" ".join(a.encode() for a in args) + b"\r\n")
    while True:
        line = m._get_line()
        if line.startswith(tag + b" "):
            return line.split(b" ")[1].decode()

assert status("FETCH", "1", "(FLAGS)") == "BAD"          # not logged in
assert status("SELECT", "INBOX") == "BAD"                # not logged in
assert status("LOGIN", alice, "wrong") == "NO"
assert status("FROBNICATE") == "BAD"
assert status("LOGIN") == "BAD"
assert status("AUTHENTICATE", "CRAM-MD5") == "NO"
assert status("LOGIN", alice, alice_pw) == "OK"
assert status("LOGIN", alice, alice_pw) == "BAD"         # twice
assert status("FETCH", "1", "(FLAGS)") == "BAD"          # nothing selected
assert status("SELECT", "NoSuchBox") == "NO"
assert status("SELECT", "INBOX") == "OK"
assert status("FETCH", "1", "(FLAGS)") == "BAD"          # empty mailbox
assert status("FETCH", "1:*", "(ENVELOPE)") == "BAD"     # not supported
assert status("UID", "FETCH", "1:*", "(FLAGS)") == "OK"  # empty result is fine
assert status("UID", "FETCH", "x", "(FLAGS)") == "BAD"
assert status("STORE", "1", "+FLAGS", "(\\Seen)") == "BAD"
assert status("SEARCH", "CHARSET", "KOI8-R", "ALL") == "NO"
assert status("SEARCH", "FROBBED") == "BAD"
assert status("CREATE", '"a*b"') == "NO"
assert status("COPY", "1", "Nowhere") == "BAD"
assert status("NOOP") == "OK"
print("ok")
"#;
    let out = python(&server, script, &[ALICE, ALICE_PW]).await;
    assert_eq!(out.trim(), "ok");
}
