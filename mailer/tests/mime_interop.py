#!/usr/bin/env python3
"""Interop helper for mailer/tests/mime.rs: Python's standard `email` package
on the other side of our MIME layer. Standard library only.

    mime_interop.py read   < mail        report how Python reads a mail
    mime_interop.py write  LINESEP       compose a mail, print it

`read` prints one record per line, fields separated by tabs; every free text
is hex-encoded (UTF-8) so that tabs and line breaks cannot break the format:

    defects   <count>  <hex of the defect names, comma-separated>
    header    <name>   <hex of the value>     (one per header of the root)
    part      <content type>  <disposition or ->  <defect count>  <hex of defect names>
    text      <hex of the text/plain content>
    cbor      <filename or ->  <hex of the decoded attachment bytes>

`write` reads `key<TAB>value` lines from stdin (from, to, subject,
message-id, in-reply-to, references, text, and any number of `envelope`
lines whose value is hex) and prints a multipart/mixed mail with one
application/cbor attachment per envelope. LINESEP is `lf` or `crlf`.
"""

import email
import email.policy
import sys
from email.message import EmailMessage


def hx(text):
    return text.encode("utf-8").hex()


def defect_names(defects):
    return ",".join(type(d).__name__ for d in defects)


def read():
    data = sys.stdin.buffer.read()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = []
    out.append("defects\t%d\t%s" % (len(msg.defects), hx(defect_names(msg.defects))))
    for name, value in msg.items():
        out.append("header\t%s\t%s" % (name, hx(str(value))))
    for part in msg.walk():
        disp = part.get_content_disposition() or "-"
        out.append(
            "part\t%s\t%s\t%d\t%s"
            % (part.get_content_type(), disp, len(part.defects), hx(defect_names(part.defects)))
        )
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            out.append("text\t%s" % hx(part.get_content()))
        elif ctype == "application/cbor":
            content = part.get_content()
            if not isinstance(content, bytes):
                raise SystemExit("application/cbor content is not bytes: %r" % type(content))
            out.append("cbor\t%s\t%s" % (part.get_filename() or "-", content.hex()))
    sys.stdout.write("\n".join(out) + "\n")


def write(linesep):
    fields = {}
    envelopes = []
    for line in sys.stdin.read().splitlines():
        if not line:
            continue
        key, _, value = line.partition("\t")
        if key == "envelope":
            envelopes.append(bytes.fromhex(value))
        else:
            fields[key] = value
    msg = EmailMessage()
    msg["From"] = fields["from"]
    msg["To"] = fields["to"]
    msg["Subject"] = fields["subject"]
    msg["Message-ID"] = fields["message-id"]
    if "in-reply-to" in fields:
        msg["In-Reply-To"] = fields["in-reply-to"]
    if "references" in fields:
        msg["References"] = fields["references"]
    msg["X-Emoney-Kind"] = "python"
    msg.set_content(fields.get("text", "A protocol mail composed by Python."))
    for i, env in enumerate(envelopes):
        msg.add_attachment(
            env, maintype="application", subtype="cbor", filename="%d-python.cbor" % (i + 1)
        )
    policy = email.policy.SMTP if linesep == "crlf" else email.policy.default
    sys.stdout.buffer.write(msg.as_bytes(policy=policy))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "read":
        read()
    elif len(sys.argv) == 3 and sys.argv[1] == "write" and sys.argv[2] in ("lf", "crlf"):
        write(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
