//! `observe`: the command-line client of flowd's Observer API (and the
//! relay's), modelled on `hubble observe`.
//!
//! * [`cli`]: flags and subcommands;
//! * [`filters`]: flags → `GetFlowsRequest` (hubble's filter semantics);
//! * [`client`]: connection, TLS, timeouts;
//! * [`format`]: compact, dict, JSON and table output.

pub mod cli;
pub mod client;
pub mod error;
pub mod filters;
pub mod format;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use flowd_proto::observer::{GetNamespacesRequest, GetNodesRequest, ServerStatusRequest};

use cli::{Cli, ColorChoice, Command, ListCommand, OutputFormat};
use error::Error;

/// Parses `args` (including the program name) and runs the command.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match Cli::command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            // Help and version print to stdout with exit 0; errors say what
            // is valid and exit 2.
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
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
            let mut req = tonic::Request::new(ServerStatusRequest {});
            req.set_timeout(unary_timeout);
            let s = c
                .server_status(req)
                .await
                .map_err(|s| Error::rpc(&target.authority, "ServerStatus", &s))?
                .into_inner();
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
                    let mut req = tonic::Request::new(GetNodesRequest {});
                    req.set_timeout(unary_timeout);
                    let r = c
                        .get_nodes(req)
                        .await
                        .map_err(|s| Error::rpc(&target.authority, "GetNodes", &s))?
                        .into_inner();
                    if json {
                        json_line(&r)?
                    } else {
                        format::nodes_table(&r)
                    }
                }
                ListCommand::Namespaces => {
                    let mut req = tonic::Request::new(GetNamespacesRequest {});
                    req.set_timeout(unary_timeout);
                    let r = c
                        .get_namespaces(req)
                        .await
                        .map_err(|s| Error::rpc(&target.authority, "GetNamespaces", &s))?
                        .into_inner();
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
    let request = filters::build_request(matches, SystemTime::now())?;
    let (mut c, target) = client::connect(&cli.conn).await?;
    let opts = format::Options {
        format: cli.output.output,
        color: use_color(cli.output.color),
        print_node_name: cli.output.print_node_name,
        time_format: cli.output.time_format,
        utc: false,
        streaming: request.follow,
    };
    let mut stream = c
        .get_flows(request)
        .await
        .map_err(|s| Error::rpc(&target.authority, "GetFlows", &s))?
        .into_inner();
    let mut printer = format::Printer::new(opts, io::stdout().lock(), io::stderr().lock());
    loop {
        match stream.message().await {
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
