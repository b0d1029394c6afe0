//! What a stranger can get hold of to forge convincing mail: the mail the
//! honest wallets really sent (from their outboxes), the requests their
//! operations made, and, for the wallets the attacker is taken to control
//! (a stolen laptop), their keys and notes, read with the wallet library.

use anyhow::{Context as _, Result};
use mailer::crypto::{Digest, Id, PublicKey, SecretKey};
use mailer::envelope::{Envelope, Signed};
use mailer::license::{CardSecret, License};
use mailer::limits::MAX_ENVELOPE_BYTES;
use mailer::messages::{FirstPayment, SecondPaymentRequest, WithdrawRequest};
use mailer::money::Currency;
use mailer::note::Note;
use rusqlite::Connection;
use wallet::store;
use wallet::vault::Vault;

use super::deploy::{key_of, read_only, Deployment};

/// One wallet's secrets and notes.
#[derive(Debug)]
pub struct Keys {
    pub account: SecretKey,
    pub card: CardSecret,
    pub license: Signed<License>,
    /// Every note the wallet ever held in this currency (spent or not),
    /// at the state it held.
    pub notes: Vec<Note>,
}

/// Everything the corpus forges from.
#[derive(Debug)]
pub struct Loot {
    pub jpy_key: PublicKey,
    pub usd_key: PublicKey,
    pub agent_key: PublicKey,
    pub alice_jpy: Keys,
    pub alice_usd: CardSecret,
    /// alice's account key at the USD issuer.
    pub alice_usd_account: SecretKey,
    pub bob: Keys,
    pub mallory: Keys,
    /// alice's withdrawal request envelope, and the whole mail that
    /// carried it (as her wallet sent it).
    pub withdraw: Signed<WithdrawRequest>,
    pub withdraw_mail: Vec<u8>,
    /// alice's exchange: the first payment and the second-payment request
    /// (one mail), that mail, the TrID and the signed offer's id.
    pub first_payment: Signed<FirstPayment>,
    pub second_request: Signed<SecondPaymentRequest>,
    pub exchange_mail: Vec<u8>,
    pub tr_id: Id,
    pub signed_offer: Digest,
}

impl Loot {
    pub fn take(d: &Deployment) -> Result<Loot> {
        let alice = read_only(&d.wallet_db(&d.alice))?;
        let alice_jpy = keys(&alice, Currency::JPY).context("alice's JPY keys")?;
        let vault = Vault::unlock(&alice, None)?;
        let alice_usd = store::card(&alice, Currency::USD)?
            .context("alice has no USD card")?
            .secret(&alice, &vault)?;
        let (_, alice_usd_account) = store::enrolled_account(&alice, &vault, Currency::USD)?;
        let bob = keys(&read_only(&d.wallet_db(&d.bob))?, Currency::JPY).context("bob's keys")?;
        let mallory =
            keys(&read_only(&d.wallet_db(&d.mallory))?, Currency::JPY).context("mallory's keys")?;

        let mut withdraw = None;
        let mut exchange = None;
        let mut stmt =
            alice.prepare("SELECT kind, request_env, before_env FROM ops ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<Vec<u8>>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })?;
        for row in rows {
            match row? {
                (k, Some(req), _) if k == "withdraw" && withdraw.is_none() => {
                    withdraw = Some(Signed::<WithdrawRequest>::from_envelope(
                        Envelope::from_bytes(&req)?,
                    )?);
                }
                (k, Some(req), Some(before)) if k == "exchange" => {
                    exchange = Some((
                        Signed::<FirstPayment>::from_envelope(Envelope::from_bytes(&before)?)?,
                        Signed::<SecondPaymentRequest>::from_envelope(Envelope::from_bytes(&req)?)?,
                    ));
                }
                _ => {}
            }
        }
        let withdraw = withdraw.context("alice's wallet made no withdrawal")?;
        let (first_payment, second_request) =
            exchange.context("alice's wallet shows no finished exchange")?;
        let withdraw_mail = sent_mail(&alice, &withdraw.envelope().id())?
            .context("alice's outbox does not hold her withdrawal mail")?;
        let exchange_mail = sent_mail(&alice, &second_request.envelope().id())?
            .context("alice's outbox does not hold her exchange mail")?;
        let tr_id = second_request.unverified().tr_id;
        let signed_offer = second_request.unverified().signed_offer;
        Ok(Loot {
            jpy_key: key_of(&d.jpy.key)?,
            usd_key: key_of(&d.usd.key)?,
            agent_key: key_of(&d.agent.key)?,
            alice_jpy,
            alice_usd,
            alice_usd_account,
            bob,
            mallory,
            withdraw,
            withdraw_mail,
            first_payment,
            second_request,
            exchange_mail,
            tr_id,
            signed_offer,
        })
    }
}

/// The account key, card, license and notes of a wallet in `currency`.
fn keys(conn: &Connection, currency: Currency) -> Result<Keys> {
    let vault = Vault::unlock(conn, None)?;
    let (_, account) = store::enrolled_account(conn, &vault, currency)?;
    let card = store::cards(conn)?
        .into_iter()
        .find(|c| c.currency == currency && c.license.is_some())
        .with_context(|| format!("no licensed {currency} card"))?;
    let license = card.license.clone().context("no license")?;
    let secret = card.secret(conn, &vault)?;
    let mut notes = Vec::new();
    let mut stmt =
        conn.prepare("SELECT note FROM notes WHERE currency = ?1 ORDER BY acquired_at, state_id")?;
    for b in stmt.query_map([currency.as_str()], |r| r.get::<_, Vec<u8>>(0))? {
        notes.push(mailer::cbor::from_slice::<Note>(&b?, MAX_ENVELOPE_BYTES)?);
    }
    Ok(Keys {
        account,
        card: secret,
        license,
        notes,
    })
}

/// The raw mail of `conn`'s outbox that carried the envelope `id`.
fn sent_mail(conn: &Connection, id: &Digest) -> Result<Option<Vec<u8>>> {
    let mut stmt = conn.prepare("SELECT raw FROM mail_outbox ORDER BY id")?;
    for raw in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
        let raw = raw?;
        if let Ok(m) = mailer::mime::parse_mail(&raw) {
            if m.envelopes.iter().any(|e| e.id() == *id) {
                return Ok(Some(raw));
            }
        }
    }
    Ok(None)
}
