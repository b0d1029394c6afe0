//! `issuer report`: overspenders and revoked cards.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use mailer::license::RevocationReason;
use serde_json::json;

use super::{open, print_json, HomeArg};

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub home: HomeArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn reason(r: &RevocationReason) -> (&'static str, String) {
    match r {
        RevocationReason::Overspend { proof } => ("overspend", proof.to_hex()),
        RevocationReason::Operator { note } => ("operator", note.clone()),
    }
}

pub fn run(a: ReportArgs) -> Result<ExitCode> {
    let (issuer, conn) = open(&a.home.home)?;
    let r = issuer::report(&conn, &issuer).context("could not read the report")?;
    if a.json {
        let overspends: Vec<_> = r
            .overspends
            .iter()
            .map(|o| {
                json!({
                    "proof_id": o.record.proof_id.to_hex(),
                    "guilty": o.record.guilty.to_hex(),
                    "note": o.record.note.to_hex(),
                    "state": o.record.state.to_hex(),
                    "at": o.record.at.unix(),
                    "proof_verifies": o.check.is_ok(),
                    "proof_error": o.check.as_ref().err(),
                })
            })
            .collect();
        let revocations: Vec<_> = r
            .revocations
            .iter()
            .map(|v| {
                let (kind, detail) = reason(&v.reason);
                json!({
                    "payment_key": v.payment_key.to_hex(),
                    "revoked_at": v.revoked_at.unix(),
                    "reason": kind,
                    "detail": detail,
                })
            })
            .collect();
        print_json(&json!({
            "guilty": r.guilty().iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
            "overspends": overspends,
            "revocations": revocations,
            "revocation_version": r.revocation_version,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("Overspends: {}", r.overspends.len());
    for o in &r.overspends {
        let check = match &o.check {
            Ok(_) => "proof verifies".to_string(),
            Err(e) => format!("PROOF DOES NOT VERIFY: {e}"),
        };
        println!(
            "  card {} at {} (note {}): {check}",
            o.record.guilty, o.record.at, o.record.note
        );
    }
    println!(
        "Revoked cards: {} (revocation list version {})",
        r.revocations.len(),
        r.revocation_version
    );
    for v in &r.revocations {
        let (kind, detail) = reason(&v.reason);
        println!(
            "  {} since {}: {kind} {detail}",
            v.payment_key, v.revoked_at
        );
    }
    Ok(ExitCode::SUCCESS)
}
