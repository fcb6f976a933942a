//! The `relay` binary: flag errors, and serving against a fake node.
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
