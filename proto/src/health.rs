//! gRPC health (`grpc.health.v1.Health`) as Hubble's servers answer it.
//!
//! `hubble status` calls `Health/Check` with the service
//! [`HUBBLE_OBSERVER_SERVICE`] before anything else and stops unless it is
//! SERVING. Cilium's agent and relay register that name and the overall
//! status `""`; flowd and the relay also answer for the Observer service's
//! own gRPC name, [`OBSERVER_SERVICE`]. Every name carries the same status:
//! the server either can serve flows or it cannot.
//!
//! A [`HealthStatus`] starts NOT_SERVING; its owner flips it when the
//! server is ready and back when it is shutting down, and [`HealthStatus::close`]
//! ends open `Health/Watch` streams (so a graceful server shutdown does not
//! wait for them).
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

/// The service name Hubble's CLI checks (`hubble status`).
pub const HUBBLE_OBSERVER_SERVICE: &str = "hubble.server.Observer";
/// The gRPC name of the Observer service (`observer.Observer`).
pub const OBSERVER_SERVICE: &str = "observer.Observer";
/// Every name answered, the overall status `""` first.
pub const SERVICE_NAMES: [&str; 3] = ["", HUBBLE_OBSERVER_SERVICE, OBSERVER_SERVICE];

/// The status every [`SERVICE_NAMES`] entry reports.
#[derive(Clone, Debug)]
pub struct HealthStatus {
    reporter: HealthReporter,
}

impl HealthStatus {
    /// All names NOT_SERVING, and the service to mount next to the Observer.
    pub async fn new() -> (Self, HealthServer<impl Health>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let status = Self { reporter };
        status.set(false).await;
        (status, server)
    }

    /// SERVING (`true`) or NOT_SERVING for every name.
    pub async fn set(&self, serving: bool) {
        let s = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in SERVICE_NAMES {
            self.reporter.set_service_status(name, s).await;
        }
    }

    /// Unregisters every name: open Watch streams end, Check answers
    /// NOT_FOUND. For the very end of a shutdown.
    pub async fn close(&self) {
        let mut r = self.reporter.clone();
        for name in SERVICE_NAMES {
            r.clear_service_status(name).await;
        }
    }
}
