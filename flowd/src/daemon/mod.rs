//! The daemon: starts the parts with the options [`crate::wiring`] builds
//! from the configuration, runs the event path ([`pipeline`]) and the two
//! control loops back into the datapath (pod veths → attach/detach plans;
//! the pods' addresses → the drop program), serves the APIs and stops
//! within the shutdown grace.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use flowd_proto::health::HealthStatus;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

mod pipeline;

pub use pipeline::Pipeline;

use crate::{
    config::Config,
    datapath::{self, Datapath, DatapathEvent},
    endpoints::{EndpointStore, ManifestSource},
    export::{ExportError, ExportStats},
    metrics::Metrics,
    observer::Observer,
    options::interfaces::AttachMode,
    parser::Parser,
    wiring,
};

/// What the daemon writes besides its API, metrics and exports (the
/// `--print` and `--dump-flows-on-exit` flags).
pub use crate::cli::Outputs;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    #[error("observer: {0}")]
    Observer(#[from] crate::observer::ObserverError),
    #[error("HTTP parser configuration: {0}")]
    Http(#[from] crate::parser::HttpConfigError),
    #[error("hubble-metrics-server {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: crate::metrics::server::ServerError,
    },
    #[error("hubble-listen-address {addr}: cannot listen for the Observer API: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoints: {0}")]
    Endpoints(String),
    #[error("Observer API TLS (hubble-tls-*): {0}")]
    Tls(#[from] flowd_tls::TlsError),
    #[error("export: {0}")]
    Export(#[from] ExportError),
    /// `--dump-flows-on-exit` could not be written.
    #[error("{0}")]
    Dump(String),
}

/// Starts the endpoint store, its sources and the discovery of pod veths
/// (which tells enrichment which pod each observed interface belongs to).
fn start_endpoints(
    config: &Config,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Arc<EndpointStore>, DaemonError> {
    let store = EndpointStore::new(wiring::endpoint_store(config));
    if let Some(dir) = &config.manifests_dir {
        info!(dir = %dir.display(), "endpoints from manifests");
        tasks.push(tokio::spawn(
            store
                .clone()
                .run(Box::new(ManifestSource::new(dir.clone()))),
        ));
    }
    #[cfg(feature = "kube")]
    if config.kubernetes != crate::config::KubernetesWatch::Off {
        let scope = match config.kubernetes {
            crate::config::KubernetesWatch::All => crate::endpoints::kube::PodScope::All,
            _ => crate::endpoints::kube::PodScope::Node(config.node_name.clone()),
        };
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match crate::endpoints::kube::KubeSource::from_env(scope).await {
                Ok(src) => store.run(Box::new(src)).await,
                Err(e) => warn!(error = %e, "Kubernetes endpoint source unavailable"),
            }
        }));
    }
    Ok(store)
}

/// Whether an endpoint source runs (then pod veths are attached as pods come
/// and go, even with no `flowd-interfaces`).
fn has_endpoint_source(config: &Config) -> bool {
    #[cfg(feature = "kube")]
    if config.kubernetes != crate::config::KubernetesWatch::Off {
        return true;
    }
    config.manifests_dir.is_some()
}

/// Attachment follows pods: discovers this node's pod veths (which also tells
/// enrichment which pod each observed interface belongs to) and, with a
/// datapath, attaches to new ones and detaches from those whose pod went
/// away, unless `flowd-interfaces` selects them anyway.
/// The returned receiver completes once the plan made after the sources'
/// first pod list is applied: the store knows those pods' veths and they are
/// attached.
fn follow_pods(
    store: Arc<EndpointStore>,
    attach: Option<datapath::AttachHandle>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<tokio::sync::oneshot::Receiver<()>, DaemonError> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| DaemonError::Endpoints(format!("opening rtnetlink: {e}")))?;
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    tasks.push(tokio::spawn(conn));
    tasks.push(tokio::spawn(async move {
        let mut listed_tx = Some(listed_tx);
        let mut plans = crate::endpoints::pod_veths::follow(store, handle, Duration::from_secs(5));
        while let Some(plan) = futures::StreamExt::next(&mut plans).await {
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "discovering pod veths");
                    continue;
                }
            };
            if !plan.is_empty() {
                info!(
                    attach = plan.attach.len(),
                    detach = plan.detach.len(),
                    "pod veths changed"
                );
            }
            if let Some(h) = &attach {
                apply_attach_plan(h, &plan);
            }
            if plan.listing
                && let Some(tx) = listed_tx.take()
            {
                let _ = tx.send(());
            }
        }
    }));
    Ok(listed)
}

/// Applies one plan; failures are logged (the next resync or pod change
/// does not retry a veth the plan already counted as attached).
fn apply_attach_plan(h: &datapath::AttachHandle, plan: &crate::endpoints::pod_veths::AttachPlan) {
    for v in &plan.detach {
        if h.is_configured(&v.ifname) {
            continue;
        }
        if let Some(a) = h.detach(v.ifindex) {
            info!(ifname = %a.ifname, ifindex = a.ifindex, pod = %v.pod, "detached");
        }
    }
    for v in &plan.attach {
        match h.attach(v.ifindex, &v.ifname, AttachMode::Tc) {
            Ok(Some(a)) => info!(
                ifname = %a.ifname,
                ifindex = a.ifindex,
                mechanism = a.mechanism,
                pod = %v.pod,
                "attached"
            ),
            Ok(None) => {}
            Err(e) => warn!(error = %e, pod = %v.pod, "attaching to a pod veth"),
        }
    }
}

/// How often `flowd_flow_map_entries` is measured (a walk of the table).
const FLOW_MAP_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps `flowd_flow_map_entries` / `_capacity` current. The walk runs on a
/// blocking thread so that the event pipeline never waits for it.
async fn sample_flow_map(fill: datapath::FlowMapFill, metrics: Arc<Metrics>) {
    let capacity = u64::from(fill.capacity());
    metrics.set_flow_map(0, capacity);
    let mut every = tokio::time::interval(FLOW_MAP_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let f = fill.clone();
        match tokio::task::spawn_blocking(move || f.entries()).await {
            Ok(n) => metrics.set_flow_map(n, capacity),
            Err(e) => warn!(error = %e, "measuring the flow table"),
        }
    }
}

/// How long the daemon waits at start for the first pod list before it
/// processes events anyway (a Kubernetes API that does not answer).
const PODS_LISTED_WAIT: Duration = Duration::from_secs(10);

/// Most events the pipeline takes from the channel per wake-up: one ring
/// drain (the reader's batch).
const PIPELINE_BATCH: usize = 1024;

/// Runs the whole daemon until `shutdown` flips to true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    run_with(config, Outputs::default(), shutdown).await
}

/// [`run`] with the `--print` / `--dump-flows-on-exit` outputs.
///
/// Shutdown, once `shutdown` flips, takes at most `flowd-shutdown-grace`:
/// the programs are detached and what is left in the ring goes through the
/// pipeline as usual; then the flow buffer is closed, so every follow stream
/// sends what it has not sent yet and ends with UNAVAILABLE "flowd is
/// shutting down"; the exporters flush; the servers finish their
/// connections. Whatever is still running when the grace period ends
/// (a collector that does not answer, a client that does not read, an idle
/// connection) is abandoned and the process exits.
pub async fn run_with(
    config: Config,
    outputs: Outputs,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let (observer, writer) = Observer::new(wiring::observer(&config))?;
    // NOT_SERVING until the datapath is attached and the first pod list is
    // in, and again from the moment shutdown begins.
    let (health, health_service) = HealthStatus::new().await;
    // The Observer API stays up while the datapath drains at shutdown (a
    // client can read the last flows, and health says NOT_SERVING); it stops
    // when this flips.
    let (api_stop, api_stopped) = watch::channel(false);
    let export_stats = ExportStats::default();
    let metrics = config.hubble_metrics_server.map(|_| {
        if let Some(handlers) = crate::metrics::eventless::describe(&config.hubble_metrics) {
            info!(
                %handlers,
                "hubble-metrics handlers with no events in flowd: their metrics exist and stay at zero"
            );
        }
        let mut m = Metrics::new(&wiring::metrics(&config));
        export_stats.register(m.registry_mut());
        Arc::new(m)
    });
    let exporters = wiring::exporters(&config, export_stats)?;
    let parser = Parser::new(wiring::parser(&config)?);
    // Servers stop gracefully on `shutdown`; background tasks are aborted.
    let mut tasks = Vec::new();
    let mut background = Vec::new();
    let endpoints = start_endpoints(&config, &mut background)?;
    let peers = crate::peer::PeerService::new(endpoints.clone(), wiring::peer(&config));
    let follow_store = endpoints.clone();
    let mut pipeline = Pipeline::new(parser, writer, metrics.clone(), Some(endpoints))
        .with_exporters(exporters)
        .with_name_cache(wiring::name_cache(&config));

    if let (Some(addr), Some(m)) = (config.hubble_metrics_server, metrics.clone()) {
        let listener = crate::metrics::server::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        info!(%addr, "metrics server listening");
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(crate::metrics::server::serve(
            m,
            listener,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
    }
    if config.enable_hubble
        && let Some(addr) = config.hubble_listen_address
    {
        let tls = wiring::observer_tls(&config)?;
        if tls.is_none() && !config.hubble_tls_client_ca_files.is_empty() {
            warn!("hubble-tls-client-ca-files is ignored: hubble-disable-tls is true");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        info!(%addr, tls = tls.is_some(), mtls = tls.is_some() && !config.hubble_tls_client_ca_files.is_empty(), "Observer API listening");
        let mut stop = api_stopped.clone();
        let obs = observer.clone();
        // The peer service and gRPC health share the Observer API's server,
        // as in Cilium.
        let routes = tonic::service::Routes::new(obs.into_service())
            .add_service(peers.into_service())
            .add_service(health_service.clone());
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(async move {
            let res = match tls {
                // Plain-text connections on the TLS port get health only
                // (kubelet's gRPC readiness probe).
                Some(tls) => {
                    let plain = tonic::service::Routes::new(health_service);
                    crate::observer::serve_routes_tls_and_plain(
                        routes, plain, listener, tls, stopped,
                    )
                    .await
                }
                None => crate::observer::serve_routes(routes, listener, None, stopped).await,
            };
            if let Err(e) = res {
                warn!(error = %e, "Observer API stopped");
            }
        }));
    }

    let (mut dp, mut events): (Option<Datapath>, mpsc::Receiver<DatapathEvent>) = if config
        .interfaces
        .is_empty()
        && !has_endpoint_source(&config)
    {
        warn!(
            "no interfaces configured (flowd-interfaces) and no endpoint source: observing nothing"
        );
        (None, mpsc::channel(1).1)
    } else {
        let (dp, rx) = Datapath::start(wiring::datapath(&config)).await?;
        (Some(dp), rx)
    };
    let printer = outputs.print.map(|format| {
        let names = dp.as_ref().map(Datapath::interface_names);
        let p = crate::print_mode::Printer::new(format, names);
        p.ready(&dp.as_ref().map(Datapath::attached).unwrap_or_default());
        p
    });
    // The reader hands over a ring drain at a time; the pipeline takes all
    // that is queued per wake-up and handles it as one batch.
    let mut batch: Vec<DatapathEvent> = Vec::with_capacity(PIPELINE_BATCH);
    let on_batch = |pipeline: &mut Pipeline, batch: &mut Vec<DatapathEvent>| {
        if let Some(p) = &printer {
            for ev in batch.iter() {
                p.event(ev);
            }
        }
        pipeline.on_events(batch.drain(..));
    };

    if let (Some(dp), Some(m)) = (dp.as_ref(), metrics.clone()) {
        let queue = dp.event_queue_fill();
        m.watch_event_queue(move || queue.get());
        background.push(tokio::spawn(sample_flow_map(dp.flow_map_fill(), m)));
    }
    let mut pods_listed = Some(follow_pods(
        follow_store,
        dp.as_ref().map(Datapath::attach_handle),
        &mut background,
    )?);
    // Events wait (in the channel and the ring) until enrichment knows which
    // interfaces are pod veths: a flow enriched before that has no
    // direction or observation point, and the attachments of configured
    // globs (done by now) are reported only after it.
    if has_endpoint_source(&config) {
        tokio::select! {
            r = tokio::time::timeout(PODS_LISTED_WAIT, wait_listed(&mut pods_listed)) => {
                match r {
                    Ok(()) => {
                        info!("first pod list attached: serving");
                        health.set(true).await;
                    }
                    Err(_) => warn!(
                        waited = ?PODS_LISTED_WAIT,
                        "no pod list from the endpoint sources yet: flows on pod veths have no direction until it comes"
                    ),
                }
            }
            () = shutting_down(&mut shutdown) => {}
        }
    } else {
        // Nothing to wait for: the configured interfaces are attached.
        pods_listed = None;
        health.set(true).await;
    }

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            n = events.recv_many(&mut batch, PIPELINE_BATCH) => match n {
                0 if dp.is_some() => break,
                0 => {}
                _ => on_batch(&mut pipeline, &mut batch),
            },
            _ = tick.tick() => pipeline.tick(dp.as_ref()),
            () = wait_listed(&mut pods_listed), if pods_listed.is_some() => {
                info!("first pod list attached: serving");
                health.set(true).await;
            }
            () = shutting_down(&mut shutdown) => break,
        }
    }
    health.set(false).await;
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    // Detach, let the reader take what is left in the ring, and keep taking
    // events meanwhile: nothing observed is lost at shutdown.
    if let Some(dp) = dp.as_mut() {
        let mut done = std::pin::pin!(tokio::time::timeout_at(deadline, dp.shutdown()));
        let mut open = true;
        loop {
            tokio::select! {
                r = &mut done => {
                    if r.is_err() {
                        warn!("the datapath did not drain within flowd-shutdown-grace; the rest of the ring is lost");
                    }
                    break;
                }
                n = events.recv_many(&mut batch, PIPELINE_BATCH), if open => {
                    if n == 0 {
                        open = false;
                    } else {
                        on_batch(&mut pipeline, &mut batch);
                    }
                }
            }
        }
    }
    while let Ok(ev) = events.try_recv() {
        batch.push(ev);
        if batch.len() >= PIPELINE_BATCH {
            on_batch(&mut pipeline, &mut batch);
        }
    }
    on_batch(&mut pipeline, &mut batch);
    pipeline.release_held(true);
    pipeline.tick(dp.as_ref());
    // Every observed flow is in the buffer: follow streams can end.
    pipeline.close_streams();
    let dumped = match &outputs.dump_flows_on_exit {
        Some(path) => crate::print_mode::write_dump(dp.as_ref(), path)
            .map_err(|e| DaemonError::Dump(crate::cli::error_line(&e))),
        None => Ok(()),
    };
    drop(dp);
    // Everything observed is in the buffer and the follow streams are
    // ending: end the health Watch streams and stop the API (it stayed up
    // while the datapath drained, answering NOT_SERVING).
    health.close().await;
    let _ = api_stop.send(true);
    for t in background {
        t.abort();
    }
    // Write out what the exporters hold; a collector that is down gets the
    // rest of the grace period, then what is left is counted as dropped.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let flushed = tokio::time::timeout_at(deadline, pipeline.take_exporters().shutdown(left));
    if flushed.await.is_err() {
        warn!("export queues not flushed within flowd-shutdown-grace; the rest is lost");
    }
    let servers = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout_at(deadline, servers).await.is_err() {
        warn!(
            grace = %humantime::format_duration(config.shutdown_grace),
            "connections still open at the end of flowd-shutdown-grace (idle clients or clients that do not read); closing them"
        );
        for t in &tasks {
            t.abort();
        }
    }
    info!("flowd stopped");
    dumped
}

/// Completes when `shutdown` is (or becomes) true; holds no watch borrow
/// (a select arm that awaits must not keep one alive).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Completes when the daemon's first pod list is attached, and then sets
/// `listed` to None; pending while it is None or when the discovery task
/// ended without one (flowd then stays NOT_SERVING: its pods are not
/// observed).
async fn wait_listed(listed: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    let Some(rx) = listed.as_mut() else {
        return std::future::pending().await;
    };
    let r = rx.await;
    *listed = None;
    if r.is_err() {
        warn!("pod veth discovery ended before the first pod list: staying NOT_SERVING");
        std::future::pending::<()>().await;
    }
}
