use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    flowd::app::init_tracing();
    flowd::app::run(flowd::app::Cli::parse()).await
}
