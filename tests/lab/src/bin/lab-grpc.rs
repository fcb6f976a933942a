//! The lab's gRPC workload as a program: `serve` runs the Inventory service,
//! `load` keeps unary calls in flight on a few connections for a while and
//! prints what it did (JSON: calls per status code), for benchmarks that run
//! the server and the client in different pods.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use flowd_lab::grpc::{self, Call, Kind};
use tonic::Code;

#[derive(Parser)]
#[command(about = "The lab's gRPC service and a load generator for it")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve shop.inventory.v1.Inventory on ADDR until killed.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Unary calls (`Reserve`), one in flight per connection, for SECONDS;
    /// every tenth call ends NOT_FOUND.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
        connections: u32,
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    match args.cmd {
        Cmd::Serve { listen } => rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(listen).await?;
            grpc::serve(l).await
        }),
        Cmd::Load {
            target,
            connections,
            seconds,
        } => {
            let counts =
                rt.block_on(load(target, connections, Duration::from_secs_f64(seconds)))?;
            println!("{}", serde_json::to_string(&counts)?);
            Ok(())
        }
    }
}

/// Calls per status code name, summed over the connections.
async fn load(
    target: SocketAddr,
    connections: u32,
    length: Duration,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let end = Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut client = grpc::connect(target).await?;
        tasks.push(tokio::spawn(async move {
            let ok = Call::new(Kind::Unary, Code::Ok, 1);
            let not_found = Call::new(Kind::Unary, Code::NotFound, 1);
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut i = 0u64;
            while Instant::now() < end {
                let call = if i % 10 == 9 { &not_found } else { &ok };
                let o = grpc::make(&mut client, call).await?;
                *counts.entry(format!("{:?}", o.code)).or_default() += 1;
                i += 1;
            }
            anyhow::Ok(counts)
        }));
    }
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await?? {
            *total.entry(k).or_default() += v;
        }
    }
    Ok(total)
}
