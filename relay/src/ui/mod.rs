//! The relay's web UI (`--ui-listen`): a service map, a live flow table and
//! the nodes' status, served to a browser from the relay's own process.
//!
//! The browser never speaks gRPC. It reads three thin JSON endpoints that
//! the relay answers from its Observer implementation in-process:
//!
//! * `GET /api/map?window=live|5m|15m|60m[&namespace=NS]`: the service map,
//!   aggregated here ([`map`]) from one follow stream the relay keeps open
//!   while the UI is on, whatever the number of browsers;
//! * `GET /api/flows?<observe flags>`: GetFlows with `observe`'s own flags
//!   and semantics ([`flows`]), streamed as NDJSON (one protojson
//!   `GetFlowsResponse` a line);
//! * `GET /api/status`: connected and unavailable nodes, flows per second,
//!   lost events ([`status`]).
//!
//! Everything else is the built front-end ([`assets`], embedded at build
//! time by `relay/build.rs`). docs/architecture.md explains the split.

pub mod assets;
pub mod flows;
pub mod map;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowd_tls::server::IncomingOptions;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic::transport::Server;
use tracing::warn;

use crate::Error;
use crate::server::Relay;
use crate::tls::ServerTls;

/// What the UI's handlers share.
#[derive(Clone)]
pub struct Ui {
    relay: Relay,
    map: Arc<map::ServiceMap>,
}

impl Ui {
    /// Starts the service map's aggregation over `relay`'s merged stream.
    pub fn start(relay: Relay) -> Self {
        let map = map::ServiceMap::start(relay.clone());
        Self { relay, map }
    }
}

/// A JSON error answer: `{"error": "..."}` with `code`.
pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": msg.into() }).to_string();
    (
        code,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body,
    )
        .into_response()
}

pub(crate) const JSON: &str = "application/json";

/// A JSON answer that is never cached (it is live data).
pub(crate) fn json(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(JSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

fn router(ui: Ui) -> Router {
    Router::new()
        .route("/api/map", get(map_handler))
        .route("/api/status", get(status_handler))
        .route("/api/flows", get(flows_handler))
        .fallback(asset_handler)
        .with_state(ui)
}

async fn map_handler(State(ui): State<Ui>, RawQuery(q): RawQuery) -> Response {
    match map::Query::parse(q.as_deref().unwrap_or_default()) {
        Ok(query) => json(ui.map.snapshot(&query).to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn status_handler(State(ui): State<Ui>) -> Response {
    json(status::status(&ui.relay, &ui.map).await.to_string())
}

async fn flows_handler(State(ui): State<Ui>, RawQuery(q): RawQuery) -> Response {
    flows::flows(&ui.relay, q.as_deref().unwrap_or_default()).await
}

async fn asset_handler(req: Request) -> Response {
    let path = req.uri().path();
    // The views are client-side routes: the page itself for each.
    let name = match path {
        "/" | "/map" | "/flows" | "/status" => "/index.html",
        p => p,
    };
    match assets::get(name) {
        Some(a) => {
            // Hashed file names (assets/…) never change; the page may.
            let cache = if name.starts_with("/assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(a.mime)),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                    // The page loads nothing from elsewhere; the browser enforces it.
                    (
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(
                            "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                        ),
                    ),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                ],
                Body::from(a.bytes),
            )
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    }
}

/// Serves the UI on `listener` (HTTP/1.1, and HTTP/2) until `shutdown`
/// completes; `tls` is the relay's own server TLS (and mTLS), with the same
/// certificates reloaded when their files change.
///
/// At `shutdown` no connection is accepted any more and idle connections
/// are closed; the function returns once the browsers' open requests have
/// ended (their flow streams end with the relay's) or `grace` has passed,
/// whichever comes first, as the Observer API does.
pub async fn serve(
    ui: Ui,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), Error> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let router = Server::builder()
        .accept_http1(true)
        .tcp_nodelay(true)
        .add_routes(Routes::from(router(ui)));
    // TLS and plain connections are different types: one boxed future.
    let mut server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
        match tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                flowd_tls::incoming(
                    listener,
                    tls,
                    IncomingOptions {
                        http1: true,
                        ..Default::default()
                    },
                ),
                stopped,
            )),
            None => Box::pin(
                router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped),
            ),
        };
    tokio::pin!(shutdown);
    let res = tokio::select! {
        r = &mut server => r,
        _ = &mut shutdown => {
            let _ = stop.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(grace = ?grace, "web UI connections still open at the end of the shutdown grace period; closing them");
                    Ok(())
                }
            }
        }
    };
    Ok(res?)
}
