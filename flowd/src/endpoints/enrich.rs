//! Enrichment of flows with endpoints, services, node name and the
//! observation point.
//!
//! Observation points. flowd's TC programs sit on the host side of each pod's
//! veth. The host side's *ingress* hook sees packets *leaving* the pod: Hubble
//! reports those `FROM_ENDPOINT` with traffic direction `EGRESS` (for that
//! pod). Its *egress* hook sees packets *entering* the pod: `TO_ENDPOINT`,
//! `INGRESS`. As in Hubble, the direction is that of the connection: a reply
//! (`is_reply` true) has it inverted, so a server's response leaving the
//! server pod is still `INGRESS` (the server's ingress connection). On the
//! uplink the ingress hook (TC or XDP) is `FROM_NETWORK` and egress
//! `TO_NETWORK`, without a direction.
//!
//! A packet between two pods on one node crosses both veths: it gives one
//! flow per observation point, as Hubble does. Which of them metrics count
//! is the rule in [`crate::metrics::counting`].

use std::net::IpAddr;

use flowd_proto::flow::{Flow, Service as ProtoService, TraceObservationPoint, TrafficDirection};
use flowd_proto::monitor::{MESSAGE_TYPE_TRACE, trace_sub_type};

use super::store::{EndpointStore, InterfaceKind, Snapshot};

/// The TC/XDP hook that saw the packet (`flowd_common::DIR_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    /// From the event's direction byte; `None` for an unknown value.
    pub fn from_kernel(dir: u8) -> Option<Hook> {
        match dir {
            flowd_common::DIR_INGRESS => Some(Hook::Ingress),
            flowd_common::DIR_EGRESS => Some(Hook::Egress),
            _ => None,
        }
    }
}

fn ip_of(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

impl EndpointStore {
    /// Fills `source`, `destination`, `source_service`,
    /// `destination_service`, `node_name` and `node_labels` (when empty), the interface name,
    /// `traffic_direction` and `trace_observation_point`. Lock-free.
    pub fn enrich(&self, flow: &mut Flow, hook: Option<Hook>) {
        enrich_with(&self.snapshot(), flow, hook);
    }
}

/// [`EndpointStore::enrich`] on a given snapshot (load it once per batch).
pub fn enrich_with(snap: &Snapshot, flow: &mut Flow, hook: Option<Hook>) {
    if flow.node_name.is_empty() {
        flow.node_name.clone_from(&snap.node_name);
    }
    if flow.node_labels.is_empty() {
        flow.node_labels.clone_from(&snap.node_labels);
    }
    let (src, dst) = match &flow.ip {
        Some(ip) => (ip_of(&ip.source), ip_of(&ip.destination)),
        None => (None, None),
    };
    if let Some(ip) = src {
        flow.source = Some(snap.endpoint(ip).to_proto(&snap.cluster_name));
        flow.source_service = snap.service(ip).map(|k| ProtoService {
            name: k.name.clone(),
            namespace: k.namespace.clone(),
        });
    }
    if let Some(ip) = dst {
        flow.destination = Some(snap.endpoint(ip).to_proto(&snap.cluster_name));
        flow.destination_service = snap.service(ip).map(|k| ProtoService {
            name: k.name.clone(),
            namespace: k.namespace.clone(),
        });
    }
    let Some(iface) = flow.interface.as_mut() else {
        return;
    };
    let Some(known) = snap.interface(iface.index) else {
        return;
    };
    if iface.name.is_empty() {
        iface.name.clone_from(&known.name);
    }
    let (point, direction) = match (&known.kind, hook) {
        (InterfaceKind::PodVeth { .. }, Some(Hook::Ingress)) => (
            TraceObservationPoint::FromEndpoint,
            TrafficDirection::Egress,
        ),
        (InterfaceKind::PodVeth { .. }, Some(Hook::Egress)) => {
            (TraceObservationPoint::ToEndpoint, TrafficDirection::Ingress)
        }
        (InterfaceKind::Uplink, Some(Hook::Ingress)) => (
            TraceObservationPoint::FromNetwork,
            TrafficDirection::Unknown,
        ),
        (InterfaceKind::Uplink, Some(Hook::Egress)) => {
            (TraceObservationPoint::ToNetwork, TrafficDirection::Unknown)
        }
        (_, None) => return,
    };
    let reply = flow.is_reply.as_ref().is_some_and(|b| b.value);
    let direction = match (direction, reply) {
        (TrafficDirection::Egress, true) => TrafficDirection::Ingress,
        (TrafficDirection::Ingress, true) => TrafficDirection::Egress,
        (d, _) => d,
    };
    flow.trace_observation_point = point as i32;
    flow.traffic_direction = direction as i32;
    // A trace event's sub type is its observation point (Cilium's
    // TraceToLxc = 0 … TraceToCrypto = 13), which `--type trace:<point>`
    // selects; L7 and drop events keep theirs.
    if let Some(et) = flow.event_type.as_mut()
        && et.r#type == MESSAGE_TYPE_TRACE
        && let Some(sub) = trace_sub_type(point)
    {
        et.sub_type = sub;
    }
}
