//! clap value parsers of `observe`'s flags: validate, normalize, and say
//! what is valid. Shared by the flag definitions ([`crate::cli`]), the
//! request builder ([`crate::request`]) and the printers ([`crate::format`]).
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use flowd_proto::Timestamp;
use flowd_proto::flow::{EventTypeFilter, TcpFlags, Verdict, Workload};
use flowd_proto::names;

pub fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_string())
    }
}

pub fn ip_or_cidr(s: &str) -> Result<String, String> {
    if s.parse::<IpAddr>().is_ok() || s.parse::<ipnetwork::IpNetwork>().is_ok() {
        Ok(s.to_string())
    } else {
        Err("expected an IP address (10.0.0.1, fd00::1) or a CIDR (10.0.0.0/24)".into())
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

pub fn namespace(s: &str) -> Result<String, String> {
    if dns_label(s) {
        Ok(s.to_string())
    } else {
        Err("expected a Kubernetes namespace name (lowercase letters, digits, '-')".into())
    }
}

/// `[namespace/]name-prefix`; `namespace/` alone selects the namespace.
pub fn pod(s: &str) -> Result<String, String> {
    let bad = || "expected [namespace/]name, e.g. ecommerce/cart or cart".to_string();
    match s.split_once('/') {
        Some((ns, name)) if dns_label(ns) && !name.contains('/') => Ok(s.to_string()),
        Some(_) => Err(bad()),
        None if !s.is_empty() => Ok(s.to_string()),
        None => Err(bad()),
    }
}

pub fn workload(s: &str) -> Result<String, String> {
    match s.split_once('/') {
        Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('/') => Ok(s.to_string()),
        None if !s.is_empty() => Ok(s.to_string()),
        _ => Err("expected [kind/]name, e.g. Deployment/cart or cart".into()),
    }
}

pub fn to_workload(s: &str) -> Workload {
    match s.split_once('/') {
        Some((kind, name)) => Workload {
            kind: kind.to_string(),
            name: name.to_string(),
        },
        None => Workload {
            kind: String::new(),
            name: s.to_string(),
        },
    }
}

pub fn port(s: &str) -> Result<String, String> {
    s.parse::<u16>()
        .map(|p| p.to_string())
        .map_err(|_| "expected a port number 0-65535".into())
}

pub const PROTOCOLS: &[&str] = &[
    "tcp", "udp", "icmp", "icmpv4", "icmpv6", "sctp", "http", "dns", "kafka", "grpc", "http2",
];

pub fn protocol(s: &str) -> Result<String, String> {
    let l = s.to_ascii_lowercase();
    if PROTOCOLS.contains(&l.as_str()) {
        Ok(l)
    } else {
        Err(format!("expected one of: {}", PROTOCOLS.join(", ")))
    }
}

pub fn ip_version(s: &str) -> Result<String, String> {
    match s.to_ascii_lowercase().as_str() {
        "4" | "v4" | "ipv4" | "ip4" => Ok("4".into()),
        "6" | "v6" | "ipv6" | "ip6" => Ok("6".into()),
        _ => Err("expected 4 or 6".into()),
    }
}

pub const VERDICTS: &[&str] = &[
    "FORWARDED",
    "DROPPED",
    "ERROR",
    "AUDIT",
    "REDIRECTED",
    "TRACED",
    "TRANSLATED",
];

pub fn verdict(s: &str) -> Result<String, String> {
    let u = s.to_ascii_uppercase();
    match Verdict::from_str_name(&u) {
        Some(_) if u != "VERDICT_UNKNOWN" => Ok(u),
        _ => Err(format!("expected one of: {}", VERDICTS.join(", "))),
    }
}

/// Cilium monitor message types (pkg/monitor/api), the numbers flowd's
/// `Flow.event_type.type` uses.
pub const EVENT_TYPES: &[(&str, i32)] = &[
    ("drop", 1),
    ("debug", 2),
    ("capture", 3),
    ("trace", 4),
    ("policy-verdict", 5),
    ("recorder", 6),
    ("trace-sock", 7),
    ("l7", 129),
    ("agent", 130),
];

/// Trace observation point names usable as `trace:<name>` (Cilium's).
const TRACE_POINTS: &[(&str, i32)] = flowd_proto::monitor::TRACE_SUB_TYPE_NAMES;

pub fn to_event_type_filter(s: &str) -> Result<EventTypeFilter, String> {
    let (t, sub) = match s.split_once(':') {
        Some((t, sub)) => (t, Some(sub)),
        None => (s, None),
    };
    let names = || {
        EVENT_TYPES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ty = match EVENT_TYPES.iter().find(|(n, _)| *n == t) {
        Some((_, v)) => *v,
        None => t.parse::<u8>().map(i32::from).map_err(|_| {
            format!(
                "unknown event type {t:?}: expected one of {}, or a number 0-255",
                names()
            )
        })?,
    };
    let mut f = EventTypeFilter {
        r#type: ty,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named = if ty == 4 {
            TRACE_POINTS
                .iter()
                .find(|(n, _)| *n == sub)
                .map(|(_, v)| *v)
        } else {
            None
        };
        f.match_sub_type = true;
        f.sub_type = match named {
            Some(v) => v,
            None => sub.parse::<u8>().map(i32::from).map_err(|_| {
                format!(
                    "unknown event sub-type {sub:?}: expected a number 0-255{}",
                    if ty == 4 {
                        ", or for trace: to-endpoint, to-proxy, to-host, to-stack, \
                         to-overlay, from-endpoint, from-proxy, from-host, from-stack, \
                         from-overlay, from-network, to-network, from-crypto, to-crypto"
                    } else {
                        ""
                    }
                )
            })?,
        };
    }
    Ok(f)
}

pub fn event_type(s: &str) -> Result<String, String> {
    let l = s.to_ascii_lowercase();
    to_event_type_filter(&l).map(|_| l)
}

/// `404`, `4+`, `40+`, or (flowd) `400-599`.
pub fn http_status(s: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "invalid HTTP status {s:?}: expected a code (404), a prefix (5+, 40+) or a range (400-599)"
        )
    };
    let code = |c: &str| -> Option<u16> {
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) {
            c.parse().ok().filter(|n| (100..=599).contains(n))
        } else {
            None
        }
    };
    if let Some(prefix) = s.strip_suffix('+') {
        let ok = (1..=2).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && matches!(prefix.as_bytes()[0], b'1'..=b'5');
        return if ok { Ok(s.to_string()) } else { Err(bad()) };
    }
    if let Some((a, b)) = s.split_once('-') {
        return match (code(a), code(b)) {
            (Some(a), Some(b)) if a <= b => Ok(s.to_string()),
            (Some(_), Some(_)) => Err(format!(
                "invalid HTTP status range {s:?}: the first code must not exceed the second"
            )),
            _ => Err(bad()),
        };
    }
    code(s).map(|_| s.to_string()).ok_or_else(bad)
}

/// A gRPC status as flowd's `grpc_status` filter takes it: a code (`5`), a
/// name (`NOT_FOUND`, any case, or go-grpc-prometheus' `NotFound`) or a
/// range of codes (`1-16`).
pub fn grpc_status(s: &str) -> Result<String, String> {
    let code = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    if code(s).is_some() || names::grpc_status_code(s).is_some() {
        return Ok(s.to_string());
    }
    if let Some((a, b)) = s.split_once('-')
        && let (Some(a), Some(b)) = (code(a), code(b))
    {
        return if a <= b {
            Ok(s.to_string())
        } else {
            Err(format!(
                "invalid gRPC status range {s:?}: the first code must not exceed the second"
            ))
        };
    }
    let names: Vec<&str> = names::GRPC_STATUS.iter().map(|(_, n, _)| *n).collect();
    Err(format!(
        "invalid gRPC status {s:?}: expected a code (5), a name ({}) or a range of codes (1-16)",
        names.join(", ")
    ))
}

/// A fully qualified gRPC service name (`shop.inventory.v1.Inventory`).
pub fn grpc_service(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_whitespace) {
        Err("expected a fully qualified service name such as shop.inventory.v1.Inventory (the method goes in --grpc-method)".into())
    } else {
        Ok(s.to_string())
    }
}

/// A gRPC method name (`Reserve`).
pub fn grpc_method(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_whitespace) {
        Err("expected a method name such as Reserve (the service goes in --grpc-service)".into())
    } else {
        Ok(s.to_string())
    }
}

pub fn http_method(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err("expected an HTTP method such as GET, POST, PUT, DELETE".into())
    }
}

/// `name:value` (the value may contain `:`), as `hubble observe --http-header`.
pub fn http_header(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((k, _)) if !k.is_empty() => Ok(s.to_string()),
        _ => Err("expected name:value, e.g. content-type:application/json".into()),
    }
}

pub fn to_ip_trace_id(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("invalid --ip-trace-id value; must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("invalid --ip-trace-id value: {e}")),
    }
}

pub fn ip_trace_id(s: &str) -> Result<String, String> {
    to_ip_trace_id(s).map(|_| s.to_string())
}

pub fn regex(s: &str) -> Result<String, String> {
    regex::Regex::new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid regular expression: {e}"))
}

pub const TCP_FLAGS: &str = "FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS";

pub fn to_tcp_flags(s: &str) -> Result<TcpFlags, String> {
    let mut f = TcpFlags::default();
    for name in s.split(',') {
        match name.trim().to_ascii_uppercase().as_str() {
            "FIN" => f.fin = true,
            "SYN" => f.syn = true,
            "RST" => f.rst = true,
            "PSH" => f.psh = true,
            "ACK" => f.ack = true,
            "URG" => f.urg = true,
            "ECE" => f.ece = true,
            "CWR" => f.cwr = true,
            "NS" => f.ns = true,
            other => {
                return Err(format!(
                    "unknown TCP flag {other:?}: expected a comma-separated list of {TCP_FLAGS}"
                ));
            }
        }
    }
    Ok(f)
}

pub fn tcp_flags(s: &str) -> Result<String, String> {
    to_tcp_flags(s).map(|_| s.to_ascii_uppercase())
}

pub fn traffic_direction(s: &str) -> Result<String, String> {
    match s.to_ascii_lowercase().as_str() {
        d @ ("ingress" | "egress") => Ok(d.to_string()),
        _ => Err("expected ingress or egress".into()),
    }
}

/// `--since`/`--until`: a duration before now or an absolute time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    Ago(Duration),
    At(Timestamp),
}

impl TimeSpec {
    pub fn resolve(self, now: SystemTime) -> Timestamp {
        match self {
            TimeSpec::At(t) => t,
            TimeSpec::Ago(d) => {
                Timestamp::from(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH))
            }
        }
    }
}

pub fn time_spec(s: &str) -> Result<TimeSpec, String> {
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        let nanos = dt.timestamp_subsec_nanos();
        return Ok(TimeSpec::At(Timestamp {
            seconds: dt.timestamp(),
            nanos: nanos as i32,
        }));
    }
    humantime::parse_duration(s)
        .map(TimeSpec::Ago)
        .map_err(|_| {
            "expected a duration (30s, 5m, 1h30m, 2d) or an RFC 3339 time (2024-05-01T10:00:00Z)"
                .into()
        })
}

/// A timestamp as RFC 3339 in UTC (nanoseconds when present), as hubble prints it.
pub fn rfc3339(t: Timestamp) -> String {
    let utc = u32::try_from(t.nanos)
        .ok()
        .and_then(|n| chrono::DateTime::from_timestamp(t.seconds, n));
    utc.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{}.{:09}", t.seconds, t.nanos))
}
