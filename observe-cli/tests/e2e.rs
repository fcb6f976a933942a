//! Runs the built `observe` binary against an in-test Observer server on
//! 127.0.0.1 that serves the fixed flows of `common` and records the
//! requests it gets.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use flowd_proto::flow::{FlowFilter, Verdict};
use flowd_proto::observer::observer_server::{Observer, ObserverServer};
use flowd_proto::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse,
    GetNodesRequest, GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse,
};
use flowd_proto::relay::NodeState;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codegen::BoxStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct TestObserver {
    requests: Arc<Mutex<Vec<GetFlowsRequest>>>,
    /// Ends `--follow` streams (which otherwise stay open after the flows).
    end_follow: Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl Observer for TestObserver {
    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<BoxStream<GetFlowsResponse>>, Status> {
        let req = req.into_inner();
        let fail = req.number == 7;
        let follow = req.follow && req.number == 0;
        self.requests.lock().unwrap().push(req);
        if fail {
            return Err(Status::invalid_argument("number 7 is unlucky"));
        }
        if follow {
            // Live stream: the flows, then nothing until the test ends it.
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let end = self.end_follow.clone();
            tokio::spawn(async move {
                for r in common::responses() {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
                end.notified().await;
            });
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let items = common::responses().into_iter().map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 4095,
            max_flows: 4095,
            seen_flows: 123_456,
            uptime_ns: 3_723_000_000_000,
            num_connected_nodes: Some(2.into()),
            num_unavailable_nodes: Some(1.into()),
            unavailable_nodes: vec!["node-3".into()],
            version: "flowd-relay 0.1.0".into(),
            ..Default::default()
        }))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let node = |name: &str, state: NodeState, seen: u64| Node {
            name: name.into(),
            address: format!("{name}.nodes:4244"),
            state: state as i32,
            uptime_ns: 7_200_000_000_000,
            num_flows: 2000,
            max_flows: 4095,
            seen_flows: seen,
            ..Default::default()
        };
        Ok(Response::new(GetNodesResponse {
            nodes: vec![
                node("node-1", NodeState::NodeConnected, 72_000),
                node("node-2", NodeState::NodeConnected, 36_000),
                node("node-3", NodeState::NodeUnavailable, 0),
            ],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: vec![
                Namespace {
                    cluster: String::new(),
                    namespace: "ecommerce".into(),
                },
                Namespace {
                    cluster: String::new(),
                    namespace: "kube-system".into(),
                },
            ],
        }))
    }
}

async fn start() -> (String, TestObserver) {
    start_with(None).await
}

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

/// A server requiring client certificates signed by tests/tls/ca.pem.
fn mtls_config() -> ServerTlsConfig {
    let read = |n: &str| std::fs::read(tls_file(n)).unwrap();
    ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("server.pem"),
            read("server-key.pem"),
        ))
        .client_ca_root(Certificate::from_pem(read("ca.pem")))
}

async fn start_with(tls: Option<ServerTlsConfig>) -> (String, TestObserver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let obs = TestObserver::default();
    let svc = ObserverServer::new(obs.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).unwrap();
    }
    tokio::spawn(async move {
        builder
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    (addr, obs)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn observe(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_observe"))
        .args(args)
        .env("TZ", "UTC")
        .env("NO_COLOR", "1")
        .env_remove("OBSERVE_SERVER")
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn golden(name: &str) -> (String, String) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    let text = std::fs::read_to_string(p).unwrap();
    let (o, e) = text.split_once("--- stderr ---\n").unwrap();
    (o.to_string(), e.to_string())
}

#[tokio::test]
async fn flows_with_filters_compact() {
    let (addr, obs) = start().await;
    let r = observe(&[
        "--server",
        &addr,
        "--namespace",
        "ecommerce",
        "--http-status",
        "400-599",
        "--not",
        "--verdict",
        "DROPPED",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (out, err) = golden("compact");
    assert_eq!(r.stdout, out);
    assert_eq!(r.stderr, err);
    let both = |src: bool| FlowFilter {
        source_pod: if src {
            vec!["ecommerce/".into()]
        } else {
            vec![]
        },
        destination_pod: if src {
            vec![]
        } else {
            vec!["ecommerce/".into()]
        },
        http_status_code: vec!["400-599".into()],
        ..Default::default()
    };
    assert_eq!(
        *obs.requests.lock().unwrap(),
        vec![GetFlowsRequest {
            number: 20,
            whitelist: vec![both(true), both(false)],
            blacklist: vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            ..Default::default()
        }]
    );
}

#[tokio::test]
async fn flows_json_and_table() {
    let (addr, obs) = start().await;
    let r = observe(&["--server", &addr, "-o", "json", "--last", "3", "--follow"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    let parsed: Vec<GetFlowsResponse> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, common::responses());

    let r = observe(&[
        "--server",
        &format!("http://{addr}"),
        "-o",
        "table",
        "--first",
        "5",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((r.stdout, r.stderr), golden("table"));

    let reqs = obs.requests.lock().unwrap();
    assert_eq!(
        *reqs,
        vec![
            GetFlowsRequest {
                number: 3,
                follow: true,
                ..Default::default()
            },
            GetFlowsRequest {
                number: 5,
                first: true,
                ..Default::default()
            },
        ]
    );
}

#[tokio::test]
async fn status_and_lists() {
    let (addr, _) = start().await;
    let r = observe(&["status", "--server", &addr]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "Healthcheck (via {addr}): Ok\n\
             Current/Max Flows: 4,095/4,095 (100.00%)\n\
             Flows/s: 33.16\n\
             Seen Flows: 123,456\n\
             Uptime: 1h2m\n\
             Connected Nodes: 2/3\n\
             Unavailable Nodes: node-3\n\
             Version: flowd-relay 0.1.0\n"
        )
    );
    let r = observe(&["--server", &addr, "list", "nodes"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "NAME     STATUS        AGE    FLOWS/S   CURRENT/MAX-FLOWS      ADDRESS\n\
         node-1   Connected     2h0m   10.00     2,000/4,095 (48.84%)   node-1.nodes:4244\n\
         node-2   Connected     2h0m   5.00      2,000/4,095 (48.84%)   node-2.nodes:4244\n\
         node-3   Unavailable   N/A    N/A       N/A                    node-3.nodes:4244\n"
    );
    let r = observe(&["list", "namespaces", "--server", &addr]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "CLUSTER   NAMESPACE\n-         ecommerce\n-         kube-system\n"
    );
    let r = observe(&["list", "namespaces", "--server", &addr, "-o", "json"]).await;
    assert_eq!(
        r.stdout,
        "{\"namespaces\":[{\"namespace\":\"ecommerce\"},{\"namespace\":\"kube-system\"}]}\n"
    );
}

#[tokio::test]
async fn server_error_exits_1() {
    let (addr, _) = start().await;
    let r = observe(&["--server", &addr, "--last", "7"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!("observe: {addr}: GetFlows failed: InvalidArgument: number 7 is unlucky\n")
    );
    assert_eq!(r.stdout, "");
}

#[tokio::test]
async fn unreachable_server_exits_3_naming_address_and_reason() {
    // A port that was just free: bind, note it, close it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let r = observe(&["--server", &addr, "-n", "ecommerce"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("observe: cannot connect to {addr}: ")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("Connection refused"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_what_is_valid() {
    let r = observe(&["--verdict", "ALLOWED"]).await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("invalid value 'ALLOWED' for '--verdict <VERDICT>': expected one of: FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED"),
        "{}",
        r.stderr
    );
    // Checked before connecting: no server needed.
    let r = observe(&["--ip", "10.0.0.1", "-n", "x"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (
            2,
            "observe: filters --ip and --namespace cannot be combined\n"
        )
    );
    let r = observe(&["--server", "localhost"]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("expected host:port"), "{}", r.stderr);
    let r = observe(&[
        "--tls-ca-cert-files",
        "/nonexistent/ca.pem",
        "--server",
        "127.0.0.1:1",
    ])
    .await;
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("cannot read CA certificate file /nonexistent/ca.pem"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn help_documents_exit_codes_and_completion_works() {
    let r = observe(&["--help"]).await;
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
    assert!(r.stdout.contains("3  cannot connect to the server"));
    let r = observe(&["completion", "bash"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("--http-status"));
    assert!(r.stdout.contains("complete -F"));
}

#[tokio::test]
async fn mutual_tls() {
    let (addr, obs) = start_with(Some(mtls_config())).await;
    let path = |n: &str| tls_file(n).display().to_string();
    let r = observe(&[
        "--server",
        &addr,
        "--tls-ca-cert-files",
        &path("ca.pem"),
        "--tls-client-cert-file",
        &path("client.pem"),
        "--tls-client-key-file",
        &path("client-key.pem"),
        "--tls-server-name",
        "flowd.test",
        "--pod",
        "cart",
        "-n",
        "ecommerce",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((r.stdout, r.stderr), golden("compact"));
    assert_eq!(obs.requests.lock().unwrap().len(), 1);

    // The server certificate is not signed by a system CA.
    let r = observe(&["--server", &format!("tls://{addr}"), "status"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("observe: cannot connect to {addr}: ")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
    // Plain text against a TLS server does not get flows.
    let r = observe(&["--server", &addr, "--request-timeout", "2s"]).await;
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert_eq!(obs.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn follow_prints_flows_as_they_arrive() {
    let (addr, obs) = start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_observe"))
        .args(["--server", &addr, "-f", "-o", "compact"])
        .env("TZ", "UTC")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (want, _) = golden("compact");
    let want: Vec<&str> = want.lines().collect();
    let mut got = Vec::new();
    // The stream is still open: every flow must be printed without waiting
    // for its end.
    let read = async {
        while got.len() < want.len() {
            match lines.next_line().await.unwrap() {
                Some(l) => got.push(l),
                None => break,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read)
        .await
        .expect("flows not printed while the stream is open");
    assert_eq!(got, want);
    assert_eq!(
        *obs.requests.lock().unwrap(),
        vec![GetFlowsRequest {
            follow: true,
            ..Default::default()
        }]
    );
    // The server ends the stream: observe exits 0 with nothing more.
    obs.end_follow.notify_one();
    assert_eq!(lines.next_line().await.unwrap(), None);
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A server that accepts TCP connections and never answers: every command
/// gives up within --request-timeout and exits 3 with one line naming the
/// address, the call and the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out_with_exit_3() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept and hold every connection, reading nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            match s {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    let cases: [(&[&str], &str); 6] = [
        (&["--last", "5"], "GetFlows"),
        (&["--follow"], "GetFlows"),
        (&["--all", "-o", "json"], "GetFlows"),
        (&["status"], "ServerStatus"),
        (&["list", "nodes"], "GetNodes"),
        (&["list", "namespaces"], "GetNamespaces"),
    ];
    // All at once: each waits for its own timeout.
    let runs: Vec<_> = cases
        .iter()
        .map(|(args, rpc)| {
            let mut full: Vec<String> = ["--server", &addr, "--request-timeout", "2s"]
                .iter()
                .map(|a| a.to_string())
                .collect();
            full.extend(args.iter().map(|a| a.to_string()));
            let handle = tokio::spawn(async move {
                let full: Vec<&str> = full.iter().map(String::as_str).collect();
                let started = std::time::Instant::now();
                let r = tokio::time::timeout(std::time::Duration::from_secs(20), observe(&full))
                    .await
                    .unwrap_or_else(|_| panic!("observe {full:?} still running after 20 s"));
                (r, started.elapsed())
            });
            (*args, *rpc, handle)
        })
        .collect();
    for (args, rpc, handle) in runs {
        let (r, took) = handle.await.unwrap();
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr,
            format!("observe: {addr}: no answer to {rpc} within 2s (--request-timeout)\n"),
            "{args:?}"
        );
        assert_eq!(r.stdout, "", "{args:?}");
        // The timeout holds: 2 s, not the 12 s default nor forever.
        assert!(
            took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(10),
            "{args:?} took {took:?}"
        );
    }
}

/// `status` without --request-timeout: the documented 12 s default, exit 3.
#[tokio::test]
async fn silent_server_default_timeout_is_12s_exit_3() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let r = observe(&["status", "--server", &addr]).await;
    let took = started.elapsed();
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!("observe: {addr}: no answer to ServerStatus within 12s (--request-timeout)\n")
    );
    assert!(
        took >= std::time::Duration::from_secs(12) && took < std::time::Duration::from_secs(30),
        "took {took:?}"
    );
}

/// Usage errors are one line naming the flag, the value and what is
/// expected, whatever RUST_BACKTRACE says.
#[tokio::test]
async fn usage_errors_are_one_line_whatever_rust_backtrace() {
    for (args, want) in [
        (
            &["--verdict", "ALLOWED"][..],
            "observe: invalid value 'ALLOWED' for '--verdict <VERDICT>': expected one of: FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED (see --help)",
        ),
        (
            &["--request-timeout", "0s", "status"][..],
            "observe: invalid value '0s' for '--request-timeout <DURATION>': must be more than 0 (expected e.g. 5s, 1m) (see --help)",
        ),
        (
            &["--last", "many"][..],
            "observe: invalid value 'many' for '--last <N>': invalid digit found in string (see --help)",
        ),
        (
            &["--ip", "10.0.0.1", "-n", "x"][..],
            "observe: filters --ip and --namespace cannot be combined",
        ),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_observe"))
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .env_remove("OBSERVE_SERVER")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("{want}\n"),
            "{args:?}"
        );
    }
}

/// Every filter and selection flag, through the binary, as the request the
/// server receives (protojson of the recorded GetFlowsRequest: Hubble's
/// field names). The semantics behind each are tested in `filters`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_and_selection_flag_reaches_the_request() {
    let (addr, obs) = start().await;
    // Filters keep the default selection: the last 20 flows.
    let either = |src: &str, dst: &str, v: serde_json::Value| serde_json::json!({"number": "20", "whitelist": [{ src: v.clone() }, { dst: v }]});
    let one = |field: &str, v: serde_json::Value| serde_json::json!({"number": "20", "whitelist": [{ field: v }]});
    let s = |v: &str| serde_json::json!([v]);
    let cases: Vec<(Vec<&str>, serde_json::Value)> = vec![
        (vec!["--uuid", "f1c2"], one("uuid", s("f1c2"))),
        (
            vec!["--ip", "10.0.0.1"],
            either("source_ip", "destination_ip", s("10.0.0.1")),
        ),
        (
            vec!["--from-ip", "10.0.0.0/8"],
            one("source_ip", s("10.0.0.0/8")),
        ),
        (
            vec!["--to-ip", "fd00::1"],
            one("destination_ip", s("fd00::1")),
        ),
        (
            vec!["--fqdn", "*.example.com"],
            either("source_fqdn", "destination_fqdn", s("*.example.com")),
        ),
        (
            vec!["--from-fqdn", "a.example.com"],
            one("source_fqdn", s("a.example.com")),
        ),
        (
            vec!["--to-fqdn", "b.example.com"],
            one("destination_fqdn", s("b.example.com")),
        ),
        (
            vec!["--pod", "shop/cart"],
            either("source_pod", "destination_pod", s("shop/cart")),
        ),
        (
            vec!["--from-pod", "shop/cart"],
            one("source_pod", s("shop/cart")),
        ),
        (
            vec!["--to-pod", "cart", "-n", "shop"],
            one("destination_pod", s("shop/cart")),
        ),
        (
            vec!["-n", "shop"],
            either("source_pod", "destination_pod", s("shop/")),
        ),
        (
            vec!["--from-namespace", "shop"],
            one("source_pod", s("shop/")),
        ),
        (
            vec!["--to-namespace", "shop"],
            one("destination_pod", s("shop/")),
        ),
        (
            vec!["-l", "app=cart"],
            either("source_label", "destination_label", s("app=cart")),
        ),
        (
            vec!["--from-label", "app=cart"],
            one("source_label", s("app=cart")),
        ),
        (
            vec!["--to-label", "app=cart"],
            one("destination_label", s("app=cart")),
        ),
        (
            vec!["--service", "shop/cart"],
            either("source_service", "destination_service", s("shop/cart")),
        ),
        (
            vec!["--from-service", "shop/cart"],
            one("source_service", s("shop/cart")),
        ),
        (
            vec!["--to-service", "shop/cart"],
            one("destination_service", s("shop/cart")),
        ),
        (
            vec!["--workload", "Deployment/cart"],
            either(
                "source_workload",
                "destination_workload",
                serde_json::json!([{"kind": "Deployment", "name": "cart"}]),
            ),
        ),
        (
            vec!["--from-workload", "cart"],
            one("source_workload", serde_json::json!([{"name": "cart"}])),
        ),
        (
            vec!["--to-workload", "cart"],
            one(
                "destination_workload",
                serde_json::json!([{"name": "cart"}]),
            ),
        ),
        (
            vec!["--port", "8080"],
            either("source_port", "destination_port", s("8080")),
        ),
        (vec!["--from-port", "40000"], one("source_port", s("40000"))),
        (vec!["--to-port", "53"], one("destination_port", s("53"))),
        (vec!["--protocol", "dns"], one("protocol", s("dns"))),
        (vec!["--protocol", "gRPC"], one("protocol", s("grpc"))),
        (vec!["--protocol", "http2"], one("protocol", s("http2"))),
        (
            vec!["--grpc-status", "NOT_FOUND", "--grpc-status", "1-16"],
            one("grpc_status", serde_json::json!(["NOT_FOUND", "1-16"])),
        ),
        (
            vec!["--grpc-service", "shop.inventory.v1.Inventory"],
            one("grpc_service", s("shop.inventory.v1.Inventory")),
        ),
        (
            vec!["--grpc-method", "Reserve"],
            one("grpc_method", s("Reserve")),
        ),
        (vec!["--ip-version", "6"], one("ip_version", s("IPv6"))),
        (vec!["--verdict", "DROPPED"], one("verdict", s("DROPPED"))),
        (
            vec!["-t", "drop"],
            one("event_type", serde_json::json!([{"type": 1}])),
        ),
        (
            vec!["--http-status", "5+"],
            one("http_status_code", s("5+")),
        ),
        (vec!["--http-method", "POST"], one("http_method", s("POST"))),
        (vec!["--http-path", "^/api/"], one("http_path", s("^/api/"))),
        (
            vec!["--dns-query", "example\\.com$"],
            one("dns_query", s("example\\.com$")),
        ),
        (
            vec!["--tcp-flags", "SYN,ACK"],
            one("tcp_flags", serde_json::json!([{"SYN": true, "ACK": true}])),
        ),
        (
            vec!["--node-name", "cluster/node-*"],
            one("node_name", s("cluster/node-*")),
        ),
        (
            vec!["--traffic-direction", "egress"],
            one("traffic_direction", s("EGRESS")),
        ),
        (
            vec!["--interface", "lxc1a2b"],
            one("interface", serde_json::json!([{"name": "lxc1a2b"}])),
        ),
        (vec!["--http-url", "/carts"], one("http_url", s("/carts"))),
        (
            vec!["--http-header", "Content-Type:application/json"],
            one(
                "http_header",
                serde_json::json!([{"key": "Content-Type", "value": "application/json"}]),
            ),
        ),
        (
            vec!["--node-label", "kubernetes.io/hostname=node-a"],
            one("node_labels", s("kubernetes.io/hostname=node-a")),
        ),
        (
            vec!["--cluster", "east"],
            either("source_cluster_name", "destination_cluster_name", s("east")),
        ),
        (
            vec!["--from-cluster", "east"],
            one("source_cluster_name", s("east")),
        ),
        (
            vec!["--to-cluster", "west"],
            one("destination_cluster_name", s("west")),
        ),
        (
            vec!["--cel-expression", "_flow.l7.http.code >= 400u"],
            one(
                "experimental",
                serde_json::json!({"cel_expression": ["_flow.l7.http.code >= 400u"]}),
            ),
        ),
        (vec!["--ip-trace-id", "5"], one("ip_trace_id", s("5"))),
        (
            vec!["--encrypted"],
            one("encrypted", serde_json::json!([true])),
        ),
        (
            vec!["--unencrypted"],
            one("encrypted", serde_json::json!([false])),
        ),
        (vec!["-A"], either("source_pod", "destination_pod", s("/"))),
        (vec!["--from-all-namespaces"], one("source_pod", s("/"))),
        (vec!["--to-all-namespaces"], one("destination_pod", s("/"))),
        (
            vec!["--not", "--verdict", "FORWARDED"],
            serde_json::json!({"number": "20", "blacklist": [{"verdict": ["FORWARDED"]}]}),
        ),
        (vec!["--last", "3"], serde_json::json!({"number": "3"})),
        // As hubble: --all is --last with the largest number.
        (
            vec!["--all"],
            serde_json::json!({"number": u64::MAX.to_string()}),
        ),
        (
            vec!["--first", "5"],
            serde_json::json!({"number": "5", "first": true}),
        ),
        (vec!["--follow"], serde_json::json!({"follow": true})),
        (
            vec![
                "--since",
                "2024-05-01T10:00:00Z",
                "--until",
                "2024-05-01T11:00:00Z",
            ],
            serde_json::json!({"since": "2024-05-01T10:00:00Z", "until": "2024-05-01T11:00:00Z"}),
        ),
    ];
    let mut wrong = Vec::new();
    for (args, want) in &cases {
        let mut full = vec!["--server", addr.as_str()];
        full.extend(args);
        if args.contains(&"--follow") {
            // The test server ends the live stream at this (stored) notice.
            obs.end_follow.notify_one();
        }
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), observe(&full))
            .await
            .unwrap_or_else(|_| panic!("observe {args:?} did not finish"));
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let got = obs.requests.lock().unwrap().pop().expect("a request");
        let got = serde_json::to_value(&got).unwrap();
        if &got != want {
            wrong.push(format!("{args:?}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The gRPC flags through the binary: the request the server gets, the
/// compact lines of gRPC and HTTP/2 records (`gRPC /pkg.Svc/Method =>
/// NOT_FOUND (12ms)`), and a bad status refused before connecting.
#[tokio::test]
async fn grpc_filters_and_compact_output() {
    let (addr, obs) = start().await;
    let r = observe(&[
        "--server",
        &addr,
        "--protocol",
        "grpc",
        "--grpc-service",
        "shop.inventory.v1.Inventory",
        "--grpc-status",
        "NOT_FOUND",
        "--grpc-status",
        "13-16",
        "--not",
        "--grpc-method",
        "Watch",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The test server sends every fixture flow whatever the filters: the
    // output is the golden file's, gRPC and HTTP/2 lines included.
    let (out, err) = golden("compact");
    assert_eq!(r.stdout, out);
    assert_eq!(r.stderr, err);
    for line in [
        "ecommerce/frontend-7d9f:40400 -> ecommerce/inventory-6f7d:50051 gRPC /shop.inventory.v1.Inventory/Reserve FORWARDED",
        "ecommerce/frontend-7d9f:40400 <- ecommerce/inventory-6f7d:50051 gRPC /shop.inventory.v1.Inventory/Reserve => NOT_FOUND (12ms) FORWARDED",
        "ecommerce/frontend-7d9f:40500 <- ecommerce/web-0:8080 HTTP/2 GET http://web.ecommerce/index.html => 200 (3ms) FORWARDED",
    ] {
        assert!(r.stdout.contains(line), "{line}\n{}", r.stdout);
    }
    assert_eq!(
        *obs.requests.lock().unwrap(),
        vec![GetFlowsRequest {
            number: 20,
            whitelist: vec![FlowFilter {
                protocol: vec!["grpc".into()],
                grpc_service: vec!["shop.inventory.v1.Inventory".into()],
                grpc_status: vec!["NOT_FOUND".into(), "13-16".into()],
                ..Default::default()
            }],
            blacklist: vec![FlowFilter {
                grpc_method: vec!["Watch".into()],
                ..Default::default()
            }],
            ..Default::default()
        }]
    );
    obs.requests.lock().unwrap().clear();
    for (args, want) in [
        (
            &["--grpc-status", "MISSING"][..],
            "invalid value 'MISSING' for '--grpc-status <CODE|NAME|RANGE>': invalid gRPC status \"MISSING\": expected a code (5), a name (OK, CANCELLED,",
        ),
        (
            &["--grpc-status", "16-1"][..],
            "the first code must not exceed the second",
        ),
        (
            &["--grpc-service", "shop.inventory.v1.Inventory/Reserve"][..],
            "expected a fully qualified service name such as shop.inventory.v1.Inventory (the method goes in --grpc-method)",
        ),
    ] {
        let mut full = vec!["--server", addr.as_str()];
        full.extend(args);
        let r = observe(&full).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
        assert_eq!(r.stdout, "");
    }
    assert!(obs.requests.lock().unwrap().is_empty());
}

/// Output flags through the binary: `-o dict`, and `--print-node-name
/// --color always --time-format RFC3339Milli` give the golden files.
#[tokio::test]
async fn output_flags_through_the_binary() {
    let (addr, _) = start().await;
    let r = observe(&["--server", &addr, "-o", "dict"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((r.stdout, r.stderr), golden("dict"));
    let r = observe(&[
        "--server",
        &addr,
        "--print-node-name",
        "--color",
        "always",
        "--time-format",
        "RFC3339Milli",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((r.stdout, r.stderr), golden("compact-node-color"));
}

/// `--tls` makes observe speak TLS (trusting the system CAs): a plain-text
/// server does not complete the handshake, so observe cannot connect (exit
/// 3, one line naming the address) and the server sees no request.
#[tokio::test]
async fn tls_flag_makes_observe_speak_tls() {
    let (addr, obs) = start().await;
    let r = observe(&["--server", &addr, "--tls", "--last", "1"]).await;
    assert_eq!(r.code, 3, "{} {}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("observe: cannot connect to {addr}")),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(obs.requests.lock().unwrap().is_empty());
}
