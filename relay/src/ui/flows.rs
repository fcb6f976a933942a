//! `GET /api/flows?<observe flags>`: GetFlows through the relay, streamed to
//! the browser as NDJSON.
//!
//! The query holds `observe`'s flags by their long names (`namespace=shop&
//! http-status=400-599&follow`): they are parsed by `observe`'s own command
//! line definition and turned into the request by its own code, so a link
//! means exactly what the same `observe` command means, and a flag or value
//! `observe` would refuse is refused here (400, one line naming it). Only
//! filter and selection flags are accepted (no connection or output flags).
//!
//! Each line is one `GetFlowsResponse` in Hubble's JSON (protojson): a flow,
//! a node status notice or a lost-events notice. Lines are written in
//! batches of what is ready, so a fast stream costs few writes.
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::CommandFactory as _;
use flowd_proto::observer::GetFlowsRequest;
use flowd_proto::observer::observer_server::Observer as _;
use futures::StreamExt as _;
use observe_cli::cli::Cli;
use tonic::Request;

use crate::server::Relay;
use crate::ui::error;

/// Selection flags accepted besides observe's filter flags.
const SELECTION: &[&str] = &["last", "first", "all", "follow", "since", "until", "not"];

/// Most responses written in one chunk.
const BATCH: usize = 512;

/// The observe command line a query stands for (program name first).
pub fn argv(query: &str) -> Result<Vec<String>, String> {
    let cmd = Cli::command();
    let mut argv = vec!["observe".to_string()];
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let id = k.replace('-', "_");
        if !observe_cli::request::FILTER_IDS.contains(&id.as_str())
            && !SELECTION.contains(&id.as_str())
        {
            return Err(format!(
                "unknown filter {k:?} (the query takes observe's filter flags, e.g. namespace=, http-status=, and last=, since=, follow)"
            ));
        }
        let takes_value = cmd
            .get_arguments()
            .find(|a| a.get_id().as_str() == id)
            .is_some_and(|a| {
                a.get_action().takes_values() && a.get_num_args().is_none_or(|n| n.min_values() > 0)
            });
        argv.push(format!("--{}", id.replace('_', "-")));
        if takes_value {
            argv.push(v.into_owned());
        } else if !(v.is_empty() || v == "true" || v == "1") {
            return Err(format!("{k} takes no value (got {v:?})"));
        }
    }
    Ok(argv)
}

/// The GetFlows request a query stands for, as `observe` builds it.
pub fn request(query: &str, now: SystemTime) -> Result<GetFlowsRequest, String> {
    let argv = argv(query)?;
    let m = Cli::command().try_get_matches_from(&argv).map_err(|e| {
        let text = e.render().to_string();
        let first = text.trim().lines().next().unwrap_or_default().to_string();
        first
            .strip_prefix("error: ")
            .unwrap_or(&first)
            .replace("--", "")
    })?;
    observe_cli::request::build_request(&m, now).map_err(|e| e.to_string())
}

/// Answers `GET /api/flows`.
pub async fn flows(relay: &Relay, query: &str) -> Response {
    let req = match request(query, SystemTime::now()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let stream = match relay.get_flows(Request::new(req)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return error(StatusCode::SERVICE_UNAVAILABLE, s.message().to_string()),
    };
    let body = stream.ready_chunks(BATCH).map(|batch| {
        let mut out = Vec::with_capacity(batch.len() * 1024);
        for r in batch {
            let line = match r {
                Ok(resp) => serde_json::to_vec(&resp),
                // The stream's end status, as the last line.
                Err(s) => serde_json::to_vec(&serde_json::json!({
                    "error": format!("{:?}: {}", s.code(), s.message())
                })),
            };
            match line {
                Ok(l) => {
                    out.extend_from_slice(&l);
                    out.push(b'\n');
                }
                Err(e) => tracing::warn!(error = %e, "a flow could not be written as JSON"),
            }
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(out))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_observe_flags() {
        assert_eq!(
            argv("namespace=shop&http-status=400-599&follow").unwrap(),
            [
                "observe",
                "--namespace",
                "shop",
                "--http-status",
                "400-599",
                "--follow"
            ]
        );
        let r = request(
            "namespace=shop&http-status=400-599&last=10",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.number, 10);
        assert_eq!(r.whitelist.len(), 2);
        assert_eq!(r.whitelist[0].http_status_code, ["400-599"]);
    }

    #[test]
    fn grpc_flags_are_observe_flags() {
        let r = request(
            "protocol=grpc&grpc-status=NOT_FOUND&grpc-status=13-16&grpc-service=shop.inventory.v1.Inventory&not&grpc-method=Watch",
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.whitelist.len(), 1);
        let w = &r.whitelist[0];
        assert_eq!(w.protocol, ["grpc"]);
        assert_eq!(w.grpc_status, ["NOT_FOUND", "13-16"]);
        assert_eq!(w.grpc_service, ["shop.inventory.v1.Inventory"]);
        assert_eq!(r.blacklist.len(), 1);
        assert_eq!(r.blacklist[0].grpc_method, ["Watch"]);
        let e = request("grpc-status=MISSING", SystemTime::now()).unwrap_err();
        assert!(e.contains("invalid gRPC status \"MISSING\""), "{e}");
    }

    #[test]
    fn unknown_and_bad_flags_are_refused() {
        let e = request("server=evil:1", SystemTime::now()).unwrap_err();
        assert!(e.contains("unknown filter \"server\""), "{e}");
        let e = request("verdict=MAYBE", SystemTime::now()).unwrap_err();
        assert!(e.contains("MAYBE"), "{e}");
        let e = request("follow=yes", SystemTime::now()).unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
    }
}
