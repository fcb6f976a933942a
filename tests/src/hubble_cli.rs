//! Requests shaped exactly as the stock Hubble CLI (v1.19) sends them, so
//! that compatibility tests talk to flowd and the relay the way `hubble`
//! does without depending on the `hubble` binary.
//!
//! What the CLI sends (hubble/cmd/observe, hubble/cmd/status, hubble/cmd/list
//! in cilium/cilium):
//! - `hubble observe`: `GetFlowsRequest` with `number` 20 unless `--last N`,
//!   `--first N` (`first: true`), `--all` (`u64::MAX`) or `--follow` (0) say
//!   otherwise; the filters as a whitelist/blacklist built from a "left" and
//!   a "right" `FlowFilter` (either-side flags such as `--namespace` put the
//!   source side in the left one and the destination side in the right one;
//!   other flags go to both; equal filters are sent once); and, in the
//!   compact (default), dict and table output modes, the default field mask
//!   [`DEFAULT_FIELD_MASK`] (`-o json`/`jsonpb` send none).
//! - `hubble status`: `grpc.health.v1.Health/Check` for
//!   [`HEALTH_SERVICE`], then, if SERVING, `ServerStatus`.
//! - `hubble list nodes` / `list namespaces`: `GetNodes {}` / `GetNamespaces {}`.
//!
//! ```
//! use flowd_tests::hubble_cli::{Observe, Output};
//! // hubble observe --all-namespaces -t trace:from-endpoint -o dict
//! let req = Observe::new()
//!     .all_namespaces()
//!     .event_type("trace:from-endpoint")
//!     .output(Output::Dict)
//!     .request();
//! assert_eq!(req.number, 20);
//! assert_eq!(req.whitelist.len(), 2);
//! ```
use flowd_proto::Timestamp;
use flowd_proto::flow::{EventTypeFilter, FlowFilter};
use flowd_proto::observer::{
    GetFlowsRequest, GetNamespacesRequest, GetNodesRequest, ServerStatusRequest,
};
use flowd_proto::pbjson_types::FieldMask;
use tonic_health::pb::HealthCheckRequest;

/// The field mask of `hubble observe` in the compact, dict and table modes
/// (hubble/pkg/defaults `FieldMask`), in the CLI's order.
pub const DEFAULT_FIELD_MASK: [&str; 20] = [
    "time",
    "verdict",
    "ethernet",
    "IP",
    "l4",
    "source.identity",
    "source.namespace",
    "source.pod_name",
    "destination.identity",
    "destination.namespace",
    "destination.pod_name",
    "Type",
    "node_name",
    "l7",
    "event_type",
    "source_service",
    "destination_service",
    "is_reply",
    "Summary",
    "ip_trace_id",
];

/// The service `hubble status` asks `grpc.health.v1.Health/Check` about.
pub const HEALTH_SERVICE: &str = "hubble.server.Observer";

/// Flows `hubble observe` asks for without `--last`/`--first`/`--all`.
pub const DEFAULT_LAST: u64 = 20;

/// `-o`: which output mode, which decides the field mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The default.
    Compact,
    Dict,
    Table,
    /// `json` and `jsonpb`: the whole flow, no mask.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Select {
    Default,
    Last(u64),
    First(u64),
    All,
}

/// One `hubble observe` command line, as a request.
#[derive(Clone, Debug)]
pub struct Observe {
    output: Output,
    select: Select,
    follow: bool,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    black_left: Option<FlowFilter>,
    black_right: Option<FlowFilter>,
}

impl Default for Observe {
    fn default() -> Self {
        Self::new()
    }
}

/// The Cilium monitor message type of a `-t` name.
fn message_type(name: &str) -> Option<i32> {
    Some(match name {
        "drop" => 1,
        "capture" => 3,
        "trace" => 4,
        "policy-verdict" => 5,
        "trace-sock" => 7,
        "l7" => 129,
        _ => return None,
    })
}

/// Cilium's trace observation points (pkg/monitor/api TraceObservationPoints).
fn trace_point(name: &str) -> Option<i32> {
    Some(match name {
        "to-endpoint" => 0,
        "to-proxy" => 1,
        "to-host" => 2,
        "to-stack" => 3,
        "to-overlay" => 4,
        "from-endpoint" => 5,
        "from-proxy" => 6,
        "from-host" => 7,
        "from-stack" => 8,
        "from-overlay" => 9,
        "from-network" => 10,
        "to-network" => 11,
        "from-crypto" => 12,
        "to-crypto" => 13,
        _ => return None,
    })
}

impl Observe {
    /// `hubble observe` with no flags.
    pub fn new() -> Self {
        Self {
            output: Output::Compact,
            select: Select::Default,
            follow: false,
            since: None,
            until: None,
            left: None,
            right: None,
            black_left: None,
            black_right: None,
        }
    }

    /// `-o <mode>`.
    pub fn output(mut self, o: Output) -> Self {
        self.output = o;
        self
    }

    /// `--last N`.
    pub fn last(mut self, n: u64) -> Self {
        self.select = Select::Last(n);
        self
    }

    /// `--first N`.
    pub fn first(mut self, n: u64) -> Self {
        self.select = Select::First(n);
        self
    }

    /// `--all`.
    pub fn all(mut self) -> Self {
        self.select = Select::All;
        self
    }

    /// `--follow`.
    pub fn follow(mut self) -> Self {
        self.follow = true;
        self
    }

    /// `--since` (already converted to a timestamp, as the CLI does).
    pub fn since(mut self, t: Timestamp) -> Self {
        self.since = Some(t);
        self
    }

    /// `--until`.
    pub fn until(mut self, t: Timestamp) -> Self {
        self.until = Some(t);
        self
    }

    /// A flag that applies to both filters (`--verdict`, `--protocol`, …):
    /// `f` edits each. The other flags of the CLI are built on this one.
    pub fn both(mut self, f: impl Fn(&mut FlowFilter)) -> Self {
        f(self.left.get_or_insert_with(FlowFilter::default));
        f(self.right.get_or_insert_with(FlowFilter::default));
        self
    }

    /// An either-side flag (`--ip`, `--pod`, `--namespace`, …): `source`
    /// edits the left filter, `destination` the right one.
    pub fn either(
        mut self,
        source: impl Fn(&mut FlowFilter),
        destination: impl Fn(&mut FlowFilter),
    ) -> Self {
        source(self.left.get_or_insert_with(FlowFilter::default));
        destination(self.right.get_or_insert_with(FlowFilter::default));
        self
    }

    /// `--not` followed by a flag that applies to both filters.
    pub fn not_both(mut self, f: impl Fn(&mut FlowFilter)) -> Self {
        f(self.black_left.get_or_insert_with(FlowFilter::default));
        f(self.black_right.get_or_insert_with(FlowFilter::default));
        self
    }

    /// `--not` followed by an either-side flag.
    pub fn not_either(
        mut self,
        source: impl Fn(&mut FlowFilter),
        destination: impl Fn(&mut FlowFilter),
    ) -> Self {
        source(self.black_left.get_or_insert_with(FlowFilter::default));
        destination(self.black_right.get_or_insert_with(FlowFilter::default));
        self
    }

    /// `-t TYPE[:SUBTYPE]` (`trace:from-endpoint`, `l7`, `drop`, `4:5`).
    ///
    /// # Panics
    /// On a type or sub type the CLI would refuse (a test's own mistake).
    pub fn event_type(self, spec: &str) -> Self {
        let (ty, sub) = match spec.split_once(':') {
            Some((t, s)) => (t, Some(s)),
            None => (spec, None),
        };
        let r#type = message_type(ty)
            .or_else(|| ty.parse().ok())
            .unwrap_or_else(|| panic!("hubble observe -t: unknown type {ty:?}"));
        let sub_type = sub.map(|s| {
            (r#type == 4)
                .then(|| trace_point(s))
                .flatten()
                .or_else(|| s.parse().ok())
                .unwrap_or_else(|| panic!("hubble observe -t: unknown sub type {s:?}"))
        });
        let filter = EventTypeFilter {
            r#type,
            match_sub_type: sub_type.is_some(),
            sub_type: sub_type.unwrap_or(0),
        };
        self.both(move |f| f.event_type.push(filter))
    }

    /// `--namespace NS`: the source or the destination in `NS`.
    pub fn namespace(self, ns: &str) -> Self {
        let pod = format!("{ns}/");
        self.either(
            |f| f.source_pod.push(pod.clone()),
            |f| f.destination_pod.push(pod.clone()),
        )
    }

    /// `--all-namespaces`: a pod on either side, in any namespace (`/`).
    pub fn all_namespaces(self) -> Self {
        self.either(
            |f| f.source_pod.push("/".into()),
            |f| f.destination_pod.push("/".into()),
        )
    }

    /// `--verdict V` (`FORWARDED`, `DROPPED`, …, as the enum's number).
    pub fn verdict(self, v: i32) -> Self {
        self.both(move |f| f.verdict.push(v))
    }

    fn masked(&self) -> bool {
        self.output != Output::Json
    }

    /// The `GetFlowsRequest` the CLI sends.
    pub fn request(&self) -> GetFlowsRequest {
        let number = match self.select {
            Select::Last(n) | Select::First(n) => n,
            Select::All => u64::MAX,
            Select::Default if self.follow || self.since.is_some() || self.until.is_some() => 0,
            Select::Default => DEFAULT_LAST,
        };
        GetFlowsRequest {
            number,
            first: matches!(self.select, Select::First(_)),
            follow: self.follow,
            whitelist: pair(&self.left, &self.right),
            blacklist: pair(&self.black_left, &self.black_right),
            since: self.since,
            // The CLI drops --until when following.
            until: self.until.filter(|_| !self.follow),
            field_mask: self.masked().then(|| FieldMask {
                paths: DEFAULT_FIELD_MASK
                    .iter()
                    .map(|p| (*p).to_string())
                    .collect(),
            }),
            ..Default::default()
        }
    }
}

/// The CLI's filter pair: nothing, one filter when both sides are equal,
/// else left then right.
fn pair(left: &Option<FlowFilter>, right: &Option<FlowFilter>) -> Vec<FlowFilter> {
    match (left, right) {
        (None, None) => Vec::new(),
        (Some(l), Some(r)) if l == r => vec![l.clone()],
        (l, r) => l.iter().chain(r.iter()).cloned().collect(),
    }
}

/// `hubble status`, first call: the health check.
pub fn health_check_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: HEALTH_SERVICE.to_string(),
    }
}

/// `hubble status`, second call.
pub fn server_status_request() -> ServerStatusRequest {
    ServerStatusRequest {}
}

/// `hubble list nodes`.
pub fn get_nodes_request() -> GetNodesRequest {
    GetNodesRequest {}
}

/// `hubble list namespaces`.
pub fn get_namespaces_request() -> GetNamespacesRequest {
    GetNamespacesRequest {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `hubble observe … --print-raw-filters` of the v1.19.4 CLI, as JSON.
    fn filters(json: &[&str]) -> Vec<FlowFilter> {
        json.iter()
            .map(|j| serde_json::from_str(j).expect("FlowFilter JSON"))
            .collect()
    }

    #[test]
    fn filters_are_the_clis() {
        let cases: Vec<(Observe, Vec<&str>, Vec<&str>)> = vec![
            (
                Observe::new().all_namespaces(),
                vec![r#"{"source_pod":["/"]}"#, r#"{"destination_pod":["/"]}"#],
                vec![],
            ),
            (
                Observe::new().event_type("trace:from-endpoint"),
                vec![r#"{"event_type":[{"type":4,"match_sub_type":true,"sub_type":5}]}"#],
                vec![],
            ),
            (
                Observe::new().event_type("trace:to-endpoint"),
                vec![r#"{"event_type":[{"type":4,"match_sub_type":true}]}"#],
                vec![],
            ),
            (
                Observe::new().event_type("l7"),
                vec![r#"{"event_type":[{"type":129}]}"#],
                vec![],
            ),
            (
                Observe::new()
                    .event_type("trace:from-endpoint")
                    .all_namespaces(),
                vec![
                    r#"{"source_pod":["/"],"event_type":[{"type":4,"match_sub_type":true,"sub_type":5}]}"#,
                    r#"{"destination_pod":["/"],"event_type":[{"type":4,"match_sub_type":true,"sub_type":5}]}"#,
                ],
                vec![],
            ),
            (
                Observe::new().namespace("ecommerce"),
                vec![
                    r#"{"source_pod":["ecommerce/"]}"#,
                    r#"{"destination_pod":["ecommerce/"]}"#,
                ],
                vec![],
            ),
            (
                Observe::new().verdict(2),
                vec![r#"{"verdict":["DROPPED"]}"#],
                vec![],
            ),
            (
                Observe::new().not_either(
                    |f| f.source_pod.push("kube-system/".into()),
                    |f| f.destination_pod.push("kube-system/".into()),
                ),
                vec![],
                vec![
                    r#"{"source_pod":["kube-system/"]}"#,
                    r#"{"destination_pod":["kube-system/"]}"#,
                ],
            ),
        ];
        for (o, white, black) in cases {
            let r = o.request();
            assert_eq!(r.whitelist, filters(&white), "{o:?}");
            assert_eq!(r.blacklist, filters(&black), "{o:?}");
        }
    }

    #[test]
    fn number_follow_and_mask() {
        let r = Observe::new().request();
        assert_eq!((r.number, r.first, r.follow), (20, false, false));
        let mask = r.field_mask.expect("compact sends the default mask");
        assert_eq!(mask.paths.len(), 20);
        assert_eq!(mask.paths[19], "ip_trace_id");
        assert_eq!(Observe::new().follow().request().number, 0);
        assert_eq!(Observe::new().all().request().number, u64::MAX);
        let f = Observe::new().first(5).request();
        assert_eq!((f.number, f.first), (5, true));
        assert!(
            Observe::new()
                .output(Output::Json)
                .request()
                .field_mask
                .is_none()
        );
        for o in [Output::Dict, Output::Table] {
            assert!(Observe::new().output(o).request().field_mask.is_some());
        }
        assert_eq!(health_check_request().service, "hubble.server.Observer");
    }
}
