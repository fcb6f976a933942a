//! flowd's datapath-alone mode and its outputs: `--print` (one line per
//! datapath event, text or JSON), `--dump-flows-on-exit` (the kernel flow
//! map and counters), and the main loop that runs the datapath without the
//! daemon. The daemon uses the same printer and dump for its `--print` and
//! `--dump-flows-on-exit`.
use std::{
    collections::BTreeMap,
    io::Write,
    time::{SystemTime, UNIX_EPOCH},
};

use flowd_common::{FlowKey, FlowStats};
use serde_json::json;

use crate::cli::{Cli, PrintFormat};
use crate::datapath::{self, Datapath, DatapathEvent, FlowRecord, InterfaceNames};

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
            let mut m = flow_json(&ev.key, &ev.stats, ifname);
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
                .map(|e| flow_json(&e.key, &e.stats, names.get(e.key.ifindex)))
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

/// Display helpers of the printer and the dump.
pub mod fmt_key {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use flowd_common::*;

    pub fn addr(family: u8, a: &[u8; 16]) -> Option<IpAddr> {
        match family {
            FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
            FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
            _ => None,
        }
    }

    pub fn protocol(p: u8) -> String {
        match p {
            PROTO_TCP => "TCP".into(),
            PROTO_UDP => "UDP".into(),
            PROTO_ICMP => "ICMPv4".into(),
            PROTO_ICMPV6 => "ICMPv6".into(),
            PROTO_SCTP => "SCTP".into(),
            n => format!("proto-{n}"),
        }
    }

    pub fn direction(d: u8) -> &'static str {
        if d == DIR_EGRESS { "egress" } else { "ingress" }
    }

    /// TCP flag names of kernel flag bits, in Hubble's order (flowd_proto::names).
    pub fn tcp_flags(f: u16) -> Vec<&'static str> {
        flowd_proto::names::tcp_flags(&crate::parser::l34::tcp_flags(f)).collect()
    }
}

/// Serializable view of a flow key + stats (used by --print json and dumps).
pub fn flow_json(
    key: &FlowKey,
    stats: &FlowStats,
    ifname: Option<String>,
) -> BTreeMap<&'static str, serde_json::Value> {
    use serde_json::json;
    let mut m = BTreeMap::new();
    let addr = |a| fmt_key::addr(key.family, a).map(|a| a.to_string());
    m.insert("family", json!(key.family));
    m.insert("src_addr", json!(addr(&key.src_addr)));
    m.insert("dst_addr", json!(addr(&key.dst_addr)));
    m.insert("src_port", json!(key.src_port));
    m.insert("dst_port", json!(key.dst_port));
    m.insert("protocol", json!(fmt_key::protocol(key.protocol)));
    m.insert("ip_proto", json!(key.protocol));
    m.insert("ifindex", json!(key.ifindex));
    m.insert("ifname", json!(ifname));
    m.insert("direction", json!(fmt_key::direction(key.direction)));
    m.insert("vlan", json!(key.vlan));
    m.insert("key_flags", json!(key.flags));
    m.insert("packets", json!(stats.packets));
    m.insert("bytes", json!(stats.bytes));
    m.insert("tcp_flags", json!(fmt_key::tcp_flags(stats.tcp_flags)));
    m.insert("first_seen_ns", json!(stats.first_seen_ns));
    m.insert("last_seen_ns", json!(stats.last_seen_ns));
    m
}
