//! The counting rule: which flow records the per-flow metrics count, so that
//! nothing is counted twice in a cluster (`flowd-metrics-count-once`, on by
//! default).
//!
//! A packet between two pods crosses up to four observation points: the
//! sender pod's veth (`FROM_ENDPOINT`), the nodes' uplinks (`TO_NETWORK`,
//! `FROM_NETWORK`) and the receiver pod's veth (`TO_ENDPOINT`), on one node
//! or on two nodes whose `/metrics` are scraped separately. Every one yields
//! a record (as in Hubble); the rule picks, cluster-wide:
//!
//! **Each event is counted once per reporter.**
//! * Metrics with a `reporter` label (`http`, `httpV2`, `grpc`) have two reporters,
//!   the exchange's two pods. Each counts the records observed at its own
//!   interface: `client` where `traffic_direction` is EGRESS, `server` where
//!   it is INGRESS (for L7 records that is the direction of the exchange
//!   relative to the observed pod). So an exchange between two pods counts
//!   once with `reporter="client"` and once with `reporter="server"`, on one
//!   node or across nodes; a peer that is not a pod (world, host) reports
//!   nothing. Uplink records count only when neither end is a pod
//!   (`reporter="unknown"`), since no pod interface sees them.
//! * Every other per-flow metric (`dns`, `tcp`, `icmp`, `port-distribution`,
//!   `flows-to-world`) has one reporter: the first observation point on the packet's path. That
//!   is the sender pod's veth; the receiver pod's veth only when the sender is
//!   not a pod; an uplink only when neither end is a pod. A request and its
//!   reply are separate packets, each counted once (a DNS query where the
//!   client sends it, the response where the server sends it).
//! * `flow` (`hubble_flows_processed_total`, which equals what GetFlows
//!   returns; its `subtype` tells the observation points apart) and `drop`
//!   (a packet is dropped once) count every record.
//!
//! "A pod" is any pod flowd knows, on this node or another (enrichment names
//! it): a packet from a pod on another node is counted by that node's flowd.
//! A Service ClusterIP counts as a pod (its backends are pods: a reply seen
//! with the ClusterIP as source was counted where the backend sent it).
//! Cluster-wide "once" therefore assumes flowd runs on every node and knows
//! every pod (`flowd-kubernetes: all`, or a manifests directory of all pods);
//! a pod it does not know is counted like the world, at both ends.
//!
//! Records without an observation point (an interface flowd does not know)
//! are counted. With `flowd-metrics-count-once: false` every record counts at
//! every observation point, as Hubble does.

use flowd_proto::flow::{Endpoint, Flow, TraceObservationPoint, TrafficDirection};

/// The `reporter` label of the http and grpc metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Client,
    Server,
    Unknown,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Client => "client",
            Reporter::Server => "server",
            Reporter::Unknown => "unknown",
        }
    }

    /// The side a record's `traffic_direction` names.
    pub fn of_direction(flow: &Flow) -> Reporter {
        match TrafficDirection::try_from(flow.traffic_direction) {
            Ok(TrafficDirection::Egress) => Reporter::Client,
            Ok(TrafficDirection::Ingress) => Reporter::Server,
            _ => Reporter::Unknown,
        }
    }
}

/// Where a record was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Leaving a pod (its veth's ingress hook).
    FromPod,
    /// Entering a pod.
    ToPod,
    /// An uplink.
    Network,
    /// Not known (no enrichment, or an interface flowd does not know).
    Unknown,
}

fn point(flow: &Flow) -> Point {
    match TraceObservationPoint::try_from(flow.trace_observation_point) {
        Ok(TraceObservationPoint::FromEndpoint) => Point::FromPod,
        Ok(TraceObservationPoint::ToEndpoint) => Point::ToPod,
        Ok(TraceObservationPoint::FromNetwork | TraceObservationPoint::ToNetwork) => Point::Network,
        _ => Point::Unknown,
    }
}

/// Whether this end of the flow is (or stands for) a pod some flowd observes.
fn is_pod(ep: Option<&Endpoint>, service: bool) -> bool {
    ep.is_some_and(|e| !e.pod_name.is_empty()) || service
}

fn source_is_pod(flow: &Flow) -> bool {
    is_pod(flow.source.as_ref(), flow.source_service.is_some())
}

fn destination_is_pod(flow: &Flow) -> bool {
    is_pod(
        flow.destination.as_ref(),
        flow.destination_service.is_some(),
    )
}

/// The rule for metrics without a reporter label (dns, tcp, icmp,
/// port-distribution, flows-to-world): whether this record is the packet's
/// first observation point.
pub fn counts_once(flow: &Flow) -> bool {
    match point(flow) {
        Point::FromPod | Point::Unknown => true,
        Point::ToPod => !source_is_pod(flow),
        Point::Network => !source_is_pod(flow) && !destination_is_pod(flow),
    }
}

/// The rule for metrics with a reporter label (http, httpV2, grpc): the reporter
/// this record counts for, or `None` when it is not counted.
pub fn counting_reporter(flow: &Flow) -> Option<Reporter> {
    match point(flow) {
        Point::FromPod | Point::ToPod | Point::Unknown => Some(Reporter::of_direction(flow)),
        Point::Network if !source_is_pod(flow) && !destination_is_pod(flow) => {
            Some(Reporter::Unknown)
        }
        Point::Network => None,
    }
}
