//! The reloading server TLS under a real gRPC service (tonic's health
//! service): mTLS refusals, ALPN h2 and the peer certificate seen by the
//! service, and certificates replaced the way kubelet updates a Secret
//! volume (a `..data` symlink swap) — new connections get the new
//! certificate, an open stream keeps flowing, a half-done update (key and
//! certificate that do not match) keeps the previous pair.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowd_tls::cert::CertInfo;
use flowd_tls::server::IncomingOptions;
use flowd_tls::{ServerFiles, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

const SERVER_NAME: &str = "node-a.default.hubble-grpc.cilium.io";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (certificate PEM, key PEM, serial) of a leaf issued by `ca`.
fn leaf(ca: &Ca, server: bool, valid_secs: i64) -> (String, String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![if server {
        "*.default.hubble-grpc.cilium.io".to_string()
    } else {
        "relay.default.hubble-grpc.cilium.io".to_string()
    }])
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(valid_secs);
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let serial: [u8; 8] = rand_bytes();
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let info = CertInfo::from_der(cert.der()).unwrap();
    (cert.pem(), key.serialize_pem(), info.serial)
}

fn rand_bytes() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let mut b = h.finish().to_be_bytes();
    b[0] = (b[0] & 0x7f) | 0x10;
    b
}

/// A directory laid out as kubelet lays out a Secret volume.
struct SecretDir(PathBuf);

impl SecretDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("flowd-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.0.join(key)
    }

    /// Writes all files into a new timestamped directory and swaps `..data`.
    fn update(&self, files: &[(&str, &str)]) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "..data-{}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = self.0.join(&name);
        std::fs::create_dir(&dir).unwrap();
        for (k, v) in files {
            std::fs::write(dir.join(k), v).unwrap();
        }
        let tmp = self.0.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.0.join("..data")).unwrap();
        for (k, _) in files {
            let link = self.0.join(k);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(k), &link).unwrap();
            }
        }
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the service saw of its callers: the first peer certificate of each call.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

struct Server {
    addr: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve(tls: ServerTls) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("flow", tonic_health::ServingStatus::Serving)
        .await;
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let svc = tonic::service::interceptor::InterceptedService::new(
        health,
        move |req: tonic::Request<()>| {
            if let Some(c) = req.peer_certs() {
                s2.lock().unwrap().push(c[0].to_vec());
            }
            Ok(req)
        },
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = flowd_tls::incoming(
        listener,
        tls,
        IncomingOptions {
            reload_interval: Duration::from_millis(100),
            ..Default::default()
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            }),
    );
    Server {
        addr,
        reporter,
        seen,
        stop: Some(stop),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn client(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<HealthClient<tonic::transport::Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .domain_name(SERVER_NAME)
        .ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(HealthClient::new(ch))
}

async fn check(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<(), String> {
    let mut c = client(addr, ca_pem, identity).await?;
    c.check(HealthCheckRequest {
        service: "flow".into(),
    })
    .await
    .map(|_| ())
    .map_err(|s| format!("{s:?}"))
}

/// The certificate the server presents to a new connection, and the ALPN
/// protocol it chose (a bare rustls handshake with a client certificate).
async fn served(addr: SocketAddr, ca_pem: &str, id: (&str, &str)) -> (CertInfo, Option<Vec<u8>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(id.0.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(id.1.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = s.get_ref();
    let cert = CertInfo::from_der(&conn.peer_certificates().unwrap()[0]).unwrap();
    (cert, conn.alpn_protocol().map(<[u8]>::to_vec))
}

fn server_files(dir: &SecretDir) -> ServerFiles {
    ServerFiles {
        cert_file: dir.path("tls.crt"),
        key_file: dir.path("tls.key"),
        client_ca_files: vec![dir.path("ca.crt")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refusals_alpn_and_peer_certificates() {
    let ca1 = ca("flowd test CA");
    let other = ca("another CA");
    let (scrt, skey, _) = leaf(&ca1, true, 3600);
    let (ccrt, ckey, _) = leaf(&ca1, false, 3600);
    let (ocrt, okey, _) = leaf(&other, false, 3600);
    let (ecrt, ekey, _) = leaf(&ca1, false, -60);
    let dir = SecretDir::new("refusals");
    dir.update(&[("ca.crt", &ca1.pem), ("tls.crt", &scrt), ("tls.key", &skey)]);
    let tls = ServerTls::load(server_files(&dir)).unwrap();
    assert!(tls.mtls());
    let srv = serve(tls).await;

    check(srv.addr, &ca1.pem, Some((&ccrt, &ckey)))
        .await
        .expect("the client certificate of the CA is accepted");
    let seen = srv.seen.lock().unwrap().clone();
    let want = rustls::pki_types::pem::PemObject::from_pem_slice(ccrt.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    assert_eq!(
        seen,
        vec![want],
        "the service sees the client's certificate"
    );
    let (_, alpn) = served(srv.addr, &ca1.pem, (&ccrt, &ckey)).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    for (what, id) in [
        ("no certificate", None),
        ("another CA", Some((ocrt.as_str(), okey.as_str()))),
        ("expired", Some((ecrt.as_str(), ekey.as_str()))),
    ] {
        let r = check(srv.addr, &ca1.pem, id).await;
        assert!(r.is_err(), "{what}: accepted");
    }
    assert_eq!(
        srv.seen.lock().unwrap().len(),
        1,
        "no refused call reached the service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_files_serve_new_connections_and_streams_go_on() {
    let ca1 = ca("flowd test CA");
    let (scrt, skey, serial1) = leaf(&ca1, true, 3600);
    let (ccrt, ckey, _) = leaf(&ca1, false, 3600);
    let dir = SecretDir::new("swap");
    dir.update(&[("ca.crt", &ca1.pem), ("tls.crt", &scrt), ("tls.key", &skey)]);
    let tls = ServerTls::load(server_files(&dir)).unwrap();
    let reloader = tls.reloader().clone();
    let srv = serve(tls).await;
    assert_eq!(
        served(srv.addr, &ca1.pem, (&ccrt, &ckey)).await.0.serial,
        serial1
    );

    // An open stream (Health.Watch) before the swap.
    let mut c = client(srv.addr, &ca1.pem, Some((&ccrt, &ckey)))
        .await
        .unwrap();
    let mut watch = c
        .watch(HealthCheckRequest {
            service: "flow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Half an update: a new certificate with the old key does not load.
    let (scrt2, skey2, serial2) = leaf(&ca1, true, 3600);
    dir.update(&[
        ("ca.crt", &ca1.pem),
        ("tls.crt", &scrt2),
        ("tls.key", &skey),
    ]);
    let err = reloader
        .check()
        .expect_err("mismatched key and certificate");
    assert!(err.to_string().contains("tls.crt"), "{err}");
    assert_eq!(
        served(srv.addr, &ca1.pem, (&ccrt, &ckey)).await.0.serial,
        serial1
    );

    // The whole update: picked up by the poller (no explicit check).
    dir.update(&[
        ("ca.crt", &ca1.pem),
        ("tls.crt", &scrt2),
        ("tls.key", &skey2),
    ]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = served(srv.addr, &ca1.pem, (&ccrt, &ckey)).await.0.serial;
        if s == serial2 {
            break;
        }
        assert_eq!(s, serial1);
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloader.reloads(), 1);

    // The stream opened before the swap still delivers.
    srv.reporter
        .set_service_status("flow", tonic_health::ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the old stream delivers")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // And a new call works over a new connection.
    check(srv.addr, &ca1.pem, Some((&ccrt, &ckey)))
        .await
        .unwrap();
}
