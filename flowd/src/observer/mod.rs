//! The flow store and the Observer API (`observer.Observer`, Hubble's node
//! API on :4244).
//!
//! [`Observer::new`] gives the read side ([`Observer`], cheap to clone, serves
//! gRPC) and the single write side ([`FlowWriter`], owned by the daemon's
//! event loop). Flows go into a ring of the last `capacity` flows
//! ([`buffer`]); each GetFlows stream reads the ring at its own pace through
//! a bounded queue, so a slow client never slows the writer or other clients:
//! it falls behind, and is told how many flows it missed with a
//! `LostEvent(HUBBLE_RING_BUFFER)`.
//!
//! ```no_run
//! # async fn demo(flows: Vec<flowd_proto::flow::Flow>) -> Result<(), Box<dyn std::error::Error>> {
//! use flowd::observer::{Observer, ObserverConfig};
//! let (observer, mut writer) = Observer::new(ObserverConfig::default())?;
//! let addr = "127.0.0.1:4244".parse()?;
//! tokio::spawn(observer.clone().serve(addr, std::future::pending()));
//! for f in &flows { writer.push(f); }
//! writer.report_kernel_lost(3, None); // from the datapath's loss counters
//! # Ok(()) }
//! ```
pub mod buffer;
mod server;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use flowd_proto::Timestamp;
use flowd_proto::flow::{Flow, LostEvent, LostEventSource};
use flowd_proto::observer::observer_server::ObserverServer;
use tokio::sync::Semaphore;

use buffer::{Event, Ring};
pub use server::FieldMaskError;
use stats::{Namespaces, Rate};

/// Observer settings (from the ConfigMap keys in brackets).
#[derive(Debug, Clone)]
pub struct ObserverConfig {
    /// Flows kept in the buffer: 2^n − 1, at most 65535
    /// [`hubble-event-buffer-capacity`].
    pub capacity: usize,
    /// Concurrent GetFlows streams; more are refused with
    /// RESOURCE_EXHAUSTED [`flowd-max-streams`].
    pub max_streams: usize,
    /// Responses queued per stream before its reader waits (and, if the
    /// client stays slow, falls behind in the ring) [`flowd-stream-queue-size`].
    pub stream_queue: usize,
    /// This node's name, in GetNodes and in every GetFlowsResponse.
    pub node_name: String,
    /// Address of the Observer API as other nodes reach it (GetNodes).
    pub address: String,
    /// Reported by ServerStatus and GetNodes.
    pub version: String,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        Self {
            capacity: buffer::DEFAULT_CAPACITY,
            max_streams: 256,
            stream_queue: 128,
            node_name: String::new(),
            address: String::new(),
            version: default_version(),
        }
    }
}

/// `flowd v<crate version>`, the form Hubble clients print.
pub fn default_version() -> String {
    format!("flowd v{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    #[error("hubble-event-buffer-capacity: {0}")]
    Capacity(String),
    #[error("flowd-max-streams must be at least 1")]
    MaxStreams,
    #[error("serving the Observer API on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

/// Per-stream state visible to [`Observer::streams`].
pub(crate) struct StreamState {
    /// Next sequence number the stream will read.
    pub(crate) position: AtomicU64,
    /// Weak, so that the stream ends when its task drops the only sender.
    pub(crate) queue: tokio::sync::mpsc::WeakSender<server::Out>,
}

/// Open streams, touched only when a stream opens or closes.
#[derive(Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    streams: parking_lot::Mutex<HashMap<u64, Arc<StreamState>>>,
}

impl Registry {
    pub(crate) fn insert(&self, s: Arc<StreamState>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.streams.lock().insert(id, s);
        id
    }
    pub(crate) fn remove(&self, id: u64) {
        self.streams.lock().remove(&id);
    }
}

/// One open GetFlows stream, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// Responses waiting in the stream's queue (at most `stream_queue`).
    pub queued: usize,
    /// How far behind the writer the stream's reader is, in events; beyond
    /// the buffer capacity it has lost events (and will say so).
    pub lag: u64,
}

pub(crate) struct Shared {
    pub(crate) streams_registry: Registry,
    pub(crate) ring: Ring,
    pub(crate) config: ObserverConfig,
    pub(crate) streams: Arc<Semaphore>,
    pub(crate) started: Instant,
    pub(crate) stats: stats::Counters,
    pub(crate) rate: Rate,
    pub(crate) namespaces: Namespaces,
}

/// Read side: serves the API. Clone freely.
#[derive(Clone)]
pub struct Observer {
    shared: Arc<Shared>,
}

/// Write side: the only way to add flows. Not `Clone`: one writer.
pub struct FlowWriter {
    shared: Arc<Shared>,
    namespaces: stats::NamespaceCache,
}

/// Counters as ServerStatus reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    /// Flows (and loss notices) currently buffered.
    pub num_flows: u64,
    pub max_flows: u64,
    /// Flows pushed since start.
    pub seen_flows: u64,
    /// Kernel events reported lost since start.
    pub lost_kernel_events: u64,
    /// Events GetFlows readers were told they lost (`LostEvent` with
    /// `HUBBLE_RING_BUFFER`) since start, all streams together.
    pub lost_ring_buffer_events: u64,
    /// GetFlows streams currently open.
    pub active_streams: usize,
}

impl Observer {
    pub fn new(config: ObserverConfig) -> Result<(Observer, FlowWriter), ObserverError> {
        buffer::validate_capacity(config.capacity).map_err(ObserverError::Capacity)?;
        if config.max_streams == 0 {
            return Err(ObserverError::MaxStreams);
        }
        let shared = Arc::new(Shared {
            ring: Ring::new(config.capacity),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            streams_registry: Registry::default(),
            config,
            started: Instant::now(),
            stats: stats::Counters::default(),
            rate: Rate::default(),
            namespaces: Namespaces::default(),
        });
        Ok((
            Observer {
                shared: shared.clone(),
            },
            FlowWriter {
                shared,
                namespaces: stats::NamespaceCache::default(),
            },
        ))
    }

    /// The tonic service, to mount in the daemon's own `Server` (e.g. next to
    /// gRPC health or the Peer service).
    pub fn into_service(self) -> ObserverServer<Observer> {
        ObserverServer::new(self)
            // Hubble clients send large filter lists rarely; responses are
            // one flow each. Defaults (4 MiB) are fine for both.
            .max_decoding_message_size(4 << 20)
    }

    /// Serves the Observer API on `addr` until `shutdown` completes.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ObserverError> {
        tonic::transport::Server::builder()
            .add_service(self.into_service())
            .serve_with_shutdown(addr, shutdown)
            .await
            .map_err(|source| ObserverError::Serve { addr, source })
    }

    /// Like [`Observer::serve`] on an already bound listener (tests bind
    /// 127.0.0.1:0 and read the port back).
    pub async fn serve_with_listener(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ObserverError> {
        self.serve_with_listener_tls(listener, None, shutdown).await
    }

    /// Like [`Observer::serve_with_listener`], over TLS when `tls` is given
    /// (see [`tls_config`] for flowd's `hubble-tls-*` keys).
    pub async fn serve_with_listener_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<flowd_tls::ServerTls>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ObserverError> {
        serve_routes(
            tonic::service::Routes::new(self.into_service()),
            listener,
            tls,
            shutdown,
        )
        .await
    }

    pub fn stats(&self) -> BufferStats {
        let s = &self.shared;
        BufferStats {
            num_flows: s.ring.len(),
            max_flows: s.ring.capacity(),
            seen_flows: s.stats.seen_flows(),
            lost_kernel_events: s.stats.lost_kernel(),
            lost_ring_buffer_events: s.stats.lost_ring(),
            active_streams: s.config.max_streams - s.streams.available_permits(),
        }
    }

    /// The open GetFlows streams.
    pub fn streams(&self) -> Vec<StreamInfo> {
        let write = self.shared.ring.write_seq();
        let streams: Vec<_> = self
            .shared
            .streams_registry
            .streams
            .lock()
            .values()
            .cloned()
            .collect();
        streams
            .iter()
            .map(|s| StreamInfo {
                queued: s
                    .queue
                    .upgrade()
                    .map_or(0, |tx| tx.max_capacity() - tx.capacity()),
                lag: write.saturating_sub(s.position.load(Ordering::Relaxed)),
            })
            .collect()
    }

    pub fn config(&self) -> &ObserverConfig {
        &self.shared.config
    }
}

/// Serves gRPC services on an already bound listener, over TLS when `tls` is
/// given: the daemon's :4244 server (Observer, Peer) is built here. TLS is
/// terminated by `flowd_tls` (certificates reloaded for new connections,
/// open streams untouched).
pub async fn serve_routes(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<flowd_tls::ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ObserverError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let server = tonic::transport::Server::builder().add_routes(routes);
    match tls {
        Some(tls) => {
            let incoming = flowd_tls::incoming(listener, tls, Default::default());
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    }
    .map_err(|source| ObserverError::Serve { addr, source })
}

/// Like [`serve_routes`] over TLS, and plain-text connections on the same
/// port get `plain` only (gRPC health: kubelet's gRPC probe speaks no TLS;
/// it reveals nothing but SERVING / NOT_SERVING).
pub async fn serve_routes_tls_and_plain(
    routes: tonic::service::Routes,
    plain: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: flowd_tls::ServerTls,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ObserverError> {
    use futures::FutureExt as _;
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tls_in, plain_in) = flowd_tls::incoming_with_plaintext(listener, tls, Default::default());
    let shutdown = shutdown.shared();
    let (a, b) = tokio::join!(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(tls_in, shutdown.clone()),
        tonic::transport::Server::builder()
            .add_routes(plain)
            .serve_with_incoming_shutdown(plain_in, shutdown),
    );
    a.and(b)
        .map_err(|source| ObserverError::Serve { addr, source })
}

impl FlowWriter {
    /// Appends a flow (stored encoded, see [`buffer::Event`]). Never blocks
    /// on readers.
    pub fn push(&mut self, flow: &Flow) {
        self.append(flow, Instant::now(), SystemTime::now());
        self.wake_readers();
    }

    /// Appends a flow received at `now` (`wall` on the wall clock) without
    /// waking the follow streams:
    /// the pipeline appends a batch, then calls [`FlowWriter::wake_readers`]
    /// once, so streams are woken once per batch, not per flow.
    pub fn append(&mut self, flow: &Flow, now: Instant, wall: SystemTime) {
        let s = &self.shared;
        self.namespaces.note(flow, &s.namespaces, now);
        s.stats.add_flow();
        s.rate.add(wall);
        s.ring.append(Event::flow(flow));
    }

    /// Wakes the streams waiting for flows appended since the last wake.
    pub fn wake_readers(&mut self) {
        self.shared.ring.wake();
    }

    /// Reports `n` events lost before they became flows (BPF RingBuf reserve
    /// failures, summed since the last report). Streams receive
    /// `LostEvent(PERF_EVENT_RING_BUFFER, n)`; ServerStatus counts them.
    pub fn report_kernel_lost(&mut self, n: u64, cpu: Option<i32>) {
        if n == 0 {
            return;
        }
        self.shared.stats.add_lost_kernel(n);
        let lost = LostEvent::new(LostEventSource::PerfEventRingBuffer, n, cpu);
        self.shared
            .ring
            .push(Event::Lost(Arc::new((lost, Timestamp::now()))));
    }

    /// No more flows will be written (the daemon is shutting down): every
    /// follow stream sends what it has not sent yet, then ends with
    /// UNAVAILABLE "flowd is shutting down"; new follow requests get that
    /// status at once. Non-follow requests are served as before.
    pub fn close(&mut self) {
        self.shared.ring.close();
    }

    /// A read handle on the same buffer.
    pub fn observer(&self) -> Observer {
        Observer {
            shared: self.shared.clone(),
        }
    }
}
