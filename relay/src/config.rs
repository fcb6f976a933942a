//! Run-time settings of the relay (the binary fills them from flags).
use std::time::Duration;

use crate::tls::ClientTls;

/// Exponential backoff between reconnection attempts to a failed peer.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay after a failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 = first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Flows held per node while waiting for other nodes (the sort buffer).
    pub sort_buffer_len: usize,
    /// Longest time a flow waits for slower nodes before it is sent anyway.
    pub drain_timeout: Duration,
    /// Responses queued per client; in follow mode, more are dropped and
    /// reported as a LostEvent.
    pub client_buffer: usize,
    /// Non-follow requests: a node that sends nothing for this long is
    /// abandoned (NODE_ERROR) so the request can finish.
    pub node_idle_timeout: Duration,
    /// Timeout of unary calls to nodes and of opening a flow stream.
    pub node_rpc_timeout: Duration,
    /// Timeout of connecting to a node.
    pub connect_timeout: Duration,
    /// How often a connected node is probed (ServerStatus).
    pub health_check_interval: Duration,
    /// Reconnection backoff.
    pub backoff: Backoff,
    /// TLS towards the nodes (and the peer service); None = plain text.
    pub peer_tls: Option<ClientTls>,
    /// Version reported by ServerStatus.
    pub version: String,
    /// Longest time from the shutdown signal to the end of [`crate::server::serve`]:
    /// streams end at once with UNAVAILABLE, then connections still open
    /// (idle clients, clients that do not read) are closed when it ends.
    pub shutdown_grace: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            sort_buffer_len: 100,
            drain_timeout: Duration::from_secs(1),
            client_buffer: 1024,
            node_idle_timeout: Duration::from_secs(10),
            node_rpc_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            health_check_interval: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(90),
            },
            peer_tls: None,
            version: format!("flowd-relay {}", env!("CARGO_PKG_VERSION")),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 700, 700, 700]);
    }
}
