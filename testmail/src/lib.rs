//! A small mail server (SMTP + IMAP on loopback) for the demo and the tests,
//! and the harness that runs the same tests against Dovecot and Postfix.
