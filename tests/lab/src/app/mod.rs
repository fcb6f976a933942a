//! The programs in the pods: services that call each other (HTTP/1.1, and
//! gRPC from order-service to inventory), and the outside-world server.
//!
//! What each server calls and answers is in [`rules`] (the traffic generator
//! predicts the exchanges of a mix from the same rules). Services call each
//! other by DNS name (one type-A query per call, like a libc resolver
//! without a cache) over a fresh connection per call (HTTP: `Connection:
//! close`; gRPC: one HTTP/2 connection per call), so counts are
//! deterministic. Each server counts what it received, sent and resolved;
//! `GET /stats` on the loopback-only admin port returns the counts (loopback
//! never crosses a veth, so reading them adds nothing flowd could see).

mod grpc;
pub mod rules;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::rr::RecordType;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::Error;
use crate::state::ADMIN_PORT;

pub use rules::{Call, Finish, Kind, Reply, finish, plan, proceeds};

/// What one server counted. Keys are flattened into rows for JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub inbound: Vec<InboundCount>,
    pub outbound: Vec<OutboundCount>,
    pub dns: Vec<LookupCount>,
    /// gRPC calls served (inventory).
    #[serde(default)]
    pub grpc_inbound: Vec<GrpcInboundCount>,
    /// gRPC calls made (order-service).
    #[serde(default)]
    pub grpc_outbound: Vec<GrpcOutboundCount>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InboundCount {
    pub source_ip: IpAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutboundCount {
    pub name: String,
    pub destination_ip: Option<Ipv4Addr>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LookupCount {
    pub name: String,
    pub qtype: String,
    pub rcode: String,
    pub count: u32,
}

/// gRPC calls a server answered, by caller, method and status code.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrpcInboundCount {
    pub source_ip: IpAddr,
    /// Fully qualified (`shop.inventory.v1.Inventory`).
    pub service: String,
    pub method: String,
    pub code: u32,
    pub count: u32,
}

/// gRPC calls a server made, by callee, method and how they ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrpcOutboundCount {
    pub name: String,
    pub destination_ip: Option<Ipv4Addr>,
    pub service: String,
    pub method: String,
    /// `None`: the call got no status from the server (it failed to connect).
    pub code: Option<u32>,
    pub count: u32,
    /// The longest of these calls, from sending the request to reading its
    /// status, as this client measured it (nanoseconds).
    #[serde(default)]
    pub max_latency_ns: u64,
}

type GrpcKey = (String, String, Option<u32>);

#[derive(Default)]
struct Counters {
    inbound: BTreeMap<(IpAddr, String, String, u16), u32>,
    outbound: BTreeMap<(String, Option<Ipv4Addr>, String, String, u16), u32>,
    dns: BTreeMap<(String, String, String), u32>,
    grpc_inbound: BTreeMap<(IpAddr, String, String, u32), u32>,
    grpc_outbound: BTreeMap<(String, Option<Ipv4Addr>, GrpcKey), (u32, Duration)>,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        Stats {
            inbound: self
                .inbound
                .iter()
                .map(|((ip, m, p, s), c)| InboundCount {
                    source_ip: *ip,
                    method: m.clone(),
                    path: p.clone(),
                    status: *s,
                    count: *c,
                })
                .collect(),
            outbound: self
                .outbound
                .iter()
                .map(|((n, ip, m, p, s), c)| OutboundCount {
                    name: n.clone(),
                    destination_ip: *ip,
                    method: m.clone(),
                    path: p.clone(),
                    status: *s,
                    count: *c,
                })
                .collect(),
            dns: self
                .dns
                .iter()
                .map(|((n, t, r), c)| LookupCount {
                    name: n.clone(),
                    qtype: t.clone(),
                    rcode: r.clone(),
                    count: *c,
                })
                .collect(),
            grpc_inbound: self
                .grpc_inbound
                .iter()
                .map(|((ip, svc, m, code), c)| GrpcInboundCount {
                    source_ip: *ip,
                    service: svc.clone(),
                    method: m.clone(),
                    code: *code,
                    count: *c,
                })
                .collect(),
            grpc_outbound: self
                .grpc_outbound
                .iter()
                .map(|((n, ip, (svc, m, code)), (c, max))| GrpcOutboundCount {
                    name: n.clone(),
                    destination_ip: *ip,
                    service: svc.clone(),
                    method: m.clone(),
                    code: *code,
                    count: *c,
                    max_latency_ns: u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }
}

/// What a server needs to know.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppConfig {
    pub kind: Kind,
    pub namespace: String,
    pub pod: String,
    /// Port to serve on (all addresses).
    pub port: u16,
    /// Port other app pods serve on.
    pub app_port: u16,
    /// Port gRPC services listen on (this pod too, if its role serves gRPC).
    pub grpc_port: u16,
    pub dns: Ipv4Addr,
    pub cluster_domain: String,
    /// The outside world's DNS name (payment-service calls it).
    pub world_name: Option<String>,
    /// Serve on IPv6 too (`[::]`, dual stack).
    #[serde(default)]
    pub ipv6: bool,
}

impl AppConfig {
    fn serves_grpc(&self) -> bool {
        matches!(self.kind, Kind::Pod(r) if r.serves_grpc())
    }
}

struct Ctx {
    cfg: AppConfig,
    counters: Mutex<Counters>,
}

/// A server whose sockets are bound (in the calling thread's namespace) and ready to accept.
pub struct Bound {
    app: StdListener,
    grpc: Option<StdListener>,
    admin: StdListener,
    cfg: AppConfig,
}

/// Binds the app port (and the gRPC port, if the role serves gRPC) on all
/// addresses and the admin port on 127.0.0.1.
pub fn bind(cfg: AppConfig) -> Result<Bound, Error> {
    let bind = |addr: SocketAddr| {
        let l = StdListener::bind(addr).map_err(|e| Error::Io {
            what: format!("binding {addr} in {}/{}", cfg.namespace, cfg.pod),
            source: e,
        })?;
        l.set_nonblocking(true).map_err(|e| Error::Io {
            what: "set_nonblocking".into(),
            source: e,
        })?;
        Ok::<_, Error>(l)
    };
    // `[::]` accepts IPv4 too (v4-mapped) unless net.ipv6.bindv6only is set.
    let any = |port: u16| {
        if cfg.ipv6 {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
        }
    };
    let app = bind(any(cfg.port))?;
    let grpc = if cfg.serves_grpc() {
        Some(bind(any(cfg.grpc_port))?)
    } else {
        None
    };
    let admin = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)))?;
    Ok(Bound {
        app,
        grpc,
        admin,
        cfg,
    })
}

impl Bound {
    /// Serves until `shutdown` completes. Must run inside a tokio runtime.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let io = |e: std::io::Error| Error::Io {
            what: "registering a listener".into(),
            source: e,
        };
        let app = TcpListener::from_std(self.app).map_err(io)?;
        let admin = TcpListener::from_std(self.admin).map_err(io)?;
        let grpc = self
            .grpc
            .map(TcpListener::from_std)
            .transpose()
            .map_err(io)?;
        let ctx = Arc::new(Ctx {
            cfg: self.cfg,
            counters: Mutex::new(Counters::default()),
        });
        let app_loop = accept_loop(app, ctx.clone(), false);
        let admin_loop = accept_loop(admin, ctx.clone(), true);
        let grpc_loop = async move {
            match grpc {
                Some(l) => grpc::serve(l, ctx).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => Ok(()),
            _ = app_loop => Ok(()),
            _ = admin_loop => Ok(()),
            r = grpc_loop => r,
        }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, admin: bool) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        // Small request/response writes: without this, Nagle + delayed ACK add 40ms stalls.
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move {
                    let resp = if admin {
                        admin_handle(&ctx, req)
                    } else {
                        handle(&ctx, peer, req).await
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, Counters> {
    // A panic while holding the lock cannot leave the counters inconsistent.
    ctx.counters.lock().unwrap_or_else(|p| p.into_inner())
}

/// A peer's address as the server counts it (IPv4 clients of a dual-stack
/// socket arrive v4-mapped).
fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn respond(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn admin_handle(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/stats" => {
            let stats = lock(ctx).snapshot();
            respond(200, serde_json::to_string(&stats).unwrap_or_default())
        }
        "/healthz" => respond(200, "{\"ok\":true}".into()),
        _ => respond(404, "{}".into()),
    }
}

async fn handle(ctx: &Ctx, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    // Bodies are tiny JSON; cap them so a bad client cannot make us buffer without bound.
    let _ = Limited::new(req.into_body(), 64 * 1024).collect().await;
    let (calls, fin) = plan(ctx.cfg.kind, &method, &path);
    let mut replies = Vec::with_capacity(calls.len());
    for c in &calls {
        if !proceeds(fin, &replies) {
            break;
        }
        replies.push(call(ctx, c).await);
    }
    let status = finish(fin, &replies);
    *lock(ctx)
        .inbound
        .entry((client_ip(peer), method.clone(), path.clone(), status))
        .or_default() += 1;
    respond(
        status,
        serde_json::json!({"pod": ctx.cfg.pod, "method": method, "path": path, "status": status})
            .to_string(),
    )
}

/// Resolves `name` (one type-A query, counted); the first address.
async fn resolve(ctx: &Ctx, name: &str) -> Option<Ipv4Addr> {
    let answer = crate::dns::query(
        SocketAddr::from((ctx.cfg.dns, 53)),
        name,
        RecordType::A,
        Duration::from_secs(3),
    )
    .await;
    match answer {
        Ok(a) => {
            *lock(ctx)
                .dns
                .entry((name.to_string(), "A".into(), a.rcode.clone()))
                .or_default() += 1;
            a.addrs.first().copied()
        }
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    }
}

/// Makes one downstream call (a lookup, then a fresh connection) and counts it.
async fn call(ctx: &Ctx, c: &Call) -> Reply {
    let (name, port) = match (c.service, &c.request) {
        (Some(svc), req) => (
            format!("{svc}.{}.svc.{}", ctx.cfg.namespace, ctx.cfg.cluster_domain),
            match req {
                rules::Request::Http { .. } => ctx.cfg.app_port,
                rules::Request::Grpc { .. } => ctx.cfg.grpc_port,
            },
        ),
        (None, _) => match &ctx.cfg.world_name {
            Some(n) => (n.clone(), crate::state::WORLD_PORT),
            None => return Reply::Failed,
        },
    };
    let ip = resolve(ctx, &name).await;
    match &c.request {
        rules::Request::Http { method, path } => {
            let status = match ip {
                Some(ip) => {
                    let body = serde_json::json!({"from": ctx.cfg.pod}).to_string();
                    let addr = SocketAddr::from((ip, port));
                    match request_once(addr, &name, method, path, body).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("{method} {name} {path}: {e}");
                            0
                        }
                    }
                }
                None => 0,
            };
            *lock(ctx)
                .outbound
                .entry((name, ip, method.to_string(), path.clone(), status))
                .or_default() += 1;
            if status == 0 {
                Reply::Failed
            } else {
                Reply::Http(status)
            }
        }
        rules::Request::Grpc { method, quantity } => {
            let answer = match ip {
                Some(ip) => {
                    let addr = SocketAddr::from((ip, port));
                    match grpc::call_once(addr, &name, method, *quantity).await {
                        Ok(a) => Some(a),
                        Err(e) => {
                            tracing::warn!("gRPC {name} {method}: {e:#}");
                            None
                        }
                    }
                }
                None => None,
            };
            let key = (
                crate::grpc::SERVICE.to_string(),
                method.to_string(),
                answer.map(|(c, _)| c as u32),
            );
            let mut counters = lock(ctx);
            let (n, max) = counters.grpc_outbound.entry((name, ip, key)).or_default();
            *n += 1;
            *max = (*max).max(answer.map_or(Duration::ZERO, |(_, took)| took));
            answer.map_or(Reply::Failed, |(c, _)| Reply::Grpc(c))
        }
    }
}

/// One request over a fresh connection that is closed afterwards.
pub async fn request_once(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: String,
) -> Result<u16, Error> {
    let mut conn = Connection::open(addr, host).await?;
    conn.send(method, path, body, true).await
}

/// A client HTTP/1.1 connection (keep-alive unless asked to close).
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
    addr: SocketAddr,
}

impl Connection {
    pub async fn open(addr: SocketAddr, host: &str) -> Result<Connection, Error> {
        let fail = |reason: String| Error::Http {
            target: format!("{host} ({addr})"),
            reason,
        };
        let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
            .await
            .map_err(|_| fail("connect timed out".into()))?
            .map_err(|e| fail(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Connection {
            sender,
            host: host.to_string(),
            addr,
        })
    }

    /// Sends one request and reads the whole answer; returns its status.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: String,
        close: bool,
    ) -> Result<u16, Error> {
        let fail = |reason: String| Error::Http {
            target: format!("{} ({}) {method} {path}", self.host, self.addr),
            reason,
        };
        let has_body = !body.is_empty();
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::USER_AGENT, "flowd-lab/0.1");
        if has_body {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if close {
            b = b.header(hyper::header::CONNECTION, "close");
        }
        let req = b
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(format!("building request: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| fail(format!("connection not ready: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .map_err(|_| fail("no answer within 10s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        Ok(status)
    }
}

/// Fetches `GET /stats` from the admin port; call from inside the pod's namespace.
pub async fn fetch_stats() -> Result<Stats, Error> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT));
    let mut conn = Connection::open(addr, "localhost").await?;
    let (status, body) = conn.get_body("/stats").await?;
    if status != 200 {
        return Err(Error::Http {
            target: addr.to_string(),
            reason: format!("GET /stats answered {status}"),
        });
    }
    serde_json::from_slice(&body).map_err(|e| Error::Http {
        target: addr.to_string(),
        reason: format!("bad /stats JSON: {e}"),
    })
}

impl Connection {
    async fn get_body(&mut self, path: &str) -> Result<(u16, Bytes), Error> {
        let target = format!("{} {path}", self.addr);
        let req = Request::builder()
            .uri(path)
            .header(hyper::header::HOST, self.host.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Http {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| Error::Http {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Http {
                target,
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok((status, body))
    }
}
