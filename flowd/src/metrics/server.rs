//! The `/metrics` endpoint (hyper 1, HTTP/1.1) on `hubble-metrics-server`.
//!
//! Content negotiation as Prometheus' client libraries do it: a scraper
//! whose `Accept` header names `application/openmetrics-text` gets
//! OpenMetrics (with exemplars), everyone else the Prometheus text format.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Metrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} (hubble-metrics-server): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the metrics address (separate from [`serve`] so that a busy port
/// stops the start with a clear error).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Whether the request asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|part| {
            let mut it = part.split(';');
            let media = it.next().unwrap_or("").trim();
            // `q=0` means "not acceptable".
            let refused = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// Builds the response to one request.
pub fn respond<B>(metrics: &Metrics, req: &Request<B>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    metrics.expire_idle();
    metrics.refresh_process_metrics();
    metrics.refresh_event_queue();
    let om = metrics.open_metrics_enabled() && wants_openmetrics(req.headers().get(ACCEPT));
    let (body, ctype) = if om {
        (metrics.encode_openmetrics(), OPENMETRICS_TEXT)
    } else {
        (metrics.encode_prometheus(), PROMETHEUS_TEXT)
    };
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut r = Response::new(Full::new(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Serves `/metrics` on `listener` until `shutdown` completes. Connections
/// are served concurrently; a failing connection is logged and dropped.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: keep serving the others.
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "metrics server: connection error");
            }
        });
    }
}
