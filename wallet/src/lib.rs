//! The user's wallet: one card per currency, personal transfers and currency
//! exchange by email. The protocol it speaks is defined in `mailer`.
