//! The listening side: a server certificate and key, and with client CAs a
//! required client certificate (mTLS); TLS connections handed to tonic.
//!
//! ```no_run
//! # async fn demo(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! use flowd_tls::{ServerFiles, ServerTls, DEFAULT_RELOAD_INTERVAL};
//! let tls = ServerTls::load(ServerFiles {
//!     cert_file: "/var/lib/flowd/tls/server.crt".into(),
//!     key_file: "/var/lib/flowd/tls/server.key".into(),
//!     client_ca_files: vec!["/var/lib/flowd/tls/client-ca.crt".into()],
//! })?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:4244").await?;
//! let incoming = flowd_tls::incoming(listener, tls, Default::default());
//! tonic::transport::Server::builder()
//!     .add_routes(routes)
//!     .serve_with_incoming_shutdown(incoming, std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::reload::{Built, DEFAULT_RELOAD_INTERVAL, Reloading};
use crate::{TlsError, pem, provider};

/// The server's PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFiles {
    /// Certificate (chain) of the server.
    pub cert_file: PathBuf,
    /// Private key of the server.
    pub key_file: PathBuf,
    /// CA certificates clients must chain to; empty = no client certificate
    /// asked for.
    pub client_ca_files: Vec<PathBuf>,
}

/// A server TLS configuration that follows its files. Clone freely.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Reloading<ServerConfig>>,
    mtls: bool,
}

impl ServerTls {
    /// Loads the files; fails if one cannot be read, is not PEM, or the key
    /// does not match the certificate.
    pub fn load(files: ServerFiles) -> Result<Self, TlsError> {
        let mut list = vec![
            ("server certificate", files.cert_file.clone()),
            ("server key", files.key_file.clone()),
        ];
        list.extend(
            files
                .client_ca_files
                .iter()
                .map(|f| ("client CA", f.clone())),
        );
        let mtls = !files.client_ca_files.is_empty();
        let inner = Reloading::load("server", list, move |c| build(&files, c))?;
        Ok(Self { inner, mtls })
    }

    /// Whether clients must present a certificate.
    pub fn mtls(&self) -> bool {
        self.mtls
    }

    /// The configuration new connections get now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner.current()
    }

    /// The underlying reloader (poll now, count reloads).
    pub fn reloader(&self) -> &Arc<Reloading<ServerConfig>> {
        &self.inner
    }
}

fn build(files: &ServerFiles, c: &[Vec<u8>]) -> Result<Built<ServerConfig>, TlsError> {
    let chain = pem::certificates("server certificate", &files.cert_file, &c[0])?;
    let key = pem::private_key("server key", &files.key_file, &c[1])?;
    let leaf = crate::cert::CertInfo::from_der(&chain[0])
        .map_err(|e| TlsError::new("server certificate", &files.cert_file, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new("server TLS", &files.cert_file, e))?;
    let builder = if files.client_ca_files.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for (path, pem) in files.client_ca_files.iter().zip(&c[2..]) {
            for cert in pem::certificates("client CA", path, pem)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::new("client CA", path, e))?;
            }
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::new("client CA", &files.client_ca_files[0], format!("{e:?}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::new(
            "server certificate",
            &files.cert_file,
            format!("with key {}: {e}", files.key_file.display()),
        )
    })?;
    // gRPC is HTTP/2: offer only h2, as tonic's own TLS does.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Built {
        value: config,
        leaf: Some(leaf),
    })
}

/// How [`incoming`] accepts connections.
#[derive(Clone, Copy, Debug)]
pub struct IncomingOptions {
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
    /// A client that has not completed its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the
    /// listen backlog.
    pub max_handshakes: usize,
    /// TCP_NODELAY on accepted connections (flows are small messages).
    pub nodelay: bool,
    /// Offer HTTP/1.1 in ALPN next to h2: for a server that also answers
    /// browsers and plain HTTP clients (the relay's web UI), which the
    /// handshake would otherwise refuse when they ask for http/1.1 only.
    pub http1: bool,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        Self {
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 128,
            nodelay: true,
            http1: false,
        }
    }
}

/// TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming(_shutdown)`. Each connection is accepted with the
/// configuration current when it arrives; the files are polled every
/// `reload_interval` while the stream is alive. Handshakes run concurrently
/// (one slow or hostile client never holds up the others); a client that
/// fails its handshake (no certificate, an unknown CA, expired) is logged
/// and dropped. tonic sees `tokio_rustls` streams, so ALPN (h2) and the
/// peer's certificates (`Request::peer_certs`) work as with its own TLS.
/// Plain-text connections do not get past the first byte.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    opts: IncomingOptions,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(opts.max_handshakes.max(1));
    tokio::spawn(accept_loop(listener, tls, opts, tx, None));
    ReceiverStream::new(rx)
}

/// Like [`incoming`], and the connections whose first byte is not a TLS
/// handshake record as a second stream, for a server that answers plain
/// text with harmless services only: kubelet's gRPC probe speaks plain
/// HTTP/2, so flowd answers it with gRPC health on its TLS port.
pub fn incoming_with_plaintext(
    listener: TcpListener,
    tls: ServerTls,
    opts: IncomingOptions,
) -> (
    ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    ReceiverStream<std::io::Result<TcpStream>>,
) {
    let (tx, rx) = mpsc::channel(opts.max_handshakes.max(1));
    let (ptx, prx) = mpsc::channel(opts.max_handshakes.max(1));
    tokio::spawn(accept_loop(listener, tls, opts, tx, Some(ptx)));
    (ReceiverStream::new(rx), ReceiverStream::new(prx))
}

/// A TLS record of type handshake (a ClientHello) starts with this byte;
/// an HTTP/2 client in plain text starts with "PRI ".
const TLS_HANDSHAKE: u8 = 0x16;

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    opts: IncomingOptions,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
    plain: Option<mpsc::Sender<std::io::Result<TcpStream>>>,
) {
    let watch = tls.inner.watch(opts.reload_interval);
    let handshakes = Arc::new(Semaphore::new(opts.max_handshakes.max(1)));
    loop {
        let permit = tokio::select! {
            p = handshakes.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = tx.closed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // rather than spin on the error.
                    warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = tx.closed() => break,
        };
        if opts.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let acceptor = if opts.http1 {
            let mut config = (*tls.current()).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        } else {
            TlsAcceptor::from(tls.current())
        };
        let tx = tx.clone();
        let plain = plain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut first = [0u8; 1];
            match tokio::time::timeout(opts.handshake_timeout, stream.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
                    match plain {
                        Some(p) => {
                            debug!(%peer, "plain-text connection");
                            let _ = p.send(Ok(stream)).await;
                        }
                        None => info!(%peer, "plain-text connection refused: TLS is required"),
                    }
                    return;
                }
                Ok(Ok(1)) => {}
                // Closed at once (TCP probes, port scans), or silent.
                _ => {
                    debug!(%peer, "connection closed or silent before the TLS handshake");
                    return;
                }
            }
            match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    debug!(%peer, "TLS connection");
                    let _ = tx.send(Ok(s)).await;
                }
                // Closed before a handshake: TCP probes and port scans.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    debug!(%peer, "connection closed during the TLS handshake")
                }
                Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake refused"),
                Err(_) => {
                    info!(%peer, timeout = ?opts.handshake_timeout, "TLS handshake timed out")
                }
            }
        });
    }
    watch.abort();
}
