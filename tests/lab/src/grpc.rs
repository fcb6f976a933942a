//! The lab's gRPC and HTTP/2 workload: the `shop.inventory.v1.Inventory`
//! service (one method of each RPC kind, answering as each request says),
//! a client that makes planned calls and reports each one's exact outcome,
//! and a plain HTTP/2 (h2c, prior knowledge) server and client.
//!
//! The outcomes are the oracles of the HTTP/2 tests: method, status code,
//! messages each way and the latency the client measured, per call.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{
    Code, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};

/// The generated messages, client and server.
pub mod pb {
    tonic::include_proto!("shop.inventory.v1");
}

use pb::{
    Behaviour, ReserveReply, ReserveRequest, RestockItem, RestockSummary, StockEvent, SyncMessage,
    WatchRequest,
    inventory_client::InventoryClient,
    inventory_server::{Inventory, InventoryServer},
};

/// The service's full name, as it appears in `:path`.
pub const SERVICE: &str = "shop.inventory.v1.Inventory";

/// Fresh metadata values: a value seen once is added to the HPACK dynamic
/// table and never found there again, so enough of them evict entries.
static FRESH: AtomicU64 = AtomicU64::new(0);

/// Adds `bytes` (rounded up to whole headers) of `x-pad-N` headers with
/// fresh values.
fn pad(md: &mut MetadataMap, bytes: u32) {
    const VALUE: usize = 120;
    let headers = (bytes as usize).div_ceil(VALUE);
    for i in 0..headers {
        let n = FRESH.fetch_add(1, Ordering::Relaxed);
        let value = format!("{n:0>width$}", width = VALUE);
        if let (Ok(key), Ok(v)) = (
            format!("x-pad-{i}").parse::<tonic::metadata::AsciiMetadataKey>(),
            MetadataValue::try_from(value.as_str()),
        ) {
            md.insert(key, v);
        }
    }
}

/// The status a call ends with, `None` for OK.
fn status_of(b: &Behaviour) -> Option<Status> {
    if b.status == 0 {
        return None;
    }
    let mut s = Status::new(Code::from(b.status as i32), b.message.clone());
    pad(s.metadata_mut(), b.header_bytes);
    Some(s)
}

fn response<T>(msg: T, b: &Behaviour) -> tonic::Response<T> {
    let mut r = tonic::Response::new(msg);
    pad(r.metadata_mut(), b.header_bytes);
    r
}

fn payload(n: u32) -> Vec<u8> {
    vec![0x5a; n as usize]
}

/// The Inventory service: every call ends as its request's Behaviour says.
#[derive(Debug, Default, Clone)]
pub struct InventoryService;

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(
        &self,
        req: tonic::Request<ReserveRequest>,
    ) -> Result<tonic::Response<ReserveReply>, Status> {
        let r = req.into_inner();
        let b = r.behaviour.unwrap_or_default();
        if let Some(s) = status_of(&b) {
            return Err(s);
        }
        let reply = ReserveReply {
            reservation: format!("res-{}", r.sku),
            payload: payload(b.reply_bytes),
        };
        Ok(response(reply, &b))
    }

    type WatchStream = Boxed<StockEvent>;

    async fn watch(
        &self,
        req: tonic::Request<WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let b = req.into_inner().behaviour.unwrap_or_default();
        let events = (0..u64::from(b.replies)).map(move |seq| {
            Ok(StockEvent {
                seq,
                payload: payload(b.reply_bytes),
            })
        });
        let end = status_of(&b).map(Err);
        let stream = tokio_stream::iter(events.chain(end));
        Ok(response(Box::pin(stream) as Self::WatchStream, &b))
    }

    async fn restock(
        &self,
        req: tonic::Request<Streaming<RestockItem>>,
    ) -> Result<tonic::Response<RestockSummary>, Status> {
        let mut items = req.into_inner();
        let mut b = Behaviour::default();
        let mut sum = RestockSummary::default();
        while let Some(item) = items.next().await {
            let item = item?;
            if sum.items == 0 {
                b = item.behaviour.unwrap_or_default();
            }
            sum.items += 1;
            sum.bytes += item.payload.len() as u64;
        }
        if let Some(s) = status_of(&b) {
            return Err(s);
        }
        Ok(response(sum, &b))
    }

    type SyncStream = Boxed<SyncMessage>;

    async fn sync(
        &self,
        req: tonic::Request<Streaming<SyncMessage>>,
    ) -> Result<tonic::Response<Self::SyncStream>, Status> {
        let mut input = req.into_inner();
        // The first message says how the call ends; it is echoed like the rest.
        let Some(first) = input.next().await else {
            return Ok(tonic::Response::new(Box::pin(tokio_stream::empty())));
        };
        let first = first?;
        let b = first.behaviour.clone().unwrap_or_default();
        let end = status_of(&b);
        let echo = async_stream(first, input, end);
        Ok(response(Box::pin(echo) as Self::SyncStream, &b))
    }
}

/// Echoes `first` and every message of `rest`, then ends with `end`.
fn async_stream(
    first: SyncMessage,
    rest: Streaming<SyncMessage>,
    end: Option<Status>,
) -> impl Stream<Item = Result<SyncMessage, Status>> + Send + 'static {
    let echo = |m: SyncMessage| SyncMessage {
        behaviour: None,
        seq: m.seq,
        payload: m.payload,
    };
    tokio_stream::once(Ok(echo(first)))
        .chain(rest.map(move |m| m.map(echo)))
        .chain(tokio_stream::iter(end.map(Err)))
}

/// Serves the Inventory service on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(InventoryServer::new(InventoryService))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// An RPC kind of the Inventory service, by the method that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl Kind {
    pub fn method(self) -> &'static str {
        match self {
            Self::Unary => "Reserve",
            Self::ServerStreaming => "Watch",
            Self::ClientStreaming => "Restock",
            Self::Bidi => "Sync",
        }
    }

    /// `:path` of the method.
    pub fn path(self) -> String {
        format!("/{SERVICE}/{}", self.method())
    }
}

/// One planned call.
#[derive(Debug, Clone)]
pub struct Call {
    pub kind: Kind,
    pub behaviour: Behaviour,
    /// Messages the client sends (streaming kinds; unary and server
    /// streaming send one).
    pub requests: u32,
    /// Payload bytes in each client message.
    pub request_bytes: u32,
    /// Bytes of custom request metadata with fresh values.
    pub header_bytes: u32,
}

impl Call {
    /// A call of `kind` that ends with `status` (server-streaming and bidi
    /// calls exchange `messages` messages, client streaming sends them).
    pub fn new(kind: Kind, status: Code, messages: u32) -> Self {
        let single = matches!(kind, Kind::Unary | Kind::ServerStreaming);
        Self {
            kind,
            behaviour: Behaviour {
                status: status as u32,
                message: if status == Code::Ok {
                    String::new()
                } else {
                    format!("lab says {status:?}")
                },
                replies: if kind == Kind::ServerStreaming {
                    messages
                } else {
                    1
                },
                reply_bytes: 16,
                header_bytes: 0,
            },
            requests: if single { 1 } else { messages },
            request_bytes: 16,
            header_bytes: 0,
        }
    }
}

/// What one call did, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: Kind,
    /// The gRPC status code the call ended with.
    pub code: Code,
    pub requests: u32,
    pub responses: u32,
    /// From sending the request headers to reading the status.
    pub latency: Duration,
}

/// A channel to the Inventory service at `addr` (one HTTP/2 connection).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<InventoryClient<Channel>> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(InventoryClient::new(ch))
}

fn request<T>(msg: T, header_bytes: u32) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    pad(r.metadata_mut(), header_bytes);
    r
}

/// Makes `call` on `client` and reports its outcome (a non-OK status is an
/// outcome, not an error; transport failures are errors).
pub async fn make(client: &mut InventoryClient<Channel>, call: &Call) -> anyhow::Result<Outcome> {
    let b = call.behaviour.clone();
    let n = call.requests;
    let body = payload(call.request_bytes);
    let start = Instant::now();
    let (result, responses): (Result<(), Status>, u32) = match call.kind {
        Kind::Unary => {
            let req = ReserveRequest {
                sku: "sku-1".into(),
                behaviour: Some(b),
                payload: body,
                quantity: 0,
            };
            match client.reserve(request(req, call.header_bytes)).await {
                Ok(_) => (Ok(()), 1),
                Err(s) => (Err(s), 0),
            }
        }
        Kind::ServerStreaming => {
            let req = WatchRequest {
                sku: "sku-1".into(),
                behaviour: Some(b),
            };
            match client.watch(request(req, call.header_bytes)).await {
                Ok(r) => drain(r.into_inner()).await,
                Err(s) => (Err(s), 0),
            }
        }
        Kind::ClientStreaming => {
            let items = (0..n).map(move |i| RestockItem {
                behaviour: (i == 0).then(|| b.clone()),
                payload: body.clone(),
            });
            let req = request(tokio_stream::iter(items), call.header_bytes);
            match client.restock(req).await {
                Ok(_) => (Ok(()), 1),
                Err(s) => (Err(s), 0),
            }
        }
        Kind::Bidi => {
            let msgs = (0..n).map(move |i| SyncMessage {
                behaviour: (i == 0).then(|| b.clone()),
                seq: u64::from(i),
                payload: body.clone(),
            });
            let req = request(tokio_stream::iter(msgs), call.header_bytes);
            match client.sync(req).await {
                Ok(r) => drain(r.into_inner()).await,
                Err(s) => (Err(s), 0),
            }
        }
    };
    let latency = start.elapsed();
    let code = match result {
        Ok(()) => Code::Ok,
        Err(s) if is_transport(&s) => anyhow::bail!("{} call failed: {s}", call.kind.method()),
        Err(s) => s.code(),
    };
    Ok(Outcome {
        kind: call.kind,
        code,
        requests: n,
        responses,
        latency,
    })
}

/// Reads a response stream to its end: messages read and how it ended.
async fn drain<T>(mut s: Streaming<T>) -> (Result<(), Status>, u32) {
    let mut n = 0;
    loop {
        match s.message().await {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (Ok(()), n),
            Err(e) => return (Err(e), n),
        }
    }
}

/// A status the client made up because the connection failed, not one
/// the server sent.
pub(crate) fn is_transport(s: &Status) -> bool {
    s.code() == Code::Unavailable && s.message().contains("transport")
}

// ------------------------------------------------------------ plain HTTP/2 --

/// Serves plain HTTP/2 without TLS (prior knowledge) on `listener`:
/// `/status/<code>` answers with that status, anything else 200; the body is
/// the path.
pub async fn serve_h2c(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(h2c_respond);
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "h2c connection ended");
            }
        });
    }
}

async fn h2c_respond(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let code = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = Response::new(Full::new(Bytes::from(path)));
    *r.status_mut() = code;
    Ok(r)
}

/// One plain HTTP/2 exchange as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2cOutcome {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub latency: Duration,
}

/// Sends `requests` (method, path) concurrently on one HTTP/2 connection to
/// `addr` (authority `host`) and reports each.
pub async fn h2c_requests(
    addr: SocketAddr,
    host: &str,
    requests: &[(&str, String)],
) -> anyhow::Result<Vec<H2cOutcome>> {
    let stream = TcpStream::connect(addr).await?;
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut tasks = Vec::new();
    for (method, path) in requests {
        let mut sender = sender.clone();
        let req = Request::builder()
            .method(*method)
            .uri(format!("http://{host}{path}"))
            .body(Full::new(Bytes::new()))?;
        let (method, path) = (method.to_string(), path.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            anyhow::Ok(H2cOutcome {
                method,
                path,
                status,
                latency: start.elapsed(),
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    drop(sender);
    driver.abort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workload is the oracle of the HTTP/2 tests: each call ends as
    /// planned, with the planned message counts (on loopback, no flowd).
    #[tokio::test]
    async fn calls_end_as_planned() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let mut client = connect(addr).await.unwrap();
        for kind in [
            Kind::Unary,
            Kind::ServerStreaming,
            Kind::ClientStreaming,
            Kind::Bidi,
        ] {
            for code in [Code::Ok, Code::NotFound, Code::Internal] {
                let mut call = Call::new(kind, code, 3);
                call.header_bytes = 500;
                call.behaviour.header_bytes = 300;
                let o = make(&mut client, &call).await.unwrap();
                assert_eq!(o.code, code, "{kind:?}");
                let responses = match (kind, code) {
                    (Kind::ServerStreaming | Kind::Bidi, _) => 3,
                    (_, Code::Ok) => 1,
                    _ => 0,
                };
                assert_eq!(o.responses, responses, "{kind:?} {code:?}");
            }
        }
        let h2c = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h2c_addr = h2c.local_addr().unwrap();
        let h2c_server = tokio::spawn(serve_h2c(h2c));
        let reqs = [
            ("GET", "/a".to_string()),
            ("POST", "/status/404".to_string()),
        ];
        let out = h2c_requests(h2c_addr, "web.lab", &reqs).await.unwrap();
        assert_eq!(
            out.iter().map(|o| o.status).collect::<Vec<_>>(),
            vec![200, 404]
        );
        server.abort();
        h2c_server.abort();
    }
}
