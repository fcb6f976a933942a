//! From command-line flags to the `GetFlowsRequest` sent to the server,
//! following `hubble observe`'s semantics:
//!
//! * a flag's values are ORed (they go into the same repeated field);
//! * different flags are ANDed (different fields of one FlowFilter);
//! * either-side flags (`--ip`, `--pod`, `--namespace`, ...) produce two
//!   FlowFilters, `left` with the source field and `right` with the
//!   destination field; all other flags go into both. Identical left/right
//!   collapse into one filter;
//! * `--not` sends the next filter flag into the blacklist, which is built
//!   the same way (so `--not -a x --not -b y` excludes flows matching a AND b,
//!   as in hubble).
//!
//! Deviation from hubble, as agreed for flowd: `--namespace` may be combined
//! with `--from-pod`/`--to-pod`/`--from-service`/`--to-service`; it then
//! qualifies the names given without a namespace and adds no either-side
//! namespace filter of its own.
use std::time::SystemTime;

use clap::ArgMatches;
use flowd_proto::flow::{self, FlowFilter};
use flowd_proto::observer::GetFlowsRequest;

use crate::error::Error;
use crate::values;

/// Number of flows requested by default when neither following nor giving a
/// time range (hubble's default).
pub const DEFAULT_LAST: u64 = 20;

/// Filter flags, by clap id, in the order they are checked.
pub const FILTER_IDS: &[&str] = &[
    "uuid",
    "ip",
    "from_ip",
    "to_ip",
    "fqdn",
    "from_fqdn",
    "to_fqdn",
    "pod",
    "from_pod",
    "to_pod",
    "namespace",
    "from_namespace",
    "to_namespace",
    "all_namespaces",
    "from_all_namespaces",
    "to_all_namespaces",
    "label",
    "from_label",
    "to_label",
    "service",
    "from_service",
    "to_service",
    "workload",
    "from_workload",
    "to_workload",
    "port",
    "from_port",
    "to_port",
    "protocol",
    "ip_version",
    "verdict",
    "type",
    "http_status",
    "http_method",
    "http_path",
    "dns_query",
    "tcp_flags",
    "node_name",
    "node_label",
    "cluster",
    "from_cluster",
    "to_cluster",
    "interface",
    "http_url",
    "http_header",
    "grpc_status",
    "grpc_service",
    "grpc_method",
    "ip_trace_id",
    "encrypted",
    "unencrypted",
    "cel_expression",
    "traffic_direction",
];

/// Flag pairs that cannot be combined in one (white or black) list, as in
/// hubble: their either-side and one-side forms would contradict.
const CONFLICTS: &[&[&str]] = &[
    &[
        "from_fqdn",
        "from_ip",
        "ip",
        "fqdn",
        "from_namespace",
        "namespace",
        "from_all_namespaces",
        "all_namespaces",
    ],
    &["from_fqdn", "from_ip", "ip", "fqdn", "from_pod", "pod"],
    &[
        "to_fqdn",
        "to_ip",
        "ip",
        "fqdn",
        "to_namespace",
        "namespace",
        "to_all_namespaces",
        "all_namespaces",
    ],
    &["to_fqdn", "to_ip", "ip", "fqdn", "to_pod", "pod"],
    &["to_pod", "all_namespaces"],
    &["from_pod", "all_namespaces"],
    &["to_service", "all_namespaces"],
    &["from_service", "all_namespaces"],
    &["encrypted", "unencrypted"],
    &["label", "from_label"],
    &["label", "to_label"],
    &["service", "from_service"],
    &["service", "to_service"],
    &["port", "to_port"],
    &["port", "from_port"],
    &["workload", "to_workload"],
    &["workload", "from_workload"],
];

fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Builds the request from parsed arguments. `now` anchors relative
/// `--since`/`--until` durations.
pub fn build_request(m: &ArgMatches, now: SystemTime) -> Result<GetFlowsRequest, Error> {
    let (whitelist, blacklist) = build_filters(m)?;
    let follow = m.get_flag("follow");
    let since = m
        .get_one::<values::TimeSpec>("since")
        .map(|t| t.resolve(now));
    let until = m
        .get_one::<values::TimeSpec>("until")
        .map(|t| t.resolve(now));
    let (number, first) = if let Some(n) = m.get_one::<u64>("first") {
        (*n, true)
    } else if let Some(n) = m.get_one::<u64>("last") {
        (*n, false)
    } else if m.get_flag("all") {
        // hubble: --all is --last with the largest number.
        (u64::MAX, false)
    } else if follow || since.is_some() || until.is_some() {
        (0, false)
    } else {
        (DEFAULT_LAST, false)
    };
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(Error::Usage(format!(
            "--since ({}) is after --until ({})",
            values::rfc3339(s),
            values::rfc3339(u)
        )));
    }
    Ok(GetFlowsRequest {
        number,
        first,
        follow,
        whitelist,
        blacklist,
        since,
        until,
        ..Default::default()
    })
}

/// One filter flag occurrence, in command-line order.
struct Event<'a> {
    index: usize,
    id: &'static str,
    value: Option<&'a String>,
}

/// Returns (whitelist, blacklist).
pub fn build_filters(m: &ArgMatches) -> Result<(Vec<FlowFilter>, Vec<FlowFilter>), Error> {
    let mut events: Vec<Event<'_>> = Vec::new();
    let from_cli = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if let Some(idx) = m.indices_of("not").filter(|_| from_cli("not")) {
        events.extend(idx.map(|index| Event {
            index,
            id: "not",
            value: None,
        }));
    }
    for id in FILTER_IDS.iter().filter(|id| from_cli(id)) {
        let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) else {
            continue;
        };
        events.extend(vals.zip(idx).map(|(v, index)| Event {
            index,
            id,
            value: Some(v),
        }));
    }
    events.sort_by_key(|e| e.index);

    let mut white = Tracker::default();
    let mut black = Tracker::default();
    let mut negate = false;
    for e in events {
        match e.value {
            None => {
                if negate {
                    return Err(Error::Usage("consecutive --not statements".into()));
                }
                negate = true;
            }
            Some(v) => {
                let t = if negate { &mut black } else { &mut white };
                negate = false;
                t.set(e.id, v)?;
            }
        }
    }
    if negate {
        return Err(Error::Usage(
            "--not must be followed by a filter flag, e.g. --not --verdict FORWARDED".into(),
        ));
    }
    Ok((white.materialize()?, black.materialize()?))
}

/// Builds one list (white or black): `left OR right`.
#[derive(Default)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<&'static str>,
}

impl Tracker {
    fn both(&mut self, f: impl Fn(&mut FlowFilter)) {
        f(self.left.get_or_insert_with(Default::default));
        f(self.right.get_or_insert_with(Default::default));
    }

    fn either(&mut self, l: impl FnOnce(&mut FlowFilter), r: impl FnOnce(&mut FlowFilter)) {
        l(self.left.get_or_insert_with(Default::default));
        r(self.right.get_or_insert_with(Default::default));
    }

    fn set(&mut self, id: &'static str, v: &str) -> Result<(), Error> {
        if !self.changed.contains(&id) {
            self.changed.push(id);
        }
        for group in CONFLICTS {
            if !group.contains(&id) {
                continue;
            }
            if let Some(other) = group.iter().find(|o| **o != id && self.changed.contains(o)) {
                return Err(Error::Usage(format!(
                    "filters {} and {} cannot be combined",
                    flag(other),
                    flag(id)
                )));
            }
        }
        let s = || v.to_string();
        match id {
            "uuid" => self.both(|f| f.uuid.push(s())),
            "ip" => self.either(|f| f.source_ip.push(s()), |f| f.destination_ip.push(s())),
            "from_ip" => self.both(|f| f.source_ip.push(s())),
            "to_ip" => self.both(|f| f.destination_ip.push(s())),
            "fqdn" => self.either(
                |f| f.source_fqdn.push(s()),
                |f| f.destination_fqdn.push(s()),
            ),
            "from_fqdn" => self.both(|f| f.source_fqdn.push(s())),
            "to_fqdn" => self.both(|f| f.destination_fqdn.push(s())),
            "pod" => self.either(|f| f.source_pod.push(s()), |f| f.destination_pod.push(s())),
            "from_pod" => self.both(|f| f.source_pod.push(s())),
            "to_pod" => self.both(|f| f.destination_pod.push(s())),
            "namespace" => self.ns.push(s()),
            "from_namespace" => self.src_ns.push(s()),
            "to_namespace" => self.dst_ns.push(s()),
            "label" => self.either(
                |f| f.source_label.push(s()),
                |f| f.destination_label.push(s()),
            ),
            "from_label" => self.both(|f| f.source_label.push(s())),
            "to_label" => self.both(|f| f.destination_label.push(s())),
            "service" => self.either(
                |f| f.source_service.push(s()),
                |f| f.destination_service.push(s()),
            ),
            "from_service" => self.both(|f| f.source_service.push(s())),
            "to_service" => self.both(|f| f.destination_service.push(s())),
            "workload" => {
                let w = values::to_workload(v);
                self.either(
                    |f| f.source_workload.push(w.clone()),
                    |f| f.destination_workload.push(w.clone()),
                )
            }
            "from_workload" => {
                let w = values::to_workload(v);
                self.both(|f| f.source_workload.push(w.clone()))
            }
            "to_workload" => {
                let w = values::to_workload(v);
                self.both(|f| f.destination_workload.push(w.clone()))
            }
            "port" => self.either(
                |f| f.source_port.push(s()),
                |f| f.destination_port.push(s()),
            ),
            "from_port" => self.both(|f| f.source_port.push(s())),
            "to_port" => self.both(|f| f.destination_port.push(s())),
            "protocol" => self.both(|f| f.protocol.push(s())),
            "ip_version" => {
                let ver = if v == "6" {
                    flow::IpVersion::IPv6
                } else {
                    flow::IpVersion::IPv4
                } as i32;
                self.both(|f| f.ip_version.push(ver))
            }
            "verdict" => {
                let verdict = flow::Verdict::from_str_name(v)
                    .ok_or_else(|| Error::Usage(format!("invalid --verdict value: {v}")))?
                    as i32;
                self.both(|f| f.verdict.push(verdict))
            }
            "type" => {
                let t = values::to_event_type_filter(v).map_err(Error::Usage)?;
                self.both(|f| f.event_type.push(t))
            }
            "http_status" => self.both(|f| f.http_status_code.push(s())),
            "http_method" => self.both(|f| f.http_method.push(s())),
            "http_path" => self.both(|f| f.http_path.push(s())),
            "dns_query" => self.both(|f| f.dns_query.push(s())),
            "tcp_flags" => {
                let flags = values::to_tcp_flags(v).map_err(Error::Usage)?;
                self.both(|f| f.tcp_flags.push(flags))
            }
            "node_name" => self.both(|f| f.node_name.push(s())),
            "node_label" => self.both(|f| f.node_labels.push(s())),
            "cluster" => self.either(
                |f| f.source_cluster_name.push(s()),
                |f| f.destination_cluster_name.push(s()),
            ),
            "from_cluster" => self.both(|f| f.source_cluster_name.push(s())),
            "to_cluster" => self.both(|f| f.destination_cluster_name.push(s())),
            "all_namespaces" => self.ns.push(String::new()),
            "from_all_namespaces" => self.src_ns.push(String::new()),
            "to_all_namespaces" => self.dst_ns.push(String::new()),
            "interface" => self.both(|f| {
                f.interface.push(flow::NetworkInterface {
                    index: 0,
                    name: s(),
                })
            }),
            "http_url" => self.both(|f| f.http_url.push(s())),
            "http_header" => {
                let (key, value) = v.split_once(':').ok_or_else(|| {
                    Error::Usage(format!(
                        "invalid http-header value {v:?}, expected name:value"
                    ))
                })?;
                let h = flow::HttpHeader {
                    key: key.to_string(),
                    value: value.to_string(),
                };
                self.both(|f| f.http_header.push(h.clone()))
            }
            "grpc_status" => self.both(|f| f.grpc_status.push(s())),
            "grpc_service" => self.both(|f| f.grpc_service.push(s())),
            "grpc_method" => self.both(|f| f.grpc_method.push(s())),
            "ip_trace_id" => {
                let id = values::to_ip_trace_id(v).map_err(Error::Usage)?;
                self.both(|f| f.ip_trace_id.push(id))
            }
            "encrypted" => self.both(|f| f.encrypted.push(true)),
            "unencrypted" => self.both(|f| f.encrypted.push(false)),
            "cel_expression" => self.both(|f| {
                f.experimental
                    .get_or_insert_with(Default::default)
                    .cel_expression
                    .push(s())
            }),
            "traffic_direction" => {
                let d = if v == "egress" {
                    flow::TrafficDirection::Egress
                } else {
                    flow::TrafficDirection::Ingress
                } as i32;
                self.both(|f| f.traffic_direction.push(d))
            }
            other => return Err(Error::Usage(format!("unknown filter {}", flag(other)))),
        }
        Ok(())
    }

    fn materialize(mut self) -> Result<Vec<FlowFilter>, Error> {
        if self.left.is_none()
            && self.right.is_none()
            && self.ns.is_empty()
            && self.src_ns.is_empty()
            && self.dst_ns.is_empty()
        {
            return Ok(Vec::new());
        }
        let mut left = self.left.take().unwrap_or_default();
        let mut right = self.right.take().unwrap_or_default();

        // Names with a namespace must be in the namespaces asked for.
        let src_allowed: Vec<&String> = self.ns.iter().chain(&self.src_ns).collect();
        let dst_allowed: Vec<&String> = self.ns.iter().chain(&self.dst_ns).collect();
        for f in [&left, &right] {
            check_ns(&src_allowed, &f.source_pod)?;
            check_ns(&src_allowed, &f.source_service)?;
            check_ns(&dst_allowed, &f.destination_pod)?;
            check_ns(&dst_allowed, &f.destination_service)?;
        }

        // Qualify bare names: source side with --from-namespace (or -n),
        // destination side with --to-namespace (or -n).
        let src_q = if self.src_ns.is_empty() {
            &self.ns
        } else {
            &self.src_ns
        };
        let dst_q = if self.dst_ns.is_empty() {
            &self.ns
        } else {
            &self.dst_ns
        };
        for f in [&mut left, &mut right] {
            f.source_pod = qualify(&f.source_pod, src_q);
            f.source_service = qualify(&f.source_service, src_q);
            f.destination_pod = qualify(&f.destination_pod, dst_q);
            f.destination_service = qualify(&f.destination_service, dst_q);
        }

        if !self.dst_ns.is_empty() {
            for f in [&mut left, &mut right] {
                apply_dst_ns(f, &self.dst_ns);
            }
        }
        if !self.src_ns.is_empty() {
            for f in [&mut left, &mut right] {
                apply_src_ns(f, &self.src_ns);
            }
        }
        let one_sided_names = ["from_pod", "to_pod", "from_service", "to_service"]
            .iter()
            .any(|id| self.changed.contains(id));
        if !self.ns.is_empty() && !one_sided_names {
            // Either side: left gets the source namespace, right the destination.
            apply_src_ns(&mut left, &self.ns);
            apply_dst_ns(&mut right, &self.ns);
        }
        if left == right {
            Ok(vec![left])
        } else {
            Ok(vec![left, right])
        }
    }
}

fn check_ns(allowed: &[&String], names: &[String]) -> Result<(), Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    for name in names {
        if let Some((ns, _)) = name.split_once('/')
            && !allowed.iter().any(|a| a.as_str() == ns)
        {
            return Err(Error::Usage(format!(
                "namespace conflict: {name:?} is not in namespace {}",
                allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
    }
    Ok(())
}

fn qualify(names: &[String], ns: &[String]) -> Vec<String> {
    if ns.is_empty() {
        return names.to_vec();
    }
    let mut out = Vec::new();
    for n in names {
        if n.contains('/') {
            out.push(n.clone());
        } else {
            out.extend(ns.iter().map(|ns| format!("{ns}/{n}")));
        }
    }
    out
}

/// Restricts the source to the namespaces: `ns/` when no source pod or
/// service is given (bare names were qualified before).
fn apply_src_ns(f: &mut FlowFilter, ns: &[String]) {
    if f.source_pod.is_empty() && f.source_service.is_empty() {
        f.source_pod = ns.iter().map(|n| format!("{n}/")).collect();
    }
}

fn apply_dst_ns(f: &mut FlowFilter, ns: &[String]) {
    if f.destination_pod.is_empty() && f.destination_service.is_empty() {
        f.destination_pod = ns.iter().map(|n| format!("{n}/")).collect();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use clap::CommandFactory;
    use flowd_proto::Timestamp;
    use flowd_proto::flow::{EventTypeFilter, TcpFlags, Verdict, Workload};

    use super::*;
    use crate::cli::Cli;

    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn req(args: &[&str]) -> Result<GetFlowsRequest, String> {
        let m = Cli::command()
            .try_get_matches_from(std::iter::once("observe").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        build_request(&m, now()).map_err(|e| e.to_string())
    }

    fn white(args: &[&str]) -> Vec<FlowFilter> {
        let r = req(args).unwrap();
        assert!(r.blacklist.is_empty());
        r.whitelist
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_to_last_20_without_filters() {
        let r = req(&[]).unwrap();
        assert_eq!(
            r,
            GetFlowsRequest {
                number: 20,
                ..Default::default()
            }
        );
    }

    #[test]
    fn namespace_matches_either_side() {
        assert_eq!(
            white(&["-n", "ecommerce"]),
            vec![
                FlowFilter {
                    source_pod: strs(&["ecommerce/"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["ecommerce/"]),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn namespace_and_http_status_range_the_issue_example() {
        assert_eq!(
            white(&["--namespace", "ecommerce", "--http-status", "400-599"]),
            vec![
                FlowFilter {
                    source_pod: strs(&["ecommerce/"]),
                    http_status_code: strs(&["400-599"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["ecommerce/"]),
                    http_status_code: strs(&["400-599"]),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn repeated_flag_ors_values_different_flags_and() {
        assert_eq!(
            white(&[
                "--verdict",
                "DROPPED",
                "--protocol",
                "TCP",
                "--verdict",
                "error",
                "--to-port",
                "80",
                "--http-status",
                "5+",
                "--http-status",
                "404",
            ]),
            vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32, Verdict::Error as i32],
                protocol: strs(&["tcp"]),
                destination_port: strs(&["80"]),
                http_status_code: strs(&["5+", "404"]),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn either_side_ip_with_other_flags_in_both() {
        assert_eq!(
            white(&["--ip", "10.0.0.0/8", "--ip", "fd00::1", "--protocol", "udp"]),
            vec![
                FlowFilter {
                    source_ip: strs(&["10.0.0.0/8", "fd00::1"]),
                    protocol: strs(&["udp"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_ip: strs(&["10.0.0.0/8", "fd00::1"]),
                    protocol: strs(&["udp"]),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn not_sends_the_next_filter_to_the_blacklist() {
        let r = req(&[
            "-n",
            "ecommerce",
            "--not",
            "--verdict",
            "FORWARDED",
            "--protocol",
            "tcp",
        ])
        .unwrap();
        assert_eq!(
            r.blacklist,
            vec![FlowFilter {
                verdict: vec![Verdict::Forwarded as i32],
                ..Default::default()
            }]
        );
        // --protocol after the negated flag is a whitelist filter again.
        assert_eq!(
            r.whitelist,
            vec![
                FlowFilter {
                    source_pod: strs(&["ecommerce/"]),
                    protocol: strs(&["tcp"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["ecommerce/"]),
                    protocol: strs(&["tcp"]),
                    ..Default::default()
                },
            ]
        );
        // Negated either-side flag: two blacklist filters, no whitelist.
        let r = req(&["--not", "--ip", "10.0.0.1"]).unwrap();
        assert!(r.whitelist.is_empty());
        assert_eq!(
            r.blacklist,
            vec![
                FlowFilter {
                    source_ip: strs(&["10.0.0.1"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_ip: strs(&["10.0.0.1"]),
                    ..Default::default()
                },
            ]
        );
        // Excluding a namespace excludes flows from it and flows to it.
        let r = req(&["--not", "-n", "kube-system", "--protocol", "tcp"]).unwrap();
        assert_eq!(
            r.blacklist,
            vec![
                FlowFilter {
                    source_pod: strs(&["kube-system/"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["kube-system/"]),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(
            r.whitelist,
            vec![FlowFilter {
                protocol: strs(&["tcp"]),
                ..Default::default()
            }]
        );
        // Two negated flags build one blacklist filter (AND), as in hubble.
        let r = req(&["--not", "--protocol", "udp", "--not", "--to-port", "53"]).unwrap();
        assert_eq!(
            r.blacklist,
            vec![FlowFilter {
                protocol: strs(&["udp"]),
                destination_port: strs(&["53"]),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn not_misuse_is_a_usage_error() {
        assert_eq!(
            req(&["--not", "--not", "--verdict", "DROPPED"]).unwrap_err(),
            "consecutive --not statements"
        );
        assert!(
            req(&["--verdict", "DROPPED", "--not"])
                .unwrap_err()
                .contains("--not must be followed by a filter flag")
        );
    }

    #[test]
    fn pod_names_take_the_namespace_from_n() {
        assert_eq!(
            white(&["--pod", "cart", "-n", "ecommerce"]),
            vec![
                FlowFilter {
                    source_pod: strs(&["ecommerce/cart"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["ecommerce/cart"]),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(
            white(&[
                "--from-pod",
                "frontend",
                "--to-pod",
                "ecommerce/cart",
                "-n",
                "ecommerce"
            ]),
            vec![FlowFilter {
                source_pod: strs(&["ecommerce/frontend"]),
                destination_pod: strs(&["ecommerce/cart"]),
                ..Default::default()
            }]
        );
        assert_eq!(
            white(&["--from-pod", "default/client"]),
            vec![FlowFilter {
                source_pod: strs(&["default/client"]),
                ..Default::default()
            }]
        );
        assert!(
            req(&["-n", "ecommerce", "--to-pod", "default/cart"])
                .unwrap_err()
                .starts_with(
                    "namespace conflict: \"default/cart\" is not in namespace \"ecommerce\""
                )
        );
    }

    #[test]
    fn from_and_to_namespace() {
        assert_eq!(
            white(&[
                "--from-namespace",
                "a",
                "--to-namespace",
                "b",
                "--to-namespace",
                "c"
            ]),
            vec![FlowFilter {
                source_pod: strs(&["a/"]),
                destination_pod: strs(&["b/", "c/"]),
                ..Default::default()
            }]
        );
        assert_eq!(
            white(&["--to-namespace", "b", "--to-service", "cart"]),
            vec![FlowFilter {
                destination_service: strs(&["b/cart"]),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn hubble_conflicts_are_rejected() {
        assert_eq!(
            req(&["--ip", "10.0.0.1", "-n", "x"]).unwrap_err(),
            "filters --ip and --namespace cannot be combined"
        );
        assert_eq!(
            req(&["--label", "app=a", "--to-label", "app=b"]).unwrap_err(),
            "filters --label and --to-label cannot be combined"
        );
        // The same flags in white and black lists do not conflict.
        assert!(req(&["--port", "80", "--not", "--to-port", "8080"]).is_ok());
    }

    #[test]
    fn typed_filters() {
        assert_eq!(
            white(&[
                "--tcp-flags",
                "syn,ACK",
                "--tcp-flags",
                "RST",
                "--type",
                "l7",
                "-t",
                "trace:to-endpoint",
                "--type",
                "drop:133",
                "--traffic-direction",
                "EGRESS",
                "--ip-version",
                "6",
                "--http-method",
                "get",
                "--node-name",
                "kind-*",
            ]),
            vec![FlowFilter {
                tcp_flags: vec![
                    TcpFlags {
                        syn: true,
                        ack: true,
                        ..Default::default()
                    },
                    TcpFlags {
                        rst: true,
                        ..Default::default()
                    },
                ],
                event_type: vec![
                    EventTypeFilter {
                        r#type: 129,
                        ..Default::default()
                    },
                    EventTypeFilter {
                        r#type: 4,
                        match_sub_type: true,
                        sub_type: 0,
                    },
                    EventTypeFilter {
                        r#type: 1,
                        match_sub_type: true,
                        sub_type: 133,
                    },
                ],
                traffic_direction: vec![flow::TrafficDirection::Egress as i32],
                ip_version: vec![flow::IpVersion::IPv6 as i32],
                http_method: strs(&["GET"]),
                node_name: strs(&["kind-*"]),
                ..Default::default()
            }]
        );
        assert_eq!(
            white(&["--workload", "Deployment/cart", "--workload", "redis"]),
            vec![
                FlowFilter {
                    source_workload: vec![
                        Workload {
                            kind: "Deployment".into(),
                            name: "cart".into()
                        },
                        Workload {
                            kind: String::new(),
                            name: "redis".into()
                        },
                    ],
                    ..Default::default()
                },
                FlowFilter {
                    destination_workload: vec![
                        Workload {
                            kind: "Deployment".into(),
                            name: "cart".into()
                        },
                        Workload {
                            kind: String::new(),
                            name: "redis".into()
                        },
                    ],
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn invalid_values_say_what_is_valid() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--http-status", "600"],
                "expected a code (404), a prefix (5+, 40+) or a range (400-599)",
            ),
            (&["--http-status", "4xx"], "expected a code (404)"),
            (&["--http-status", "6+"], "expected a code (404)"),
            (
                &["--http-status", "599-400"],
                "the first code must not exceed the second",
            ),
            (
                &["--verdict", "ALLOWED"],
                "expected one of: FORWARDED, DROPPED, ERROR",
            ),
            (
                &["--protocol", "quic"],
                "expected one of: tcp, udp, icmp, icmpv4, icmpv6, sctp, http, dns",
            ),
            (&["--port", "70000"], "expected a port number 0-65535"),
            (&["--ip", "10.0.0.300"], "expected an IP address"),
            (&["--tcp-flags", "SYN,FOO"], "unknown TCP flag \"FOO\""),
            (
                &["--type", "l8"],
                "expected one of drop, debug, capture, trace",
            ),
            (&["--traffic-direction", "up"], "expected ingress or egress"),
            (&["--http-path", "(unclosed"], "invalid regular expression"),
            (&["-n", "Ecommerce"], "expected a Kubernetes namespace name"),
            (
                &["--since", "yesterday"],
                "expected a duration (30s, 5m, 1h30m, 2d) or an RFC 3339 time",
            ),
            (&["--first", "3", "--last", "4"], "cannot be used with"),
            (&["--first", "3", "-f"], "cannot be used with"),
            (
                &["--output", "yaml"],
                "[possible values: compact, dict, json, jsonpb, table]",
            ),
        ];
        for (args, want) in cases {
            let e = req(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        for ok in ["404", "5+", "40+", "400-599", "200-200"] {
            assert!(req(&["--http-status", ok]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn grpc_filters() {
        // Repeating a flag ORs its values; the gRPC flags AND with the
        // others and go into both either-side filters.
        assert_eq!(
            white(&[
                "-n",
                "shop",
                "--protocol",
                "GRPC",
                "--grpc-status",
                "NOT_FOUND",
                "--grpc-status",
                "1-16",
                "--grpc-status",
                "14",
                "--grpc-service",
                "shop.inventory.v1.Inventory",
                "--grpc-method",
                "Reserve",
                "--grpc-method",
                "Release",
            ]),
            vec![
                FlowFilter {
                    source_pod: strs(&["shop/"]),
                    protocol: strs(&["grpc"]),
                    grpc_status: strs(&["NOT_FOUND", "1-16", "14"]),
                    grpc_service: strs(&["shop.inventory.v1.Inventory"]),
                    grpc_method: strs(&["Reserve", "Release"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["shop/"]),
                    protocol: strs(&["grpc"]),
                    grpc_status: strs(&["NOT_FOUND", "1-16", "14"]),
                    grpc_service: strs(&["shop.inventory.v1.Inventory"]),
                    grpc_method: strs(&["Reserve", "Release"]),
                    ..Default::default()
                },
            ]
        );
        // Every failing call of a service: --not --grpc-status OK.
        let r = req(&[
            "--grpc-service",
            "shop.inventory.v1.Inventory",
            "--not",
            "--grpc-status",
            "OK",
        ])
        .unwrap();
        assert_eq!(
            r.whitelist,
            vec![FlowFilter {
                grpc_service: strs(&["shop.inventory.v1.Inventory"]),
                ..Default::default()
            }]
        );
        assert_eq!(
            r.blacklist,
            vec![FlowFilter {
                grpc_status: strs(&["OK"]),
                ..Default::default()
            }]
        );
        assert_eq!(
            white(&["--protocol", "http2"]),
            vec![FlowFilter {
                protocol: strs(&["http2"]),
                ..Default::default()
            }]
        );
        for ok in [
            "0",
            "5",
            "NOT_FOUND",
            "not_found",
            "NotFound",
            "1-16",
            "42",
            "5-5",
        ] {
            assert!(req(&["--grpc-status", ok]).is_ok(), "{ok}");
        }
        let cases: &[(&[&str], &str)] = &[
            (
                &["--grpc-status", "NOTFOUND2"],
                "invalid gRPC status \"NOTFOUND2\": expected a code (5), a name (OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED) or a range of codes (1-16)",
            ),
            (&["--grpc-status", "5-"], "invalid gRPC status \"5-\""),
            (&["--grpc-status=-1"], "invalid gRPC status \"-1\""),
            (
                &["--grpc-status", "NOT_FOUND-INTERNAL"],
                "or a range of codes (1-16)",
            ),
            (
                &["--grpc-status", "16-1"],
                "invalid gRPC status range \"16-1\": the first code must not exceed the second",
            ),
            (
                &["--grpc-service", "shop.inventory.v1.Inventory/Reserve"],
                "expected a fully qualified service name such as shop.inventory.v1.Inventory",
            ),
            (
                &["--grpc-service", ""],
                "expected a fully qualified service name",
            ),
            (
                &["--grpc-method", "/Reserve"],
                "expected a method name such as Reserve",
            ),
            (
                &["--protocol", "h2"],
                "expected one of: tcp, udp, icmp, icmpv4, icmpv6, sctp, http, dns, kafka, grpc, http2",
            ),
        ];
        for (args, want) in cases {
            let e = req(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    /// The requests `hubble observe --print-raw-filters` shows for the
    /// same flags (Hubble CLI v1.19).
    #[test]
    fn hubble_v1_19_filters() {
        use flowd_proto::flow::{HttpHeader, NetworkInterface, flow_filter::Experimental};
        let both = |f: FlowFilter| vec![f];
        assert_eq!(
            white(&["-A"]),
            vec![
                FlowFilter {
                    source_pod: strs(&["/"]),
                    ..Default::default()
                },
                FlowFilter {
                    destination_pod: strs(&["/"]),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(
            white(&["--from-all-namespaces", "--to-cluster", "x"]),
            both(FlowFilter {
                source_pod: strs(&["/"]),
                destination_cluster_name: strs(&["x"]),
                ..Default::default()
            })
        );
        assert_eq!(
            white(&["--to-all-namespaces", "--from-fqdn", "a.b"]),
            both(FlowFilter {
                source_fqdn: strs(&["a.b"]),
                destination_pod: strs(&["/"]),
                ..Default::default()
            })
        );
        let common = FlowFilter {
            interface: vec![NetworkInterface {
                index: 0,
                name: "eth0".into(),
            }],
            http_header: vec![
                HttpHeader {
                    key: "a".into(),
                    value: "b".into(),
                },
                HttpHeader {
                    key: "c".into(),
                    value: "d:e".into(),
                },
            ],
            node_labels: strs(&["k=v"]),
            ip_trace_id: vec![5],
            experimental: Some(Experimental {
                cel_expression: strs(&["_flow.verdict == Verdict.DROPPED"]),
            }),
            ..Default::default()
        };
        assert_eq!(
            white(&[
                "-A",
                "--interface",
                "eth0",
                "--http-header",
                "a:b",
                "--http-header",
                "c:d:e",
                "--node-label",
                "k=v",
                "--cluster",
                "c1",
                "--cel-expression",
                "_flow.verdict == Verdict.DROPPED",
                "--ip-trace-id",
                "5",
            ]),
            vec![
                FlowFilter {
                    source_pod: strs(&["/"]),
                    source_cluster_name: strs(&["c1"]),
                    ..common.clone()
                },
                FlowFilter {
                    destination_pod: strs(&["/"]),
                    destination_cluster_name: strs(&["c1"]),
                    ..common
                },
            ]
        );
        assert_eq!(
            white(&["--encrypted", "--http-url", "http://.*/x"]),
            both(FlowFilter {
                encrypted: vec![true],
                http_url: strs(&["http://.*/x"]),
                ..Default::default()
            })
        );
        let r = req(&["--not", "--unencrypted", "--from-cluster", "a"]).unwrap();
        assert_eq!(
            r.blacklist,
            both(FlowFilter {
                encrypted: vec![false],
                ..Default::default()
            })
        );
        assert_eq!(
            r.whitelist,
            both(FlowFilter {
                source_cluster_name: strs(&["a"]),
                ..Default::default()
            })
        );
        for (args, want) in [
            (&["--ip-trace-id", "0"][..], "must be greater than 0"),
            (&["--http-header", "novalue"][..], "expected name:value"),
            (&["--encrypted", "--unencrypted"][..], "cannot be combined"),
            (&["-A", "--ip", "10.0.0.1"][..], "cannot be combined"),
            (&["-A", "--to-pod", "x"][..], "cannot be combined"),
            (&["--http-url", "("][..], "invalid regular expression"),
        ] {
            let e = req(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn selection() {
        let r = req(&["--first", "5"]).unwrap();
        assert_eq!((r.number, r.first, r.follow), (5, true, false));
        let r = req(&["--last", "7", "-f"]).unwrap();
        assert_eq!((r.number, r.first, r.follow), (7, false, true));
        // Following without --last: only new flows.
        let r = req(&["-f"]).unwrap();
        assert_eq!((r.number, r.follow), (0, true));
        assert_eq!(req(&["--all"]).unwrap().number, u64::MAX);
    }

    #[test]
    fn since_and_until() {
        let r = req(&["--since", "5m"]).unwrap();
        assert_eq!(
            r.since,
            Some(Timestamp {
                seconds: NOW as i64 - 300,
                nanos: 0
            })
        );
        // A time range replaces the default --last 20.
        assert_eq!(r.number, 0);
        let r = req(&["--since", "1h30m", "--until", "2023-11-14T22:13:19.5Z"]).unwrap();
        assert_eq!(
            (r.since, r.until),
            (
                Some(Timestamp {
                    seconds: NOW as i64 - 5400,
                    nanos: 0
                }),
                Some(Timestamp {
                    seconds: NOW as i64 - 1,
                    nanos: 500_000_000
                })
            )
        );
        let r = req(&["--since", "2023-11-14T23:00:00+01:00", "--last", "3"]).unwrap();
        assert_eq!(
            (r.since, r.number),
            (
                Some(Timestamp {
                    seconds: NOW as i64 - 800,
                    nanos: 0
                }),
                3
            )
        );
        assert_eq!(
            req(&["--since", "1m", "--until", "5m"]).unwrap_err(),
            "--since (2023-11-14T22:12:20Z) is after --until (2023-11-14T22:08:20Z)"
        );
    }
}
