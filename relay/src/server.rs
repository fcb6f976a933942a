//! The relay's Observer service: GetFlows fanned out to every node and
//! merged in time order; ServerStatus, GetNodes, GetNamespaces aggregated.
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowd_proto::Timestamp;
use flowd_proto::fieldmask::FlowFieldMask;
use flowd_proto::flow::{LostEvent, LostEventSource};
use flowd_proto::health::HealthStatus;
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxStream;
use tonic::transport::{Channel, Server};
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
/// (the nodes validate the filters; see [`Fanout`] for their refusals): the
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

/// A NODE_ERROR notice: the nodes' error code and message.
fn node_error(nodes: Vec<String>, code: Code, msg: &str) -> GetFlowsResponse {
    GetFlowsResponse::node_status(NodeState::NodeError, nodes, format!("{code:?}: {msg}"))
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
    /// The node answered with an error (bad filter, overload, ...): its
    /// code and the message for a NODE_ERROR notice.
    Error(Code, String),
}

fn classify(s: &Status) -> NodeEnd {
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
        | Code::Unauthenticated => NodeEnd::Error(s.code(), s.message().to_string()),
        _ => NodeEnd::Unavailable(format!("{:?}: {}", s.code(), s.message())),
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
                    return NodeEnd::Error(
                        Code::DeadlineExceeded,
                        format!(
                            "nothing received for {:?}; node abandoned for this request",
                            ctx.idle_timeout
                        ),
                    );
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
///
/// A request the nodes refuse (an invalid filter: only the nodes validate
/// filters) is refused by the relay too, never answered with an empty
/// stream: until a node accepts it, the nodes' refusals are held back; when
/// every node that answered refused it, the call fails with their error
/// (before the response starts, or, in a follow stream whose nodes all came
/// later, as the stream's end). Once a node accepted, a refusal by another
/// (e.g. a node of another version) is a NODE_ERROR notice, as in Hubble.
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
    /// Until the call's outcome is known: where to say it; responses are
    /// held in `held` meanwhile.
    verdict: Option<oneshot::Sender<Result<(), Status>>>,
    held: Vec<GetFlowsResponse>,
    /// A node accepted the request.
    accepted: bool,
    /// Refusals (node, code, message) not reported yet: held while no node
    /// has accepted.
    refused: Vec<(String, Code, String)>,
}

impl Fanout {
    fn follow(&self) -> bool {
        self.req.follow
    }

    /// Sends to the client; false when the client is gone. Follow streams
    /// never wait: a full client queue drops and counts. Before the verdict,
    /// responses are held.
    async fn emit(&mut self, resp: GetFlowsResponse) -> bool {
        if self.verdict.is_some() {
            self.held.push(resp);
            return true;
        }
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
            NodeEnd::Error(code, msg) => {
                s.failed = true;
                if !self.accepted {
                    self.refused.push((name, code, msg));
                    return None;
                }
                Some(node_error(vec![name], code, &msg))
            }
        }
    }

    /// The call goes ahead: the client gets the response and what was held.
    async fn proceed(&mut self) -> bool {
        let Some(v) = self.verdict.take() else {
            return true;
        };
        let _ = v.send(Ok(()));
        for r in std::mem::take(&mut self.held) {
            if !self.emit(r).await {
                return false;
            }
        }
        true
    }

    /// A node accepted the request: refusals held so far become NODE_ERROR
    /// notices (one per message, naming its nodes, as Hubble aggregates them).
    async fn on_accepted(&mut self) -> bool {
        self.accepted = true;
        if !self.proceed().await {
            return false;
        }
        let mut groups: Vec<(Code, String, Vec<String>)> = Vec::new();
        for (node, code, msg) in std::mem::take(&mut self.refused) {
            match groups.iter_mut().find(|(c, m, _)| *c == code && *m == msg) {
                Some((_, _, nodes)) => nodes.push(node),
                None => groups.push((code, msg, vec![node])),
            }
        }
        for (code, msg, nodes) in groups {
            if !self.emit(node_error(nodes, code, &msg)).await {
                return false;
            }
        }
        true
    }

    /// Every node that answered refused the request and none is still
    /// answering: the request's error. Their common code and message when
    /// they agree; otherwise INVALID_ARGUMENT if one said so, and each
    /// node's message, by node name.
    fn refusal(&self) -> Option<Status> {
        if self.accepted || self.running > 0 {
            return None;
        }
        let (_, code, msg) = self.refused.first()?;
        if self.refused.iter().all(|(_, c, m)| c == code && m == msg) {
            return Some(Status::new(*code, msg.clone()));
        }
        let code = if self
            .refused
            .iter()
            .any(|(_, c, _)| *c == Code::InvalidArgument)
        {
            Code::InvalidArgument
        } else {
            *code
        };
        let mut each: Vec<String> = self
            .refused
            .iter()
            .map(|(n, _, m)| format!("{n}: {m}"))
            .collect();
        each.sort();
        let all = each.join("; ");
        Some(Status::new(code, all))
    }

    /// Ends the call with the nodes' refusal, if it is one.
    async fn refuse_if_all_refused(&mut self) -> bool {
        let Some(status) = self.refusal() else {
            return false;
        };
        info!(code = ?status.code(), message = status.message(), "GetFlows refused by every node");
        match self.verdict.take() {
            Some(v) => {
                let _ = v.send(Err(status));
            }
            None => {
                let _ = self.out.send(Err(status)).await;
            }
        }
        true
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
        // No node to ask: nothing can refuse the request.
        if self.running == 0 && !self.proceed().await {
            return self.shutdown();
        }
        loop {
            let now = Instant::now();
            while let Some((resp, permit)) = self.merger.pop_ready(now) {
                drop(permit);
                if !self.emit(resp).await {
                    return self.shutdown();
                }
            }
            if self.refuse_if_all_refused().await {
                return self.shutdown();
            }
            if self.running == 0 && !self.follow() {
                // Every node finished (or failed to connect): the answer is complete.
                if !self.proceed().await {
                    return self.shutdown();
                }
                if self.merger.is_empty() {
                    return;
                }
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
                            let current = matches!(s.running, Some((g, _)) if g == generation);
                            let status = current.then(|| {
                                GetFlowsResponse::node_status(NodeState::NodeConnected, vec![s.name.clone()], String::new())
                            });
                            if current && !self.accepted && !self.on_accepted().await {
                                return self.shutdown();
                            }
                            status
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
        validate(&req)?;
        let (out, rx) = mpsc::channel(self.cfg.client_buffer.max(1));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (verdict, verdict_rx) = oneshot::channel();
        let follow = req.follow;
        let fanout = Fanout {
            pool: self.pool.clone(),
            cfg: self.cfg.clone(),
            req,
            started: Timestamp::now(),
            slots: Vec::new(),
            by_name: HashMap::new(),
            // Follow streams: a node whose sort buffer is full has its oldest sent
            // (waiting would make flowd drop its live flows); requests for
            // stored flows lose nothing by waiting and stay in order.
            merger: Merger::new(
                self.cfg.drain_timeout,
                if follow {
                    self.cfg.sort_buffer_len
                } else {
                    usize::MAX
                },
            ),
            ev_tx,
            running: 0,
            out,
            lost: 0,
            closing: self.closing.subscribe(),
            verdict: Some(verdict),
            held: Vec::new(),
            accepted: false,
            refused: Vec::new(),
        };
        tokio::spawn(fanout.run(ev_rx));
        // The response starts once a node accepted the request (or no node
        // can answer): a request every node refuses fails here.
        if let Ok(Err(status)) = verdict_rx.await {
            return Err(status);
        }
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
