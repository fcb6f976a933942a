//! The `hubble-metrics` key, in Hubble's syntax: handlers separated by
//! spaces, each `name` or `name:opt=val;opt2=val2` (option names are
//! case-insensitive, as in Hubble). Unlike Hubble, an unknown handler or
//! option is an error, so a typo never silently disables a metric.
//!
//! The handler names are Hubble's catalogue (Cilium v1.19,
//! `pkg/hubble/metrics`). `policy` and `kafka` count events flowd never
//! produces (policy verdicts, Kafka records): they are accepted, so values
//! copied from Cilium work, and their families exist but stay empty
//! ([`HandlerKind::has_events`]). `grpc` is flowd's own (Hubble has no gRPC
//! metrics without a proxy that parses it).

use std::fmt;

/// A handler that turns flows into metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    Flow,
    Drop,
    Tcp,
    Icmp,
    PortDistribution,
    Dns,
    /// Hubble's deprecated `http` handler (requests, responses, duration).
    Http,
    /// `httpV2`: requests (with status) and duration, counted on responses.
    HttpV2,
    /// `grpc` (flowd): gRPC calls by service, method, status and type, and
    /// their duration, counted on responses.
    Grpc,
    /// `flows-to-world`: flows whose destination is `reserved:world`.
    FlowsToWorld,
    /// `policy`: network policy verdicts (none in flowd: it enforces no policy).
    Policy,
    /// `kafka`: Kafka requests (none in flowd: it parses no Kafka).
    Kafka,
}

impl HandlerKind {
    pub const ALL: [HandlerKind; 12] = [
        HandlerKind::Flow,
        HandlerKind::Drop,
        HandlerKind::Tcp,
        HandlerKind::Icmp,
        HandlerKind::PortDistribution,
        HandlerKind::Dns,
        HandlerKind::Http,
        HandlerKind::HttpV2,
        HandlerKind::Grpc,
        HandlerKind::FlowsToWorld,
        HandlerKind::Policy,
        HandlerKind::Kafka,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HandlerKind::Flow => "flow",
            HandlerKind::Drop => "drop",
            HandlerKind::Tcp => "tcp",
            HandlerKind::Icmp => "icmp",
            HandlerKind::PortDistribution => "port-distribution",
            HandlerKind::Dns => "dns",
            HandlerKind::Http => "http",
            HandlerKind::HttpV2 => "httpV2",
            HandlerKind::Grpc => "grpc",
            HandlerKind::FlowsToWorld => "flows-to-world",
            HandlerKind::Policy => "policy",
            HandlerKind::Kafka => "kafka",
        }
    }

    /// Whether flowd produces the events this handler counts. Without them
    /// the handler's families are exported with no series: a dashboard
    /// panel on them is empty rather than broken, and the daemon says so
    /// at start.
    pub fn has_events(self) -> bool {
        !matches!(self, HandlerKind::Policy | HandlerKind::Kafka)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an endpoint is named in the `source` / `destination` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextId {
    Identity,
    Namespace,
    /// `namespace/pod-name`.
    Pod,
    /// `namespace/` + pod name without its generated suffixes (deprecated in Hubble).
    PodShort,
    PodName,
    Dns,
    Ip,
    ReservedIdentity,
    WorkloadName,
    App,
}

impl ContextId {
    const ALL: [(&'static str, ContextId); 10] = [
        ("identity", ContextId::Identity),
        ("namespace", ContextId::Namespace),
        ("pod", ContextId::Pod),
        ("pod-short", ContextId::PodShort),
        ("pod-name", ContextId::PodName),
        ("dns", ContextId::Dns),
        ("ip", ContextId::Ip),
        ("reserved-identity", ContextId::ReservedIdentity),
        ("workload-name", ContextId::WorkloadName),
        ("app", ContextId::App),
    ];

    fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, c)| *c)
    }

    fn valid_list() -> String {
        Self::ALL
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// Labels allowed in `labelsContext`, in the order Hubble emits them.
pub const CONTEXT_LABELS: [&str; 11] = [
    "source_ip",
    "source_pod",
    "source_namespace",
    "source_workload",
    "source_app",
    "destination_ip",
    "destination_pod",
    "destination_namespace",
    "destination_workload",
    "destination_app",
    "traffic_direction",
];

/// Context options shared by every handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    /// `sourceContext`: alternatives, the first non-empty value wins.
    pub source: Vec<ContextId>,
    pub destination: Vec<ContextId>,
    /// Direction-specific overrides (`sourceEgressContext`, …).
    pub source_egress: Vec<ContextId>,
    pub source_ingress: Vec<ContextId>,
    pub destination_egress: Vec<ContextId>,
    pub destination_ingress: Vec<ContextId>,
    /// `labelsContext`, as indices into [`CONTEXT_LABELS`], sorted.
    pub labels: Vec<usize>,
}

impl ContextOptions {
    /// Label names, in the order of the values `context::label_values` yields.
    pub fn label_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.labels.iter().map(|&i| CONTEXT_LABELS[i]).collect();
        if !self.source.is_empty() {
            names.push("source");
        }
        if !self.destination.is_empty() {
            names.push("destination");
        }
        names
    }
}

/// One configured handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub kind: HandlerKind,
    pub context: ContextOptions,
    /// dns: add the `query` label.
    pub dns_query: bool,
    /// dns: skip flows whose only query type is AAAA.
    pub dns_ignore_aaaa: bool,
    /// http/httpV2/grpc: attach the flow's trace ID as an exemplar (OpenMetrics only).
    pub exemplars: bool,
    /// flows-to-world `any-drop`: count dropped flows whatever the reason
    /// (otherwise only POLICY_DENIED drops).
    pub any_drop: bool,
    /// flows-to-world `port`: add the destination port as label `port`.
    pub port: bool,
    /// flows-to-world `syn-only`: count only TCP SYNs that are not replies.
    pub syn_only: bool,
}

/// The parsed `hubble-metrics` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSpec {
    pub handlers: Vec<HandlerSpec>,
}

/// A `hubble-metrics` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown metrics handler {handler:?} (valid: {valid})")]
    UnknownHandler { handler: String, valid: String },
    #[error("metrics handler {handler:?}: unknown option {option:?} (valid: {valid})")]
    UnknownOption {
        handler: String,
        option: String,
        valid: String,
    },
    #[error(
        "metrics handler {handler:?}: option {option:?} has invalid value {value:?}: expected {expected}"
    )]
    BadValue {
        handler: String,
        option: String,
        value: String,
        expected: String,
    },
    #[error("metrics handler {handler:?} is listed twice")]
    Duplicate { handler: String },
    #[error(
        "metrics handlers \"http\" and \"httpV2\" cannot both be enabled: they export the same metric names"
    )]
    HttpConflict,
}

impl MetricsSpec {
    /// Parses Hubble's syntax. An empty string enables no handler.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let mut handlers: Vec<HandlerSpec> = Vec::new();
        for item in s.split_whitespace() {
            let (name, opts) = match item.split_once(':') {
                Some((n, o)) => (n, o),
                None => (item, ""),
            };
            let kind = HandlerKind::parse(name).ok_or_else(|| SpecError::UnknownHandler {
                handler: name.to_string(),
                valid: HandlerKind::ALL.map(|k| k.name()).join(", "),
            })?;
            if handlers.iter().any(|h| h.kind == kind) {
                return Err(SpecError::Duplicate {
                    handler: name.to_string(),
                });
            }
            handlers.push(parse_handler(kind, opts)?);
        }
        let has = |k| handlers.iter().any(|h| h.kind == k);
        if has(HandlerKind::Http) && has(HandlerKind::HttpV2) {
            return Err(SpecError::HttpConflict);
        }
        Ok(MetricsSpec { handlers })
    }

    pub fn get(&self, kind: HandlerKind) -> Option<&HandlerSpec> {
        self.handlers.iter().find(|h| h.kind == kind)
    }
}

fn parse_handler(kind: HandlerKind, opts: &str) -> Result<HandlerSpec, SpecError> {
    let mut spec = HandlerSpec {
        kind,
        context: ContextOptions::default(),
        dns_query: false,
        dns_ignore_aaaa: false,
        exemplars: false,
        any_drop: false,
        port: false,
        syn_only: false,
    };
    let extra: &[&str] = match kind {
        HandlerKind::Dns => &["query", "ignoreaaaa"],
        HandlerKind::Http | HandlerKind::HttpV2 | HandlerKind::Grpc => &["exemplars"],
        HandlerKind::FlowsToWorld => &["any-drop", "port", "syn-only"],
        _ => &[],
    };
    for opt in opts.split(';').filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, v),
            None => (opt, ""),
        };
        let lkey = key.to_ascii_lowercase();
        let bad = |expected: String| SpecError::BadValue {
            handler: kind.name().to_string(),
            option: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let ctx = |v: &str| -> Result<Vec<ContextId>, SpecError> {
            v.split('|')
                .map(|id| {
                    ContextId::parse(id).ok_or_else(|| {
                        bad(format!(
                            "identifiers joined by '|' from {}",
                            ContextId::valid_list()
                        ))
                    })
                })
                .collect()
        };
        match lkey.as_str() {
            "sourcecontext" => spec.context.source = ctx(value)?,
            "destinationcontext" => spec.context.destination = ctx(value)?,
            "sourceegresscontext" => spec.context.source_egress = ctx(value)?,
            "sourceingresscontext" => spec.context.source_ingress = ctx(value)?,
            "destinationegresscontext" => spec.context.destination_egress = ctx(value)?,
            "destinationingresscontext" => spec.context.destination_ingress = ctx(value)?,
            "labelscontext" => {
                let mut idx = Vec::new();
                for l in value.split(',') {
                    let i = CONTEXT_LABELS.iter().position(|c| *c == l).ok_or_else(|| {
                        bad(format!(
                            "labels joined by ',' from {}",
                            CONTEXT_LABELS.join(",")
                        ))
                    })?;
                    if !idx.contains(&i) {
                        idx.push(i);
                    }
                }
                idx.sort_unstable();
                spec.context.labels = idx;
            }
            "query" if kind == HandlerKind::Dns => spec.dns_query = true,
            "ignoreaaaa" if kind == HandlerKind::Dns => spec.dns_ignore_aaaa = true,
            // As in Hubble, these flags are on when present (any value).
            "any-drop" if kind == HandlerKind::FlowsToWorld => spec.any_drop = true,
            "port" if kind == HandlerKind::FlowsToWorld => spec.port = true,
            "syn-only" if kind == HandlerKind::FlowsToWorld => spec.syn_only = true,
            "exemplars" if extra.contains(&"exemplars") => {
                spec.exemplars = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("true or false".to_string())),
                }
            }
            _ => {
                let mut valid: Vec<&str> = vec![
                    "sourceContext",
                    "destinationContext",
                    "sourceEgressContext",
                    "sourceIngressContext",
                    "destinationEgressContext",
                    "destinationIngressContext",
                    "labelsContext",
                ];
                match kind {
                    HandlerKind::Dns => valid.extend(["query", "ignoreAAAA"]),
                    HandlerKind::Http | HandlerKind::HttpV2 | HandlerKind::Grpc => {
                        valid.push("exemplars")
                    }
                    HandlerKind::FlowsToWorld => valid.extend(["any-drop", "port", "syn-only"]),
                    _ => {}
                }
                return Err(SpecError::UnknownOption {
                    handler: kind.name().to_string(),
                    option: key.to_string(),
                    valid: valid.join(", "),
                });
            }
        }
    }
    // A direction-specific context only makes sense with the general one,
    // which decides whether the label exists at all (as in Hubble).
    if spec.context.source.is_empty()
        && !(spec.context.source_egress.is_empty() && spec.context.source_ingress.is_empty())
    {
        return Err(SpecError::BadValue {
            handler: kind.name().to_string(),
            option: "sourceEgressContext/sourceIngressContext".to_string(),
            value: String::new(),
            expected: "sourceContext to be set as well".to_string(),
        });
    }
    if spec.context.destination.is_empty()
        && !(spec.context.destination_egress.is_empty()
            && spec.context.destination_ingress.is_empty())
    {
        return Err(SpecError::BadValue {
            handler: kind.name().to_string(),
            option: "destinationEgressContext/destinationIngressContext".to_string(),
            value: String::new(),
            expected: "destinationContext to be set as well".to_string(),
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_demo_value() {
        let s = MetricsSpec::parse("dns:query;ignoreAAAA drop tcp flow port-distribution icmp httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction").unwrap();
        assert_eq!(s.handlers.len(), 7);
        let dns = s.get(HandlerKind::Dns).unwrap();
        assert!(dns.dns_query && dns.dns_ignore_aaaa);
        let h = s.get(HandlerKind::HttpV2).unwrap();
        assert!(h.exemplars);
        assert_eq!(
            h.context.label_names(),
            vec![
                "source_ip",
                "source_namespace",
                "source_workload",
                "destination_ip",
                "destination_namespace",
                "destination_workload",
                "traffic_direction"
            ]
        );
    }

    #[test]
    fn context_alternatives() {
        let s = MetricsSpec::parse(
            "httpV2:sourceContext=workload-name|reserved-identity;destinationContext=pod",
        )
        .unwrap();
        let h = s.get(HandlerKind::HttpV2).unwrap();
        assert_eq!(
            h.context.source,
            vec![ContextId::WorkloadName, ContextId::ReservedIdentity]
        );
        assert_eq!(h.context.destination, vec![ContextId::Pod]);
        assert_eq!(h.context.label_names(), vec!["source", "destination"]);
    }

    #[test]
    fn grpc_takes_the_context_options_and_exemplars() {
        let s = MetricsSpec::parse(
            "grpc:sourceContext=workload-name|pod;destinationContext=app;labelsContext=source_namespace;exemplars=true httpV2",
        )
        .unwrap();
        let g = s.get(HandlerKind::Grpc).unwrap();
        assert!(g.exemplars && g.kind.has_events());
        assert_eq!(
            g.context.label_names(),
            vec!["source_namespace", "source", "destination"]
        );
        assert_eq!(
            MetricsSpec::parse("grpc grpc").unwrap_err(),
            SpecError::Duplicate {
                handler: "grpc".into()
            }
        );
    }

    #[test]
    fn hubble_catalogue() {
        let s = MetricsSpec::parse(
            "flows-to-world:any-drop;Port;syn-only;sourceContext=pod policy:labelsContext=source_namespace kafka",
        )
        .unwrap();
        let w = s.get(HandlerKind::FlowsToWorld).unwrap();
        assert!(w.any_drop && w.port && w.syn_only);
        assert_eq!(w.context.label_names(), vec!["source"]);
        assert!(!s.get(HandlerKind::Policy).unwrap().kind.has_events());
        assert!(!s.get(HandlerKind::Kafka).unwrap().kind.has_events());
        assert_eq!(
            MetricsSpec::parse("policy:query").unwrap_err().to_string(),
            "metrics handler \"policy\": unknown option \"query\" (valid: sourceContext, destinationContext, sourceEgressContext, sourceIngressContext, destinationEgressContext, destinationIngressContext, labelsContext)"
        );
        assert!(
            MetricsSpec::parse("flows-to-world:synonly")
                .unwrap_err()
                .to_string()
                .ends_with("labelsContext, any-drop, port, syn-only)")
        );
    }
}
