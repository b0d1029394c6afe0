//! The issuer of one currency: licenses cards, runs the bank accounts of its
//! currency, issues notes on withdrawal and clears them on deposit, naming
//! overspenders by their key. It will run as a daemon reading its own mailbox;
//! the protocol it speaks is defined in `mailer`.
