//! The relay's Observer service: request checks, then GetFlows handed to
//! the fan-out across the nodes (`fanout`); ServerStatus, GetNodes
//! and GetNamespaces asked of every node and aggregated; gRPC health that
//! follows the node connections; and [`serve`], with its shutdown.
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use flowd_proto::Timestamp;
use flowd_proto::fieldmask::FlowFieldMask;
use flowd_proto::health::HealthStatus;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::observer_server::{Observer, ObserverServer};
use flowd_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
    Tls,
};
use flowd_proto::pbjson_types::UInt32Value;
use flowd_proto::relay::NodeState;
use futures::future::join_all;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codegen::BoxStream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::config::RelayConfig;
use crate::fanout::{self, shutting_down};
use crate::pool::{NodeView, PeerState, Pool};
use crate::{Error, MAX_MESSAGE};

/// The relay's Observer API implementation.
#[derive(Clone)]
pub struct Relay {
    pool: Arc<Pool>,
    cfg: Arc<RelayConfig>,
    started: Instant,
    /// Turns true when the relay shuts down: every stream ends.
    closing: Arc<watch::Sender<bool>>,
}

impl Relay {
    /// A relay over the nodes of `pool`.
    pub fn new(pool: Arc<Pool>, cfg: Arc<RelayConfig>) -> Self {
        Self {
            pool,
            cfg,
            started: Instant::now(),
            closing: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Ends every GetFlows stream with UNAVAILABLE "the relay is shutting
    /// down", refuses new ones, and closes the connections to the nodes.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.pool.shutdown();
    }

    /// The node connections (their states, for the web UI).
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The relay's settings.
    pub(crate) fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// True once [`Relay::close`] was called.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Completes when [`Relay::close`] is called (other servers of the
    /// relay, e.g. the web UI, stop with it).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }
}

/// Serves the Observer API and gRPC health on `listener` until `shutdown`.
/// Health (every name of [`flowd_proto::health::SERVICE_NAMES`], among them
/// `hubble.server.Observer`, which `hubble status` checks, and the overall
/// `""`) is SERVING while at least one node is connected, NOT_SERVING while
/// every node is down and from the moment shutdown begins.
///
/// When `shutdown` completes, every stream ends with UNAVAILABLE "the relay
/// is shutting down" ([`Relay::close`]), the connections to the nodes are
/// closed, health turns NOT_SERVING and its Watch streams end, no connection
/// is accepted any more, and the function returns once the clients have
/// closed their connections or `shutdown_grace` has passed, whichever comes
/// first.
///
/// With `tls`, TLS is terminated by `flowd_tls` (certificates reloaded
/// for new connections).
pub async fn serve(
    relay: Relay,
    listener: TcpListener,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health, health_service) = HealthStatus::new().await;
    let pool = relay.pool.clone();
    let status = health.clone();
    let health_task = tokio::spawn(async move {
        let mut rx = pool.subscribe();
        let mut last = None;
        loop {
            let connected = pool
                .snapshot()
                .iter()
                .any(|n| n.state == PeerState::Connected);
            if last != Some(connected) {
                info!(serving = connected, "health");
                status.set(connected).await;
                last = Some(connected);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    // No Nagle: flows are small messages and latency matters (set on the
    // accepted TLS connections by flowd_tls).
    let grace = relay.cfg.shutdown_grace;
    let handle = relay.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(ObserverServer::new(relay).max_decoding_message_size(MAX_MESSAGE));
    let stopped = async {
        let _ = stopped.await;
    };
    // TLS and plain connections are different types: one boxed future.
    let mut server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + '_>,
    > = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
            flowd_tls::incoming(listener, tls, Default::default()),
            stopped,
        )),
        None => {
            Box::pin(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped))
        }
    };
    tokio::pin!(shutdown);
    let res = tokio::select! {
        r = &mut server => r,
        _ = &mut shutdown => {
            health_task.abort();
            health.set(false).await;
            handle.close();
            // Open Health/Watch streams would hold the server to the grace.
            health.close().await;
            let _ = stop.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(
                        grace = ?grace,
                        "connections still open at the end of the shutdown grace period (idle clients or clients that do not read); closing them"
                    );
                    Ok(())
                }
            }
        }
    };
    health_task.abort();
    Ok(res?)
}

/// What the relay can check in a GetFlows request without asking the nodes
/// (the nodes validate the filters; [`crate::fanout`] turns their refusals
/// into the call's error): the
/// field mask against the Flow descriptor and the time window, with the
/// messages flowd gives.
fn validate(req: &GetFlowsRequest) -> Result<(), Status> {
    if let Some(m) = &req.field_mask
        && !m.paths.is_empty()
    {
        FlowFieldMask::new(&m.paths)
            .map_err(|e| Status::invalid_argument(format!("field_mask: {e}")))?;
    }
    let nanos = |t: &Option<Timestamp>, field: &str| -> Result<Option<i128>, Status> {
        match t {
            Some(t) if !(0..1_000_000_000).contains(&t.nanos) => {
                Err(Status::invalid_argument(format!(
                    "{field}: invalid timestamp (nanos {} out of range)",
                    t.nanos
                )))
            }
            Some(t) => Ok(Some(t.as_unix_nanos())),
            None => Ok(None),
        }
    };
    if let (Some(s), Some(u)) = (nanos(&req.since, "since")?, nanos(&req.until, "until")?)
        && s > u
    {
        return Err(Status::invalid_argument("since: must not be after until"));
    }
    Ok(())
}

impl Relay {
    fn uptime_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// ServerStatus of every node (concurrently, with the RPC timeout).
    async fn statuses(&self) -> Vec<(NodeView, Result<ServerStatusResponse, String>)> {
        let timeout = self.cfg.node_rpc_timeout;
        join_all(self.pool.snapshot().into_iter().map(|n| async move {
            let r = match (&n.state, &n.channel) {
                (PeerState::Connected, Some(ch)) => {
                    let mut c = ObserverClient::new(ch.clone());
                    match tokio::time::timeout(timeout, c.server_status(ServerStatusRequest {}))
                        .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(s)) => Err(s.message().to_owned()),
                        Err(_) => Err(format!("ServerStatus timed out after {timeout:?}")),
                    }
                }
                _ => Err(n
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not connected yet".into())),
            };
            (n, r)
        }))
        .await
    }
}

#[tonic::async_trait]
impl Observer for Relay {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        let req = request.into_inner();
        if *self.closing.borrow() {
            return Err(shutting_down());
        }
        info!(
            number = req.number,
            first = req.first,
            follow = req.follow,
            "GetFlows"
        );
        validate(&req)?;
        fanout::get_flows(
            self.pool.clone(),
            self.cfg.clone(),
            self.closing.subscribe(),
            req,
        )
        .await
        .map(|rx| Response::new(Box::pin(rx) as BoxStream<GetFlowsResponse>))
    }

    async fn get_agent_events(
        &self,
        _request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<BoxStream<GetAgentEventsResponse>>, Status> {
        Err(Status::unimplemented(
            "GetAgentEvents: flowd has no Cilium agent events",
        ))
    }

    async fn get_debug_events(
        &self,
        _request: Request<GetDebugEventsRequest>,
    ) -> Result<Response<BoxStream<GetDebugEventsResponse>>, Status> {
        Err(Status::unimplemented(
            "GetDebugEvents: flowd has no Cilium datapath debug events",
        ))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let nodes = self
            .statuses()
            .await
            .into_iter()
            .map(|(n, r)| {
                let tls = Some(Tls {
                    enabled: n.tls,
                    server_name: n.spec.tls_server_name.clone().unwrap_or_default(),
                });
                match r {
                    Ok(s) => Node {
                        name: n.spec.name,
                        version: s.version,
                        address: n.spec.address,
                        state: NodeState::NodeConnected as i32,
                        tls,
                        uptime_ns: s.uptime_ns,
                        num_flows: s.num_flows,
                        max_flows: s.max_flows,
                        seen_flows: s.seen_flows,
                    },
                    Err(_) => Node {
                        name: n.spec.name,
                        address: n.spec.address,
                        state: NodeState::NodeUnavailable as i32,
                        tls,
                        ..Default::default()
                    },
                }
            })
            .collect();
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let timeout = self.cfg.node_rpc_timeout;
        let answers = join_all(self.pool.snapshot().into_iter().filter_map(|n| {
            let ch = n.channel.filter(|_| n.state == PeerState::Connected)?;
            Some(async move {
                let mut c = ObserverClient::new(ch);
                match tokio::time::timeout(timeout, c.get_namespaces(GetNamespacesRequest {})).await
                {
                    Ok(Ok(r)) => r.into_inner().namespaces,
                    _ => Vec::new(),
                }
            })
        }))
        .await;
        let set: BTreeSet<(String, String)> = answers
            .into_iter()
            .flatten()
            .map(|n| (n.cluster, n.namespace))
            .collect();
        let namespaces = set
            .into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let mut out = ServerStatusResponse {
            uptime_ns: self.uptime_ns(),
            version: self.cfg.version.clone(),
            ..Default::default()
        };
        let (mut connected, mut unavailable) = (0u32, Vec::new());
        for (n, r) in self.statuses().await {
            match r {
                Ok(s) => {
                    connected += 1;
                    out.num_flows += s.num_flows;
                    out.max_flows += s.max_flows;
                    out.seen_flows += s.seen_flows;
                    out.flows_rate += s.flows_rate;
                    out.lost_kernel_events += s.lost_kernel_events;
                }
                Err(_) => unavailable.push(n.spec.name),
            }
        }
        out.num_connected_nodes = Some(UInt32Value { value: connected });
        out.num_unavailable_nodes = Some(UInt32Value {
            value: u32::try_from(unavailable.len()).unwrap_or(u32::MAX),
        });
        out.unavailable_nodes = unavailable;
        Ok(Response::new(out))
    }
}
