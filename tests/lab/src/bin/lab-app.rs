//! One lab pod's program (or the outside-world server): serves HTTP (and
//! gRPC, inventory) per the rules in `flowd_lab::app::rules` until
//! SIGTERM/SIGINT. `lab up` starts one per pod
//! inside the pod's network namespace.

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(about = "flowd lab pod program (started by `lab up`)")]
struct Args {
    /// The server's configuration (JSON of flowd_lab::app::AppConfig).
    #[arg(long)]
    config: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serve(&args.config)
}

fn serve(config: &str) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg: flowd_lab::app::AppConfig =
        serde_json::from_str(config).context("--config is not a valid app configuration")?;
    let bound = flowd_lab::app::bind(cfg.clone())?;
    tracing::info!("{} serving on :{}", cfg.pod, cfg.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        bound
            .run(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await?;
        Ok::<_, anyhow::Error>(())
    })
}
