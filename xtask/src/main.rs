//! `cargo xtask <command>`: developer tasks that are not part of the product.
//!
//! * `bench` ([`datapath_bench`]): the datapath benchmark — per-packet cost
//!   of each flowd program next to an empty program on the same hook, and
//!   iperf3 throughput with flowd attached vs. nothing, for TC and XDP;
//!   it also runs `bench-programs`, `bench-l7` and `bench-drops`.
//! * `bench-programs` ([`programs`]): the hit path's ns per run on crafted
//!   packets (BPF_PROG_TEST_RUN).
//! * `bench-l7` ([`l7`]), `bench-drops` ([`drops`]), `bench-observer`
//!   ([`observer_bench`]).
//! * `bench-l7-load` ([`l7_load`]), `bench-grpc-load` ([`grpc_load`]) and
//!   `bench-pipeline` ([`pipeline_bench`]): flowd's user space under an HTTP
//!   load, a gRPC load and an event flood, on a node with two pods ([`node`]).
//! * `profile` ([`datapath_bench::profile`]): cost attribution of eBPF variants.
//! * `fuzz-h2` ([`fuzz_h2`]): the HTTP/2 parser's fuzz targets in bulk.
//!
//! Shared: [`measure`] (what the kernel and /proc report), [`stats`]
//! (medians and their intervals), [`report`] (sections of docs/benchmarks.md).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};

mod datapath_bench;
mod drops;
mod fuzz_h2;
mod grpc_load;
mod l7;
mod l7_load;
mod measure;
mod node;
mod observer_bench;
mod pipeline_bench;
mod programs;
mod report;
mod stats;

use datapath_bench::{BenchArgs, Load, Mode, Profile, bench, profile};
use report::write_section;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The HTTP/2 parser's fuzz targets: N cases each, deterministic seeds
    /// (build with --release for millions of cases).
    FuzzH2 {
        #[arg(long, default_value_t = 10_000)]
        cases: u64,
        /// First seed (case i uses seed + i).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = fuzz_h2::Target::ALL)]
        targets: Vec<fuzz_h2::Target>,
        /// Threads.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Datapath benchmark: per-packet program cost and iperf3 throughput ratios.
    Bench {
        /// With/without pairs per attach mode (medians are reported).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Seconds per iperf3 run (6: 3-second runs left the throughput
        /// ratio's interval too wide to resolve the 3 % target here).
        #[arg(long, default_value_t = 6)]
        seconds: u32,
        /// Where to write the results (section between markers is replaced).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
        /// Attach modes to measure, e.g. `--modes tc` for more TC pairs in
        /// the same time (the report then has only these modes).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = Mode::ALL)]
        modes: Vec<Mode>,
        /// Skip the benchmarks that follow the datapath one (bench-programs,
        /// bench-l7, bench-drops).
        #[arg(long)]
        datapath_only: bool,
    },
    /// L7 capture cost: TC ns/run with L7 capture on vs. off, HTTP keep-alive
    /// (also part of `bench`).
    BenchL7 {
        /// On/off pairs (medians are reported).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// HTTP requests per run.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// HTTP visibility on a node: nginx serving a keep-alive wrk load between
    /// two pods, the flowd daemon on both pod veths vs. nothing attached:
    /// requests/s ratio, flowd CPU per 10k requests, eBPF ns per request, and
    /// the HTTP records flowd counted against nginx's count.
    BenchL7Load {
        /// flowd/nothing pairs (medians are reported).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Requests/s nginx serves at most (excess requests wait): a paced
        /// load flowd can keep up with; its own section of the report.
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// gRPC visibility on a node: the lab's tonic service and load generator
    /// in two pods, flowd on both pod veths with L7 on, with L7 off, and
    /// nothing attached: calls/s ratios, flowd CPU per 10k calls, eBPF ns per
    /// packet and per call, and the gRPC records flowd made against the calls.
    BenchGrpcLoad {
        /// Rounds of the three configurations (medians are reported).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Seconds per load.
        #[arg(long, default_value_t = 4)]
        seconds: u32,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary (and the lab-grpc next to it) instead of
        /// building the release ones.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// Event pipeline: µs of flowd CPU per L3/L4 event and events/s per core
    /// without losses, under a UDP flood with monitor-aggregation none.
    BenchPipeline {
        /// Offered datagrams/s, each run (two events per datagram).
        #[arg(long, value_delimiter = ',', default_values_t = [25_000u64, 50_000, 100_000, 200_000])]
        rates: Vec<u64>,
        /// Rounds over the rates (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds per flood.
        #[arg(long, default_value_t = 4)]
        seconds: u32,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// skb:kfree_skb drop program: ns per call vs. an empty tracepoint
    /// program on a mostly-not-drops workload (also part of `bench`).
    BenchDrops {
        /// flowd/empty pairs (medians are reported).
        #[arg(long, default_value_t = 5)]
        pairs: usize,
        /// Workload rounds per run (TCP connection + UDP exchange each).
        #[arg(long, default_value_t = 3000)]
        rounds: usize,
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// Observer benchmark: flowd RSS with a full 65,535-flow buffer, GetFlows flows/s.
    BenchObserver {
        /// GetFlows replays per case (medians are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Where to write the results (section between markers is replaced).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
    /// Per-packet cost of the datapath programs' hit path on crafted packets
    /// (BPF_PROG_TEST_RUN), next to the empty programs: precise enough to
    /// compare datapath variants (see src/programs.rs).
    BenchPrograms {
        /// NAME=PATH of an eBPF object to measure besides the one built into
        /// flowd from this checkout ("current"); repeatable.
        #[arg(long = "variant", value_name = "NAME=PATH")]
        variants: Vec<String>,
        #[arg(long, default_value_t = 15)]
        rounds: usize,
        /// Program runs per measurement (one syscall).
        #[arg(long, default_value_t = 200_000)]
        repeat: u32,
        /// Where to write the results (section between markers is replaced);
        /// not written when variants are given.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
    },
    /// Cost attribution for eBPF work: runs iperf3 (TC, data into the observed
    /// veth) once per variant per round, each variant an eBPF object loaded
    /// through FLOWD_EBPF_OBJECT, next to the empty program in the same round,
    /// and prints median ns/run and median difference to the empty program.
    Profile {
        /// NAME=PATH of an eBPF object (repeatable), e.g. built with
        /// `--features` of flowd-ebpf.
        #[arg(long = "variant", value_name = "NAME=PATH", required = true)]
        variants: Vec<String>,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        /// Attach mode: tc, xdp or xdp-generic.
        #[arg(long, default_value = "tc")]
        mode: String,
        /// Traffic: bulk TCP (GSO buffers) or small UDP packets.
        #[arg(long, value_enum, default_value = "bulk")]
        load: Load,
        /// Extra flowd arguments (e.g. "--l7-max-bytes=0").
        #[arg(long = "flowd-arg", allow_hyphen_values = true)]
        flowd_args: Vec<String>,
        /// Use this flowd binary instead of building the release one.
        #[arg(long)]
        flowd: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::FuzzH2 {
            cases,
            seed,
            targets,
            jobs,
        } => fuzz_h2::run(&targets, cases, seed, jobs),
        Cmd::Bench {
            pairs,
            seconds,
            out,
            flowd,
            modes,
            datapath_only,
        } => bench(
            &BenchArgs {
                pairs,
                seconds,
                modes,
                datapath_only,
            },
            &out,
            flowd,
        ),
        Cmd::BenchL7 {
            pairs,
            requests,
            out,
            flowd,
        } => bench_l7(pairs, requests, &out, flowd),
        Cmd::BenchL7Load {
            pairs,
            seconds,
            rate,
            out,
            flowd,
        } => {
            let section = if rate.is_some() {
                "l7-load-paced"
            } else {
                "l7-load"
            };
            run_section(&out, flowd, section, |bin| {
                l7_load::bench(bin, pairs, seconds, rate)
            })
        }
        Cmd::BenchGrpcLoad {
            pairs,
            seconds,
            out,
            flowd,
        } => {
            let flowd = match flowd {
                Some(p) => p,
                None => {
                    build_release_bin("flowd-lab", "lab-grpc")?;
                    build_release()?
                }
            };
            run_section(&out, Some(flowd), "grpc-load", |bin| {
                grpc_load::bench(bin, pairs, seconds)
            })
        }
        Cmd::BenchPipeline {
            rates,
            rounds,
            seconds,
            out,
            flowd,
        } => run_section(&out, flowd, "pipeline", |bin| {
            pipeline_bench::bench(bin, &rates, rounds, seconds)
        }),
        Cmd::BenchDrops {
            pairs,
            rounds,
            out,
            flowd,
        } => bench_drops(pairs, rounds, &out, flowd),
        Cmd::BenchObserver { runs, out, flowd } => observer_bench::bench(runs, &out, flowd),
        Cmd::BenchPrograms {
            variants,
            rounds,
            repeat,
            out,
        } => bench_programs(&variants, rounds, repeat, &out),
        Cmd::Profile {
            variants,
            rounds,
            seconds,
            mode,
            load,
            flowd_args,
            flowd,
        } => profile(&Profile {
            variants: &variants,
            rounds,
            seconds,
            mode: &mode,
            load,
            flowd_args: &flowd_args,
            flowd,
        }),
    }
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn build_release() -> Result<PathBuf> {
    eprintln!("==> building flowd (release, with eBPF)");
    build_release_bin("flowd", "flowd")
}

/// Builds `bin` of package `pkg` in release mode; its path.
fn build_release_bin(pkg: &str, bin: &str) -> Result<PathBuf> {
    let root = workspace_root()?;
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", pkg, "--bin", bin])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    ensure!(
        st.success(),
        "cargo build --release -p {pkg} --bin {bin} failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release").join(bin))
}

/// `cargo xtask bench-drops`, see drops.rs.
fn bench_drops(pairs: usize, rounds: usize, out: &Path, flowd: Option<PathBuf>) -> Result<()> {
    run_section(out, flowd, "drops", |bin| {
        drops::bench_drops(bin, pairs, rounds)
    })
}

/// `cargo xtask bench-l7`, see l7.rs.
fn bench_l7(pairs: usize, requests: usize, out: &Path, flowd: Option<PathBuf>) -> Result<()> {
    run_section(out, flowd, "l7", |bin| l7::bench_l7(bin, pairs, requests))
}

/// `bench-programs` on the object built into flowd from this checkout (and
/// `variants`); the report goes into `out` only without variants.
fn bench_programs(variants: &[String], rounds: usize, repeat: u32, out: &Path) -> Result<()> {
    ensure!(
        !flowd::datapath::EBPF_OBJECT.is_empty(),
        "flowd was built with FLOWD_SKIP_EBPF=1: no eBPF object to measure"
    );
    let mut objs = vec![("current".to_owned(), flowd::datapath::EBPF_OBJECT.to_vec())];
    objs.extend(programs::read_variants(variants)?);
    let report = programs::bench(&objs, rounds, repeat)?;
    println!("{report}");
    // A comparison with other objects is for the console, not the record.
    if variants.is_empty() {
        write_section(&workspace_root()?.join(out), "programs", &report)?;
        eprintln!("==> programs results written to {}", out.display());
    }
    Ok(())
}

/// Runs one benchmark with BPF run-time statistics on and writes its report
/// into the section `name` of `out`.
fn run_section(
    out: &Path,
    flowd: Option<PathBuf>,
    name: &str,
    bench: impl FnOnce(&Path) -> Result<String>,
) -> Result<()> {
    let bin = match flowd {
        Some(p) => p,
        None => build_release()?,
    };
    ensure!(bin.exists(), "{} not found", bin.display());
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics (needs root)")?;
    let report = bench(&bin)?;
    println!("{report}");
    write_section(&workspace_root()?.join(out), name, &report)?;
    eprintln!("==> {name} results written to {}", out.display());
    Ok(())
}
