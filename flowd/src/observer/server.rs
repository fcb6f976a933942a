//! `observer.Observer` over the flow buffer.
//!
//! GetFlows semantics (Hubble's, made precise):
//! - `first`: the oldest buffered flows, at most `number` (0 = all) of them;
//! - otherwise `number` > 0: the last `number` matching flows, oldest first;
//! - `since` (without `number`, or with `first`): from the oldest flow at or
//!   after `since`; `until`: flows after it are skipped (non-follow) or end
//!   the stream (follow, also when the wall clock passes it);
//! - `follow` with neither `number` nor `since` starts at "now"; with them,
//!   it continues live after the buffered part (`number` then only picks the
//!   starting point, it does not end the stream);
//! - neither `number` nor `follow`: every buffered matching flow.
//!
//! Filters apply to flows only; loss notices are always delivered.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use flowd_proto::Timestamp;
use flowd_proto::fieldmask::FlowFieldMask;
use flowd_proto::flow::{Flow, LostEvent, LostEventSource};
use flowd_proto::observer::observer_server::Observer as ObserverApi;
use flowd_proto::observer::{
    GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse,
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use flowd_proto::pbjson_types::{FieldMask, UInt32Value};
use flowd_proto::relay::NodeState;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::buffer::{Event, Read, Ring, decode};
use super::{Observer, Shared, StreamState};
use crate::filters::FlowMatcher;

/// What a stream task hands to its client, before conversion to a response
/// (kept small: a boxed flow).
pub(crate) enum Out {
    Flow(Box<Flow>),
    Lost(LostEvent, Timestamp),
    /// The stream ends with this status (the daemon is shutting down).
    End(Status),
}

/// The status a follow stream ends with when flowd shuts down: clients
/// (`observe`, `hubble observe`, the relay) show it, and the relay marks
/// the node unavailable and reconnects later.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("flowd is shutting down")
}

/// An invalid field mask path.
#[derive(Debug, thiserror::Error)]
#[error("field_mask: {0}")]
pub struct FieldMaskError(#[from] flowd_proto::fieldmask::FieldMaskError);

/// A validated field mask: every path checked against the Flow descriptor,
/// as Hubble's server does (every field of Hubble's current Flow is valid,
/// including the deprecated `drop_reason`, `reply` and `Summary`; one flowd
/// never fills stays empty); the export file's mask is the same kind.
struct Mask(FlowFieldMask);

impl Mask {
    fn new(mask: &FieldMask) -> Result<Option<Self>, FieldMaskError> {
        if mask.paths.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self(FlowFieldMask::new(&mask.paths)?)))
    }

    /// Keeps only the masked fields.
    fn apply(&self, flow: &Flow) -> Flow {
        // A flow that does not re-encode would be a bug; sending the
        // unmasked flow could leak what the client left out.
        self.0.apply(flow).unwrap_or_else(|e| {
            tracing::error!(error = %e, "applying a GetFlows field mask");
            Flow::default()
        })
    }
}

fn ts_nanos(t: &Timestamp, field: &str) -> Result<i128, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument(format!(
            "{field}: invalid timestamp (nanos {} out of range)",
            t.nanos
        )));
    }
    Ok(t.as_unix_nanos())
}

fn flow_nanos(f: &Flow) -> Option<i128> {
    f.time.as_ref().map(Timestamp::as_unix_nanos)
}

/// A validated GetFlows request.
struct Plan {
    number: u64,
    first: bool,
    follow: bool,
    since: Option<i128>,
    until: Option<i128>,
    matcher: FlowMatcher,
}

impl Plan {
    fn new(req: &GetFlowsRequest) -> Result<(Self, Option<Mask>), Status> {
        let matcher = FlowMatcher::new(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let since = req
            .since
            .as_ref()
            .map(|t| ts_nanos(t, "since"))
            .transpose()?;
        let until = req
            .until
            .as_ref()
            .map(|t| ts_nanos(t, "until"))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(Status::invalid_argument(
                "since: must not be after until".to_string(),
            ));
        }
        let mask = match &req.field_mask {
            Some(m) => Mask::new(m).map_err(|e| Status::invalid_argument(e.to_string()))?,
            None => None,
        };
        Ok((
            Self {
                number: req.number,
                first: req.first,
                follow: req.follow,
                since,
                until,
                matcher,
            },
            mask,
        ))
    }

    fn in_time(&self, f: &Flow) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = flow_nanos(f) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t <= u)
    }

    fn selects(&self, f: &Flow) -> bool {
        self.in_time(f) && self.matcher.matches(f)
    }

    /// Where to start reading, and the flow limit if any.
    fn start(&self, ring: &Ring) -> (u64, Option<u64>) {
        let write = ring.write_seq();
        let oldest = ring.oldest_seq();
        if self.first {
            return (oldest, (self.number > 0).then_some(self.number));
        }
        if self.number == 0 {
            if self.follow && self.since.is_none() {
                return (write, None);
            }
            return (oldest, None);
        }
        // Walk back to the `number`-th newest selected flow.
        let mut seq = write;
        let mut found = 0;
        while seq > oldest && found < self.number {
            match ring.read(seq - 1) {
                Read::Event(Event::Flow(f)) => {
                    if decode(&f).is_some_and(|f| self.selects(&f)) {
                        found += 1;
                    }
                }
                Read::Event(Event::Lost(_)) => {}
                // The writer caught up with us: start at what is left.
                Read::Lapped { .. } | Read::Pending => break,
            }
            seq -= 1;
        }
        (seq, None)
    }
}

fn hubble_lost(n: u64) -> Out {
    Out::Lost(
        LostEvent::new(LostEventSource::HubbleRingBuffer, n, None),
        Timestamp::now(),
    )
}

/// Where a stream starts and stops, fixed when the request arrives (so a
/// client whose call returned knows which flows it will get).
struct Window {
    start: u64,
    limit: Option<u64>,
    /// A non-follow request ends at what was buffered when it started.
    end: Option<u64>,
}

/// Reads the ring for one stream and feeds its bounded queue.
async fn run_stream(
    shared: Arc<Shared>,
    plan: Plan,
    window: Window,
    tx: mpsc::Sender<Out>,
    state: Arc<StreamState>,
) {
    let ring = &shared.ring;
    let Window {
        start: mut seq,
        limit,
        end,
    } = window;
    let deadline = match (plan.follow, plan.until) {
        (true, Some(u)) => {
            let now = Timestamp::now().as_unix_nanos();
            let wait = u64::try_from((u - now).max(0)).unwrap_or(u64::MAX);
            Some(tokio::time::Instant::now() + std::time::Duration::from_nanos(wait))
        }
        _ => None,
    };
    let mut sent = 0u64;
    let mut lost = 0u64;
    loop {
        state.position.store(seq, Ordering::Relaxed);
        if end.is_some_and(|e| seq >= e) {
            break;
        }
        match ring.read(seq) {
            Read::Event(ev) => {
                seq += 1;
                let out = match ev {
                    Event::Flow(bytes) => {
                        let Some(f) = decode(&bytes) else { continue };
                        if plan.follow
                            && plan
                                .until
                                .is_some_and(|u| flow_nanos(&f).is_some_and(|t| t > u))
                        {
                            break;
                        }
                        if !plan.selects(&f) {
                            continue;
                        }
                        sent += 1;
                        Out::Flow(Box::new(f))
                    }
                    Event::Lost(l) => Out::Lost(l.0, l.1),
                };
                if lost > 0
                    && tx
                        .send(hubble_lost(std::mem::take(&mut lost)))
                        .await
                        .is_err()
                {
                    return;
                }
                if tx.send(out).await.is_err() {
                    return;
                }
                if limit.is_some_and(|l| sent >= l) {
                    break;
                }
            }
            Read::Lapped { oldest } => {
                let to = end.map_or(oldest, |e| oldest.min(e));
                let n = to.saturating_sub(seq);
                // Counted when found, as Hubble counts lapped reads
                // (`hubble_lost_events_total{source="hubble_ring_buffer"}`);
                // the stream's client is told in its next LostEvent.
                shared.stats.add_lost_ring(n);
                lost += n;
                seq = to;
            }
            Read::Pending => {
                if !plan.follow {
                    break;
                }
                // Closed is checked before reading again: the writer's last
                // push happened before it closed the ring, so once `closed`
                // is seen, a Pending read really is the end.
                if ring.is_closed() {
                    if !matches!(ring.read(seq), Read::Pending) {
                        continue;
                    }
                    if lost > 0 {
                        let _ = tx.send(hubble_lost(std::mem::take(&mut lost))).await;
                    }
                    let _ = tx.send(Out::End(shutting_down())).await;
                    return;
                }
                if lost > 0
                    && tx
                        .send(hubble_lost(std::mem::take(&mut lost)))
                        .await
                        .is_err()
                {
                    return;
                }
                let until_passed = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = ring.wait_for(seq) => {}
                    _ = tx.closed() => return,
                    _ = until_passed => break,
                }
            }
        }
    }
    if lost > 0 {
        let _ = tx.send(hubble_lost(lost)).await;
    }
}

impl Observer {
    fn response(&self, out: Out, mask: Option<&Mask>) -> Result<GetFlowsResponse, Status> {
        let node_name = self.shared.config.node_name.clone();
        Ok(match out {
            Out::Flow(f) => GetFlowsResponse::from_flow(
                match mask {
                    Some(m) => m.apply(&f),
                    None => *f,
                },
                node_name,
            ),
            Out::Lost(l, t) => GetFlowsResponse::from_lost(l, node_name, t),
            Out::End(status) => return Err(status),
        })
    }

    fn uptime_ns(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[tonic::async_trait]
impl ObserverApi for Observer {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        let req = request.into_inner();
        let (plan, mask) = Plan::new(&req)?;
        if plan.follow && self.shared.ring.is_closed() {
            return Err(shutting_down());
        }
        let permit = self
            .shared
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "too many concurrent GetFlows streams (limit {}, flowd-max-streams)",
                    self.shared.config.max_streams
                ))
            })?;
        let (start, limit) = plan.start(&self.shared.ring);
        let window = Window {
            start,
            limit,
            end: (!plan.follow).then(|| self.shared.ring.write_seq()),
        };
        let (tx, rx) = mpsc::channel(self.shared.config.stream_queue);
        let state = Arc::new(StreamState {
            position: AtomicU64::new(start),
            queue: tx.downgrade(),
        });
        let id = self.shared.streams_registry.insert(state.clone());
        let shared = self.shared.clone();
        tokio::spawn(async move {
            run_stream(shared.clone(), plan, window, tx, state).await;
            shared.streams_registry.remove(id);
            drop(permit);
        });
        let this = self.clone();
        let stream = ReceiverStream::new(rx).map(move |out| this.response(out, mask.as_ref()));
        Ok(Response::new(Box::pin(stream)))
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
        let s = self.stats();
        let c = &self.shared.config;
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: c.node_name.clone(),
                version: c.version.clone(),
                address: c.address.clone(),
                state: NodeState::NodeConnected as i32,
                tls: None,
                uptime_ns: self.uptime_ns(),
                num_flows: s.num_flows,
                max_flows: s.max_flows,
                seen_flows: s.seen_flows,
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _request: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let namespaces = self
            .shared
            .namespaces
            .list()
            .into_iter()
            .map(|(cluster, namespace)| Namespace { cluster, namespace })
            .collect();
        Ok(Response::new(GetNamespacesResponse { namespaces }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let s = self.stats();
        Ok(Response::new(ServerStatusResponse {
            num_flows: s.num_flows,
            max_flows: s.max_flows,
            seen_flows: s.seen_flows,
            uptime_ns: self.uptime_ns(),
            num_connected_nodes: Some(UInt32Value { value: 1 }),
            num_unavailable_nodes: Some(UInt32Value { value: 0 }),
            unavailable_nodes: Vec::new(),
            version: self.shared.config.version.clone(),
            flows_rate: self.shared.rate.per_second(SystemTime::now()),
            lost_kernel_events: s.lost_kernel_events,
        }))
    }
}
