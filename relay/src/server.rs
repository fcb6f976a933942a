//! The relay's Observer service: GetFlows fanned out to every node and
//! merged in time order; ServerStatus, GetNodes, GetNamespaces aggregated.
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowd_proto::Timestamp;
use flowd_proto::flow::{LostEvent, LostEventSource};
use flowd_proto::observer::get_flows_response::ResponseTypes;
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxStream;
use tonic::transport::{Channel, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::RelayConfig;
use crate::merge::Merger;
use crate::pool::{NodeView, PeerState, Pool};

/// Largest message accepted from a node.
const MAX_MESSAGE: usize = 16 << 20;

/// The relay's Observer API implementation.
#[derive(Clone)]
pub struct Relay {
    pool: Arc<Pool>,
    cfg: Arc<RelayConfig>,
    started: Instant,
    /// Turns true when the relay shuts down: every stream ends.
    closing: Arc<watch::Sender<bool>>,
}

/// The status every stream ends with when the relay shuts down.
fn shutting_down() -> Status {
    Status::unavailable("the relay is shutting down")
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
}

/// Serves the Observer API and gRPC health on `listener` until `shutdown`.
/// The health service reports `observer.Observer` SERVING while at least one
/// node is connected, NOT_SERVING otherwise; the overall status ("") is
/// SERVING while the relay runs.
///
/// When `shutdown` completes, every stream ends with UNAVAILABLE "the relay
/// is shutting down" ([`Relay::close`]), the connections to the nodes are
/// closed, health turns NOT_SERVING, no connection is accepted any more, and
/// the function returns once the clients have closed their connections or
/// `shutdown_grace` has passed, whichever comes first.
pub async fn serve(
    relay: Relay,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let pool = relay.pool.clone();
    let health_reporter = reporter.clone();
    let health_task = tokio::spawn(async move {
        let mut rx = pool.subscribe();
        let mut last = None;
        loop {
            let connected = pool
                .snapshot()
                .iter()
                .any(|n| n.state == PeerState::Connected);
            if last != Some(connected) {
                if connected {
                    health_reporter.set_serving::<ObserverServer<Relay>>().await;
                } else {
                    health_reporter
                        .set_not_serving::<ObserverServer<Relay>>()
                        .await;
                }
                last = Some(connected);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    // No Nagle: flows are small messages and latency matters.
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let grace = relay.cfg.shutdown_grace;
    let handle = relay.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = builder
        .add_service(health)
        .add_service(ObserverServer::new(relay).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let res = tokio::select! {
        r = &mut server => r,
        _ = &mut shutdown => {
            health_task.abort();
            handle.close();
            reporter.set_not_serving::<ObserverServer<Relay>>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
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

/// Timestamp used to order a response; None = not ordered (sent at once).
fn order_ts(r: &GetFlowsResponse) -> Option<i128> {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => r.time.or(f.time).map(|t| t.as_unix_nanos()),
        _ => None,
    }
}

/// How a node's stream ended.
#[derive(Debug)]
enum NodeEnd {
    Finished,
    /// Transport-level failure: the node is reported unavailable and reconnected.
    Unavailable(String),
    /// The node answered with an error (bad filter, overload, ...).
    Error(String),
}

fn classify(s: &Status) -> NodeEnd {
    let msg = format!("{:?}: {}", s.code(), s.message());
    match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated => NodeEnd::Error(msg),
        _ => NodeEnd::Unavailable(msg),
    }
}

enum Event {
    Connected {
        slot: usize,
        generation: u64,
    },
    Item {
        slot: usize,
        resp: Box<GetFlowsResponse>,
        permit: OwnedSemaphorePermit,
    },
    Done {
        slot: usize,
        generation: u64,
        end: NodeEnd,
    },
}

struct StreamCtx {
    name: String,
    slot: usize,
    generation: u64,
    follow: bool,
    idle_timeout: Duration,
    rpc_timeout: Duration,
    sem: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Event>,
}

async fn node_stream(ctx: StreamCtx, channel: Channel, req: GetFlowsRequest) {
    let end = run_node_stream(&ctx, channel, req).await;
    let _ = ctx.tx.send(Event::Done {
        slot: ctx.slot,
        generation: ctx.generation,
        end,
    });
}

async fn run_node_stream(ctx: &StreamCtx, channel: Channel, req: GetFlowsRequest) -> NodeEnd {
    let mut client = ObserverClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match tokio::time::timeout(ctx.rpc_timeout, client.get_flows(req)).await {
        Err(_) => {
            return NodeEnd::Unavailable(format!(
                "GetFlows not answered within {:?}",
                ctx.rpc_timeout
            ));
        }
        Ok(Err(s)) => return classify(&s),
        Ok(Ok(r)) => r.into_inner(),
    };
    if ctx
        .tx
        .send(Event::Connected {
            slot: ctx.slot,
            generation: ctx.generation,
        })
        .is_err()
    {
        return NodeEnd::Finished;
    }
    loop {
        let msg = if ctx.follow {
            stream.message().await
        } else {
            match tokio::time::timeout(ctx.idle_timeout, stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    return NodeEnd::Error(format!(
                        "nothing received for {:?}; node abandoned for this request",
                        ctx.idle_timeout
                    ));
                }
            }
        };
        match msg {
            Ok(Some(mut resp)) => {
                if resp.node_name.is_empty() {
                    resp.node_name.clone_from(&ctx.name);
                }
                // Bounded per node: waits while the node is ahead of the others.
                let Ok(permit) = ctx.sem.clone().acquire_owned().await else {
                    return NodeEnd::Finished;
                };
                let ev = Event::Item {
                    slot: ctx.slot,
                    resp: Box::new(resp),
                    permit,
                };
                if ctx.tx.send(ev).is_err() {
                    return NodeEnd::Finished;
                }
            }
            Ok(None) if ctx.follow => {
                return NodeEnd::Unavailable("the node ended the follow stream".into());
            }
            Ok(None) => return NodeEnd::Finished,
            Err(s) => return classify(&s),
        }
    }
}

struct Slot {
    name: String,
    sem: Arc<Semaphore>,
    running: Option<(u64, JoinHandle<()>)>,
    /// Generation of the connection the last stream used (0 = never started).
    last_generation: u64,
    last_ts: Option<i128>,
    /// The node answered with an application error: not retried.
    failed: bool,
    reported_unavailable: bool,
}

/// One client's GetFlows: fans out, merges, bounds what the client buffers.
struct Fanout {
    pool: Arc<Pool>,
    cfg: Arc<RelayConfig>,
    req: GetFlowsRequest,
    started: Timestamp,
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    merger: Merger<(GetFlowsResponse, OwnedSemaphorePermit)>,
    ev_tx: mpsc::UnboundedSender<Event>,
    running: usize,
    out: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    /// Responses dropped for this client since the last LostEvent.
    lost: u64,
    /// The relay is shutting down when it turns true.
    closing: watch::Receiver<bool>,
}

impl Fanout {
    fn follow(&self) -> bool {
        self.req.follow
    }

    /// Sends to the client; false when the client is gone. Follow streams
    /// never wait: a full client queue drops and counts.
    async fn emit(&mut self, resp: GetFlowsResponse) -> bool {
        if !self.follow() {
            return self.out.send(Ok(resp)).await.is_ok();
        }
        if self.lost > 0 && !self.try_send_lost() {
            self.lost += 1;
            return !self.out.is_closed();
        }
        match self.out.try_send(Ok(resp)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn lost_event(&self) -> GetFlowsResponse {
        GetFlowsResponse::from_lost(
            LostEvent::new(LostEventSource::ObserverEventsQueue, self.lost, None),
            String::new(),
            Timestamp::now(),
        )
    }

    fn try_send_lost(&mut self) -> bool {
        if self.out.try_send(Ok(self.lost_event())).is_ok() {
            self.lost = 0;
            true
        } else {
            false
        }
    }

    fn start(&mut self, idx: usize, node: &NodeView, initial: bool) {
        let Some(channel) = node.channel.clone() else {
            return;
        };
        let mut req = self.req.clone();
        if !initial {
            // A node that joins or comes back during a follow stream: only
            // what it saw since the stream started or since its last flow.
            req.number = 0;
            req.first = false;
            let from = self.slots[idx]
                .last_ts
                .map(|t| t + 1)
                .unwrap_or(self.started.as_unix_nanos());
            let since = req.since.map_or(from, |s| s.as_unix_nanos().max(from));
            req.since = u64::try_from(since).ok().map(Timestamp::from_unix_nanos);
        }
        let slot = &mut self.slots[idx];
        let ctx = StreamCtx {
            name: slot.name.clone(),
            slot: idx,
            generation: node.generation,
            follow: self.req.follow,
            idle_timeout: self.cfg.node_idle_timeout,
            rpc_timeout: self.cfg.node_rpc_timeout,
            sem: slot.sem.clone(),
            tx: self.ev_tx.clone(),
        };
        debug!(node = %slot.name, generation = node.generation, initial, "starting node stream");
        slot.running = Some((
            node.generation,
            tokio::spawn(node_stream(ctx, channel, req)),
        ));
        slot.last_generation = node.generation;
        slot.reported_unavailable = false;
        self.running += 1;
        self.merger.reopen(idx);
    }

    fn stop(&mut self, idx: usize) {
        if let Some((_, task)) = self.slots[idx].running.take() {
            task.abort();
            self.running -= 1;
            self.merger.close(idx);
        }
    }

    /// Brings the node streams in line with the pool; returns the status
    /// events to send.
    fn reconcile(&mut self, initial: bool) -> Vec<GetFlowsResponse> {
        let nodes = self.pool.snapshot();
        let mut unavailable = Vec::new();
        let mut gone = Vec::new();
        let present: BTreeSet<&str> = nodes.iter().map(|n| n.spec.name.as_str()).collect();
        for idx in 0..self.slots.len() {
            let name = self.slots[idx].name.clone();
            if !present.contains(name.as_str()) && self.by_name.remove(&name).is_some() {
                self.stop(idx);
                gone.push(name);
            }
        }
        for node in &nodes {
            let name = &node.spec.name;
            let idx = match self.by_name.get(name) {
                Some(i) => *i,
                None => {
                    let i = self.merger.add_node();
                    self.merger.close(i);
                    self.slots.push(Slot {
                        name: name.clone(),
                        sem: Arc::new(Semaphore::new(self.cfg.sort_buffer_len.max(1))),
                        running: None,
                        last_generation: 0,
                        last_ts: None,
                        failed: false,
                        reported_unavailable: false,
                    });
                    self.by_name.insert(name.clone(), i);
                    i
                }
            };
            let connected = node.state == PeerState::Connected;
            match self.slots[idx].running {
                Some((g, _)) if !connected || g != node.generation => {
                    // The pool saw the node fail (e.g. a hung node failed its
                    // probe) before the stream noticed.
                    self.stop(idx);
                    let s = &mut self.slots[idx];
                    s.reported_unavailable = true;
                    unavailable.push(name.clone());
                }
                Some(_) => continue,
                None => {}
            }
            let s = &self.slots[idx];
            if connected && !s.failed && node.generation > s.last_generation {
                if initial || self.follow() {
                    self.start(idx, node, initial);
                }
            } else if !connected && !s.reported_unavailable {
                self.slots[idx].reported_unavailable = true;
                if !unavailable.contains(name) {
                    unavailable.push(name.clone());
                }
            }
        }
        let mut out = Vec::new();
        if !unavailable.is_empty() {
            let msg = nodes
                .iter()
                .filter(|n| unavailable.contains(&n.spec.name))
                .filter_map(|n| {
                    n.last_error
                        .as_ref()
                        .map(|e| format!("{}: {e}", n.spec.name))
                })
                .collect::<Vec<_>>()
                .join("; ");
            out.push(GetFlowsResponse::node_status(
                NodeState::NodeUnavailable,
                unavailable,
                msg,
            ));
        }
        if !gone.is_empty() {
            out.push(GetFlowsResponse::node_status(
                NodeState::NodeGone,
                gone,
                "removed from the peer list".into(),
            ));
        }
        out
    }

    fn on_done(&mut self, slot: usize, generation: u64, end: NodeEnd) -> Option<GetFlowsResponse> {
        let s = &mut self.slots[slot];
        match s.running {
            Some((g, _)) if g == generation => {}
            _ => return None, // stopped already
        }
        s.running = None;
        self.running -= 1;
        self.merger.close(slot);
        let name = s.name.clone();
        match end {
            NodeEnd::Finished => None,
            NodeEnd::Unavailable(msg) => {
                s.reported_unavailable = true;
                self.pool.report_failure(&name, generation, &msg);
                Some(GetFlowsResponse::node_status(
                    NodeState::NodeUnavailable,
                    vec![name],
                    msg,
                ))
            }
            NodeEnd::Error(msg) => {
                s.failed = true;
                Some(GetFlowsResponse::node_status(
                    NodeState::NodeError,
                    vec![name],
                    msg,
                ))
            }
        }
    }

    async fn run(mut self, mut ev_rx: mpsc::UnboundedReceiver<Event>) {
        let mut closing = self.closing.clone();
        tokio::select! {
            _ = self.serve(&mut ev_rx) => {}
            _ = async { drop(closing.wait_for(|c| *c).await) } => {
                // The node streams go first (closing their connections), then
                // the client learns why its stream ends.
                self.shutdown();
                let out = self.out.clone();
                tokio::select! {
                    _ = out.send(Err(shutting_down())) => {}
                    _ = out.closed() => {}
                }
            }
        }
    }

    async fn serve(&mut self, ev_rx: &mut mpsc::UnboundedReceiver<Event>) {
        let mut pool_rx = self.pool.subscribe();
        pool_rx.borrow_and_update();
        for ev in self.reconcile(true) {
            if !self.emit(ev).await {
                return self.shutdown();
            }
        }
        loop {
            let now = Instant::now();
            while let Some((resp, permit)) = self.merger.pop_ready(now) {
                drop(permit);
                if !self.emit(resp).await {
                    return self.shutdown();
                }
            }
            if !self.follow() && self.running == 0 && self.merger.is_empty() {
                return;
            }
            let far = now + Duration::from_secs(3600);
            let deadline = self.merger.next_deadline().unwrap_or(far);
            let out = self.out.clone();
            tokio::select! {
                _ = out.closed() => return self.shutdown(),
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { return };
                    let send = match ev {
                        Event::Connected { slot, generation } => {
                            let s = &self.slots[slot];
                            (matches!(s.running, Some((g, _)) if g == generation)).then(|| {
                                GetFlowsResponse::node_status(NodeState::NodeConnected, vec![s.name.clone()], String::new())
                            })
                        }
                        Event::Item { slot, resp, permit } => match order_ts(&resp) {
                            Some(ts) => {
                                let s = &mut self.slots[slot];
                                s.last_ts = Some(s.last_ts.map_or(ts, |l| l.max(ts)));
                                self.merger.push(slot, ts, Instant::now(), (*resp, permit));
                                None
                            }
                            None => Some(*resp),
                        },
                        Event::Done { slot, generation, end } => self.on_done(slot, generation, end),
                    };
                    if let Some(r) = send && !self.emit(r).await {
                        return self.shutdown();
                    }
                }
                r = pool_rx.changed(), if self.follow() => {
                    if r.is_err() {
                        return self.shutdown();
                    }
                    for ev in self.reconcile(false) {
                        if !self.emit(ev).await {
                            return self.shutdown();
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()), if deadline != far => {}
                permit = out.reserve(), if self.lost > 0 => {
                    if let Ok(p) = permit {
                        p.send(Ok(self.lost_event()));
                        self.lost = 0;
                    }
                }
            }
        }
    }

    fn shutdown(&mut self) {
        for i in 0..self.slots.len() {
            self.stop(i);
        }
    }
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
        let (out, rx) = mpsc::channel(self.cfg.client_buffer.max(1));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let fanout = Fanout {
            pool: self.pool.clone(),
            cfg: self.cfg.clone(),
            req,
            started: Timestamp::now(),
            slots: Vec::new(),
            by_name: HashMap::new(),
            merger: Merger::new(self.cfg.drain_timeout),
            ev_tx,
            running: 0,
            out,
            lost: 0,
            closing: self.closing.subscribe(),
        };
        tokio::spawn(fanout.run(ev_rx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
