//! In-test fake nodes (Observer servers on loopback with fixed and live
//! flows), a fake peer service, and a relay started in-process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowd_proto::Timestamp;
use flowd_proto::flow::Flow;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use flowd_proto::observer::observer_server::{Observer, ObserverServer};
use flowd_proto::observer::*;
use flowd_proto::pbjson_types::UInt32Value;
use flowd_proto::peer::peer_server::{Peer, PeerServer};
use flowd_proto::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use flowd_proto::relay::NodeState;
use flowd_relay::config::Backoff;
use flowd_relay::server::{Relay, serve};
use flowd_relay::{PeerRegistry, Pool, RelayConfig};
use futures::StreamExt;
use tokio::sync::broadcast;
use tonic::codegen::BoxStream;
use tonic::transport::{Channel, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// Shared state of a fake node (survives kill/restart).
pub struct NodeData {
    pub name: String,
    /// (sequence, flow), oldest first.
    flows: Mutex<Vec<(u64, Flow)>>,
    live: broadcast::Sender<(u64, Flow)>,
    seq: Mutex<u64>,
    pub followers: AtomicUsize,
    pub last_request: Mutex<Option<GetFlowsRequest>>,
    pub namespaces: Vec<(String, String)>,
    pub status: ServerStatusResponse,
    /// GetFlows accepts and never sends anything.
    pub hang: bool,
    /// GetFlows refuses with this code and message (as a node refuses an
    /// invalid filter).
    pub refuse: Mutex<Option<(tonic::Code, String)>>,
    /// ServerStatus calls answered (the relay's probes).
    pub status_calls: AtomicUsize,
}

pub fn ts(ns: u64) -> Timestamp {
    Timestamp::from_unix_nanos(ns)
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl NodeData {
    pub fn new(name: &str) -> Arc<Self> {
        Self::with(name, Vec::new(), ServerStatusResponse::default(), false)
    }

    pub fn with(
        name: &str,
        namespaces: Vec<(&str, &str)>,
        status: ServerStatusResponse,
        hang: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            flows: Mutex::new(Vec::new()),
            live: broadcast::channel(1 << 17).0,
            seq: Mutex::new(0),
            followers: AtomicUsize::new(0),
            last_request: Mutex::new(None),
            namespaces: namespaces
                .into_iter()
                .map(|(c, n)| (c.to_owned(), n.to_owned()))
                .collect(),
            status,
            hang,
            refuse: Mutex::new(None),
            status_calls: AtomicUsize::new(0),
        })
    }

    /// Records `f` as it is (its uuid and time are the caller's).
    pub fn emit_flow(&self, mut f: Flow) {
        let mut seq = self.seq.lock().unwrap();
        *seq += 1;
        f.node_name.clone_from(&self.name);
        self.flows.lock().unwrap().push((*seq, f.clone()));
        let _ = self.live.send((*seq, f));
    }

    /// Records a flow observed at `time_ns` (buffered and sent to followers).
    pub fn emit(&self, time_ns: u64) -> String {
        self.emit_padded(time_ns, 0)
    }

    /// As `emit`, with `pad` bytes of text in the flow (its `Summary`), for
    /// tests that need flows of a known size.
    pub fn emit_padded(&self, time_ns: u64, pad: usize) -> String {
        let mut seq = self.seq.lock().unwrap();
        *seq += 1;
        let uuid = format!("{}-{}", self.name, *seq);
        // Summary is deprecated in Hubble's API; any text field would do.
        #[allow(deprecated)]
        let f = Flow {
            time: Some(ts(time_ns)),
            uuid: uuid.clone(),
            node_name: self.name.clone(),
            summary: "x".repeat(pad),
            ..Default::default()
        };
        self.flows.lock().unwrap().push((*seq, f.clone()));
        let _ = self.live.send((*seq, f));
        uuid
    }
}

struct FollowerGuard(Arc<NodeData>);
impl Drop for FollowerGuard {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct FakeObserver(Arc<NodeData>);

fn resp(f: Flow) -> Result<GetFlowsResponse, Status> {
    Ok(GetFlowsResponse {
        time: f.time,
        node_name: f.node_name.clone(),
        response_types: Some(ResponseTypes::Flow(f)),
    })
}

#[tonic::async_trait]
impl Observer for FakeObserver {
    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        let req = request.into_inner();
        *self.0.last_request.lock().unwrap() = Some(req.clone());
        if let Some((code, msg)) = self.0.refuse.lock().unwrap().clone() {
            return Err(Status::new(code, msg));
        }
        if self.0.hang {
            return Ok(Response::new(Box::pin(futures::stream::pending())));
        }
        // Subscribe before the snapshot so nothing falls in between.
        let mut rx = self.0.live.subscribe();
        let snapshot: Vec<(u64, Flow)> = self.0.flows.lock().unwrap().clone();
        let last_seq = snapshot.last().map_or(0, |(s, _)| *s);
        let in_range = |f: &Flow| {
            let t = f.time.map_or(0, |t| t.as_unix_nanos());
            req.since.is_none_or(|s| t >= s.as_unix_nanos())
                && req.until.is_none_or(|u| t <= u.as_unix_nanos())
        };
        let mut old: Vec<Flow> = snapshot
            .into_iter()
            .map(|(_, f)| f)
            .filter(|f| in_range(f))
            .collect();
        let n = req.number as usize;
        if req.follow && n == 0 && req.since.is_none() {
            old.clear();
        } else if n > 0 && old.len() > n {
            if req.first {
                old.truncate(n);
            } else {
                old.drain(..old.len() - n);
            }
        }
        let old = futures::stream::iter(old.into_iter().map(resp));
        if !req.follow {
            return Ok(Response::new(Box::pin(old)));
        }
        self.0.followers.fetch_add(1, Ordering::SeqCst);
        let guard = FollowerGuard(self.0.clone());
        let live = async_stream_live(move |tx| async move {
            let _guard = guard;
            loop {
                match rx.recv().await {
                    Ok((s, f)) if s > last_seq => {
                        if tx.send(resp(f)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(old.chain(live))))
    }

    async fn get_agent_events(
        &self,
        _r: Request<GetAgentEventsRequest>,
    ) -> Result<Response<BoxStream<GetAgentEventsResponse>>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn get_debug_events(
        &self,
        _r: Request<GetDebugEventsRequest>,
    ) -> Result<Response<BoxStream<GetDebugEventsResponse>>, Status> {
        Err(Status::unimplemented("no"))
    }

    async fn get_nodes(
        &self,
        _r: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }

    async fn get_namespaces(
        &self,
        _r: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: self
                .0
                .namespaces
                .iter()
                .map(|(c, n)| Namespace {
                    cluster: c.clone(),
                    namespace: n.clone(),
                })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _r: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        self.0.status_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(self.0.status.clone()))
    }
}

/// A stream fed by a task (the task ends when the stream is dropped).
fn async_stream_live<F, Fut>(f: F) -> BoxStream<GetFlowsResponse>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<GetFlowsResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A fake node on its own runtime, so killing it drops every connection.
pub struct FakeNode {
    pub data: Arc<NodeData>,
    pub addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
    rt: Option<tokio::runtime::Runtime>,
}

impl FakeNode {
    pub fn start(data: Arc<NodeData>) -> Self {
        Self::start_at(data, "127.0.0.1:0".parse().unwrap(), None)
    }

    pub fn start_at(data: Arc<NodeData>, addr: SocketAddr, tls: Option<ServerTlsConfig>) -> Self {
        let mut n = Self {
            data,
            addr,
            tls,
            rt: None,
        };
        n.restart();
        n
    }

    /// (Re)starts serving on the same address.
    pub fn restart(&mut self) {
        assert!(self.rt.is_none(), "already running");
        let std_l = std::net::TcpListener::bind(self.addr).expect("bind fake node");
        std_l.set_nonblocking(true).unwrap();
        self.addr = std_l.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let svc = ObserverServer::new(FakeObserver(self.data.clone()));
        let tls = self.tls.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_l).unwrap();
            let mut b = Server::builder();
            if let Some(t) = tls {
                b = b.tls_config(t).unwrap();
            }
            let _ = b
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await;
        });
        self.rt = Some(rt);
    }

    /// Stops the node abruptly: listener and connections are closed.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        self.data.followers.store(0, Ordering::SeqCst);
    }

    pub fn followers(&self) -> usize {
        self.data.followers.load(Ordering::SeqCst)
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fake `peer.Peer/Notify` service.
#[derive(Clone)]
pub struct FakePeers {
    peers: Arc<Mutex<BTreeMap<String, String>>>,
    tx: broadcast::Sender<ChangeNotification>,
}

impl FakePeers {
    pub fn new() -> Self {
        Self {
            peers: Arc::default(),
            tx: broadcast::channel(64).0,
        }
    }

    pub fn add(&self, name: &str, addr: SocketAddr) {
        self.peers
            .lock()
            .unwrap()
            .insert(name.into(), addr.to_string());
        let _ = self.tx.send(note(
            name,
            &addr.to_string(),
            ChangeNotificationType::PeerAdded,
        ));
    }

    pub fn delete(&self, name: &str) {
        let addr = self.peers.lock().unwrap().remove(name).unwrap_or_default();
        let _ = self
            .tx
            .send(note(name, &addr, ChangeNotificationType::PeerDeleted));
    }

    pub async fn serve(&self) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let svc = PeerServer::new(self.clone());
        tokio::spawn(
            Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        addr
    }
}

fn note(name: &str, addr: &str, t: ChangeNotificationType) -> ChangeNotification {
    ChangeNotification {
        name: name.into(),
        address: addr.into(),
        r#type: t as i32,
        tls: None,
    }
}

#[tonic::async_trait]
impl Peer for FakePeers {
    async fn notify(
        &self,
        _r: Request<NotifyRequest>,
    ) -> Result<Response<BoxStream<ChangeNotification>>, Status> {
        let rx = self.tx.subscribe();
        let now: Vec<_> = self
            .peers
            .lock()
            .unwrap()
            .iter()
            .map(|(n, a)| Ok(note(n, a, ChangeNotificationType::PeerAdded)))
            .collect();
        let later = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|r| async move { r.ok().map(Ok) });
        Ok(Response::new(Box::pin(
            futures::stream::iter(now).chain(later),
        )))
    }
}

/// Settings with short timeouts for tests.
pub fn test_config() -> RelayConfig {
    RelayConfig {
        sort_buffer_len: 100,
        drain_timeout: Duration::from_millis(200),
        client_buffer: 4096,
        node_idle_timeout: Duration::from_secs(2),
        node_rpc_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        health_check_interval: Duration::from_millis(200),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
        ..RelayConfig::default()
    }
}

pub struct RelayHandle {
    pub addr: SocketAddr,
    pub registry: Arc<PeerRegistry>,
    pub pool: Arc<Pool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a relay on loopback over `registry`'s peers.
pub async fn start_relay(
    registry: Arc<PeerRegistry>,
    cfg: RelayConfig,
    tls: Option<flowd_relay::tls::ServerTls>,
) -> RelayHandle {
    let cfg = Arc::new(cfg);
    let pool = Pool::start(registry.subscribe(), cfg.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let relay = Relay::new(pool.clone(), cfg);
    tokio::spawn(async move {
        serve(relay, l, tls, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    RelayHandle {
        addr,
        registry,
        pool,
        stop: Some(stop),
    }
}

/// A relay over static peers.
pub async fn relay_over(nodes: &[&FakeNode], cfg: RelayConfig) -> RelayHandle {
    let registry = PeerRegistry::new();
    let peers = nodes
        .iter()
        .map(|n| {
            let spec =
                flowd_relay::peers::parse_static_peer(&format!("{}={}", n.data.name, n.addr))
                    .unwrap();
            (spec.name.clone(), spec)
        })
        .collect();
    registry.set_source("static", peers);
    start_relay(registry, cfg, None).await
}

pub async fn client(addr: SocketAddr) -> ObserverClient<Channel> {
    ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// Polls `cond` until true or the deadline (10 s) passes.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the relay has `n` connected nodes.
pub async fn wait_connected(c: &mut ObserverClient<Channel>, n: u32) {
    let c2 = c.clone();
    wait_for(&format!("{n} connected nodes"), move || {
        let mut c = c2.clone();
        async move {
            c.server_status(ServerStatusRequest {})
                .await
                .map(|r| r.into_inner().num_connected_nodes == Some(UInt32Value { value: n }))
                .unwrap_or(false)
        }
    })
    .await;
}

/// What a merged stream delivered.
#[derive(Default, Debug)]
pub struct Seen {
    pub flows: Vec<(String, u64, String)>, // (response node_name, time ns, uuid)
    pub status: Vec<(NodeState, Vec<String>)>,
    pub lost: Vec<(i32, u64)>,
}

pub enum Item {
    Flow(String, u64, String),
    Status(NodeState, Vec<String>),
    Lost(i32, u64),
}

pub fn classify(r: GetFlowsResponse) -> Item {
    match r.response_types {
        Some(ResponseTypes::Flow(f)) => Item::Flow(
            r.node_name,
            f.time.map_or(0, |t| t.as_unix_nanos() as u64),
            f.uuid,
        ),
        Some(ResponseTypes::NodeStatus(s)) => Item::Status(
            NodeState::try_from(s.state_change).unwrap_or(NodeState::UnknownNodeState),
            s.node_names,
        ),
        Some(ResponseTypes::LostEvents(l)) => Item::Lost(l.source, l.num_events_lost),
        None => panic!("empty response"),
    }
}

/// Reads `stream` into `seen` until `done(seen)` or the deadline.
pub async fn read_until(
    stream: &mut Streaming<GetFlowsResponse>,
    seen: &mut Seen,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done(seen) {
        let m = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {seen:?}"))
            .expect("stream error")
            .unwrap_or_else(|| panic!("stream ended while waiting for {what}"));
        match classify(m) {
            Item::Flow(n, t, u) => seen.flows.push((n, t, u)),
            Item::Status(s, n) => seen.status.push((s, n)),
            Item::Lost(s, n) => seen.lost.push((s, n)),
        }
    }
}

impl Seen {
    pub fn has_status(&self, state: NodeState, node: &str) -> bool {
        self.status
            .iter()
            .any(|(s, n)| *s == state && n.iter().any(|x| x == node))
    }

    pub fn count_from(&self, node: &str) -> usize {
        self.flows.iter().filter(|f| f.0 == node).count()
    }
}
