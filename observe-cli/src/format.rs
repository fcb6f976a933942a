//! Output: compact lines, dict blocks, JSON lines, tables; status and list
//! views. Pure functions of the responses and the options, so that golden
//! files can pin them.
use std::io::{self, Write};

use chrono::{DateTime, Local, SecondsFormat, Utc};
use flowd_proto::Timestamp;
use flowd_proto::flow::{
    self, DropReason, Endpoint, Flow, FlowType, L7FlowType, LostEvent, LostEventSource, Verdict,
    layer4::Protocol, layer7::Record,
};
use flowd_proto::names;
use flowd_proto::observer::{
    GetFlowsResponse, GetNamespacesResponse, GetNodesResponse, ServerStatusResponse,
    get_flows_response::ResponseTypes,
};
use flowd_proto::relay::{NodeState, NodeStatusEvent};

use clap::ValueEnum;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One readable line per flow.
    Compact,
    /// One block of KEY: value lines per flow.
    Dict,
    /// One protojson GetFlowsResponse object per line.
    Json,
    /// Alias of json.
    Jsonpb,
    /// Aligned columns.
    Table,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    /// When stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Jan  2 15:04:05
    #[value(name = "Stamp")]
    Stamp,
    /// Jan  2 15:04:05.000
    #[value(name = "StampMilli")]
    StampMilli,
    /// Jan  2 15:04:05.000000
    #[value(name = "StampMicro")]
    StampMicro,
    /// Jan  2 15:04:05.000000000
    #[value(name = "StampNano")]
    StampNano,
    /// 2006-01-02T15:04:05Z07:00
    #[value(name = "RFC3339")]
    Rfc3339,
    /// 2006-01-02T15:04:05.000Z07:00
    #[value(name = "RFC3339Milli")]
    Rfc3339Milli,
    /// 2006-01-02T15:04:05.000000Z07:00
    #[value(name = "RFC3339Micro")]
    Rfc3339Micro,
    /// 2006-01-02T15:04:05.000000000Z07:00
    #[value(name = "RFC3339Nano")]
    Rfc3339Nano,
    /// Mon, 02 Jan 2006 15:04:05 -0700
    #[value(name = "RFC1123Z")]
    Rfc1123Z,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub format: OutputFormat,
    pub color: bool,
    pub print_node_name: bool,
    pub time_format: TimeFormat,
    /// Print times in UTC instead of the local time zone (tests).
    pub utc: bool,
    /// Rows are printed as they come (follow): a table cannot wait for the
    /// end to align its columns, so widths only grow.
    pub streaming: bool,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const RESET: &str = "\x1b[0m";

const TABLE_HEADER: &[&str] = &[
    "TIMESTAMP",
    "NODE",
    "SOURCE",
    "DESTINATION",
    "TYPE",
    "VERDICT",
    "SUMMARY",
];

/// Writes GetFlows responses in the chosen format: flows to `out`, lost
/// events and node status notices to `err` (except in JSON, where every
/// response is one object on `out`).
pub struct Printer<O: Write, E: Write> {
    opts: Options,
    out: O,
    err: E,
    flows: usize,
    rows: Vec<Vec<String>>,
    widths: Vec<usize>,
    header_done: bool,
}

impl<O: Write, E: Write> Printer<O, E> {
    pub fn new(opts: Options, out: O, err: E) -> Self {
        Self {
            opts,
            out,
            err,
            flows: 0,
            rows: Vec::new(),
            widths: Vec::new(),
            header_done: false,
        }
    }

    pub fn into_inner(self) -> (O, E) {
        (self.out, self.err)
    }

    pub fn response(&mut self, r: &GetFlowsResponse) -> io::Result<()> {
        if matches!(self.opts.format, OutputFormat::Json | OutputFormat::Jsonpb) {
            let line = serde_json::to_string(r).map_err(io::Error::other)?;
            writeln!(self.out, "{line}")?;
            return flush_if(&mut self.out, self.opts.streaming);
        }
        match &r.response_types {
            Some(ResponseTypes::Flow(f)) => self.flow(f, r),
            Some(ResponseTypes::LostEvents(l)) => {
                let line = self.lost_line(l, r);
                writeln!(self.err, "{line}")
            }
            Some(ResponseTypes::NodeStatus(n)) => {
                let line = self.node_status_line(n, r);
                writeln!(self.err, "{line}")
            }
            None => Ok(()),
        }
    }

    /// Ends the output (aligns and prints a buffered table).
    pub fn finish(&mut self) -> io::Result<()> {
        if self.opts.format == OutputFormat::Table && !self.opts.streaming {
            let mut rows = vec![self.header()];
            rows.append(&mut self.rows);
            write!(self.out, "{}", table(&rows))?;
        }
        self.out.flush()?;
        self.err.flush()
    }

    fn header(&self) -> Vec<String> {
        TABLE_HEADER
            .iter()
            .filter(|h| self.opts.print_node_name || **h != "NODE")
            .map(|h| h.to_string())
            .collect()
    }

    fn flow(&mut self, f: &Flow, r: &GetFlowsResponse) -> io::Result<()> {
        let o = self.opts;
        let time = fmt_time(f.time.or(r.time), o.time_format, o.utc);
        let node = node_of(f, r);
        let (src, dst, reply) = endpoints(f);
        let summary = summary(f);
        let verdict = verdict_text(f);
        match o.format {
            OutputFormat::Compact => {
                let node = if o.print_node_name {
                    format!(" [{node}]")
                } else {
                    String::new()
                };
                // Replies read `client <- server`, as in hubble, so that both
                // directions of a connection line up.
                let (left, arrow, right) = if reply {
                    (dst, "<-", src)
                } else {
                    (src, "->", dst)
                };
                let (left, right) = if o.color {
                    (paint(CYAN, &left), paint(CYAN, &right))
                } else {
                    (left, right)
                };
                let verdict = if o.color {
                    paint(verdict_color(f), &verdict)
                } else {
                    verdict
                };
                let summary = if summary.is_empty() {
                    String::new()
                } else {
                    format!(" {summary}")
                };
                writeln!(
                    self.out,
                    "{time}{node}: {left} {arrow} {right}{summary} {verdict}"
                )?;
            }
            OutputFormat::Dict => {
                if self.flows > 0 {
                    writeln!(self.out, "------------")?;
                }
                let verdict = if o.color {
                    paint(verdict_color(f), &verdict)
                } else {
                    verdict
                };
                writeln!(self.out, "  TIMESTAMP: {time}")?;
                if o.print_node_name {
                    writeln!(self.out, "       NODE: {node}")?;
                }
                writeln!(self.out, "     SOURCE: {src}")?;
                writeln!(self.out, "DESTINATION: {dst}")?;
                writeln!(self.out, "       TYPE: {}", type_label(f))?;
                writeln!(self.out, "    VERDICT: {verdict}")?;
                writeln!(self.out, "    SUMMARY: {summary}")?;
            }
            OutputFormat::Table => {
                let mut row = vec![time];
                if o.print_node_name {
                    row.push(node);
                }
                row.extend([src, dst, type_label(f), verdict, summary]);
                if o.streaming {
                    if !self.header_done {
                        self.header_done = true;
                        let h = self.header();
                        self.stream_row(&h)?;
                    }
                    self.stream_row(&row)?;
                } else {
                    self.rows.push(row);
                }
            }
            OutputFormat::Json | OutputFormat::Jsonpb => unreachable!("handled in response()"),
        }
        self.flows += 1;
        flush_if(&mut self.out, o.streaming)
    }

    fn stream_row(&mut self, row: &[String]) -> io::Result<()> {
        self.widths.resize(row.len(), 0);
        for (w, c) in self.widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
        let line = pad_row(row, &self.widths);
        writeln!(self.out, "{line}")
    }

    fn prefix(&self, r: &GetFlowsResponse) -> String {
        let time = fmt_time(r.time, self.opts.time_format, self.opts.utc);
        if self.opts.print_node_name && !r.node_name.is_empty() {
            format!("{time} [{}]", r.node_name)
        } else {
            time
        }
    }

    fn lost_line(&self, l: &LostEvent, r: &GetFlowsResponse) -> String {
        let source = LostEventSource::try_from(l.source)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| l.source.to_string());
        let cpu = l
            .cpu
            .as_ref()
            .map(|c| format!(" CPU({})", c.value))
            .unwrap_or_default();
        let mut node = String::new();
        if !self.opts.print_node_name && !r.node_name.is_empty() {
            node = format!(" on {}", r.node_name);
        }
        format!(
            "{}: EVENTS LOST: {source}{cpu} {}{node}",
            self.prefix(r),
            l.num_events_lost
        )
    }

    fn node_status_line(&self, n: &NodeStatusEvent, r: &GetFlowsResponse) -> String {
        let state = NodeState::try_from(n.state_change)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| n.state_change.to_string());
        let msg = if n.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", n.message)
        };
        format!(
            "{}: {state}: {}{msg}",
            fmt_time(r.time, self.opts.time_format, self.opts.utc),
            n.node_names.join(", ")
        )
    }
}

fn flush_if<W: Write>(w: &mut W, yes: bool) -> io::Result<()> {
    if yes { w.flush() } else { Ok(()) }
}

fn paint(color: &str, s: &str) -> String {
    format!("{color}{s}{RESET}")
}

fn node_of(f: &Flow, r: &GetFlowsResponse) -> String {
    if !f.node_name.is_empty() {
        f.node_name.clone()
    } else if !r.node_name.is_empty() {
        r.node_name.clone()
    } else {
        "N/A".into()
    }
}

fn to_utc(t: Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.nanos).ok()?;
    DateTime::from_timestamp(t.seconds, nanos)
}

pub fn fmt_time(t: Option<Timestamp>, tf: TimeFormat, utc: bool) -> String {
    let Some(dt) = t.and_then(to_utc) else {
        return "N/A".into();
    };
    if utc {
        fmt_dt(dt, tf)
    } else {
        fmt_dt(dt.with_timezone(&Local), tf)
    }
}

fn fmt_dt<Tz: chrono::TimeZone>(dt: DateTime<Tz>, tf: TimeFormat) -> String
where
    Tz::Offset: std::fmt::Display,
{
    match tf {
        TimeFormat::Stamp => dt.format("%b %e %H:%M:%S").to_string(),
        TimeFormat::StampMilli => dt.format("%b %e %H:%M:%S%.3f").to_string(),
        TimeFormat::StampMicro => dt.format("%b %e %H:%M:%S%.6f").to_string(),
        TimeFormat::StampNano => dt.format("%b %e %H:%M:%S%.9f").to_string(),
        TimeFormat::Rfc3339 => dt.to_rfc3339_opts(SecondsFormat::Secs, true),
        TimeFormat::Rfc3339Milli => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        TimeFormat::Rfc3339Micro => dt.to_rfc3339_opts(SecondsFormat::Micros, true),
        TimeFormat::Rfc3339Nano => dt.to_rfc3339_opts(SecondsFormat::Nanos, true),
        TimeFormat::Rfc1123Z => dt.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
    }
}

fn ports(f: &Flow) -> (Option<u32>, Option<u32>) {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (Some(t.source_port), Some(t.destination_port)),
        Some(Protocol::Udp(u)) => (Some(u.source_port), Some(u.destination_port)),
        Some(Protocol::Sctp(s)) => (Some(s.source_port), Some(s.destination_port)),
        _ => (None, None),
    }
}

/// `ns/pod:port`, else a DNS name, else `ip:port` (`[v6]:port`).
fn endpoint(ep: Option<&Endpoint>, ip: &str, port: Option<u32>, names: &[String]) -> String {
    let pod = ep.filter(|e| !e.pod_name.is_empty()).map(|e| {
        if e.namespace.is_empty() {
            e.pod_name.clone()
        } else {
            format!("{}/{}", e.namespace, e.pod_name)
        }
    });
    let base = match (pod, names.first()) {
        (Some(p), _) => p,
        (None, Some(n)) => n.clone(),
        (None, None) if ip.contains(':') && port.is_some() => format!("[{ip}]"),
        (None, None) if !ip.is_empty() => ip.to_string(),
        (None, None) => "N/A".into(),
    };
    match port {
        Some(p) if p != 0 => format!("{base}:{p}"),
        _ => base,
    }
}

/// (source, destination, is_reply).
fn endpoints(f: &Flow) -> (String, String, bool) {
    let (sp, dp) = ports(f);
    let ip = f.ip.as_ref();
    let src = endpoint(
        f.source.as_ref(),
        ip.map(|i| i.source.as_str()).unwrap_or(""),
        sp,
        &f.source_names,
    );
    let dst = endpoint(
        f.destination.as_ref(),
        ip.map(|i| i.destination.as_str()).unwrap_or(""),
        dp,
        &f.destination_names,
    );
    (src, dst, f.is_reply.as_ref().is_some_and(|r| r.value))
}

fn verdict_text(f: &Flow) -> String {
    let v = Verdict::try_from(f.verdict)
        .map(|v| v.as_str_name().to_string())
        .unwrap_or_else(|_| f.verdict.to_string());
    let reason = if !f.kernel_drop_reason.is_empty() {
        f.kernel_drop_reason.clone()
    } else {
        match DropReason::try_from(f.drop_reason_desc) {
            Ok(DropReason::Unknown) => String::new(),
            Ok(r) => r.as_str_name().to_string(),
            Err(_) => f.drop_reason_desc.to_string(),
        }
    };
    if reason.is_empty() {
        v
    } else {
        format!("{v} ({reason})")
    }
}

fn verdict_color(f: &Flow) -> &'static str {
    match Verdict::try_from(f.verdict) {
        Ok(Verdict::Forwarded) => GREEN,
        Ok(Verdict::Dropped | Verdict::Error) => RED,
        _ => YELLOW,
    }
}

fn tcp_flags(fl: &flow::TcpFlags) -> String {
    flowd_proto::names::tcp_flags(fl)
        .collect::<Vec<_>>()
        .join(", ")
}

fn icmp4_name(t: u32, c: u32) -> String {
    match t {
        0 => "EchoReply".into(),
        3 => format!("DestinationUnreachable(code {c})"),
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        11 => "TimeExceeded".into(),
        _ => format!("type {t} code {c}"),
    }
}

fn icmp6_name(t: u32, c: u32) -> String {
    match t {
        1 => format!("DestinationUnreachable(code {c})"),
        2 => "PacketTooBig".into(),
        3 => "TimeExceeded".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        133 => "RouterSolicitation".into(),
        134 => "RouterAdvertisement".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        _ => format!("type {t} code {c}"),
    }
}

fn l4_summary(f: &Flow) -> String {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => match t.flags.as_ref().map(tcp_flags) {
            Some(fl) if !fl.is_empty() => format!("TCP Flags: {fl}"),
            _ => "TCP".into(),
        },
        Some(Protocol::Udp(_)) => "UDP".into(),
        Some(Protocol::Sctp(_)) => "SCTP".into(),
        Some(Protocol::Vrrp(v)) => format!("VRRP vrid {} priority {}", v.vrid, v.priority),
        Some(Protocol::Igmp(i)) => format!("IGMP group {}", i.group_address),
        Some(Protocol::IcmPv4(i)) => format!("ICMPv4 {}", icmp4_name(i.r#type, i.code)),
        Some(Protocol::IcmPv6(i)) => format!("ICMPv6 {}", icmp6_name(i.r#type, i.code)),
        None => String::new(),
    }
}

pub fn latency(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{}µs", ns / 1_000)
    } else if ns < 10_000_000_000 {
        format!("{}ms", (ns + 500_000) / 1_000_000)
    } else {
        format!("{:.1}s", ns as f64 / 1e9)
    }
}

fn rcode_name(rc: u32) -> String {
    match rc {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

fn summary(f: &Flow) -> String {
    let Some(l7) = f.l7.as_ref().filter(|l| l.record.is_some()) else {
        return l4_summary(f);
    };
    let response = l7.r#type == L7FlowType::Response as i32;
    let lat = if response && l7.latency_ns > 0 {
        format!(" ({})", latency(l7.latency_ns))
    } else {
        String::new()
    };
    match &l7.record {
        Some(Record::Http(h)) if h.grpc.is_some() => grpc_summary(h, response, &lat),
        Some(Record::Http(h)) => {
            let proto = if h.protocol.is_empty() {
                "HTTP"
            } else {
                &h.protocol
            };
            let mut s = proto.to_string();
            for part in [&h.method, &h.url] {
                if !part.is_empty() {
                    s.push(' ');
                    s.push_str(part);
                }
            }
            // flowd extension: the URL is only the captured start of a longer one.
            if h.url_truncated {
                s.push('…');
            }
            if response {
                s.push_str(&format!(" => {}{lat}", h.code));
            }
            if h.partial {
                s.push_str(PARTIAL);
            }
            s
        }
        Some(Record::Dns(d)) => {
            let mut s = format!(
                "DNS {} {}",
                if response { "answer" } else { "query" },
                d.query
            );
            if !d.qtypes.is_empty() {
                s.push(' ');
                s.push_str(&d.qtypes.join(","));
            }
            if response {
                if d.rcode != 0 {
                    s.push(' ');
                    s.push_str(&rcode_name(d.rcode));
                } else {
                    let mut answers: Vec<&str> = d.cnames.iter().map(String::as_str).collect();
                    answers.extend(d.ips.iter().map(String::as_str));
                    if answers.is_empty() {
                        s.push_str(" NOERROR");
                    } else {
                        s.push(' ');
                        s.push_str(&answers.join(","));
                        s.push_str(&format!(" TTL {}", d.ttl));
                    }
                }
                s.push_str(&lat);
            }
            s
        }
        Some(Record::Kafka(k)) => {
            let mut s = format!("Kafka {}", k.api_key);
            if !k.topic.is_empty() {
                s.push_str(&format!(" topic {}", k.topic));
            }
            if response {
                s.push_str(&format!(" error_code {}{lat}", k.error_code));
            }
            s
        }
        None => l4_summary(f),
    }
}

/// Marks an HTTP/2 record some of whose header fields flowd could not
/// decode (`HTTP.partial`): what is shown is what it decoded.
const PARTIAL: &str = " [partial]";

/// `gRPC /pkg.Svc/Method` on requests; on responses `=> NOT_FOUND (12ms)`:
/// the status name (the code above 16), `RST_STREAM CANCEL` for a call reset
/// without a grpc-status, else the HTTP status it ended with.
fn grpc_summary(h: &flow::Http, response: bool, lat: &str) -> String {
    let Some(g) = h.grpc.as_ref() else {
        return String::new();
    };
    let mut s = if g.service.is_empty() || g.method.is_empty() {
        // A partial record whose path was not decoded: never guessed.
        "gRPC (unknown method)".to_string()
    } else {
        format!("gRPC /{}/{}", g.service, g.method)
    };
    if response {
        let status = match g.status_code {
            Some(_) if !g.status_name.is_empty() => g.status_name.clone(),
            Some(c) => names::grpc_status_name(c).map_or_else(|| c.to_string(), str::to_string),
            None if !g.reset.is_empty() => format!("RST_STREAM {}", g.reset),
            None if h.code != 0 => format!("HTTP {} without grpc-status", h.code),
            None => "no grpc-status".to_string(),
        };
        s.push_str(&format!(" => {status}{lat}"));
    }
    if h.partial {
        s.push_str(PARTIAL);
    }
    s
}

/// The kind of event, as in hubble's TYPE column: `http-request`,
/// `dns-response`, `drop`, `to-endpoint`, or the FlowType.
fn type_label(f: &Flow) -> String {
    if let Some(l7) = f.l7.as_ref().filter(|l| l.record.is_some()) {
        let proto = match l7.record {
            Some(Record::Http(_)) => "http",
            Some(Record::Dns(_)) => "dns",
            Some(Record::Kafka(_)) => "kafka",
            None => "l7",
        };
        let kind = match L7FlowType::try_from(l7.r#type) {
            Ok(L7FlowType::Request) => "request",
            Ok(L7FlowType::Response) => "response",
            Ok(L7FlowType::Sample) => "sample",
            _ => "unknown",
        };
        return format!("{proto}-{kind}");
    }
    if f.verdict == Verdict::Dropped as i32 {
        return "drop".into();
    }
    match flow::TraceObservationPoint::try_from(f.trace_observation_point) {
        Ok(flow::TraceObservationPoint::UnknownPoint) | Err(_) => {}
        Ok(p) => return p.as_str_name().to_ascii_lowercase().replace('_', "-"),
    }
    match FlowType::try_from(f.r#type) {
        Ok(FlowType::UnknownType) | Err(_) => "unknown".into(),
        Ok(t) => t.as_str_name().to_string(),
    }
}

fn pad_row(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, (c, w)) in row.iter().zip(widths).enumerate() {
        if i + 1 == row.len() {
            line.push_str(c);
        } else {
            line.push_str(c);
            line.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 3));
        }
    }
    line.trim_end().to_string()
}

/// Aligned columns separated by three spaces; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; n];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        out.push_str(&pad_row(r, &widths));
        out.push('\n');
    }
    out
}

/// 12,345
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fill(cur: u64, max: u64) -> String {
    let pct = if max == 0 {
        0.0
    } else {
        cur as f64 * 100.0 / max as f64
    };
    format!("{}/{} ({pct:.2}%)", thousands(cur), thousands(max))
}

fn rate(seen: u64, uptime_ns: u64) -> String {
    if uptime_ns == 0 {
        "N/A".into()
    } else {
        format!("{:.2}", seen as f64 / (uptime_ns as f64 / 1e9))
    }
}

/// 3d4h, 2h5m, 4m10s, 12s.
pub fn age(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

pub fn status_text(addr: &str, s: &ServerStatusResponse) -> String {
    let mut out = format!("Healthcheck (via {addr}): Ok\n");
    out.push_str(&format!(
        "Current/Max Flows: {}\n",
        fill(s.num_flows, s.max_flows)
    ));
    let rate = if s.flows_rate > 0.0 {
        format!("{:.2}", s.flows_rate)
    } else {
        rate(s.seen_flows, s.uptime_ns)
    };
    out.push_str(&format!("Flows/s: {rate}\n"));
    out.push_str(&format!("Seen Flows: {}\n", thousands(s.seen_flows)));
    out.push_str(&format!("Uptime: {}\n", age(s.uptime_ns)));
    if let Some(c) = &s.num_connected_nodes {
        let u = s.num_unavailable_nodes.as_ref().map_or(0, |u| u.value);
        out.push_str(&format!(
            "Connected Nodes: {}/{}\n",
            c.value,
            c.value.saturating_add(u)
        ));
        if !s.unavailable_nodes.is_empty() {
            out.push_str(&format!(
                "Unavailable Nodes: {}\n",
                s.unavailable_nodes.join(", ")
            ));
        }
    }
    if s.lost_kernel_events > 0 {
        out.push_str(&format!(
            "Lost Kernel Events: {}\n",
            thousands(s.lost_kernel_events)
        ));
    }
    if !s.version.is_empty() {
        out.push_str(&format!("Version: {}\n", s.version));
    }
    out
}

pub fn nodes_table(r: &GetNodesResponse) -> String {
    let mut rows = vec![
        [
            "NAME",
            "STATUS",
            "AGE",
            "FLOWS/S",
            "CURRENT/MAX-FLOWS",
            "ADDRESS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in &r.nodes {
        let state = match NodeState::try_from(n.state) {
            Ok(NodeState::NodeConnected) => "Connected",
            Ok(NodeState::NodeUnavailable) => "Unavailable",
            Ok(NodeState::NodeGone) => "Gone",
            Ok(NodeState::NodeError) => "Error",
            _ => "Unknown",
        };
        let connected = n.state == NodeState::NodeConnected as i32;
        let na = || "N/A".to_string();
        rows.push(vec![
            n.name.clone(),
            state.into(),
            if connected { age(n.uptime_ns) } else { na() },
            if connected {
                rate(n.seen_flows, n.uptime_ns)
            } else {
                na()
            },
            if connected {
                fill(n.num_flows, n.max_flows)
            } else {
                na()
            },
            if n.address.is_empty() {
                na()
            } else {
                n.address.clone()
            },
        ]);
    }
    table(&rows)
}

pub fn namespaces_table(r: &GetNamespacesResponse) -> String {
    let mut rows = vec![vec!["CLUSTER".to_string(), "NAMESPACE".to_string()]];
    for n in &r.namespaces {
        rows.push(vec![
            if n.cluster.is_empty() {
                "-".into()
            } else {
                n.cluster.clone()
            },
            n.namespace.clone(),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use flowd_proto::flow::{Dns, IcmPv4, Ip, Layer4, Layer7, Tcp};

    use super::*;

    #[test]
    fn numbers_and_durations() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(latency(850_000), "850µs");
        assert_eq!(latency(12_000_000), "12ms");
        assert_eq!(latency(1_499_600), "1ms");
        assert_eq!(latency(12_340_000_000), "12.3s");
        assert_eq!(age(0), "0s");
        assert_eq!(age(61_000_000_000), "1m1s");
        assert_eq!(age(90_061_000_000_000), "1d1h");
        assert_eq!(fill(1, 3), "1/3 (33.33%)");
        assert_eq!(fill(0, 0), "0/0 (0.00%)");
    }

    #[test]
    fn endpoints_fall_back_from_pod_to_name_to_ip() {
        let ep = |ns: &str, pod: &str| Endpoint {
            namespace: ns.into(),
            pod_name: pod.into(),
            ..Default::default()
        };
        assert_eq!(
            endpoint(Some(&ep("a", "p")), "10.0.0.1", Some(80), &[]),
            "a/p:80"
        );
        assert_eq!(
            endpoint(
                Some(&ep("", "")),
                "10.0.0.1",
                Some(80),
                &["api.example.com".into()]
            ),
            "api.example.com:80"
        );
        assert_eq!(endpoint(None, "fd00::1", Some(443), &[]), "[fd00::1]:443");
        assert_eq!(endpoint(None, "fd00::1", None, &[]), "fd00::1");
        assert_eq!(endpoint(None, "", None, &[]), "N/A");
    }

    #[test]
    fn summaries() {
        let mut f = Flow {
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(Protocol::IcmPv4(IcmPv4 { r#type: 3, code: 1 })),
            }),
            ..Default::default()
        };
        assert_eq!(summary(&f), "ICMPv4 DestinationUnreachable(code 1)");
        f.l4 = Some(Layer4 {
            protocol: Some(Protocol::Tcp(Tcp {
                source_port: 1,
                destination_port: 2,
                flags: Some(flow::TcpFlags {
                    fin: true,
                    ack: true,
                    ..Default::default()
                }),
            })),
        });
        assert_eq!(summary(&f), "TCP Flags: ACK, FIN");
        f.l7 = Some(Layer7 {
            r#type: L7FlowType::Response as i32,
            latency_ns: 3_000_000,
            record: Some(Record::Dns(Dns {
                query: "cart.ecommerce.svc.cluster.local.".into(),
                qtypes: vec!["A".into()],
                ips: vec!["10.96.0.5".into(), "10.96.0.6".into()],
                ttl: 30,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(
            summary(&f),
            "DNS answer cart.ecommerce.svc.cluster.local. A 10.96.0.5,10.96.0.6 TTL 30 (3ms)"
        );
        assert_eq!(type_label(&f), "dns-response");
        // Values this client does not know are printed as numbers.
        f.verdict = 42;
        assert_eq!(verdict_text(&f), "42");
    }

    #[test]
    fn grpc_and_http2_summaries() {
        let rec = |kind: L7FlowType, h: flow::Http| Flow {
            l7: Some(Layer7 {
                r#type: kind as i32,
                latency_ns: 12_000_000,
                record: Some(Record::Http(h)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let call = |code: u32, g: flow::Grpc| flow::Http {
            code,
            method: "POST".into(),
            url: "http://inv:50051/shop.Inv/Get".into(),
            protocol: "HTTP/2".into(),
            grpc: Some(flow::Grpc {
                service: "shop.Inv".into(),
                method: "Get".into(),
                ..g
            }),
            ..Default::default()
        };
        let resp = |code: u32, g: flow::Grpc| summary(&rec(L7FlowType::Response, call(code, g)));
        assert_eq!(
            summary(&rec(L7FlowType::Request, call(0, Default::default()))),
            "gRPC /shop.Inv/Get"
        );
        assert_eq!(
            resp(
                200,
                flow::Grpc {
                    status_code: Some(0),
                    status_name: "OK".into(),
                    ..Default::default()
                }
            ),
            "gRPC /shop.Inv/Get => OK (12ms)"
        );
        // The name from the code when the record has none; a code above 16
        // as its number.
        assert_eq!(
            resp(
                200,
                flow::Grpc {
                    status_code: Some(14),
                    ..Default::default()
                }
            ),
            "gRPC /shop.Inv/Get => UNAVAILABLE (12ms)"
        );
        assert_eq!(
            resp(
                200,
                flow::Grpc {
                    status_code: Some(42),
                    ..Default::default()
                }
            ),
            "gRPC /shop.Inv/Get => 42 (12ms)"
        );
        // No grpc-status: the reset, else the HTTP status.
        assert_eq!(
            resp(
                200,
                flow::Grpc {
                    reset: "REFUSED_STREAM".into(),
                    ..Default::default()
                }
            ),
            "gRPC /shop.Inv/Get => RST_STREAM REFUSED_STREAM (12ms)"
        );
        assert_eq!(
            resp(503, Default::default()),
            "gRPC /shop.Inv/Get => HTTP 503 without grpc-status (12ms)"
        );
        assert_eq!(
            resp(0, Default::default()),
            "gRPC /shop.Inv/Get => no grpc-status (12ms)"
        );
        // Plain HTTP/2 prints like HTTP/1, with its protocol; partial marked.
        let h2 = flow::Http {
            code: 404,
            method: "GET".into(),
            url: "http://web/x".into(),
            protocol: "HTTP/2".into(),
            partial: true,
            ..Default::default()
        };
        let f = rec(L7FlowType::Response, h2);
        assert_eq!(
            summary(&f),
            "HTTP/2 GET http://web/x => 404 (12ms) [partial]"
        );
        assert_eq!(type_label(&f), "http-response");
    }

    #[test]
    fn time_formats() {
        let t = Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_006_007,
        });
        let cases = [
            (TimeFormat::Stamp, "Nov 14 22:13:20"),
            (TimeFormat::StampMilli, "Nov 14 22:13:20.005"),
            (TimeFormat::StampMicro, "Nov 14 22:13:20.005006"),
            (TimeFormat::StampNano, "Nov 14 22:13:20.005006007"),
            (TimeFormat::Rfc3339, "2023-11-14T22:13:20Z"),
            (TimeFormat::Rfc3339Milli, "2023-11-14T22:13:20.005Z"),
            (TimeFormat::Rfc3339Micro, "2023-11-14T22:13:20.005006Z"),
            (TimeFormat::Rfc3339Nano, "2023-11-14T22:13:20.005006007Z"),
            (TimeFormat::Rfc1123Z, "Tue, 14 Nov 2023 22:13:20 +0000"),
        ];
        for (tf, want) in cases {
            assert_eq!(fmt_time(t, tf, true), want, "{tf:?}");
        }
        assert_eq!(fmt_time(None, TimeFormat::StampMilli, true), "N/A");
        // Out-of-range nanos do not panic.
        let bad = Some(Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(fmt_time(bad, TimeFormat::StampMilli, true), "N/A");
    }
}
