//! The judge's measures next to the runner's own account (the old trace-based ones) on
//! one run: `cargo run --release -p sim --example judge_vs_runner -- SCENARIO PROFILE SEED`.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use sim::driver::simulate;
use sim::metrics::evaluate;
use sim::scenario::{Profile, Scenario};
use sim::self_report::self_report;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().context("usage: SCENARIO PROFILE SEED")?);
    let profile = args.next().unwrap_or_else(|| "self-healing".into());
    let seed: u64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let scenario = Scenario::load(&path).map_err(|d| anyhow!("{d}"))?;
    let profile = Profile::named(&profile).context("unknown profile")?;
    let run = simulate(&scenario, seed, profile, &mut |_| {})?;
    let verdict = evaluate(&scenario, &run);
    for slot in verdict.lost_slots.iter().take(20) {
        println!("lost (judge): {slot}");
    }
    let judge = serde_json::to_value(verdict.metrics)?;
    let runner = serde_json::to_value(self_report(&scenario, &run).metrics)?;
    println!("{:<30} {:>14} {:>14}", "measure", "runner's own", "judge");
    for (key, value) in judge.as_object().into_iter().flatten() {
        let own = &runner[key];
        let mark = if own == value { "" } else { "  *" };
        let (own, value) = (own.to_string(), value.to_string());
        println!("{key:<30} {own:>14} {value:>14}{mark}");
    }
    Ok(())
}
