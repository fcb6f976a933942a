//! Connections to the nodes: one manager task per peer connects, probes the
//! node periodically and reconnects with exponential backoff after a failure.
//! Readers take snapshots; every state change bumps a watch counter.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flowd_proto::observer::ServerStatusRequest;
use flowd_proto::observer::observer_client::ObserverClient;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::config::RelayConfig;
use crate::dial::connect;
use crate::peers::{PeerMap, PeerSpec};

/// Connection state of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// First connection attempt in progress.
    Connecting,
    /// Connected and answering.
    Connected,
    /// Not reachable; retried with backoff.
    Unavailable,
}

/// A node as seen by readers.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Peer description.
    pub spec: PeerSpec,
    /// Current state.
    pub state: PeerState,
    /// Channel while connected.
    pub channel: Option<Channel>,
    /// Changes (increases) on every successful (re)connection; unique in the pool.
    pub generation: u64,
    /// Why it is unavailable.
    pub last_error: Option<String>,
    /// Whether TLS is used towards it.
    pub tls: bool,
}

struct Entry {
    view: NodeView,
    fail: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The set of node connections, following a [`crate::PeerRegistry`].
pub struct Pool {
    nodes: Mutex<BTreeMap<String, Entry>>,
    /// Set by [`Pool::shutdown`]: no peer is added any more.
    closed: std::sync::atomic::AtomicBool,
    /// The task following the peer registry.
    follow: Mutex<Option<JoinHandle<()>>>,
    changed: watch::Sender<u64>,
    cfg: Arc<RelayConfig>,
    /// Connection generations are unique pool-wide, so a peer removed and
    /// added again under the same name never reuses a generation.
    generations: std::sync::atomic::AtomicU64,
}

impl Pool {
    /// Starts following `peers`; with TLS towards the nodes, also follows
    /// the TLS files (new connections use the current ones).
    pub fn start(mut peers: watch::Receiver<Arc<PeerMap>>, cfg: Arc<RelayConfig>) -> Arc<Pool> {
        if let Some(tls) = &cfg.peer_tls {
            tls.watch(flowd_tls::DEFAULT_RELOAD_INTERVAL);
        }
        let pool = Arc::new(Pool {
            nodes: Mutex::new(BTreeMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            follow: Mutex::new(None),
            changed: watch::Sender::new(0),
            cfg,
            generations: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&pool);
        let follow = tokio::spawn(async move {
            loop {
                let current = peers.borrow_and_update().clone();
                match weak.upgrade() {
                    Some(p) => p.sync(&current),
                    None => return,
                }
                if peers.changed().await.is_err() {
                    return;
                }
            }
        });
        *pool.follow.lock().unwrap_or_else(|e| e.into_inner()) = Some(follow);
        pool
    }

    /// Stops following the peers and closes every node connection (the
    /// relay is shutting down). Nodes stay listed, unavailable.
    pub fn shutdown(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.follow.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let mut nodes = self.lock();
        for e in nodes.values_mut() {
            e.task.abort();
            e.view.state = PeerState::Unavailable;
            // The last clone of the connection: dropping it closes it.
            e.view.channel = None;
            e.view.last_error = Some("the relay is shutting down".into());
        }
        drop(nodes);
        self.changed.send_modify(|v| *v += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(self: &Arc<Self>, peers: &PeerMap) {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut nodes = self.lock();
        let gone: Vec<String> = nodes
            .iter()
            .filter(|(n, e)| peers.get(*n) != Some(&e.view.spec))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            if let Some(e) = nodes.remove(&n) {
                info!(node = %n, "peer removed");
                e.task.abort();
            }
        }
        for (name, spec) in peers {
            if nodes.contains_key(name) {
                continue;
            }
            info!(node = %name, address = %spec.address, "peer added");
            let fail = Arc::new(Notify::new());
            let task = tokio::spawn(manage(
                Arc::downgrade(self),
                spec.clone(),
                fail.clone(),
                self.cfg.clone(),
            ));
            nodes.insert(
                name.clone(),
                Entry {
                    view: NodeView {
                        spec: spec.clone(),
                        state: PeerState::Connecting,
                        channel: None,
                        generation: 0,
                        last_error: None,
                        tls: self.cfg.peer_tls.is_some(),
                    },
                    fail,
                    task,
                },
            );
        }
        drop(nodes);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Every node, sorted by name.
    pub fn snapshot(&self) -> Vec<NodeView> {
        self.lock().values().map(|e| e.view.clone()).collect()
    }

    /// A counter bumped on every change of the node set or a node's state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A request to `name` failed at the transport level: reconnect it (only
    /// if it is still on the connection `generation` that failed).
    pub fn report_failure(&self, name: &str, generation: u64, error: &str) {
        let nodes = self.lock();
        if let Some(e) = nodes.get(name)
            && e.view.generation == generation
            && e.view.state == PeerState::Connected
        {
            warn!(node = %name, %error, "node failed; reconnecting");
            e.fail.notify_one();
        }
    }

    fn set(&self, name: &str, state: PeerState, channel: Option<Channel>, error: Option<String>) {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut nodes = self.lock();
        let Some(e) = nodes.get_mut(name) else { return };
        if state == PeerState::Connected {
            e.view.generation = self
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
        }
        e.view.state = state;
        e.view.channel = channel;
        e.view.last_error = error;
        drop(nodes);
        self.changed.send_modify(|v| *v += 1);
    }
}

async fn manage(
    pool: std::sync::Weak<Pool>,
    spec: PeerSpec,
    fail: Arc<Notify>,
    cfg: Arc<RelayConfig>,
) {
    let mut failures = 0u32;
    loop {
        let error = match connect(&spec.address, spec.tls_server_name.as_deref(), &cfg).await {
            Ok(ch) => match probe(&ch, &cfg).await {
                Ok(()) => {
                    failures = 0;
                    info!(node = %spec.name, address = %spec.address, "node connected");
                    let Some(p) = pool.upgrade() else { return };
                    p.set(&spec.name, PeerState::Connected, Some(ch.clone()), None);
                    drop(p);
                    loop {
                        tokio::select! {
                            _ = fail.notified() => break "a request failed".to_owned(),
                            _ = tokio::time::sleep(cfg.health_check_interval) => {
                                if let Err(e) = probe(&ch, &cfg).await {
                                    break e;
                                }
                            }
                        }
                    }
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        failures = failures.saturating_add(1);
        let delay = cfg.backoff.delay(failures);
        warn!(node = %spec.name, %error, retry_in = ?delay, "node unavailable");
        let Some(p) = pool.upgrade() else { return };
        p.set(&spec.name, PeerState::Unavailable, None, Some(error));
        drop(p);
        tokio::time::sleep(delay).await;
        // A failure reported while we were disconnected is stale.
        let _ = tokio::time::timeout(std::time::Duration::ZERO, fail.notified()).await;
    }
}

async fn probe(ch: &Channel, cfg: &RelayConfig) -> Result<(), String> {
    let mut c = ObserverClient::new(ch.clone());
    match tokio::time::timeout(
        cfg.node_rpc_timeout,
        c.server_status(ServerStatusRequest {}),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("ServerStatus: {}", s.message())),
        Err(_) => Err(format!(
            "ServerStatus timed out after {:?}",
            cfg.node_rpc_timeout
        )),
    }
}
