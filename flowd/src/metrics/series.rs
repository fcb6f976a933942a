//! A metric family with a cap on its number of series and an index of when
//! each series was last updated (for idle expiry and pod deletion).
//!
//! Label values come from traffic (IPs, pod names, DNS names), so without a
//! cap a scan or a DNS flood would grow memory without bound — the
//! cardinality problem Hubble users report. A refused series is counted in
//! `flowd_metrics_series_refused_total{metric}`, never silently lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::context::LabelSet;

pub struct Series<M, C = fn() -> M> {
    pub(crate) name: &'static str,
    pub(crate) family: Family<LabelSet, M, C>,
    index: Mutex<HashMap<LabelSet, Instant, ahash::RandomState>>,
    max: usize,
    refused: Counter,
    expired: Counter,
}

impl<M, C: MetricConstructor<M>> Series<M, C> {
    pub fn new(
        name: &'static str,
        family: Family<LabelSet, M, C>,
        max: usize,
        refused: Counter,
        expired: Counter,
    ) -> Self {
        Series {
            name,
            family,
            index: Mutex::new(HashMap::default()),
            max,
            refused,
            expired,
        }
    }

    /// Runs `f` on the series of `labels`, creating it if the cap allows.
    pub fn with(&self, labels: &LabelSet, now: Instant, f: impl FnOnce(&M)) {
        // Held across the family update so that expiry cannot remove the
        // series between the index check and the update.
        let mut idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        match idx.get_mut(labels) {
            Some(t) => *t = now,
            None => {
                if idx.len() >= self.max {
                    self.refused.inc();
                    return;
                }
                idx.insert(labels.clone(), now);
            }
        }
        f(&self.family.get_or_create(labels));
    }

    /// Removes the series for which `remove` is true; returns how many.
    pub fn remove_where(&self, mut remove: impl FnMut(&LabelSet, Instant) -> bool) -> usize {
        let mut idx = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        idx.retain(|labels, t| {
            if remove(labels, *t) {
                self.family.remove(labels);
                n += 1;
                false
            } else {
                true
            }
        });
        self.expired.inc_by(n as u64);
        n
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
