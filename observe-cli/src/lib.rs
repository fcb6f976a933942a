//! `observe`: the command-line client of flowd's Observer API (and the
//! relay's), modelled on `hubble observe`.
//!
//! * [`cli`]: flags and subcommands;
//! * [`request`]: flags → `GetFlowsRequest` (hubble's filter semantics);
//! * [`values`]: the flags' value parsers;
//! * [`client`]: connection, TLS, timeouts;
//! * [`format`]: compact, dict, JSON and table output.

pub mod cli;
pub mod client;
pub mod error;
pub mod format;
pub mod request;
pub mod values;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use flowd_proto::observer::{GetNamespacesRequest, GetNodesRequest, ServerStatusRequest};

use cli::{Cli, Command, ListCommand};
use error::Error;
use format::{ColorChoice, OutputFormat};

/// Parses `args` (including the program name) and runs the command.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (m, c)));
    let (matches, cli) = match parsed {
        Ok(p) => p,
        // Help and version print to stdout with exit 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // Errors: one line saying what is valid, exit 2.
        Err(e) => {
            eprintln!("observe: {}", clap_error_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("observe: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli, &matches)) {
        Ok(()) => ExitCode::SUCCESS,
        // `observe ... | head`: the reader went away; not an error.
        Err(Error::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("observe: {e}");
            ExitCode::from(e.exit_code())
        }
    }
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

/// Awaits a call's answer for at most `timeout` (--request-timeout).
async fn answer<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    timeout: std::time::Duration,
    addr: &str,
    rpc: &'static str,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(Error::rpc(addr, rpc, &s)),
        Err(_) => Err(Error::timeout(addr, rpc, timeout)),
    }
}

fn use_color(c: ColorChoice) -> bool {
    match c {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

async fn run(cli: Cli, matches: &ArgMatches) -> Result<(), Error> {
    let json = matches!(cli.output.output, OutputFormat::Json | OutputFormat::Jsonpb);
    let unary_timeout = cli.conn.request_timeout;
    match &cli.command {
        Some(Command::Completion { shell }) => {
            // Into a buffer first: clap_complete panics on write errors
            // (`observe completion bash | head`).
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "observe", &mut buf);
            let mut out = io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
            return Ok(());
        }
        Some(Command::Status) => {
            let (mut c, target) = client::connect(&cli.conn).await?;
            let s = answer(
                c.server_status(ServerStatusRequest {}),
                unary_timeout,
                &target.authority,
                "ServerStatus",
            )
            .await?;
            let text = if json {
                json_line(&s)?
            } else {
                format::status_text(&target.authority, &s)
            };
            write_all(&text)?;
            return Ok(());
        }
        Some(Command::List { what }) => {
            let (mut c, target) = client::connect(&cli.conn).await?;
            let text = match what {
                ListCommand::Nodes => {
                    let r = answer(
                        c.get_nodes(GetNodesRequest {}),
                        unary_timeout,
                        &target.authority,
                        "GetNodes",
                    )
                    .await?;
                    if json {
                        json_line(&r)?
                    } else {
                        format::nodes_table(&r)
                    }
                }
                ListCommand::Namespaces => {
                    let r = answer(
                        c.get_namespaces(GetNamespacesRequest {}),
                        unary_timeout,
                        &target.authority,
                        "GetNamespaces",
                    )
                    .await?;
                    if json {
                        json_line(&r)?
                    } else {
                        format::namespaces_table(&r)
                    }
                }
            };
            write_all(&text)?;
            return Ok(());
        }
        None => {}
    }

    // Build (and validate) the request before connecting.
    let request = request::build_request(matches, SystemTime::now())?;
    let (mut c, target) = client::connect(&cli.conn).await?;
    let opts = format::Options {
        format: cli.output.output,
        color: use_color(cli.output.color),
        print_node_name: cli.output.print_node_name,
        time_format: cli.output.time_format,
        utc: false,
        streaming: request.follow,
    };
    let follow = request.follow;
    // The stream must open within the timeout; then a follow stream may stay
    // quiet for as long as the cluster is, while a request for buffered
    // flows must keep answering.
    let mut stream = answer(
        c.get_flows(request),
        unary_timeout,
        &target.authority,
        "GetFlows",
    )
    .await?;
    let mut printer = format::Printer::new(opts, io::stdout().lock(), io::stderr().lock());
    loop {
        let next = if follow {
            stream.message().await
        } else {
            match tokio::time::timeout(unary_timeout, stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    printer.finish()?;
                    return Err(Error::timeout(&target.authority, "GetFlows", unary_timeout));
                }
            }
        };
        match next {
            Ok(Some(r)) => printer.response(&r)?,
            Ok(None) => break,
            Err(s) => {
                // Print what we have before reporting the broken stream.
                printer.finish()?;
                return Err(Error::rpc(&target.authority, "GetFlows", &s));
            }
        }
    }
    printer.finish()?;
    Ok(())
}

fn json_line<T: serde::Serialize>(v: &T) -> Result<String, Error> {
    let mut s = serde_json::to_string(v).map_err(|e| Error::Output(io::Error::other(e)))?;
    s.push('\n');
    Ok(s)
}

fn write_all(s: &str) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}
