//! Label values of the context options (`sourceContext`, `labelsContext`, …),
//! following Hubble's rules: alternatives joined by `|` take the first
//! non-empty value; `labelsContext` labels come first, in a fixed order.

use flowd_proto::flow::{Endpoint, Flow, TrafficDirection};

use crate::options::metrics::{CONTEXT_LABELS, ContextId, ContextOptions};

/// A series' labels: names are static, values come from flows.
pub type LabelSet = Vec<(&'static str, String)>;

const KUBE_APISERVER: &str = "reserved:kube-apiserver";
const APP_LABELS: [&str; 3] = ["k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app="];

/// Appends the context labels of `flow` to `out`. With `invert`, source and
/// destination swap roles (for response flows, so that a series describes
/// the request's client → server).
pub fn push_labels(ctx: &ContextOptions, flow: &Flow, invert: bool, out: &mut LabelSet) {
    let (src, dst) = (flow.source.as_ref(), flow.destination.as_ref());
    let ip = flow.ip.as_ref();
    let (src_ip, dst_ip) = (
        ip.map(|i| i.source.as_str()).unwrap_or(""),
        ip.map(|i| i.destination.as_str()).unwrap_or(""),
    );
    let (s, d, sip, dip) = if invert {
        (dst, src, dst_ip, src_ip)
    } else {
        (src, dst, src_ip, dst_ip)
    };
    for &i in &ctx.labels {
        let name = CONTEXT_LABELS[i];
        let v = match name {
            "source_ip" => sip.to_string(),
            "source_pod" => s.map(|e| e.pod_name.clone()).unwrap_or_default(),
            "source_namespace" => s.map(|e| e.namespace.clone()).unwrap_or_default(),
            "source_workload" => workload(s),
            "source_app" => app(s),
            "destination_ip" => dip.to_string(),
            "destination_pod" => d.map(|e| e.pod_name.clone()).unwrap_or_default(),
            "destination_namespace" => d.map(|e| e.namespace.clone()).unwrap_or_default(),
            "destination_workload" => workload(d),
            "destination_app" => app(d),
            _ => direction(flow).to_string(),
        };
        out.push((name, v));
    }

    let dir = TrafficDirection::try_from(flow.traffic_direction).ok();
    let pick = |general: &[ContextId], egress: &[ContextId], ingress: &[ContextId]| match dir {
        Some(TrafficDirection::Ingress) if !ingress.is_empty() => ingress.to_vec(),
        Some(TrafficDirection::Egress) if !egress.is_empty() => egress.to_vec(),
        _ => general.to_vec(),
    };
    let first = |ids: Vec<ContextId>, source: bool| {
        ids.into_iter()
            .map(|id| context_value(id, flow, source))
            .find(|v| !v.is_empty())
            .unwrap_or_default()
    };
    let mut sv = first(
        pick(&ctx.source, &ctx.source_egress, &ctx.source_ingress),
        true,
    );
    let mut dv = first(
        pick(
            &ctx.destination,
            &ctx.destination_egress,
            &ctx.destination_ingress,
        ),
        false,
    );
    if invert {
        std::mem::swap(&mut sv, &mut dv);
    }
    if !ctx.source.is_empty() {
        out.push(("source", sv));
    }
    if !ctx.destination.is_empty() {
        out.push(("destination", dv));
    }
}

/// `traffic_direction` label value: `ingress`, `egress` or `unknown`.
pub fn direction(flow: &Flow) -> &'static str {
    match TrafficDirection::try_from(flow.traffic_direction) {
        Ok(TrafficDirection::Ingress) => "ingress",
        Ok(TrafficDirection::Egress) => "egress",
        _ => "unknown",
    }
}

fn workload(ep: Option<&Endpoint>) -> String {
    ep.and_then(|e| e.workloads.first())
        .map(|w| w.name.clone())
        .unwrap_or_default()
}

fn app(ep: Option<&Endpoint>) -> String {
    let Some(ep) = ep else {
        return String::new();
    };
    for l in &ep.labels {
        for prefix in APP_LABELS {
            if let Some(v) = l.strip_prefix(prefix)
                && !v.is_empty()
            {
                return v.to_string();
            }
        }
    }
    String::new()
}

fn reserved_identity(ep: Option<&Endpoint>) -> String {
    let Some(ep) = ep else {
        return String::new();
    };
    if ep.labels.iter().any(|l| l == KUBE_APISERVER) {
        return KUBE_APISERVER.to_string();
    }
    ep.labels
        .iter()
        .find(|l| l.starts_with("reserved:"))
        .cloned()
        .unwrap_or_default()
}

/// Pod name without the generated suffixes of its ReplicaSet / Pod
/// (Hubble's `^(.+?)(-[a-z0-9]+){1,2}$` → `$1`).
pub fn shorten_pod_name(name: &str) -> String {
    let seg_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let parts: Vec<&str> = name.split('-').collect();
    let mut cut = 0;
    while cut < 2 && cut + 1 < parts.len() && seg_ok(parts[parts.len() - 1 - cut]) {
        cut += 1;
    }
    if cut == 0 {
        return name.to_string();
    }
    let keep = parts[..parts.len() - cut].join("-");
    if keep.is_empty() {
        // The lazy prefix needs at least one character.
        return name.to_string();
    }
    keep
}

fn context_value(id: ContextId, flow: &Flow, source: bool) -> String {
    let ep = if source {
        flow.source.as_ref()
    } else {
        flow.destination.as_ref()
    };
    let ns_prefixed = |name: String| match ep {
        Some(e) if !e.namespace.is_empty() => format!("{}/{name}", e.namespace),
        _ => name,
    };
    match id {
        ContextId::Namespace => ep.map(|e| e.namespace.clone()).unwrap_or_default(),
        ContextId::Identity => ep.map(|e| e.labels.join(",")).unwrap_or_default(),
        ContextId::Pod => ns_prefixed(ep.map(|e| e.pod_name.clone()).unwrap_or_default()),
        ContextId::PodShort => ns_prefixed(
            ep.map(|e| shorten_pod_name(&e.pod_name))
                .unwrap_or_default(),
        ),
        ContextId::PodName => ep.map(|e| e.pod_name.clone()).unwrap_or_default(),
        ContextId::Dns => {
            if source {
                flow.source_names.join(",")
            } else {
                flow.destination_names.join(",")
            }
        }
        ContextId::Ip => flow
            .ip
            .as_ref()
            .map(|i| {
                if source {
                    i.source.clone()
                } else {
                    i.destination.clone()
                }
            })
            .unwrap_or_default(),
        ContextId::ReservedIdentity => reserved_identity(ep),
        ContextId::WorkloadName => workload(ep),
        ContextId::App => app(ep),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pod_names() {
        assert_eq!(shorten_pod_name("frontend-7d4f8b9c6-x2x9z"), "frontend");
        assert_eq!(
            shorten_pod_name("order-service-5b7c9-abcde"),
            "order-service"
        );
        assert_eq!(shorten_pod_name("coredns-0"), "coredns");
        assert_eq!(shorten_pod_name("a-b-c-d"), "a-b");
        assert_eq!(shorten_pod_name("standalone"), "standalone");
        assert_eq!(shorten_pod_name("Upper-Case"), "Upper-Case");
    }
}
