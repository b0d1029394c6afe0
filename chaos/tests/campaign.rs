//! The fault campaign at CI's size (200 exchanges, 40 transfers, 20
//! kills, 16 mail faults), on testmail (or, with TESTMAIL_SERVER=real, on
//! Postfix + Dovecot, without the mail faults). The seed is printed first;
//! `CHAOS_SEED=N` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use chaos::campaign::{self, Plan};
use demo::bins::Bins;
use demo::cast::Stage;
use demo::story::Say;
use testmail::harness::TestServer;

fn bins() -> Bins {
    Bins::built(env!("CARGO")).unwrap()
}

#[test]
fn the_fault_campaign_loses_and_creates_nothing() {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().expect("CHAOS_SEED is a number"),
        Err(_) => campaign::fresh_seed(),
    };
    eprintln!("fault campaign seed {seed} (replay: CHAOS_SEED={seed})");
    let kind = TestServer::kind_from_env().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let stage = Stage::new(bins(), tmp.path().to_path_buf(), kind).unwrap();
    let say = Say::new(true);
    let plan = Plan::ci(seed);
    let report = match campaign::run(&stage, &say, &plan) {
        Ok(r) => r,
        Err(e) => {
            let kept = tmp.keep();
            panic!(
                "the campaign with seed {seed} failed (replay: CHAOS_SEED={seed}): {e:#}\nits folder is kept: {}",
                kept.display()
            );
        }
    };
    eprintln!("{report}");
    if !report.is_ok(&plan) {
        let kept = tmp.keep();
        panic!(
            "seed {seed} (replay: CHAOS_SEED={seed}): {} of {} exchanges ended, {} of {} transfers done, {} kills landed; the report:\n{report}\nits folder is kept: {}",
            report.ended(),
            plan.exchanges,
            report.transfers,
            plan.transfers,
            report.kills_landed(),
            kept.display()
        );
    }
}
