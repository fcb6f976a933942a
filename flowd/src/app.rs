//! flowd's command line: the datapath flags and what they stand for in each
//! mode (datapath alone, or keys of the daemon), the `--print` printer and
//! `--dump-flows-on-exit`, the datapath-alone main loop, and one-line error
//! messages. main.rs only dispatches.
use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use serde_json::json;

use crate::datapath::{
    self, Datapath, DatapathConfig, DatapathEvent, FlowRecord, InterfaceNames, InterfaceSpec,
    ProgramSet, fmt_key,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrintFormat {
    Text,
    Json,
}

/// The datapath flags of flowd. Without `--config`/`--set` they configure
/// the datapath alone; with them, each one that is given is a shorthand for a
/// configuration key ([`Cli::key_overrides`]) or a process output
/// ([`Cli::outputs`]), and the two that only make sense alone are refused.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Interface name or glob to observe, with an optional attach mode:
    /// NAME|GLOB[=tc|xdp|xdp-generic] (default tc). Repeatable. Key: flowd-interfaces
    #[arg(short = 'i', long = "interface", value_name = "NAME|GLOB[=MODE]")]
    pub interfaces: Vec<InterfaceSpec>,
    /// Size of the kernel→user event ring buffer (power of two, ≥ page size).
    /// Key: flowd-ring-buffer-bytes; default without --config/--set: 1048576
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// Capacity of the in-kernel flow table (LRU). Key: flowd-flow-map-entries;
    /// default without --config/--set: 65536
    #[arg(long, value_name = "ENTRIES")]
    pub flow_map_entries: Option<u32>,
    /// Minimum time between two update events of one flow, e.g. 5s, 500ms;
    /// "none" sends an event for every packet. Key: monitor-aggregation-interval
    /// ("none": monitor-aggregation=none); default without --config/--set: 5s
    #[arg(long, value_name = "DURATION|none", value_parser = parse_interval)]
    pub aggregation_interval: Option<Duration>,
    /// Most L7 payload bytes copied per event (0 disables L7 capture).
    /// Key: flowd-l7-max-bytes; default without --config/--set: 512
    #[arg(long, value_name = "BYTES")]
    pub l7_max_bytes: Option<u32>,
    /// Print one line per datapath event (flow, drop, attach) to stdout.
    #[arg(long)]
    pub print: bool,
    /// Format of --print lines (json: one object per line, with attach events).
    #[arg(long, value_enum, default_value_t = PrintFormat::Text, requires = "print")]
    pub print_format: PrintFormat,
    /// At shutdown, write the kernel flow map and the counters as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub dump_flows_on_exit: Option<PathBuf>,
    /// Do not follow interfaces that appear or disappear after start.
    /// Key: flowd-watch-links=false
    #[arg(long)]
    pub no_watch_links: bool,
    /// Attach the empty pass-through programs instead (benchmark baseline;
    /// not with --config/--set).
    #[arg(long, hide = true)]
    pub bench_empty_programs: bool,
    /// Report kernel drops of every packet (without the daemon's pod list
    /// this mode has no addresses to select drops by). Not with
    /// --config/--set: the daemon reports the drops of its pods' packets
    #[arg(long)]
    pub drops_all: bool,
}

/// A typed flag that has no meaning with `--config`/`--set`.
#[derive(Debug, thiserror::Error)]
#[error("{flag} cannot be combined with --config/--set: {why}")]
pub struct FlagError {
    pub flag: &'static str,
    pub why: &'static str,
}

/// What the process writes besides its log, in both modes.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--print`: one line per datapath event on stdout, in this format.
    pub print: Option<PrintFormat>,
    /// `--dump-flows-on-exit`: the flow map and counters at shutdown.
    pub dump_flows_on_exit: Option<PathBuf>,
}

/// A typed flag standing for a configuration key, and the value it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOverride {
    /// The flag as the user wrote it (for error messages).
    pub flag: String,
    pub key: &'static str,
    pub value: String,
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
    /// The datapath settings of flowd alone (no `--config`/`--set`).
    pub fn datapath_config(&self) -> DatapathConfig {
        let d = DatapathConfig::default();
        DatapathConfig {
            interfaces: self.interfaces.clone(),
            ring_buffer_bytes: self.ring_buffer_bytes.unwrap_or(d.ring_buffer_bytes),
            flow_map_entries: self.flow_map_entries.unwrap_or(d.flow_map_entries),
            aggregation_interval: self.aggregation_interval.unwrap_or(d.aggregation_interval),
            l7_max_bytes: self.l7_max_bytes.unwrap_or(d.l7_max_bytes),
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
            ..d
        }
    }

    /// The configuration keys the given flags stand for, for flowd with
    /// `--config`/`--set` (typed flags win over the ConfigMap, `--set` wins
    /// over both). Flags that only make sense without them are refused.
    pub fn key_overrides(&self) -> Result<Vec<KeyOverride>, FlagError> {
        if self.bench_empty_programs {
            return Err(FlagError {
                flag: "--bench-empty-programs",
                why: "it measures the datapath alone (benchmark baseline)",
            });
        }
        if self.drops_all {
            return Err(FlagError {
                flag: "--drops-all",
                why: "the daemon reports the drops of its pods' packets (flowd-drops-enabled)",
            });
        }
        let mut out = Vec::new();
        let mut add = |flag: String, key: &'static str, value: String| {
            out.push(KeyOverride { flag, key, value })
        };
        if !self.interfaces.is_empty() {
            let list: Vec<String> = self.interfaces.iter().map(|i| i.to_string()).collect();
            let flag = format!("--interface {}", list.join(" --interface "));
            add(flag, "flowd-interfaces", list.join(" "));
        }
        if let Some(n) = self.ring_buffer_bytes {
            add(
                format!("--ring-buffer-bytes {n}"),
                "flowd-ring-buffer-bytes",
                n.to_string(),
            );
        }
        if let Some(n) = self.flow_map_entries {
            add(
                format!("--flow-map-entries {n}"),
                "flowd-flow-map-entries",
                n.to_string(),
            );
        }
        if let Some(d) = self.aggregation_interval {
            if d.is_zero() {
                add(
                    "--aggregation-interval none".into(),
                    "monitor-aggregation",
                    "none".into(),
                );
            } else {
                // humantime reads back what it writes ("1s 500ms").
                let v = humantime::format_duration(d).to_string();
                add(
                    format!("--aggregation-interval {v}"),
                    "monitor-aggregation-interval",
                    v,
                );
            }
        }
        if let Some(n) = self.l7_max_bytes {
            add(
                format!("--l7-max-bytes {n}"),
                "flowd-l7-max-bytes",
                n.to_string(),
            );
        }
        if self.no_watch_links {
            add(
                "--no-watch-links".into(),
                "flowd-watch-links",
                "false".into(),
            );
        }
        Ok(out)
    }

    /// `--print`, `--print-format` and `--dump-flows-on-exit`.
    pub fn outputs(&self) -> Outputs {
        Outputs {
            print: self.print.then_some(self.print_format),
            dump_flows_on_exit: self.dump_flows_on_exit.clone(),
        }
    }
}

/// `--print`: writes datapath events to stdout as they come.
pub struct Printer {
    format: PrintFormat,
    /// None without a datapath (the daemon observing nothing).
    names: Option<InterfaceNames>,
}

impl Printer {
    pub fn new(format: PrintFormat, names: Option<InterfaceNames>) -> Self {
        Self { format, names }
    }

    fn json(&self) -> bool {
        self.format == PrintFormat::Json
    }

    /// The JSON `ready` line: attached at start, events follow.
    pub fn ready(&self, attached: &[datapath::AttachedInterface]) {
        if self.json() {
            print_line(&json!({ "event": "ready", "attached": attached }).to_string());
        }
    }

    pub fn event(&self, ev: &DatapathEvent) {
        let json_out = self.json();
        match ev {
            DatapathEvent::Flow(f) => print_line(&flow_line(f, self.names.as_ref(), self.format)),
            DatapathEvent::Drop(d) if json_out => print_line(&drop_line(d)),
            DatapathEvent::Attached(a) if json_out => {
                print_line(&json!({ "event": "attached", "interface": a }).to_string())
            }
            DatapathEvent::Detached { ifindex, ifname } if json_out => print_line(
                &json!({ "event": "detached", "ifindex": ifindex, "ifname": ifname }).to_string(),
            ),
            _ => {}
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

fn flow_line(f: &FlowRecord, names: Option<&InterfaceNames>, format: PrintFormat) -> String {
    let ev = &f.event;
    let ifname = names.and_then(|n| n.get(ev.key.ifindex));
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

/// Writes the kernel flow map and the counters as JSON to `path`
/// (`--dump-flows-on-exit`); without a datapath, both are empty.
pub fn write_dump(dp: Option<&Datapath>, path: &std::path::Path) -> anyhow::Result<()> {
    let (counters, flows) = match dp {
        Some(dp) => {
            let names = dp.interface_names();
            let flows: Vec<_> = dp
                .dump_flows()
                .iter()
                .map(|e| datapath::flow_json(&e.key, &e.stats, names.get(e.key.ifindex)))
                .collect();
            (dp.counters()?, flows)
        }
        None => (datapath::Counters::default(), Vec::new()),
    };
    let doc = json!({ "counters": counters, "flows": flows });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .map_err(|e| anyhow::anyhow!("--dump-flows-on-exit: writing {}: {e}", tmp.display()))?;
    // Rename so that a reader never sees a half-written file.
    std::fs::rename(&tmp, path).map_err(|e| {
        anyhow::anyhow!("--dump-flows-on-exit: renaming to {}: {e}", path.display())
    })?;
    Ok(())
}

/// Runs the datapath alone (no `--config`/`--set`) until SIGINT or SIGTERM.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.interfaces.is_empty() {
        anyhow::bail!("no interface to observe: give at least one --interface NAME|GLOB[=MODE]");
    }
    let mut shutdown = crate::shutdown::install(crate::shutdown::DEFAULT_GRACE)?;
    let (mut dp, mut events) = Datapath::start(cli.datapath_config()).await?;
    let outputs = cli.outputs();
    let printer = outputs
        .print
        .map(|f| Printer::new(f, Some(dp.interface_names())));
    if let Some(p) = &printer {
        p.ready(&dp.attached());
    }
    tracing::info!(interfaces = dp.attached().len(), "flowd running");
    let print = |ev: DatapathEvent| {
        if let Some(p) = &printer {
            p.event(&ev);
        }
    };
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                print(ev);
            }
            _ = shutdown.wait_for(|s| *s) => break,
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
    if let Some(path) = &outputs.dump_flows_on_exit {
        write_dump(Some(&dp), path)?;
    }
    tracing::info!(counters = ?dp.counters().ok(), "flowd stopped");
    Ok(())
}

/// An error and its causes on one line, `outer: inner: innermost`, leaving
/// out a cause whose text the line already holds (many errors repeat their
/// source in their own message).
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A clap error (bad flag or value) as one line: its first paragraph,
/// without clap's usage and `--help` hints.
pub fn clap_error_line(rendered: &str) -> String {
    let first = rendered
        .trim_start()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
    format!("{line} (see --help)")
}

/// Sets up logging to stderr (RUST_LOG, default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns about every attribute newer than itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: log collectors keep escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_skips_repeated_causes() {
        let inner = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address in use");
        let e =
            anyhow::Error::new(inner).context("hubble-listen-address 0.0.0.0:4244: Address in use");
        assert_eq!(
            error_line(&e),
            "hubble-listen-address 0.0.0.0:4244: Address in use"
        );
        let e = anyhow::anyhow!("inner\nsecond line").context("outer");
        assert_eq!(error_line(&e), "outer: inner second line");
    }

    #[test]
    fn aggregation_interval_round_trips_through_its_key() {
        let cli = Cli::try_parse_from(["flowd", "--aggregation-interval", "1500ms"]).unwrap();
        let o = cli.key_overrides().unwrap();
        assert_eq!(o[0].key, "monitor-aggregation-interval");
        let mut map = std::collections::BTreeMap::new();
        map.insert(o[0].key.to_string(), o[0].value.clone());
        let c = crate::config::Config::from_map(&map).unwrap().config;
        assert_eq!(c.monitor_aggregation_interval, Duration::from_millis(1500));
        let cli = Cli::try_parse_from(["flowd", "--aggregation-interval", "none"]).unwrap();
        let o = cli.key_overrides().unwrap();
        assert_eq!(
            (o[0].key, o[0].value.as_str()),
            ("monitor-aggregation", "none")
        );
    }

    #[test]
    fn clap_errors_are_one_line() {
        let rendered = "error: invalid value 'x' for '--l7-max-bytes <BYTES>': invalid digit found in string\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_error_line(rendered),
            "invalid value 'x' for '--l7-max-bytes <BYTES>': invalid digit found in string (see --help)"
        );
    }
}
