//! `cargo xtask fuzz-h2`: the HTTP/2 parser's fuzz targets in bulk
//! (`flowd::parser::http2::testkit::fuzz`). Case `i` of a target is a pure
//! function of seed `--seed + i`: a failure names its seed, and
//! `--seed S --cases 1` replays it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::ValueEnum;
use flowd::parser::http2::testkit::fuzz;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The frame walk over arbitrary and mutated records.
    Walk,
    /// HPACK decoding against loona-hpack and the truth.
    Hpack,
    /// Calls through walk, HPACK and pairing, checked against what was sent.
    Pairing,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Walk, Target::Hpack, Target::Pairing];

    fn case(self, seed: u64) -> Result<(), String> {
        match self {
            Target::Walk => fuzz::walk_case(seed),
            Target::Hpack => fuzz::hpack_case(seed),
            Target::Pairing => fuzz::pairing_case(seed),
        }
    }
}

/// Runs `cases` cases of each target on `jobs` threads; fails on the first
/// failing or panicking case of a target (naming its seed).
pub fn run(targets: &[Target], cases: u64, seed: u64, jobs: usize) -> Result<()> {
    let jobs = jobs.max(1) as u64;
    // Panics are caught and reported with their seed.
    std::panic::set_hook(Box::new(|_| {}));
    for &t in targets {
        let start = Instant::now();
        let failures: Vec<(u64, String)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..jobs)
                .map(|j| {
                    s.spawn(move || {
                        let mut i = j;
                        while i < cases {
                            let case_seed = seed.wrapping_add(i);
                            let r = catch_unwind(AssertUnwindSafe(|| t.case(case_seed)))
                                .unwrap_or_else(|p| {
                                    let msg = p
                                        .downcast_ref::<String>()
                                        .cloned()
                                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                        .unwrap_or_default();
                                    Err(format!("panic: {msg}"))
                                });
                            if let Err(e) = r {
                                return Some((case_seed, e));
                            }
                            if j == 0 && i % (jobs * 100_000) == 0 && i > 0 {
                                eprintln!("  {t:?}: {i} cases…");
                            }
                            i += jobs;
                        }
                        None
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| w.join().ok().flatten())
                .collect()
        });
        let secs = start.elapsed().as_secs_f64();
        if let Some((s, e)) = failures.first() {
            bail!("fuzz-h2 {t:?}: seed {s} failed: {e}");
        }
        println!("fuzz-h2 {t:?}: {cases} cases from seed {seed} passed in {secs:.1} s");
    }
    Ok(())
}
