//! Every pattern earns its row: in the focused world its row in
//! `sim/src/study/showcase.rs` names, switching the pattern off costs something the
//! judge measures, on every seed more than the worst seed with it (beyond the spread
//! across seeds). A pattern whose row says it cannot be shown must say why.
//!
//! The worlds are short (hours to two days) and run on two threads, each self-healing run
//! once for the rows that share its world.

use sim::study::showcase::{self, SHOWCASES, ShowcaseResult};

/// Few seeds, but more than one: the claim is about the spread across them.
const SEEDS: [u64; 3] = [1, 2, 3];

fn describe(r: &ShowcaseResult) -> String {
    let shown = r.showcase.shown.expect("a row with a world");
    format!(
        "{} in {}: {} with the pattern {:?}, without it {:?}",
        r.showcase.profile, shown.file, shown.measure, r.with, r.without
    )
}

#[test]
fn switching_each_pattern_off_costs_something_beyond_the_seed_spread() {
    let results = showcase::run(&SEEDS, 2).expect("the focused worlds run");
    assert_eq!(results.len(), SHOWCASES.len());
    let mut failures = Vec::new();
    for r in &results {
        match r.showcase.shown {
            None => assert!(
                r.showcase.note.starts_with("not shown:"),
                "{}: a pattern without a world says why it cannot be shown",
                r.showcase.profile
            ),
            Some(_) => {
                assert_eq!(r.with.len(), SEEDS.len(), "{}", describe(r));
                assert_eq!(r.without.len(), SEEDS.len(), "{}", describe(r));
                if !r.beyond_spread() {
                    failures.push(describe(r));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "no cost beyond the seed spread:\n{}",
        failures.join("\n")
    );
}
