//! `lab`: bring the simulated cluster up, send traffic, run commands in its
//! nodes and pods, tear it down.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flowd_lab::{Lab, LabState, Options, Servers, Spec};

#[derive(Parser)]
#[command(about = "flowd's simulated multi-node cluster (network namespaces, real HTTP and DNS)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the topology, start DNS and the app servers, write manifests and state.
    Up {
        /// Lab spec (YAML); the embedded default (tests/lab/lab.yaml) if omitted.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Directory for manifests (DIR/manifests, with nodes.yaml), state and logs.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run the traffic generator in its source pod and print the report (JSON).
    Traffic {
        #[arg(long)]
        dir: PathBuf,
        /// Override the spec's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Send the mix this many times (the report sums them).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Pause between rounds, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long)]
        pretty: bool,
    },
    /// Print what every server counted (JSON), read over loopback inside the pods.
    Stats {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run a command in a node's or a pod's network namespace.
    #[command(group(clap::ArgGroup::new("where").required(true).args(["node", "pod", "world", "router"])))]
    Exec {
        #[arg(long)]
        dir: PathBuf,
        /// Node name, e.g. node-a.
        #[arg(long)]
        node: Option<String>,
        /// namespace/pod or namespace/deployment, e.g. ecommerce/frontend.
        #[arg(long)]
        pod: Option<String>,
        /// The outside-world namespace.
        #[arg(long)]
        world: bool,
        /// The router namespace: reaches every node and pod address without
        /// crossing a pod veth (run the relay and `observe` here).
        #[arg(long)]
        router: bool,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Delete a pod: its manifest file, processes, namespace and veth.
    Delete {
        #[arg(long)]
        dir: PathBuf,
        /// namespace/pod or namespace/deployment.
        #[arg(long)]
        pod: String,
    },
    /// Add a pod (a new one-replica deployment) to the running lab and start it.
    AddPod {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        namespace: String,
        /// Deployment name; the pod is named <name>-<hash>-<suffix>.
        #[arg(long)]
        name: String,
        #[arg(long)]
        node: String,
        /// frontend, order-service, payment-service, inventory, loadgen, idle
        /// (default: from the name, else idle).
        #[arg(long)]
        role: Option<flowd_lab::spec::Role>,
        /// Extra labels, key=value.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Print the lab's nodes, pods and addresses.
    Status {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Forward a TCP address of this machine (e.g. 127.0.0.1:12000) to an
    /// address in the router namespace (e.g. the relay's web UI), until stopped.
    Forward {
        #[arg(long)]
        dir: PathBuf,
        /// Where to listen here, host:port.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where to connect inside the router namespace, host:port.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
    /// Kill everything the lab started and delete its namespaces (idempotent).
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the embedded default spec.
    DefaultSpec,
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn out(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{s}");
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn lab_app() -> anyhow::Result<PathBuf> {
    // Pods run `lab-app` from next to this binary.
    let me = std::env::current_exe().context("locating the lab binary")?;
    let program = me.with_file_name("lab-app");
    if !program.exists() {
        bail!(
            "{} not found: build it with `cargo build -p flowd-lab --bins`",
            program.display()
        );
    }
    Ok(program)
}

fn load(dir: &Path) -> anyhow::Result<LabState> {
    LabState::load(dir).with_context(|| {
        format!(
            "no lab in {} (run `lab up --dir {}` first)",
            dir.display(),
            dir.display()
        )
    })
}

fn summary(s: &LabState) {
    println!("lab {} ({})", s.prefix, s.dir.display());
    println!(
        "  router   {:<15} netns {}",
        s.router_ip.to_string(),
        s.router_netns
    );
    println!(
        "  world    {:<15} netns {}  names {:?}",
        s.world.ip.to_string(),
        s.world.netns,
        s.spec.world.names
    );
    for n in &s.nodes {
        println!(
            "  node     {:<15} netns {}  pods {}  ({})",
            n.underlay_ip.to_string(),
            n.netns,
            n.pod_cidr,
            n.name
        );
    }
    for p in &s.pods {
        println!(
            "  pod      {:<15} {:<8} {:<15} {}/{}{}",
            p.ip.to_string(),
            p.node,
            p.host_veth,
            p.namespace,
            p.name,
            p.service_ip
                .map(|ip| format!("  (ClusterIP {ip})"))
                .unwrap_or_default()
        );
    }
    println!(
        "  dns      {}:53 ({}.{}.svc.{})",
        s.dns_server, s.spec.dns.service, s.spec.dns.namespace, s.spec.cluster_domain
    );
    println!(
        "  manifests {}",
        s.dir.join(flowd_lab::manifests::MANIFEST_DIR).display()
    );
    println!(
        "  nodes     {}",
        flowd_lab::manifests::nodes_file(&s.dir).display()
    );
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up { spec, dir } => {
            let spec = match spec {
                Some(p) => Spec::from_file(&p)?,
                None => Spec::default_spec(),
            };
            let program = lab_app()?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let lab = Lab::up_with(
                spec,
                Options {
                    dir: Some(dir),
                    servers: Servers::Processes {
                        program,
                        args: vec![],
                    },
                    progress: Box::new(|s| eprintln!("==> {s}")),
                },
            )?;
            let state = lab.detach();
            summary(&state);
            println!("stop it with: lab down --dir {}", state.dir.display());
        }
        Cmd::Traffic {
            dir,
            seed,
            rounds,
            interval_ms,
            pretty,
        } => {
            let mut state = load(&dir)?;
            if let Some(seed) = seed {
                state.spec.traffic.seed = seed;
            }
            let report = flowd_lab::lab::run_traffic_rounds(
                &state,
                rounds,
                std::time::Duration::from_millis(interval_ms),
            )?;
            out(&if pretty {
                serde_json::to_string_pretty(&report)?
            } else {
                serde_json::to_string(&report)?
            });
        }
        Cmd::Stats { dir } => {
            let state = load(&dir)?;
            let stats = flowd_lab::lab::server_stats(&state)?;
            out(&serde_json::to_string_pretty(&stats)?);
        }
        Cmd::Exec {
            dir,
            node,
            pod,
            world,
            router,
            cmd,
        } => {
            let state = load(&dir)?;
            let ns = if let Some(n) = node {
                state
                    .node(&n)
                    .map(|n| n.netns.clone())
                    .with_context(|| format!("no node {n:?} in the lab"))?
            } else if let Some(p) = pod {
                state.pod(&p).map(|p| p.netns.clone()).with_context(|| {
                    format!("no pod {p:?} in the lab (namespace/name or namespace/deployment)")
                })?
            } else if world {
                state.world.netns.clone()
            } else if router {
                state.router_netns.clone()
            } else {
                bail!("one of --node, --pod, --world, --router is required");
            };
            let (program, args) = cmd.split_first().context("no command given after --")?;
            let err = flowd_lab::netns::command(&ns, program, args).exec();
            bail!("running ip netns exec {ns} {program}: {err}");
        }
        Cmd::Delete { dir, pod } => {
            let mut state = load(&dir)?;
            let gone = flowd_lab::lab::delete_pod(&mut state, &pod)?;
            eprintln!("==> deleted pod {} ({})", gone.key(), gone.ip);
        }
        Cmd::AddPod {
            dir,
            namespace,
            name,
            node,
            role,
            labels,
        } => {
            let mut state = load(&dir)?;
            let program = lab_app()?;
            let pod = flowd_lab::lab::add_pod(
                &mut state,
                flowd_lab::spec::DeploymentSpec {
                    namespace,
                    name,
                    node,
                    role,
                    labels: labels.into_iter().collect(),
                },
            )?;
            flowd_lab::lab::start_pod_process(&mut state, &pod, &program)?;
            eprintln!(
                "==> added pod {} ({} on {}, veth {})",
                pod.key(),
                pod.ip,
                pod.node,
                pod.host_veth
            );
        }
        Cmd::Status { dir } => summary(&load(&dir)?),
        Cmd::Forward { dir, listen, to } => {
            let state = load(&dir)?;
            let l = std::net::TcpListener::bind(listen)
                .with_context(|| format!("binding --listen {listen}"))?;
            flowd_lab::netns::forward_tcp(l, &state.router_netns, to)?;
        }
        Cmd::Down { dir } => match LabState::load(&dir) {
            Ok(state) => {
                eprintln!(
                    "==> stopping {} processes, deleting {} namespaces",
                    state.processes.len(),
                    state.all_netns().len()
                );
                flowd_lab::lab::teardown_state(&state)?;
                eprintln!("==> lab {} is down", state.prefix);
            }
            Err(_) if !dir.join(flowd_lab::state::STATE_FILE).exists() => {
                eprintln!("==> no lab in {}: nothing to do", dir.display());
            }
            Err(e) => return Err(e.into()),
        },
        Cmd::DefaultSpec => out(flowd_lab::spec::DEFAULT_SPEC.trim_end()),
    }
    Ok(())
}
