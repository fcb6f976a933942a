//! `flowd certgen --kubernetes-secrets` (the real binary, feature `kube`)
//! against a local fake API server: the Secrets it creates (types, keys,
//! certificates that openssl verifies), that a second run only reads, that
//! a renewal updates with the resourceVersion it read (a concurrent change
//! makes it fail, not overwrite), and that it uses exactly the verbs and
//! names the Role in examples/kubernetes/certgen.yaml grants.
#![cfg(feature = "kube")]
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const NS: &str = "flowd-test";

#[derive(Default)]
struct Fake {
    /// name → Secret object.
    secrets: Mutex<BTreeMap<String, Value>>,
    /// "VERB name" of every request.
    requests: Mutex<Vec<String>>,
    /// Bump this Secret's resourceVersion right after it is read (another
    /// writer between certgen's read and its update).
    race: Mutex<Option<String>>,
    rv: Mutex<u64>,
}

fn status(code: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                      "reason": reason, "code": code.as_u16(), "message": reason});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn object(code: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

async fn handle(
    fake: Arc<Fake>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let prefix = format!("/api/v1/namespaces/{NS}/secrets");
    let Some(rest) = path.strip_prefix(&prefix) else {
        return Ok(status(StatusCode::NOT_FOUND, "NotFound"));
    };
    let name = rest.trim_start_matches('/').to_string();
    let next_rv = || {
        let mut rv = fake.rv.lock().unwrap();
        *rv += 1;
        rv.to_string()
    };
    let resp = match (method.as_str(), name.is_empty()) {
        ("GET", false) => {
            fake.requests.lock().unwrap().push(format!("get {name}"));
            let found = fake.secrets.lock().unwrap().get(&name).cloned();
            let raced = fake.race.lock().unwrap().as_deref() == Some(name.as_str());
            match found {
                Some(s) => {
                    if raced {
                        let rv = next_rv();
                        fake.secrets.lock().unwrap().get_mut(&name).unwrap()["metadata"]["resourceVersion"] =
                            json!(rv);
                    }
                    object(StatusCode::OK, &s)
                }
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            }
        }
        ("POST", true) => {
            let mut s: Value = serde_json::from_slice(&body).unwrap();
            let name = s["metadata"]["name"].as_str().unwrap().to_string();
            fake.requests.lock().unwrap().push(format!("create {name}"));
            let rv = next_rv();
            match fake.secrets.lock().unwrap().entry(name) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    status(StatusCode::CONFLICT, "AlreadyExists")
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    s["metadata"]["resourceVersion"] = json!(rv);
                    s["metadata"]["namespace"] = json!(NS);
                    e.insert(s.clone());
                    object(StatusCode::CREATED, &s)
                }
            }
        }
        ("PUT", false) => {
            fake.requests.lock().unwrap().push(format!("update {name}"));
            let mut s: Value = serde_json::from_slice(&body).unwrap();
            let current = fake.secrets.lock().unwrap().get(&name).cloned();
            match current {
                None => status(StatusCode::NOT_FOUND, "NotFound"),
                Some(c) if c["metadata"]["resourceVersion"] != s["metadata"]["resourceVersion"] => {
                    status(StatusCode::CONFLICT, "Conflict")
                }
                Some(_) => {
                    s["metadata"]["resourceVersion"] = json!(next_rv());
                    fake.secrets.lock().unwrap().insert(name, s.clone());
                    object(StatusCode::OK, &s)
                }
            }
        }
        _ => {
            fake.requests
                .lock()
                .unwrap()
                .push(format!("{} {path}", method.as_str().to_lowercase()));
            status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
        }
    };
    Ok(resp)
}

async fn serve(fake: Arc<Fake>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| handle(fake.clone(), r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs certgen against the fake; (success, stdout, stderr).
async fn certgen(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_flowd"))
            .args(["certgen", "--kubernetes-secrets", "--namespace", NS])
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .unwrap()
}

fn take(fake: &Fake) -> Vec<String> {
    std::mem::take(&mut *fake.requests.lock().unwrap())
}

fn data(fake: &Fake, name: &str, key: &str) -> Vec<u8> {
    let s = fake.secrets.lock().unwrap()[name].clone();
    // Secret data is base64 in JSON; k8s-openapi's ByteString decodes it.
    serde_json::from_value::<k8s_openapi::ByteString>(s["data"][key].clone())
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_created_kept_and_updated_with_their_resource_version() {
    let fake = Arc::new(Fake::default());
    let addr = serve(fake.clone()).await;
    let dir =
        TempDir(std::env::temp_dir().join(format!("flowd-certgen-kube-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\n\
             users: [{{name: certgen, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: certgen}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    let names = ["flowd-ca", "flowd-server-certs", "flowd-relay-client-certs"];

    // Install: three Secrets created.
    let (ok, out, err) = certgen(&kubeconfig, &[]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(": created (missing)"))
            .count(),
        3,
        "{out}"
    );
    let want: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("get {n}"), format!("create {n}")])
        .collect();
    assert_eq!(take(&fake), want);
    {
        let s = fake.secrets.lock().unwrap();
        assert_eq!(s["flowd-ca"]["type"], "Opaque");
        for n in &names[1..] {
            assert_eq!(s[*n]["type"], "kubernetes.io/tls", "{n}");
            let keys: Vec<&str> = s[*n]["data"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"], "{n}");
            assert_eq!(
                s[*n]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "flowd-certgen"
            );
        }
    }
    // openssl verifies what is in the Secrets.
    let f = |name: &str, key: &str| {
        let p = dir.0.join(format!("{name}-{key}"));
        std::fs::write(&p, data(&fake, name, key)).unwrap();
        p.display().to_string()
    };
    let ca = f("flowd-ca", "ca.crt");
    let server = f("flowd-server-certs", "tls.crt");
    let client = f("flowd-relay-client-certs", "tls.crt");
    let v = Command::new("openssl")
        .args(["verify", "-CAfile", &ca, &server, &client])
        .output()
        .expect("openssl (scripts/setup.sh)");
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    assert_eq!(
        data(&fake, "flowd-server-certs", "ca.crt"),
        data(&fake, "flowd-ca", "ca.crt")
    );

    // A second run only reads.
    let (ok, out, err) = certgen(&kubeconfig, &[]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(": kept")).count(),
        3,
        "{out}"
    );
    assert_eq!(take(&fake), names.map(|n| format!("get {n}")));

    // A renewal updates the two certificates, with the version it read.
    let ca_before = data(&fake, "flowd-ca", "ca.crt");
    let (ok, out, err) = certgen(&kubeconfig, &["--force-renew"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(": renewed")).count(),
        2,
        "{out}"
    );
    assert_eq!(
        take(&fake),
        [
            "get flowd-ca",
            "get flowd-server-certs",
            "update flowd-server-certs",
            "get flowd-relay-client-certs",
            "update flowd-relay-client-certs"
        ]
    );
    assert_eq!(
        data(&fake, "flowd-ca", "ca.crt"),
        ca_before,
        "the CA was kept"
    );

    // Someone else changed the Secret meanwhile: certgen fails, naming it.
    *fake.race.lock().unwrap() = Some("flowd-server-certs".into());
    let before = data(&fake, "flowd-server-certs", "tls.crt");
    let (ok, _, err) = certgen(&kubeconfig, &["--force-renew"]).await;
    assert!(!ok, "an update over a newer version succeeded");
    assert!(err.contains("updating Secret flowd-server-certs"), "{err}");
    assert_eq!(data(&fake, "flowd-server-certs", "tls.crt"), before);
    // Only the verbs and names the Role grants were used.
    for r in take(&fake) {
        let (verb, name) = r.split_once(' ').unwrap();
        assert!(["get", "create", "update"].contains(&verb), "{r}");
        assert!(names.contains(&name), "{r}");
    }
}
