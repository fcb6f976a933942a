use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};

/// flowd: eBPF network flow observer.
///
/// With --config or --set, flowd runs as the node daemon configured by a
/// ConfigMap (Observer API, metrics, endpoints). Without them it runs the
/// datapath alone and prints flow events (--print), as the datapath tests do.
#[derive(Debug, clap::Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: flowd::config::ConfigArgs,
    #[command(flatten)]
    datapath: flowd::app::Cli,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowd::app::init_tracing();
    let cli = Args::parse();
    if cli.config.config.is_none() && cli.config.set.is_empty() {
        return flowd::app::run(cli.datapath).await;
    }
    let mut typed = Vec::new();
    if !cli.datapath.interfaces.is_empty() {
        let list: Vec<String> = cli
            .datapath
            .interfaces
            .iter()
            .map(|i| i.to_string())
            .collect();
        typed.push(("flowd-interfaces".to_string(), list.join(" ")));
    }
    let loaded = cli.config.load(&typed)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => tracing::info!("SIGINT"),
            _ = sigterm.recv() => tracing::info!("SIGTERM"),
        }
        let _ = tx.send(true);
    });
    flowd::daemon::run(loaded.config, rx).await?;
    Ok(())
}
