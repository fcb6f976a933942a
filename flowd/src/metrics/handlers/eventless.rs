//! Handlers of Hubble's catalogue whose events flowd never produces:
//! `policy` (policy verdicts: flowd enforces no network policy, and its L7
//! records are observations, not an L7 policy's decisions) and `kafka`
//! (flowd parses no Kafka). `hubble-metrics` values copied from Cilium's
//! docs and demos name them, so they are accepted; their families are
//! exposed with Hubble's names and types and no samples (`# HELP` and
//! `# TYPE` only: a family without series is otherwise left out of a scrape,
//! by Hubble too), so a scrape shows they exist and Prometheus records their
//! metadata, and the daemon logs [`describe`] once at start.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::options::metrics::{HandlerKind, HandlerSpec, MetricsSpec};

/// Exposed names of `policy`'s families and the labels Hubble gives them
/// before the context labels.
pub const POLICY: [(&str, &[&str]); 1] = [(
    "hubble_policy_verdicts_total",
    &["direction", "match", "action"],
)];

/// Exposed names of `kafka`'s families and the labels Hubble gives them
/// after the context labels.
pub const KAFKA: [(&str, &[&str]); 2] = [
    (
        "hubble_kafka_requests_total",
        &["topic", "api_key", "error_code", "reporter"],
    ),
    (
        "hubble_kafka_request_duration_seconds",
        &["topic", "api_key", "reporter"],
    ),
];

/// Registers the families of eventless handler `spec`: each scrape shows
/// their descriptors and no samples.
pub(super) fn register(registry: &mut Registry, spec: &HandlerSpec) {
    let families: Vec<(&'static str, &'static str, MetricType)> = match spec.kind {
        HandlerKind::Policy => vec![(
            "hubble_policy_verdicts",
            "Total number of Cilium network policy verdicts",
            MetricType::Counter,
        )],
        HandlerKind::Kafka => vec![
            (
                "hubble_kafka_requests",
                "Count of Kafka requests by topic",
                MetricType::Counter,
            ),
            (
                "hubble_kafka_request_duration_seconds",
                "Histogram of Kafka request duration by topic",
                MetricType::Histogram,
            ),
        ],
        _ => return,
    };
    registry.register_collector(Box::new(EmptyFamilies(families)));
}

/// Families that never have a sample: descriptors only.
#[derive(Debug)]
struct EmptyFamilies(Vec<(&'static str, &'static str, MetricType)>);

impl Collector for EmptyFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, typ) in &self.0 {
            encoder.encode_descriptor(name, help, None, *typ)?;
        }
        Ok(())
    }
}

/// The families of an eventless handler with their full label names, in
/// Hubble's order.
pub fn families(spec: &HandlerSpec) -> Vec<(&'static str, Vec<&'static str>)> {
    let ctx = spec.context.label_names();
    match spec.kind {
        HandlerKind::Policy => POLICY
            .iter()
            .map(|(name, own)| (*name, own.iter().copied().chain(ctx.clone()).collect()))
            .collect(),
        HandlerKind::Kafka => KAFKA
            .iter()
            .map(|(name, own)| {
                (
                    *name,
                    ctx.iter().copied().chain(own.iter().copied()).collect(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// One line for the start-up log naming the enabled handlers flowd has no
/// events for and their (empty) families; `None` when there are none.
pub fn describe(spec: &MetricsSpec) -> Option<String> {
    let parts: Vec<String> = spec
        .handlers
        .iter()
        .filter(|h| !h.kind.has_events())
        .map(|h| {
            let fams: Vec<String> = families(h)
                .into_iter()
                .map(|(name, labels)| format!("{name}{{{}}}", labels.join(",")))
                .collect();
            format!("{} ({})", h.kind, fams.join(", "))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_families_with_hubble_labels() {
        let spec = MetricsSpec::parse(
            "flow policy:sourceContext=app|workload-name|pod|reserved-identity;destinationContext=app|workload-name|pod|dns|reserved-identity;labelsContext=source_namespace,destination_namespace kafka:labelsContext=source_namespace",
        )
        .unwrap();
        assert_eq!(
            describe(&spec).unwrap(),
            "policy (hubble_policy_verdicts_total{direction,match,action,source_namespace,destination_namespace,source,destination}); \
             kafka (hubble_kafka_requests_total{source_namespace,topic,api_key,error_code,reporter}, \
             hubble_kafka_request_duration_seconds{source_namespace,topic,api_key,reporter})"
        );
        assert_eq!(describe(&MetricsSpec::parse("flow drop").unwrap()), None);
    }
}
