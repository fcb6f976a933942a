use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _};
use flowd::cli::{clap_error_line, error_line};

/// flowd: eBPF network flow observer.
///
/// With --config or --set, flowd runs as the node daemon configured by a
/// ConfigMap (Observer API, metrics, endpoints); the datapath flags then
/// stand for configuration keys (see docs/configuration.md). Without them it
/// runs the datapath alone and prints flow events (--print), as the datapath
/// tests do.
#[derive(Debug, clap::Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: flowd::config::ConfigArgs,
    #[command(flatten)]
    datapath: flowd::cli::Cli,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create or renew the CA and the certificates of the mTLS between the
    /// relay and the nodes (files, or Kubernetes Secrets).
    Certgen(flowd::certgen::CertgenArgs),
}

/// Exit status of a bad command line (a flag, a value, a combination).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    flowd::cli::init_tracing();
    let args = match Args::command()
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m))
    {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("flowd: {}", clap_error_line(&e.render().to_string()));
            return ExitCode::from(USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flowd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(run(args));
    // A blocked thread (an export file on a hung disk) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn run(args: Args) -> ExitCode {
    if let Some(Command::Certgen(a)) = args.command {
        return report(flowd::certgen::run(a).await.map_err(Into::into));
    }
    if args.config.config.is_none() && args.config.set.is_empty() {
        return report(flowd::print_mode::run(args.datapath).await);
    }
    // The daemon: typed flags are keys (or outputs), checked one by one so
    // that an error names the flag.
    let typed = match args.datapath.key_overrides() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("flowd: {e}");
            return ExitCode::from(USAGE);
        }
    };
    for t in &typed {
        if let Err(e) = flowd::config::check_value(t.key, &t.value) {
            eprintln!("flowd: {}: {e}", t.flag);
            return ExitCode::from(USAGE);
        }
    }
    let pairs: Vec<(String, String)> = typed
        .iter()
        .map(|t| (t.key.to_string(), t.value.clone()))
        .collect();
    let loaded = match args.config.load(&pairs) {
        Ok(l) => l,
        Err(e) => return report(Err(e.into())),
    };
    let outputs = args.datapath.outputs();
    if outputs.print.is_some() && loaded.config.hubble_export_file_path.as_deref() == Some("stdout")
    {
        eprintln!(
            "flowd: --print cannot be combined with hubble-export-file-path=stdout: both write to stdout"
        );
        return ExitCode::from(USAGE);
    }
    let shutdown = match flowd::shutdown::install(loaded.config.shutdown_grace) {
        Ok(s) => s,
        Err(e) => return report(Err(anyhow::anyhow!("installing signal handlers: {e}"))),
    };
    report(
        flowd::daemon::run_with(loaded.config, outputs, shutdown)
            .await
            .map_err(Into::into),
    )
}

/// A failure as one line on stderr (never a backtrace, whatever
/// RUST_BACKTRACE says) and exit status 1.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowd: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}
