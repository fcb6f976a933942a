//! `relay`: serves one time-ordered Observer API over every node's flowd.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory as _, FromArgMatches as _};
use flowd_relay::config::Backoff;
use flowd_relay::dial;
use flowd_relay::peers::{self, PeerMap};
use flowd_relay::server::{Relay, serve};
use flowd_relay::tls::{ClientTls, ServerFiles, ServerTls};
use flowd_relay::ui;
use flowd_relay::{PeerRegistry, Pool, RelayConfig};
use tracing::info;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 1s, 2m)"))
}

/// A duration that must not be zero (a zero interval or timeout would spin
/// or fail every call).
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than 0 (expected e.g. 500ms, 1s, 2m)".into()),
        d => Ok(d),
    }
}

/// At least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected an integer of at least 1".into()),
    }
}

/// Merges the flow streams of every node's flowd into one Observer API.
#[derive(clap::Parser, Debug)]
#[command(name = "relay", version)]
struct Args {
    /// Address to serve the Observer API (and gRPC health) on.
    #[arg(long, default_value = "0.0.0.0:4245", env = "RELAY_LISTEN_ADDRESS")]
    listen_address: String,

    /// A node: `name=host:port` or `host:port` (repeatable).
    #[arg(long = "peer", value_name = "[NAME=]HOST:PORT")]
    peers: Vec<String>,
    /// A DNS name whose addresses are all nodes, `name:port` (repeatable);
    /// re-resolved every --dns-interval.
    #[arg(long = "peer-dns", value_name = "NAME:PORT")]
    peer_dns: Vec<String>,
    /// How often --peer-dns names are re-resolved.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    dns_interval: Duration,
    /// A peer service (flowd's or Hubble's peer.Peer/Notify), `host:port`.
    #[arg(long = "peer-service", value_name = "HOST:PORT")]
    peer_service: Vec<String>,

    /// Flows held per node while waiting for slower nodes (the sort buffer).
    /// Follow: a node with this many waiting has its oldest sent at once;
    /// stored flows: the node waits (its flows stay in order).
    #[arg(long, default_value_t = 100, value_parser = positive)]
    sort_buffer_len: usize,
    /// Longest time a flow waits for a silent node before it is sent.
    #[arg(long, default_value = "1s", value_parser = duration)]
    sort_buffer_drain_timeout: Duration,
    /// Responses buffered per client; a slower follow client loses the rest
    /// (reported as LostEvent OBSERVER_EVENTS_QUEUE).
    #[arg(long, default_value_t = 1024, value_parser = positive)]
    client_buffer: usize,
    /// Non-follow requests: a node silent for this long is abandoned (NODE_ERROR).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    node_idle_timeout: Duration,
    /// Timeout of connecting to a node.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    dial_timeout: Duration,
    /// Timeout of unary calls to nodes and of opening a flow stream.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    node_rpc_timeout: Duration,
    /// Interval of the liveness probe of connected nodes.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    health_check_interval: Duration,
    /// First delay before reconnecting a failed node (doubles each failure).
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    retry_initial: Duration,
    /// Largest delay between reconnection attempts.
    #[arg(long, default_value = "90s", value_parser = positive_duration)]
    retry_max: Duration,
    /// Longest time from SIGTERM/SIGINT to exit: streams end at once with
    /// UNAVAILABLE, then connections still open (idle clients, clients that
    /// do not read) are closed. A second signal exits at once.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    shutdown_grace: Duration,

    /// Relay server certificate (PEM); enables TLS on --listen-address.
    #[arg(long, requires = "tls_relay_server_key_file")]
    tls_relay_server_cert_file: Option<PathBuf>,
    /// Relay server key (PEM).
    #[arg(long, requires = "tls_relay_server_cert_file")]
    tls_relay_server_key_file: Option<PathBuf>,
    /// CA(s) client certificates must chain to: requires client certificates (mTLS).
    #[arg(long, requires = "tls_relay_server_cert_file")]
    tls_relay_client_ca_files: Vec<PathBuf>,

    /// Address to serve the web UI on (service map, flows, status), e.g.
    /// `:12000`; off unless set. Uses the --tls-relay-* options too.
    #[arg(long, value_name = "ADDR", env = "RELAY_UI_LISTEN_ADDRESS")]
    ui_listen: Option<String>,

    /// CA(s) of the nodes' certificates; enables TLS towards nodes and the peer service.
    #[arg(long)]
    tls_hubble_server_ca_files: Vec<PathBuf>,
    /// Client certificate presented to nodes (mTLS).
    #[arg(
        long,
        requires = "tls_hubble_client_key_file",
        requires = "tls_hubble_server_ca_files"
    )]
    tls_hubble_client_cert_file: Option<PathBuf>,
    /// Client key presented to nodes.
    #[arg(long, requires = "tls_hubble_client_cert_file")]
    tls_hubble_client_key_file: Option<PathBuf>,
    /// Name to verify node certificates against when the peer source gives
    /// none (default: the host of the node's address).
    #[arg(long, requires = "tls_hubble_server_ca_files")]
    tls_hubble_server_name: Option<String>,
}

/// Exit status of a bad command line.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: log collectors keep escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let a = match Args::command()
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m))
    {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("relay: {}", clap_error_line(&e.render().to_string()));
            return ExitCode::from(USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(run(a));
    rt.shutdown_timeout(Duration::from_millis(200));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, never a backtrace (whatever RUST_BACKTRACE says).
            eprintln!("relay: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, leaving out causes whose text the
/// line already holds.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// A clap error as one line: its first paragraph, without usage and hints.
fn clap_error_line(rendered: &str) -> String {
    let first = rendered
        .trim_start()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
    format!("{line} (see --help)")
}

/// SIGTERM/SIGINT: the returned future completes at the first one; a
/// second one exits at once (status 128 + signal), and if the shutdown has
/// not finished one second after `grace`, the process exits with status 1.
fn shutdown_signal(grace: Duration) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        };
        info!(signal = first, grace = ?grace, "shutting down; a second SIGTERM or SIGINT exits at once");
        let _ = tx.send(());
        let (second, code) = tokio::select! {
            _ = sigint.recv() => ("SIGINT", 130),
            _ = sigterm.recv() => ("SIGTERM", 143),
            _ = tokio::time::sleep(grace + Duration::from_secs(1)) => {
                tracing::error!(grace = ?grace, "the shutdown did not finish within the grace period; exiting now");
                std::process::exit(1);
            }
        };
        tracing::warn!(
            signal = second,
            "second signal during the shutdown: exiting now"
        );
        std::process::exit(code);
    });
    Ok(async move {
        let _ = rx.await;
    })
}

async fn run(a: Args) -> anyhow::Result<()> {
    if a.peers.is_empty() && a.peer_dns.is_empty() && a.peer_service.is_empty() {
        bail!("no peers: give --peer, --peer-dns or --peer-service");
    }
    if a.retry_max < a.retry_initial {
        bail!(
            "--retry-max {:?} is shorter than --retry-initial {:?}",
            a.retry_max,
            a.retry_initial
        );
    }
    let peer_tls = if a.tls_hubble_server_ca_files.is_empty() {
        None
    } else {
        Some(ClientTls::load(
            &a.tls_hubble_server_ca_files,
            a.tls_hubble_client_cert_file.as_deref(),
            a.tls_hubble_client_key_file.as_deref(),
            a.tls_hubble_server_name.clone(),
        )?)
    };
    let server_tls = match (&a.tls_relay_server_cert_file, &a.tls_relay_server_key_file) {
        (Some(cert), Some(key)) => Some(ServerTls::load(ServerFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_files: a.tls_relay_client_ca_files.clone(),
        })?),
        _ => None,
    };
    let cfg = Arc::new(RelayConfig {
        sort_buffer_len: a.sort_buffer_len,
        drain_timeout: a.sort_buffer_drain_timeout,
        client_buffer: a.client_buffer,
        node_idle_timeout: a.node_idle_timeout,
        node_rpc_timeout: a.node_rpc_timeout,
        connect_timeout: a.dial_timeout,
        health_check_interval: a.health_check_interval,
        backoff: Backoff {
            initial: a.retry_initial,
            max: a.retry_max,
        },
        peer_tls,
        shutdown_grace: a.shutdown_grace,
        ..RelayConfig::default()
    });

    let registry = PeerRegistry::new();
    let mut static_peers = PeerMap::new();
    for p in &a.peers {
        let spec = peers::parse_static_peer(p)?;
        if static_peers.insert(spec.name.clone(), spec).is_some() {
            bail!("--peer {p:?}: a peer with this name is given twice");
        }
    }
    registry.set_source("static", static_peers);
    // Discovery tasks: stopped at shutdown (the peer service is an upstream
    // connection too).
    let mut discovery = Vec::new();
    for d in &a.peer_dns {
        let (host, port) =
            dial::split_host_port(d, None).map_err(|e| anyhow::anyhow!("--peer-dns {d:?}: {e}"))?;
        discovery.push(tokio::spawn(peers::run_dns(
            registry.clone(),
            host,
            port,
            a.dns_interval,
            peers::system_resolver(),
        )));
    }
    for s in &a.peer_service {
        dial::split_host_port(s, None).map_err(|e| anyhow::anyhow!("--peer-service {s:?}: {e}"))?;
        discovery.push(tokio::spawn(peers::run_notify(
            registry.clone(),
            s.clone(),
            cfg.clone(),
        )));
    }
    let pool = Pool::start(registry.subscribe(), cfg.clone());

    let addr = listen_addr("--listen-address", &a.listen_address)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --listen-address {addr}"))?;
    let ui_listener = match &a.ui_listen {
        Some(ui) => {
            let addr = listen_addr("--ui-listen", ui)?;
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --ui-listen {addr}"))?;
            Some(l)
        }
        None => None,
    };
    info!(%addr, tls = server_tls.is_some(), "relay serving the Observer API");
    let signal = shutdown_signal(a.shutdown_grace)?;
    let shutdown = async move {
        signal.await;
        for t in &discovery {
            t.abort();
        }
    };
    let relay = Relay::new(pool, cfg);
    // The web UI stops with the relay (Relay::close at the signal) and
    // within the same grace, concurrently with the Observer API.
    let ui = async {
        match ui_listener {
            Some(l) => {
                let scheme = if server_tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                let local = l.local_addr().context("--ui-listen address")?;
                info!(url = %format!("{scheme}://{local}/"), "relay serving the web UI");
                let ui = ui::Ui::start(relay.clone());
                ui::serve(ui, l, server_tls.clone(), relay.closed(), a.shutdown_grace)
                    .await
                    .context("serving the web UI")
            }
            None => Ok(()),
        }
    };
    let api = async {
        serve(relay.clone(), listener, server_tls.clone(), shutdown)
            .await
            .context("serving the Observer API")
    };
    // Either one failing ends the relay with its error.
    tokio::try_join!(api, ui)?;
    Ok(())
}

/// `host:port` or `:port` (all addresses).
fn listen_addr(flag: &str, value: &str) -> anyhow::Result<SocketAddr> {
    match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}").parse(),
        None => value.parse(),
    }
    .with_context(|| format!("{flag} {value:?}: expected host:port or :port"))
}
