//! One client's GetFlows across the nodes: the request fanned out to every
//! connected node (one [`node_stream`](crate::node_stream) each), their
//! flows merged by time ([`crate::merge`]) within the sort buffer, node
//! status notices (NODE_CONNECTED, NODE_UNAVAILABLE, NODE_GONE,
//! NODE_ERROR), the nodes' refusals of a bad request turned into the call's
//! error, and, for follow streams, nodes that join or come back picked up
//! where they left off and what a slow client cannot take counted in
//! LostEvents.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowd_proto::Timestamp;
use flowd_proto::flow::{LostEvent, LostEventSource};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::{GetFlowsRequest, GetFlowsResponse};
use flowd_proto::relay::NodeState;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tracing::{debug, info};

use crate::config::RelayConfig;
use crate::merge::Merger;
use crate::node_stream::{self, Event, NodeEnd, StreamCtx};
use crate::pool::{NodeView, PeerState, Pool};

/// The status every stream ends with when the relay shuts down.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("the relay is shutting down")
}

/// Starts `req` (validated by the caller) on the nodes of `pool`; its
/// responses go to the returned stream. Returns once a node accepted the
/// request or no node can answer it; fails with the nodes' error when every
/// node that answered refused it. Every stream ends with UNAVAILABLE
/// ([`shutting_down`]) when `closing` turns true.
pub(crate) async fn get_flows(
    pool: Arc<Pool>,
    cfg: Arc<RelayConfig>,
    closing: watch::Receiver<bool>,
    req: GetFlowsRequest,
) -> Result<ReceiverStream<Result<GetFlowsResponse, Status>>, Status> {
    let (out, rx) = mpsc::channel(cfg.client_buffer.max(1));
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (verdict, verdict_rx) = oneshot::channel();
    let follow = req.follow;
    let fanout = Fanout {
        pool,
        cfg: cfg.clone(),
        req,
        started: Timestamp::now(),
        slots: Vec::new(),
        by_name: HashMap::new(),
        // Follow streams: a node whose sort buffer is full has its oldest sent
        // (waiting would make flowd drop its live flows); requests for
        // stored flows lose nothing by waiting and stay in order.
        merger: Merger::new(
            cfg.drain_timeout,
            if follow {
                cfg.sort_buffer_len
            } else {
                usize::MAX
            },
        ),
        ev_tx,
        running: 0,
        out,
        lost: 0,
        closing,
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
    Ok(ReceiverStream::new(rx))
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

/// A node's place in the fan-out (kept when its stream ends, so a follow
/// stream resumes it after its last flow).
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
            tokio::spawn(node_stream::run(ctx, channel, req)),
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
