//! The lab's traffic generator: enters the spec's source pod, sends the fixed
//! mix and prints the report (JSON) on stdout.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Send the lab's fixed traffic mix from its source pod and report it as JSON")]
struct Args {
    /// The directory given to `lab up`.
    #[arg(long)]
    dir: PathBuf,
    /// Override the spec's seed (order of the requests).
    #[arg(long)]
    seed: Option<u64>,
    /// Send the mix this many times (the report sums them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Indent the JSON.
    #[arg(long)]
    pretty: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut state = flowd_lab::LabState::load(&args.dir).with_context(|| {
        format!(
            "no running lab in {} (run `lab up` first)",
            args.dir.display()
        )
    })?;
    if let Some(seed) = args.seed {
        state.spec.traffic.seed = seed;
    }
    let report = flowd_lab::lab::run_traffic_rounds(
        &state,
        args.rounds,
        std::time::Duration::from_millis(args.interval_ms),
    )?;
    let json = if args.pretty {
        serde_json::to_string_pretty(&report)?
    } else {
        serde_json::to_string(&report)?
    };
    println!("{json}");
    Ok(())
}
