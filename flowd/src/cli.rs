//! flowd's command line: the datapath flags and what they stand for in each
//! mode (datapath alone, or keys of the daemon), the process outputs they
//! ask for, and one-line error messages. main.rs only dispatches; the
//! datapath-alone mode is [`crate::print_mode`].
use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::datapath::{self, DatapathConfig, ProgramSet};
use crate::options::interfaces::InterfaceSpec;

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
