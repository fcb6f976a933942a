//! The flowd command line and its main loop, kept in the library so that
//! main.rs stays a few lines and later features (config file, gRPC) plug in here.
use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::datapath::{
    self, Datapath, DatapathConfig, DatapathEvent, FlowRecord, InterfaceNames, InterfaceSpec,
    ProgramSet, fmt_key,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    Text,
    Json,
}

/// flowd: eBPF network flow observer.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Interface name or glob to observe, with an optional attach mode:
    /// NAME|GLOB[=tc|xdp|xdp-generic] (default tc). Repeatable.
    #[arg(short = 'i', long = "interface", value_name = "NAME|GLOB[=MODE]")]
    pub interfaces: Vec<InterfaceSpec>,
    /// Size of the kernel→user event ring buffer (power of two, ≥ page size).
    #[arg(long, default_value_t = 1 << 20)]
    pub ring_buffer_bytes: u32,
    /// Capacity of the in-kernel flow table (LRU).
    #[arg(long, default_value_t = 65_536)]
    pub flow_map_entries: u32,
    /// Minimum time between two update events of one flow, e.g. 5s, 500ms;
    /// "none" sends an event for every packet.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    pub aggregation_interval: Duration,
    /// Most L7 payload bytes copied per event (0 disables L7 capture).
    #[arg(long, default_value_t = 512)]
    pub l7_max_bytes: u32,
    /// Print one line per flow event to stdout.
    #[arg(long)]
    pub print: bool,
    /// Format of --print lines (json: one object per line, with attach events).
    #[arg(long, value_enum, default_value_t = PrintFormat::Text)]
    pub print_format: PrintFormat,
    /// At shutdown, write the flow map and the counters as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub dump_flows_on_exit: Option<PathBuf>,
    /// Do not follow interfaces that appear or disappear after start.
    #[arg(long)]
    pub no_watch_links: bool,
    /// Attach the empty pass-through programs instead (benchmark baseline).
    #[arg(long, hide = true)]
    pub bench_empty_programs: bool,
    /// Report kernel drops of every packet (without the daemon's pod list
    /// this mode has no addresses to select drops by).
    #[arg(long)]
    pub drops_all: bool,
}

/// A kernel drop report as a JSON line (running total of its flow and reason).
fn drop_line(d: &datapath::DropRecord) -> String {
    let addr = |a| fmt_key::addr(d.key.family, a).map(|a| a.to_string());
    json!({
        "event": "drop",
        "reason": d.reason_name,
        "reason_code": d.reason,
        "total": d.total,
        "ifname": d.ifname,
        "src_addr": addr(&d.key.src_addr),
        "dst_addr": addr(&d.key.dst_addr),
        "src_port": d.key.src_port,
        "dst_port": d.key.dst_port,
        "protocol": fmt_key::protocol(d.key.protocol),
    })
    .to_string()
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.eq_ignore_ascii_case("none") || s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e}: expected a duration like 5s or 500ms, or \"none\""))
}

impl Cli {
    pub fn datapath_config(&self) -> DatapathConfig {
        DatapathConfig {
            interfaces: self.interfaces.clone(),
            ring_buffer_bytes: self.ring_buffer_bytes,
            flow_map_entries: self.flow_map_entries,
            aggregation_interval: self.aggregation_interval,
            l7_max_bytes: self.l7_max_bytes,
            programs: if self.bench_empty_programs {
                ProgramSet::BenchEmpty
            } else {
                ProgramSet::Flowd
            },
            watch_links: !self.no_watch_links,
            drops: datapath::drops::DropsConfig {
                enabled: true,
                all: self.drops_all,
                bench_empty: self.bench_empty_programs,
            },
            ..DatapathConfig::default()
        }
    }
}

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not stop observation.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn flow_line(f: &FlowRecord, names: &InterfaceNames, format: PrintFormat) -> String {
    let ev = &f.event;
    let ifname = names.get(ev.key.ifindex);
    match format {
        PrintFormat::Json => {
            let mut m = datapath::flow_json(&ev.key, &ev.stats, ifname);
            m.insert("event", json!(f.kind.as_str()));
            m.insert("time_ns", json!(unix_ns(f.time).to_string()));
            m.insert("cpu", json!(ev.header.cpu));
            m.insert("pkt_len", json!(ev.pkt_len));
            m.insert("pkt_tcp_flags", json!(fmt_key::tcp_flags(ev.pkt_tcp_flags)));
            json!(m).to_string()
        }
        PrintFormat::Text => {
            let k = &ev.key;
            let icmp = matches!(
                k.protocol,
                flowd_common::PROTO_ICMP | flowd_common::PROTO_ICMPV6
            );
            // ICMP keys carry type and code in the port fields.
            let ep = |a: &[u8; 16], p: u16, is_src: bool| match fmt_key::addr(k.family, a) {
                Some(a) if icmp => format!("{a} {}={p}", if is_src { "type" } else { "code" }),
                Some(std::net::IpAddr::V6(a)) => format!("[{a}]:{p}"),
                Some(a) => format!("{a}:{p}"),
                None if is_src => format!("ethertype {p:#06x}"),
                None => "-".to_owned(),
            };
            format!(
                "{} {:<9} {} {:<7} {:<6} {} -> {} flags={} pkts={} bytes={}",
                humantime::format_rfc3339_micros(f.time),
                f.kind.as_str(),
                ifname.unwrap_or_else(|| format!("if{}", k.ifindex)),
                fmt_key::direction(k.direction),
                fmt_key::protocol(k.protocol),
                ep(&k.src_addr, k.src_port, true),
                ep(&k.dst_addr, k.dst_port, false),
                fmt_key::tcp_flags(ev.pkt_tcp_flags).join("|"),
                ev.stats.packets,
                ev.stats.bytes,
            )
        }
    }
}

fn write_dump(dp: &Datapath, path: &std::path::Path) -> anyhow::Result<()> {
    let counters = dp.counters()?;
    let names = dp.interface_names();
    let flows: Vec<_> = dp
        .dump_flows()
        .iter()
        .map(|e| datapath::flow_json(&e.key, &e.stats, names.get(e.key.ifindex)))
        .collect();
    let doc = json!({ "counters": counters, "flows": flows });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    // Rename so that a reader never sees a half-written file.
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("renaming to {}: {e}", path.display()))?;
    Ok(())
}

/// Runs flowd until SIGINT or SIGTERM.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.interfaces.is_empty() {
        anyhow::bail!("no interface to observe: give at least one --interface NAME|GLOB[=MODE]");
    }
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (mut dp, mut events) = Datapath::start(cli.datapath_config()).await?;
    let names = dp.interface_names();
    let json_out = cli.print && cli.print_format == PrintFormat::Json;
    if json_out {
        print_line(&json!({ "event": "ready", "attached": dp.attached() }).to_string());
    }
    tracing::info!(interfaces = dp.attached().len(), "flowd running");
    let print = |ev: DatapathEvent| {
        if !cli.print {
            return;
        }
        match ev {
            DatapathEvent::Flow(f) => print_line(&flow_line(&f, &names, cli.print_format)),
            DatapathEvent::Drop(d) if json_out => print_line(&drop_line(&d)),
            DatapathEvent::Attached(a) if json_out => {
                print_line(&json!({ "event": "attached", "interface": a }).to_string())
            }
            DatapathEvent::Detached { ifindex, ifname } if json_out => print_line(
                &json!({ "event": "detached", "ifindex": ifindex, "ifname": ifname }).to_string(),
            ),
            _ => {}
        }
    };
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                print(ev);
            }
            _ = sigint.recv() => { tracing::info!("SIGINT"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM"); break; }
        }
    }
    // Detach, and print what the reader still takes from the ring meanwhile.
    {
        let mut done = std::pin::pin!(dp.shutdown());
        loop {
            tokio::select! {
                _ = &mut done => break,
                Some(ev) = events.recv() => print(ev),
            }
        }
    }
    while let Ok(ev) = events.try_recv() {
        print(ev);
    }
    if let Some(path) = &cli.dump_flows_on_exit {
        write_dump(&dp, path)?;
    }
    tracing::info!(counters = ?dp.counters().ok(), "flowd stopped");
    Ok(())
}

/// Sets up logging to stderr (RUST_LOG, default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns about every attribute newer than itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
