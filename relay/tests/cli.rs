//! The `relay` binary: flag errors, and serving against a fake node.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use flowd_proto::observer::ServerStatusRequest;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_relay"))
}

fn stderr_of(args: &[&str]) -> String {
    let out = relay().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit status and stderr lines with RUST_BACKTRACE=1 (set on many machines).
fn refused(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = relay()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code(), err.lines().map(str::to_string).collect())
}

/// Every refusal is one line naming the flag, the value and what is
/// expected, whatever RUST_BACKTRACE says; values that would spin or fail
/// every call (zero intervals, timeouts, buffers) are refused.
#[test]
fn errors_are_one_line_whatever_rust_backtrace() {
    let one = |args: &[&str], code: i32, want: &str| {
        let (got, lines) = refused(args);
        assert_eq!(
            (got, lines.as_slice()),
            (Some(code), [want.to_string()].as_slice()),
            "{args:?}"
        );
    };
    one(
        &[],
        1,
        "relay: no peers: give --peer, --peer-dns or --peer-service",
    );
    one(
        &["--peer", "node-a=10.0.0.1:http"],
        1,
        "relay: invalid peer \"node-a=10.0.0.1:http\": port \"http\" is not a number in 1..=65535",
    );
    one(
        &["--peer", "a:1", "--sort-buffer-len", "0"],
        2,
        "relay: invalid value '0' for '--sort-buffer-len <SORT_BUFFER_LEN>': expected an integer of at least 1 (see --help)",
    );
    one(
        &["--peer", "a:1", "--client-buffer", "0"],
        2,
        "relay: invalid value '0' for '--client-buffer <CLIENT_BUFFER>': expected an integer of at least 1 (see --help)",
    );
    for flag in [
        "--dns-interval",
        "--node-idle-timeout",
        "--dial-timeout",
        "--node-rpc-timeout",
        "--health-check-interval",
        "--retry-initial",
        "--retry-max",
        "--shutdown-grace",
    ] {
        let (code, lines) = refused(&["--peer", "a:1", flag, "0s"]);
        assert_eq!(code, Some(2), "{flag}");
        assert_eq!(lines.len(), 1, "{flag}: {lines:?}");
        assert!(
            lines[0].starts_with(&format!("relay: invalid value '0s' for '{flag} <"))
                && lines[0]
                    .ends_with(": must be more than 0 (expected e.g. 500ms, 1s, 2m) (see --help)"),
            "{lines:?}"
        );
    }
    one(
        &[
            "--peer",
            "a:1",
            "--retry-initial",
            "10s",
            "--retry-max",
            "1s",
        ],
        1,
        "relay: --retry-max 1s is shorter than --retry-initial 10s",
    );
    // A listen address someone else holds.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let (code, lines) = refused(&["--peer", "a:1", "--listen-address", &addr.to_string()]);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines.last().map(String::as_str),
        Some(
            format!("relay: binding --listen-address {addr}: Address already in use (os error 98)")
                .as_str()
        ),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("backtrace") || l.contains("Caused by"))
    );
}

#[test]
fn bad_flags_are_explained() {
    assert!(stderr_of(&[]).contains("no peers"));
    let e = stderr_of(&["--peer", "node-a=10.0.0.1:http"]);
    assert!(
        e.contains("node-a=10.0.0.1:http") && e.contains("port"),
        "{e}"
    );
    let e = stderr_of(&["--peer", "a:1", "--sort-buffer-drain-timeout", "soon"]);
    assert!(e.contains("soon"), "{e}");
    let e = stderr_of(&[
        "--peer",
        "a:1",
        "--tls-hubble-server-ca-files",
        "/nonexistent/ca.pem",
    ]);
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_the_relay() {
    let node = FakeNode::start(NodeData::new("bin-node"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _child = Kill(
        relay()
            .args([
                "--listen-address",
                &format!("127.0.0.1:{port}"),
                "--peer",
                &format!("bin-node={}", node.addr),
                "--retry-initial",
                "50ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("http://127.0.0.1:{port}");
    wait_for("the relay binary to report 1 connected node", || {
        let addr = addr.clone();
        async move {
            let Ok(mut c) =
                flowd_proto::observer::observer_client::ObserverClient::connect(addr).await
            else {
                return false;
            };
            c.server_status(ServerStatusRequest {})
                .await
                .map(|r| r.into_inner().num_connected_nodes.map(|v| v.value) == Some(1))
                .unwrap_or(false)
        }
    })
    .await;
}

/// SIGTERM with a follow stream and a Health/Watch open: the relay says
/// NOT_SERVING, ends the follow stream with UNAVAILABLE (a graceful server
/// stop would otherwise wait for it forever) and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_the_relay_exits() {
    use flowd_proto::observer::GetFlowsRequest;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let node = FakeNode::start(NodeData::new("bin-node"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Kill(
        relay()
            .args([
                "--listen-address",
                &format!("127.0.0.1:{port}"),
                "--peer",
                &format!("bin-node={}", node.addr),
                "--retry-initial",
                "50ms",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = format!("http://127.0.0.1:{port}");
    let connect = || async {
        tonic::transport::Endpoint::from_shared(addr.clone())
            .unwrap()
            .connect()
            .await
    };
    wait_for("the relay binary to serve", || async {
        let Ok(ch) = connect().await else {
            return false;
        };
        HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: "hubble.server.Observer".into(),
            })
            .await
            .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
    })
    .await;
    let ch = connect().await.unwrap();
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: "hubble.server.Observer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status;
    assert_eq!(first, ServingStatus::Serving as i32);
    let mut follow = flowd_proto::observer::observer_client::ObserverClient::new(ch)
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The node's NODE_CONNECTED notice: the stream is running.
    follow.message().await.unwrap().unwrap();

    let pid = child.0.id().to_string();
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, pid.as_str()])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(signal("-TERM"));
    let ten = std::time::Duration::from_secs(10);
    let statuses = tokio::time::timeout(ten, async {
        let mut statuses = Vec::new();
        while let Ok(Some(r)) = watch.message().await {
            statuses.push(r.status);
        }
        statuses
    })
    .await;
    let end = tokio::time::timeout(ten, async {
        loop {
            match follow.message().await {
                Ok(Some(_)) => continue,
                other => break other,
            }
        }
    })
    .await;
    if statuses.is_err() || end.is_err() {
        signal("-KILL");
    }
    let statuses = statuses.expect("the Watch stream ends at shutdown");
    assert_eq!(statuses, [ServingStatus::NotServing as i32]);
    let end = end.expect("the follow stream ends at shutdown");
    let e = end.expect_err("the follow stream ends with an error");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let exited =
        tokio::time::timeout(ten, tokio::task::spawn_blocking(move || child.0.wait())).await;
    let Ok(exited) = exited else {
        signal("-KILL");
        panic!("the relay did not exit within 10 s of SIGTERM");
    };
    assert!(exited.unwrap().unwrap().success());
}
