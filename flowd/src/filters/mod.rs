//! Flow filters with Hubble's semantics.
//!
//! A [`FlowFilter`] is compiled once into a [`CompiledFilter`]: every set
//! field must match (AND); within one field any listed value may match (OR).
//! A [`FilterList`] ORs several filters, and a [`FlowMatcher`] combines a
//! whitelist and a blacklist: a flow passes when it matches at least one
//! whitelist filter (or the whitelist is empty) and no blacklist filter.
//!
//! Regexes, CIDRs, selectors and patterns are parsed at compile time, so
//! matching a flow does not allocate. Invalid filters give a [`FilterError`]
//! naming the field and the bad value (the API maps it to InvalidArgument).
//!
//! Field semantics follow Cilium's pkg/hubble/filters; flowd extensions:
//! `http_status_code` also accepts ranges (`400-599`); `kernel_drop_reason`;
//! `grpc_status` / `grpc_service` / `grpc_method` on the `flow.GRPC` of
//! HTTP/2 records; `protocol` also takes `grpc` (records with a gRPC call)
//! and `http2` (HTTP records of `protocol` "HTTP/2"), both also `http` as
//! Hubble's `http` is every HTTP record.
//! Deviations: `http_header` compares header names case-insensitively (HTTP
//! names are; flowd keeps them as they were on the wire, Cilium in Go's
//! canonical form). `source_ip_xlated` is refused: flowd sees packets on pod
//! veths, before any SNAT, and cannot know the translated address.
//! Filters apply to flows only; callers pass LostEvents and other
//! non-flow events through unfiltered, as Hubble does.

mod cel_expr;
mod labels;
mod patterns;

use std::net::IpAddr;

use flowd_proto::flow::{
    self, DropReason, EventTypeFilter, Flow, FlowFilter, IpVersion, TraceObservationPoint,
    TrafficDirection, Verdict, layer4::Protocol as L4, layer7::Record as L7,
};
use flowd_proto::monitor::{MESSAGE_TYPE_ACCESS_LOG, MESSAGE_TYPE_TRACE};
use flowd_proto::names;
use ipnetwork::IpNetwork;
use regex::{Regex, RegexSet};

pub use labels::{Selector, SelectorError};
pub use patterns::{DEFAULT_CLUSTER, NodeNameMatcher};

/// An invalid filter: which field (e.g. `whitelist[1].http_status_code`),
/// the value given, and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} filter {value:?}: {reason}")]
pub struct FilterError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl FilterError {
    fn new(field: &str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

#[derive(Debug, Clone)]
struct NamespacedName {
    namespace: String,
    prefix: String,
}

/// Inclusive status range (HTTP or gRPC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusRange(u32, u32);

impl StatusRange {
    fn contains(self, code: u32) -> bool {
        (self.0..=self.1).contains(&code)
    }
}

// Protocol bits for the `protocol` field.
const P_TCP: u16 = 1;
const P_UDP: u16 = 1 << 1;
const P_ICMP4: u16 = 1 << 2;
const P_ICMP6: u16 = 1 << 3;
const P_SCTP: u16 = 1 << 4;
const P_DNS: u16 = 1 << 5;
const P_HTTP: u16 = 1 << 6;
const P_KAFKA: u16 = 1 << 7;
const P_VRRP: u16 = 1 << 8;
const P_IGMP: u16 = 1 << 9;
const P_GRPC: u16 = 1 << 10;
const P_HTTP2: u16 = 1 << 11;

/// `protocol` values and their bits; error messages list the names.
const PROTOCOLS: [(&str, u16); 13] = [
    ("tcp", P_TCP),
    ("udp", P_UDP),
    ("icmp", P_ICMP4 | P_ICMP6),
    ("icmpv4", P_ICMP4),
    ("icmpv6", P_ICMP6),
    ("sctp", P_SCTP),
    ("vrrp", P_VRRP),
    ("igmp", P_IGMP),
    ("dns", P_DNS),
    ("http", P_HTTP),
    ("kafka", P_KAFKA),
    ("grpc", P_GRPC),
    ("http2", P_HTTP2),
];

// TCP flag bits for the `tcp_flags` field.
fn tcp_flag_bits(f: &flow::TcpFlags) -> u16 {
    [f.fin, f.syn, f.rst, f.psh, f.ack, f.urg, f.ece, f.cwr, f.ns]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, set)| if *set { acc | (1 << i) } else { acc })
}

#[derive(Debug, Clone)]
enum Check {
    Uuid(Vec<String>),
    Verdict(Vec<i32>),
    DropReasonDesc(Vec<i32>),
    KernelDropReason(Vec<String>),
    TrafficDirection(Vec<i32>),
    IpVersion(Vec<i32>),
    EventType(Vec<EventTypeFilter>),
    Reply(Vec<bool>),
    Identity(Side, Vec<u32>),
    Protocol(u16),
    Port(Side, Vec<u16>),
    TcpFlags(Vec<u16>),
    Ip {
        side: Side,
        addrs: Vec<IpAddr>,
        nets: Vec<IpNetwork>,
    },
    Pod(Side, Vec<NamespacedName>),
    Service(Side, Vec<NamespacedName>),
    Workload(Side, Vec<flow::Workload>),
    Label(Side, Vec<Selector>),
    Fqdn(Side, Regex),
    NodeName(NodeNameMatcher),
    HttpStatus(Vec<StatusRange>),
    HttpMethod(Vec<String>),
    GrpcStatus(Vec<StatusRange>),
    GrpcService(Vec<String>),
    GrpcMethod(Vec<String>),
    HttpPath(RegexSet),
    DnsQuery(RegexSet),
    TraceId(Vec<String>),
    Interface(Vec<flow::NetworkInterface>),
    HttpUrl(RegexSet),
    HttpHeader(Vec<flow::HttpHeader>),
    NodeLabels(Vec<Selector>),
    ClusterName(Side, Vec<String>),
    IpTraceId(Vec<u64>),
    Encrypted(Vec<bool>),
    Cel(cel_expr::CelFilter),
}

impl Check {
    /// Rough relative cost, to evaluate cheap checks first (AND is
    /// commutative, so the order changes nothing but speed).
    fn cost(&self) -> u8 {
        match self {
            Check::Verdict(_)
            | Check::DropReasonDesc(_)
            | Check::TrafficDirection(_)
            | Check::IpVersion(_)
            | Check::EventType(_)
            | Check::Reply(_)
            | Check::Identity(..)
            | Check::Protocol(_)
            | Check::Port(..)
            | Check::TcpFlags(_)
            | Check::IpTraceId(_)
            | Check::Encrypted(_)
            | Check::HttpStatus(_)
            | Check::GrpcStatus(_) => 0,
            Check::Uuid(_)
            | Check::KernelDropReason(_)
            | Check::Pod(..)
            | Check::Service(..)
            | Check::Workload(..)
            | Check::HttpMethod(_)
            | Check::GrpcService(_)
            | Check::GrpcMethod(_)
            | Check::TraceId(_)
            | Check::Interface(_)
            | Check::HttpHeader(_)
            | Check::ClusterName(..)
            | Check::Ip { .. } => 1,
            Check::Label(..) | Check::NodeLabels(_) => 2,
            Check::Fqdn(..)
            | Check::NodeName(_)
            | Check::HttpPath(_)
            | Check::HttpUrl(_)
            | Check::DnsQuery(_) => 3,
            // An interpreter run: after everything else could rule the flow out.
            Check::Cel(_) => 4,
        }
    }

    fn matches(&self, f: &Flow) -> bool {
        match self {
            Check::Uuid(ids) => ids.contains(&f.uuid),
            Check::Verdict(v) => v.contains(&f.verdict),
            Check::DropReasonDesc(v) => v.contains(&f.drop_reason_desc),
            Check::KernelDropReason(names) => {
                !f.kernel_drop_reason.is_empty()
                    && names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(&f.kernel_drop_reason))
            }
            Check::TrafficDirection(v) => v.contains(&f.traffic_direction),
            Check::IpVersion(v) => v.contains(&f.ip.as_ref().map_or(0, |ip| ip.ip_version)),
            Check::EventType(types) => {
                let Some(ev) = &f.event_type else {
                    return false;
                };
                // A trace flow whose observation point flowd could not tell
                // (an interface enrichment does not know) has sub type 0 but
                // is not TO_ENDPOINT: no trace sub type selects it.
                let point_unknown = ev.r#type == MESSAGE_TYPE_TRACE
                    && f.trace_observation_point == TraceObservationPoint::UnknownPoint as i32;
                types.iter().any(|t| {
                    (t.r#type == 0 || t.r#type == ev.r#type)
                        && (!t.match_sub_type || (t.sub_type == ev.sub_type && !point_unknown))
                })
            }
            Check::Reply(want) => {
                // Hubble: an unknown direction counts as "not a reply" only
                // for dropped flows (compatibility with the old `reply` field).
                let reply = match &f.is_reply {
                    Some(b) => b.value,
                    None if f.verdict == Verdict::Dropped as i32 => false,
                    None => return false,
                };
                want.contains(&reply)
            }
            Check::Identity(side, ids) => {
                endpoint(f, *side).is_some_and(|ep| ids.contains(&ep.identity))
            }
            Check::Protocol(bits) => protocol_bits(f) & bits != 0,
            Check::Port(side, ports) => port(f, *side).is_some_and(|p| ports.contains(&p)),
            Check::TcpFlags(wanted) => {
                let Some(L4::Tcp(tcp)) = f.l4.as_ref().and_then(|l| l.protocol.as_ref()) else {
                    return false;
                };
                let Some(flags) = &tcp.flags else {
                    return false;
                };
                let have = tcp_flag_bits(flags);
                wanted.iter().any(|w| have & w == *w)
            }
            Check::Ip { side, addrs, nets } => {
                let Some(ip) = &f.ip else {
                    return false;
                };
                let text = match side {
                    Side::Source => &ip.source,
                    Side::Destination => &ip.destination,
                };
                let Ok(addr) = text.parse::<IpAddr>() else {
                    return false;
                };
                addrs.contains(&addr) || nets.iter().any(|n| n.contains(addr))
            }
            Check::Pod(side, names) => {
                let (ns, pod) = endpoint(f, *side)
                    .map_or(("", ""), |ep| (ep.namespace.as_str(), ep.pod_name.as_str()));
                namespaced_match(names, ns, pod)
            }
            Check::Service(side, names) => {
                let svc = match side {
                    Side::Source => f.source_service.as_ref(),
                    Side::Destination => f.destination_service.as_ref(),
                };
                let (ns, name) = svc.map_or(("", ""), |s| (s.namespace.as_str(), s.name.as_str()));
                namespaced_match(names, ns, name)
            }
            Check::Workload(side, filters) => endpoint(f, *side).is_some_and(|ep| {
                ep.workloads.iter().any(|w| {
                    filters.iter().any(|x| {
                        (x.name.is_empty() || x.name == w.name)
                            && (x.kind.is_empty() || x.kind == w.kind)
                    })
                })
            }),
            Check::Label(side, selectors) => {
                let labels = endpoint(f, *side).map_or(&[][..], |ep| ep.labels.as_slice());
                selectors.iter().any(|s| s.matches(labels))
            }
            Check::Fqdn(side, re) => {
                let names = match side {
                    Side::Source => &f.source_names,
                    Side::Destination => &f.destination_names,
                };
                names.iter().any(|n| re.is_match(n))
            }
            Check::NodeName(m) => m.matches(&f.node_name),
            Check::HttpStatus(ranges) => {
                http(f).is_some_and(|h| h.code != 0 && ranges.iter().any(|r| r.contains(h.code)))
            }
            Check::HttpMethod(methods) => http(f).is_some_and(|h| {
                !h.method.is_empty() && methods.iter().any(|m| m.eq_ignore_ascii_case(&h.method))
            }),
            // Only records that carry a grpc-status: RESPONSE records of
            // calls that ended with one (never requests, resets, or calls
            // whose connection closed first).
            Check::GrpcStatus(ranges) => grpc(f)
                .and_then(|g| g.status_code)
                .is_some_and(|c| ranges.iter().any(|r| r.contains(c))),
            // A partial record whose path was not decoded has an empty
            // service and method: it matches no name.
            Check::GrpcService(names) => {
                grpc(f).is_some_and(|g| !g.service.is_empty() && names.contains(&g.service))
            }
            Check::GrpcMethod(names) => {
                grpc(f).is_some_and(|g| !g.method.is_empty() && names.contains(&g.method))
            }
            Check::HttpPath(set) => http(f)
                .and_then(|h| url_path(&h.url))
                .is_some_and(|p| set.is_match(p)),
            Check::DnsQuery(set) => dns(f).is_some_and(|d| set.is_match(&d.query)),
            Check::TraceId(ids) => f
                .trace_context
                .as_ref()
                .and_then(|t| t.parent.as_ref())
                .is_some_and(|p| !p.trace_id.is_empty() && ids.contains(&p.trace_id)),
            Check::Interface(wanted) => {
                let Some(have) = &f.interface else {
                    return false;
                };
                // Hubble: a zero index or an empty name in the filter is a wildcard.
                wanted.iter().any(|w| {
                    (w.index == 0 || w.index == have.index)
                        && (w.name.is_empty() || w.name == have.name)
                })
            }
            Check::HttpUrl(set) => {
                http(f).is_some_and(|h| !h.url.is_empty() && set.is_match(&h.url))
            }
            Check::HttpHeader(wanted) => http(f).is_some_and(|h| {
                h.headers.iter().any(|have| {
                    wanted
                        .iter()
                        .any(|w| w.key.eq_ignore_ascii_case(&have.key) && w.value == have.value)
                })
            }),
            Check::NodeLabels(selectors) => selectors.iter().any(|s| s.matches(&f.node_labels)),
            Check::ClusterName(side, names) => {
                let cluster = endpoint(f, *side).map_or("", |ep| ep.cluster_name.as_str());
                names.iter().any(|n| n == cluster)
            }
            Check::IpTraceId(ids) => {
                ids.contains(&f.ip_trace_id.as_ref().map_or(0, |t| t.trace_id))
            }
            Check::Encrypted(want) => want.contains(&f.ip.as_ref().is_some_and(|ip| ip.encrypted)),
            Check::Cel(c) => c.matches(f),
        }
    }
}

fn endpoint(f: &Flow, side: Side) -> Option<&flow::Endpoint> {
    match side {
        Side::Source => f.source.as_ref(),
        Side::Destination => f.destination.as_ref(),
    }
}

/// Hubble's namespaced-name match: an endpoint with neither namespace nor
/// name never matches; an empty filter namespace matches every namespace.
fn namespaced_match(names: &[NamespacedName], ns: &str, name: &str) -> bool {
    if ns.is_empty() && name.is_empty() {
        return false;
    }
    names.iter().any(|n| {
        (n.namespace.is_empty() || n.namespace == ns) && name.starts_with(n.prefix.as_str())
    })
}

fn port(f: &Flow, side: Side) -> Option<u16> {
    let (s, d) = match f.l4.as_ref()?.protocol.as_ref()? {
        L4::Tcp(t) => (t.source_port, t.destination_port),
        L4::Udp(u) => (u.source_port, u.destination_port),
        L4::Sctp(s) => (s.source_port, s.destination_port),
        _ => return None,
    };
    let p = match side {
        Side::Source => s,
        Side::Destination => d,
    };
    u16::try_from(p).ok()
}

fn protocol_bits(f: &Flow) -> u16 {
    let l4 = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(L4::Tcp(_)) => P_TCP,
        Some(L4::Udp(_)) => P_UDP,
        Some(L4::IcmPv4(_)) => P_ICMP4,
        Some(L4::IcmPv6(_)) => P_ICMP6,
        Some(L4::Sctp(_)) => P_SCTP,
        Some(L4::Vrrp(_)) => P_VRRP,
        Some(L4::Igmp(_)) => P_IGMP,
        None => 0,
    };
    let l7 = match f.l7.as_ref().and_then(|l| l.record.as_ref()) {
        Some(L7::Dns(_)) => P_DNS,
        Some(L7::Http(h)) => {
            let mut bits = P_HTTP;
            if h.protocol == "HTTP/2" {
                bits |= P_HTTP2;
            }
            if h.grpc.is_some() {
                bits |= P_GRPC;
            }
            bits
        }
        Some(L7::Kafka(_)) => P_KAFKA,
        None => 0,
    };
    l4 | l7
}

fn http(f: &Flow) -> Option<&flow::Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        L7::Http(h) => Some(h),
        _ => None,
    }
}

fn grpc(f: &Flow) -> Option<&flow::Grpc> {
    http(f)?.grpc.as_ref()
}

fn dns(f: &Flow) -> Option<&flow::Dns> {
    match f.l7.as_ref()?.record.as_ref()? {
        L7::Dns(d) => Some(d),
        _ => None,
    }
}

/// The path of a request URI (origin form `/p?q`, absolute form
/// `http://h/p?q`, or `*`), as Go's url.ParseRequestURI would give it.
/// None for anything else (Hubble silently skips such URLs).
fn url_path(url: &str) -> Option<&str> {
    if url == "*" {
        return Some(url);
    }
    let rest = if url.starts_with('/') {
        url
    } else {
        let (scheme, after) = url.split_once("://")?;
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return None;
        }
        match after.find(['/', '?', '#']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            _ => return Some(""),
        }
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Parses Hubble's `[namespace/][name-prefix]` (its ParseNamespaceName):
/// `ns/prefix`, `ns/` (the whole namespace), `/prefix` and `/` (every
/// namespace: `hubble observe --all-namespaces` sends `/`), and a bare
/// `prefix`, which is in the namespace `default`. Hubble ignores anything
/// after a second `/`; flowd refuses it rather than guess.
fn parse_namespaced(field: &str, s: &str) -> Result<NamespacedName, FilterError> {
    let (namespace, prefix) = match s.split('/').collect::<Vec<_>>()[..] {
        [""] => {
            return Err(FilterError::new(
                field,
                s,
                "must not be empty: [namespace/][<name-prefix>], or / for every namespace",
            ));
        }
        [name] => ("default", name),
        [ns, name] => (ns, name),
        _ => {
            return Err(FilterError::new(
                field,
                s,
                "must be [namespace/][<name-prefix>] (one /)",
            ));
        }
    };
    Ok(NamespacedName {
        namespace: namespace.to_string(),
        prefix: prefix.to_string(),
    })
}

fn parse_status(s: &str) -> Result<StatusRange, FilterError> {
    let code3 = |t: &str| -> Option<u32> {
        let b = t.as_bytes();
        (b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b.iter().all(u8::is_ascii_digit))
            .then(|| t.parse().ok())
            .flatten()
    };
    if let Some(c) = code3(s) {
        return Ok(StatusRange(c, c));
    }
    if let Some(p) = s.strip_suffix('+') {
        let b = p.as_bytes();
        if (1..=2).contains(&b.len())
            && (b'1'..=b'5').contains(&b[0])
            && b.iter().all(u8::is_ascii_digit)
        {
            let v: u32 = p.parse().unwrap_or(0);
            let scale = if b.len() == 1 { 100 } else { 10 };
            return Ok(StatusRange(v * scale, v * scale + scale - 1));
        }
    }
    if let Some((lo, hi)) = s.split_once('-')
        && let (Some(lo), Some(hi)) = (code3(lo), code3(hi))
    {
        if lo <= hi {
            return Ok(StatusRange(lo, hi));
        }
        return Err(FilterError::new(
            "http_status_code",
            s,
            "range start is above its end",
        ));
    }
    Err(FilterError::new(
        "http_status_code",
        s,
        "expected a status code (404), a prefix (4+, 40+) or a range (400-599) within 100-599",
    ))
}

/// A gRPC status: a code (`5`), a name in either spelling of
/// [`names::GRPC_STATUS`] (`NOT_FOUND`, `NotFound`, any case) or a range of
/// codes (`1-16`). Codes above 16 are valid on the wire (a server may send
/// them), so any number is accepted.
fn parse_grpc_status(s: &str) -> Result<StatusRange, FilterError> {
    const FIELD: &str = "grpc_status";
    let code = |t: &str| -> Option<u32> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    if let Some(c) = code(s) {
        return Ok(StatusRange(c, c));
    }
    if let Some((lo, hi)) = s.split_once('-') {
        return match (code(lo), code(hi)) {
            (Some(lo), Some(hi)) if lo <= hi => Ok(StatusRange(lo, hi)),
            (Some(_), Some(_)) => Err(FilterError::new(FIELD, s, "range start is above its end")),
            _ => Err(FilterError::new(
                FIELD,
                s,
                "a range is two status codes, e.g. 1-16",
            )),
        };
    }
    if let Some(c) = names::grpc_status_code(s) {
        return Ok(StatusRange(c, c));
    }
    Err(FilterError::new(
        FIELD,
        s,
        "expected a status code (5), a status name (NOT_FOUND; OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED) or a range of codes (1-16)",
    ))
}

/// A gRPC service (`shop.inventory.v1.Inventory`) or method (`Reserve`)
/// name: compared exactly, so a value that can never be one is refused
/// rather than matching nothing.
fn check_grpc_name(field: &str, s: &str) -> Result<(), FilterError> {
    let expected = if field == "grpc_service" {
        "expected a fully qualified service name such as shop.inventory.v1.Inventory (the method goes in grpc_method)"
    } else {
        "expected a method name such as Reserve (the service goes in grpc_service)"
    };
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_whitespace) {
        return Err(FilterError::new(field, s, expected));
    }
    Ok(())
}

fn parse_port(field: &str, s: &str) -> Result<u16, FilterError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FilterError::new(field, s, "expected a port number 0-65535"));
    }
    s.parse()
        .map_err(|_| FilterError::new(field, s, "expected a port number 0-65535"))
}

fn parse_ips(field: &str, list: &[String], side: Side) -> Result<Check, FilterError> {
    let mut addrs = Vec::new();
    let mut nets = Vec::new();
    for s in list {
        if s.contains('/') {
            nets.push(
                s.parse::<IpNetwork>()
                    .map_err(|e| FilterError::new(field, s, format!("invalid CIDR: {e}")))?,
            );
        } else {
            addrs.push(
                s.parse::<IpAddr>()
                    .map_err(|_| FilterError::new(field, s, "invalid IP address"))?,
            );
        }
    }
    Ok(Check::Ip { side, addrs, nets })
}

fn regex_set(field: &str, patterns: &[String]) -> Result<RegexSet, FilterError> {
    // Compile one by one first so that the error names the bad pattern.
    for p in patterns {
        Regex::new(p).map_err(|e| FilterError::new(field, p, format!("invalid regex: {e}")))?;
    }
    RegexSet::new(patterns)
        .map_err(|e| FilterError::new(field, patterns.join(" "), format!("invalid regex: {e}")))
}

fn enum_values<E: TryFrom<i32>>(field: &str, values: &[i32]) -> Result<Vec<i32>, FilterError> {
    for v in values {
        if E::try_from(*v).is_err() {
            return Err(FilterError::new(field, v.to_string(), "unknown enum value"));
        }
    }
    Ok(values.to_vec())
}

/// Refuses the FlowFilter fields flowd cannot evaluate: ignoring one would
/// widen the result the client asked for.
fn refuse_unsupported(ff: &FlowFilter) -> Result<(), FilterError> {
    if !ff.source_ip_xlated.is_empty() {
        return Err(FilterError::new(
            "source_ip_xlated",
            ff.source_ip_xlated.join(","),
            "flowd cannot know SNAT addresses (it observes pod veths, before any source NAT)",
        ));
    }
    Ok(())
}

/// One FlowFilter, compiled: all its checks must match.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    checks: Vec<Check>,
}

impl CompiledFilter {
    /// Compiles `ff`, validating every field.
    pub fn new(ff: &FlowFilter) -> Result<Self, FilterError> {
        refuse_unsupported(ff)?;
        let mut c = Vec::new();
        if !ff.uuid.is_empty() {
            c.push(Check::Uuid(ff.uuid.clone()));
        }
        if !ff.event_type.is_empty() {
            c.push(Check::EventType(ff.event_type.clone()));
        }
        if !ff.verdict.is_empty() {
            c.push(Check::Verdict(enum_values::<Verdict>(
                "verdict",
                &ff.verdict,
            )?));
        }
        if !ff.drop_reason_desc.is_empty() {
            c.push(Check::DropReasonDesc(enum_values::<DropReason>(
                "drop_reason_desc",
                &ff.drop_reason_desc,
            )?));
        }
        if !ff.kernel_drop_reason.is_empty() {
            for r in &ff.kernel_drop_reason {
                if r.is_empty() {
                    return Err(FilterError::new(
                        "kernel_drop_reason",
                        r,
                        "empty reason name",
                    ));
                }
            }
            c.push(Check::KernelDropReason(ff.kernel_drop_reason.clone()));
        }
        if !ff.reply.is_empty() {
            c.push(Check::Reply(ff.reply.clone()));
        }
        if !ff.source_identity.is_empty() {
            c.push(Check::Identity(Side::Source, ff.source_identity.clone()));
        }
        if !ff.destination_identity.is_empty() {
            c.push(Check::Identity(
                Side::Destination,
                ff.destination_identity.clone(),
            ));
        }
        if !ff.protocol.is_empty() {
            let mut bits = 0;
            for p in &ff.protocol {
                let lower = p.to_ascii_lowercase();
                let Some((_, b)) = PROTOCOLS.iter().find(|(n, _)| *n == lower) else {
                    let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
                    return Err(FilterError::new(
                        "protocol",
                        p,
                        format!("unknown protocol (expected one of {})", names.join(", ")),
                    ));
                };
                bits |= b;
            }
            c.push(Check::Protocol(bits));
        }
        if !ff.source_ip.is_empty() {
            c.push(parse_ips("source_ip", &ff.source_ip, Side::Source)?);
        }
        if !ff.destination_ip.is_empty() {
            c.push(parse_ips(
                "destination_ip",
                &ff.destination_ip,
                Side::Destination,
            )?);
        }
        for (field, list, side, is_pod) in [
            ("source_pod", &ff.source_pod, Side::Source, true),
            (
                "destination_pod",
                &ff.destination_pod,
                Side::Destination,
                true,
            ),
            ("source_service", &ff.source_service, Side::Source, false),
            (
                "destination_service",
                &ff.destination_service,
                Side::Destination,
                false,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            let names = list
                .iter()
                .map(|s| parse_namespaced(field, s))
                .collect::<Result<Vec<_>, _>>()?;
            c.push(if is_pod {
                Check::Pod(side, names)
            } else {
                Check::Service(side, names)
            });
        }
        if !ff.source_workload.is_empty() {
            c.push(Check::Workload(Side::Source, ff.source_workload.clone()));
        }
        if !ff.destination_workload.is_empty() {
            c.push(Check::Workload(
                Side::Destination,
                ff.destination_workload.clone(),
            ));
        }
        for (field, list, side) in [
            ("source_fqdn", &ff.source_fqdn, Side::Source),
            ("destination_fqdn", &ff.destination_fqdn, Side::Destination),
        ] {
            if !list.is_empty() {
                let re = patterns::compile_fqdn(list)
                    .map_err(|(v, reason)| FilterError::new(field, v, reason))?;
                c.push(Check::Fqdn(side, re));
            }
        }
        for (field, list, side) in [
            ("source_label", &ff.source_label, Side::Source),
            (
                "destination_label",
                &ff.destination_label,
                Side::Destination,
            ),
        ] {
            if !list.is_empty() {
                let sels = list
                    .iter()
                    .map(|s| {
                        Selector::parse(s).map_err(|e| FilterError::new(field, s, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                c.push(Check::Label(side, sels));
            }
        }
        for (field, list, side) in [
            ("source_port", &ff.source_port, Side::Source),
            ("destination_port", &ff.destination_port, Side::Destination),
        ] {
            if !list.is_empty() {
                let ports = list
                    .iter()
                    .map(|p| parse_port(field, p))
                    .collect::<Result<Vec<_>, _>>()?;
                c.push(Check::Port(side, ports));
            }
        }
        // Hubble refuses HTTP filters combined with an event-type filter
        // that excludes L7 events: they could never match. The gRPC
        // filters read the same records.
        let l7_allowed = ff.event_type.is_empty()
            || ff
                .event_type
                .iter()
                .any(|t| t.r#type == MESSAGE_TYPE_ACCESS_LOG);
        let headers: Vec<String> = ff
            .http_header
            .iter()
            .map(|h| format!("{}:{}", h.key, h.value))
            .collect();
        for (field, list) in [
            ("http_status_code", &ff.http_status_code),
            ("http_method", &ff.http_method),
            ("http_path", &ff.http_path),
            ("http_url", &ff.http_url),
            ("http_header", &headers),
            ("grpc_status", &ff.grpc_status),
            ("grpc_service", &ff.grpc_service),
            ("grpc_method", &ff.grpc_method),
        ] {
            if !list.is_empty() && !l7_allowed {
                return Err(FilterError::new(
                    field,
                    list.join(","),
                    "requires the event type filter to match L7 events (type 129)",
                ));
            }
        }
        if !ff.http_status_code.is_empty() {
            let ranges = ff
                .http_status_code
                .iter()
                .map(|s| parse_status(s))
                .collect::<Result<Vec<_>, _>>()?;
            c.push(Check::HttpStatus(ranges));
        }
        if !ff.http_method.is_empty() {
            for m in &ff.http_method {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(FilterError::new(
                        "http_method",
                        m,
                        "expected a method name such as GET",
                    ));
                }
            }
            c.push(Check::HttpMethod(ff.http_method.clone()));
        }
        if !ff.http_path.is_empty() {
            c.push(Check::HttpPath(regex_set("http_path", &ff.http_path)?));
        }
        if !ff.grpc_status.is_empty() {
            let ranges = ff
                .grpc_status
                .iter()
                .map(|s| parse_grpc_status(s))
                .collect::<Result<Vec<_>, _>>()?;
            c.push(Check::GrpcStatus(ranges));
        }
        for (field, list, is_service) in [
            ("grpc_service", &ff.grpc_service, true),
            ("grpc_method", &ff.grpc_method, false),
        ] {
            if list.is_empty() {
                continue;
            }
            for v in list {
                check_grpc_name(field, v)?;
            }
            c.push(if is_service {
                Check::GrpcService(list.clone())
            } else {
                Check::GrpcMethod(list.clone())
            });
        }
        if !ff.dns_query.is_empty() {
            c.push(Check::DnsQuery(regex_set("dns_query", &ff.dns_query)?));
        }
        if !ff.tcp_flags.is_empty() {
            c.push(Check::TcpFlags(
                ff.tcp_flags.iter().map(tcp_flag_bits).collect(),
            ));
        }
        if !ff.node_name.is_empty() {
            c.push(Check::NodeName(
                NodeNameMatcher::new(&ff.node_name)
                    .map_err(|(v, reason)| FilterError::new("node_name", v, reason))?,
            ));
        }
        if !ff.ip_version.is_empty() {
            c.push(Check::IpVersion(enum_values::<IpVersion>(
                "ip_version",
                &ff.ip_version,
            )?));
        }
        if !ff.traffic_direction.is_empty() {
            c.push(Check::TrafficDirection(enum_values::<TrafficDirection>(
                "traffic_direction",
                &ff.traffic_direction,
            )?));
        }
        if !ff.trace_id.is_empty() {
            c.push(Check::TraceId(ff.trace_id.clone()));
        }
        if !ff.interface.is_empty() {
            c.push(Check::Interface(ff.interface.clone()));
        }
        if !ff.http_url.is_empty() {
            c.push(Check::HttpUrl(regex_set("http_url", &ff.http_url)?));
        }
        if !ff.http_header.is_empty() {
            for h in &ff.http_header {
                if h.key.is_empty() {
                    return Err(FilterError::new(
                        "http_header",
                        format!("{}:{}", h.key, h.value),
                        "empty header name",
                    ));
                }
            }
            c.push(Check::HttpHeader(ff.http_header.clone()));
        }
        if !ff.node_labels.is_empty() {
            let sels = ff
                .node_labels
                .iter()
                .map(|s| {
                    Selector::parse(s)
                        .map_err(|e| FilterError::new("node_labels", s, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            c.push(Check::NodeLabels(sels));
        }
        for (field, list, side) in [
            ("source_cluster_name", &ff.source_cluster_name, Side::Source),
            (
                "destination_cluster_name",
                &ff.destination_cluster_name,
                Side::Destination,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            if list.iter().any(String::is_empty) {
                return Err(FilterError::new(
                    field,
                    list.join(","),
                    "empty cluster name",
                ));
            }
            c.push(Check::ClusterName(side, list.clone()));
        }
        if !ff.ip_trace_id.is_empty() {
            c.push(Check::IpTraceId(ff.ip_trace_id.clone()));
        }
        if !ff.encrypted.is_empty() {
            c.push(Check::Encrypted(ff.encrypted.clone()));
        }
        if let Some(exprs) = ff.experimental.as_ref().map(|e| &e.cel_expression)
            && !exprs.is_empty()
        {
            c.push(Check::Cel(cel_expr::CelFilter::compile(exprs).map_err(
                |(expr, reason)| FilterError::new("experimental.cel_expression", expr, reason),
            )?));
        }
        c.sort_by_key(Check::cost);
        Ok(Self { checks: c })
    }

    /// True if the flow satisfies every field of the filter. An empty
    /// FlowFilter matches every flow.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.checks.iter().all(|c| c.matches(flow))
    }
}

/// Filters ORed together (one request's whitelist or blacklist).
#[derive(Debug, Clone, Default)]
pub struct FilterList {
    filters: Vec<CompiledFilter>,
}

impl FilterList {
    /// Compiles a list; errors name the field as `{list}[{index}].{field}`.
    pub fn new(list_name: &str, filters: &[FlowFilter]) -> Result<Self, FilterError> {
        let filters = filters
            .iter()
            .enumerate()
            .map(|(i, ff)| {
                CompiledFilter::new(ff).map_err(|mut e| {
                    e.field = format!("{list_name}[{i}].{}", e.field);
                    e
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { filters })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// True if any filter matches, or the list is empty.
    pub fn match_one(&self, flow: &Flow) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(flow))
    }

    /// True if no filter matches (also for an empty list).
    pub fn match_none(&self, flow: &Flow) -> bool {
        !self.filters.iter().any(|f| f.matches(flow))
    }
}

/// A request's whitelist and blacklist: `whitelist - blacklist`.
#[derive(Debug, Clone, Default)]
pub struct FlowMatcher {
    whitelist: FilterList,
    blacklist: FilterList,
}

impl FlowMatcher {
    /// Compiles both lists; errors name `whitelist[i].field` or
    /// `blacklist[i].field`.
    pub fn new(whitelist: &[FlowFilter], blacklist: &[FlowFilter]) -> Result<Self, FilterError> {
        Ok(Self {
            whitelist: FilterList::new("whitelist", whitelist)?,
            blacklist: FilterList::new("blacklist", blacklist)?,
        })
    }

    /// True when no filter was given (every flow passes).
    pub fn is_match_all(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }

    /// Whether `flow` passes the whitelist and is not blacklisted.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.whitelist.match_one(flow) && self.blacklist.match_none(flow)
    }
}

#[cfg(test)]
mod tests;
