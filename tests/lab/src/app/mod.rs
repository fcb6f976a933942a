//! The programs in the pods: HTTP/1.1 services that call each other, and the
//! outside-world server.
//!
//! The rules (also used to predict the exchanges a traffic mix causes, see
//! [`crate::traffic`]):
//!
//! | server          | request                        | calls                                             | answer |
//! |-----------------|--------------------------------|---------------------------------------------------|--------|
//! | frontend        | `GET /`                        | –                                                 | 200 |
//! | frontend        | `GET /products`                | inventory `GET /items`                            | 200 if it got 200, else 502 |
//! | frontend        | `GET /cart/{id}`               | order-service `GET /carts/{id}`                   | passed through |
//! | frontend        | `POST /checkout/{amount}`      | order-service `POST /orders/{amount}`             | passed through |
//! | order-service   | `GET /carts/{id}`              | –                                                 | 404 if id is `404`, else 200 |
//! | order-service   | `POST /orders/{amount}`        | inventory `POST /reserve/{amount}`, then payment-service `POST /charge/{amount}` | 201 if both OK; 402 if payment 402; else 503 |
//! | payment-service | `POST /charge/{amount}`        | if amount % 7 == 0: none; else world `POST /v1/authorize/{amount}` | 503 if amount % 7 == 0; 200/402 as the world said; else 503 |
//! | inventory       | `GET /items`, `POST /reserve/…` | –                                                | 200 |
//! | world           | `GET /`                        | –                                                 | 200 |
//! | world           | `POST /v1/authorize/{amount}`  | –                                                 | 402 if amount % 5 == 0, else 200 |
//!
//! Anything else answers 404. Services call each other by DNS name (one type-A
//! query per call, like a libc resolver without a cache) over a fresh
//! connection per call (`Connection: close`), so counts are deterministic.
//! Each server counts what it received, sent and resolved; `GET /stats` on the
//! loopback-only admin port returns the counts (loopback never crosses a veth,
//! so reading them adds nothing flowd could see).

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
use crate::spec::Role;
use crate::state::ADMIN_PORT;

/// Which program a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Pod(Role),
    World,
}

/// A downstream call a server makes while handling a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Service name in the caller's namespace, or `None` for the outside world.
    pub service: Option<&'static str>,
    pub method: &'static str,
    pub path: String,
}

/// How the answer follows from the downstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Fixed(u16),
    /// The last call's status (502 if it failed to connect).
    Pass,
    /// 200 if the call got 200, else 502.
    Products,
    /// 201 if all calls got 2xx; 402 if the last got 402; else 503.
    Order,
    /// 200 or 402 as the world said; else 503.
    Authorize,
}

fn amount(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// The rules table above, as a function: the calls `kind` makes for a request and how it answers.
pub fn plan(kind: Kind, method: &str, path: &str) -> (Vec<Call>, Finish) {
    let call = |service: Option<&'static str>, method: &'static str, path: String| Call {
        service,
        method,
        path,
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (kind, method, segs.as_slice()) {
        (Kind::Pod(Role::Frontend), "GET", [""]) => (vec![], Finish::Fixed(200)),
        (Kind::Pod(Role::Frontend), "GET", ["products"]) => (
            vec![call(Some("inventory"), "GET", "/items".into())],
            Finish::Products,
        ),
        (Kind::Pod(Role::Frontend), "GET", ["cart", id]) => (
            vec![call(Some("order-service"), "GET", format!("/carts/{id}"))],
            Finish::Pass,
        ),
        (Kind::Pod(Role::Frontend), "POST", ["checkout", a]) if amount(a).is_some() => (
            vec![call(Some("order-service"), "POST", format!("/orders/{a}"))],
            Finish::Pass,
        ),
        (Kind::Pod(Role::OrderService), "GET", ["carts", id]) => {
            (vec![], Finish::Fixed(if *id == "404" { 404 } else { 200 }))
        }
        (Kind::Pod(Role::OrderService), "POST", ["orders", a]) if amount(a).is_some() => (
            vec![
                call(Some("inventory"), "POST", format!("/reserve/{a}")),
                call(Some("payment-service"), "POST", format!("/charge/{a}")),
            ],
            Finish::Order,
        ),
        (Kind::Pod(Role::PaymentService), "POST", ["charge", a]) => match amount(a) {
            Some(n) if n % 7 == 0 => (vec![], Finish::Fixed(503)),
            Some(_) => (
                vec![call(None, "POST", format!("/v1/authorize/{a}"))],
                Finish::Authorize,
            ),
            None => (vec![], Finish::Fixed(404)),
        },
        (Kind::Pod(Role::Inventory), "GET", ["items"]) => (vec![], Finish::Fixed(200)),
        (Kind::Pod(Role::Inventory), "POST", ["reserve", _]) => (vec![], Finish::Fixed(200)),
        (Kind::World, "GET", [""]) => (vec![], Finish::Fixed(200)),
        (Kind::World, "POST", ["v1", "authorize", a]) => match amount(a) {
            Some(n) if n % 5 == 0 => (vec![], Finish::Fixed(402)),
            Some(_) => (vec![], Finish::Fixed(200)),
            None => (vec![], Finish::Fixed(404)),
        },
        _ => (vec![], Finish::Fixed(404)),
    }
}

/// The answer given the downstream statuses (0 = the call failed).
pub fn finish(f: Finish, statuses: &[u16]) -> u16 {
    let last = statuses.last().copied().unwrap_or(0);
    match f {
        Finish::Fixed(s) => s,
        Finish::Pass => {
            if last == 0 {
                502
            } else {
                last
            }
        }
        Finish::Products => {
            if last == 200 {
                200
            } else {
                502
            }
        }
        Finish::Order => {
            if statuses.iter().all(|s| (200..300).contains(s)) {
                201
            } else if last == 402 {
                402
            } else {
                503
            }
        }
        Finish::Authorize => match last {
            200 | 402 => last,
            _ => 503,
        },
    }
}

/// What one server counted. Keys are flattened into rows for JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub inbound: Vec<InboundCount>,
    pub outbound: Vec<OutboundCount>,
    pub dns: Vec<LookupCount>,
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

#[derive(Default)]
struct Counters {
    inbound: BTreeMap<(IpAddr, String, String, u16), u32>,
    outbound: BTreeMap<(String, Option<Ipv4Addr>, String, String, u16), u32>,
    dns: BTreeMap<(String, String, String), u32>,
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
    pub dns: Ipv4Addr,
    pub cluster_domain: String,
    /// The outside world's DNS name (payment-service calls it).
    pub world_name: Option<String>,
    /// Serve on IPv6 too (`[::]`, dual stack).
    #[serde(default)]
    pub ipv6: bool,
}

struct Ctx {
    cfg: AppConfig,
    counters: Mutex<Counters>,
}

/// A server whose sockets are bound (in the calling thread's namespace) and ready to accept.
pub struct Bound {
    app: StdListener,
    admin: StdListener,
    cfg: AppConfig,
}

/// Binds the app port on all addresses and the admin port on 127.0.0.1.
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
    let app = if cfg.ipv6 {
        bind(SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            cfg.port,
        )))?
    } else {
        bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.port)))?
    };
    let admin = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT)))?;
    Ok(Bound { app, admin, cfg })
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
        let ctx = Arc::new(Ctx {
            cfg: self.cfg,
            counters: Mutex::new(Counters::default()),
        });
        let app_loop = accept_loop(app, ctx.clone(), false);
        let admin_loop = accept_loop(admin, ctx, true);
        tokio::select! {
            _ = shutdown => {}
            _ = app_loop => {}
            _ = admin_loop => {}
        }
        Ok(())
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
    let mut statuses = Vec::with_capacity(calls.len());
    for c in &calls {
        statuses.push(call(ctx, c).await);
    }
    let status = finish(fin, &statuses);
    let source_ip = match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    *lock(ctx)
        .inbound
        .entry((source_ip, method.clone(), path.clone(), status))
        .or_default() += 1;
    respond(
        status,
        serde_json::json!({"pod": ctx.cfg.pod, "method": method, "path": path, "status": status})
            .to_string(),
    )
}

/// Makes one downstream call; returns its status, 0 if it failed.
async fn call(ctx: &Ctx, c: &Call) -> u16 {
    let (name, port) = match c.service {
        Some(svc) => (
            format!("{svc}.{}.svc.{}", ctx.cfg.namespace, ctx.cfg.cluster_domain),
            ctx.cfg.app_port,
        ),
        None => match &ctx.cfg.world_name {
            Some(n) => (n.clone(), crate::state::WORLD_PORT),
            None => return 0,
        },
    };
    let answer = crate::dns::query(
        SocketAddr::from((ctx.cfg.dns, 53)),
        &name,
        RecordType::A,
        Duration::from_secs(3),
    )
    .await;
    let ip = match &answer {
        Ok(a) => {
            *lock(ctx)
                .dns
                .entry((name.clone(), "A".into(), a.rcode.clone()))
                .or_default() += 1;
            a.addrs.first().copied()
        }
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let status = match ip {
        Some(ip) => {
            let body = serde_json::json!({"from": ctx.cfg.pod}).to_string();
            match request_once(SocketAddr::from((ip, port)), &name, c.method, &c.path, body).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{} {} {}: {e}", c.method, name, c.path);
                    0
                }
            }
        }
        None => 0,
    };
    *lock(ctx)
        .outbound
        .entry((name, ip, c.method.to_string(), c.path.clone(), status))
        .or_default() += 1;
    status
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
