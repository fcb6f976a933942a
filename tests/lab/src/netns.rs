//! Minimal network-namespace plumbing: named namespaces through iproute2
//! (`ip netns add` → `/run/netns/NAME`, which `ip netns exec` and flowd's
//! tooling understand), and threads that enter a namespace with `setns(2)`.
//!
//! Commands always name their namespace (`ip -n NS …`), so nothing here ever
//! touches the root namespace's links or routes.

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

fn netns_path(name: &str) -> String {
    format!("/run/netns/{name}")
}

fn run(cmd: &mut Command, what: &str) -> Result<String, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            what: what.to_string(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…`.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

/// Runs iproute2 commands (one per line, without the leading `ip`) in `netns`.
pub fn ip_batch(netns: &str, lines: &[String]) -> Result<(), Error> {
    let what = format!("ip -n {netns} -batch: {}", lines.join("; "));
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            what: what.clone(),
            reason: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let text = lines.join("\n") + "\n";
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Command {
                what: what.clone(),
                reason: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Command {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            what,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

pub fn exists(name: &str) -> bool {
    std::path::Path::new(&netns_path(name)).exists()
}

pub fn add(name: &str) -> Result<(), Error> {
    ip(&["netns", "add", name]).map(|_| ())
}

/// Names of all named namespaces (for leak checks).
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of the processes living in `name`.
pub fn pids(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends SIGTERM to `pids`, waits up to `grace` for them to go, then SIGKILLs the rest.
pub fn terminate(pids: &[i32], grace: Duration) {
    let own = std::process::id() as i32;
    let pids: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| p > 1 && p != own)
        .collect();
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20)); // polling for exit, with a deadline
    }
    for &p in &pids {
        if alive(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Start time of `pid` (field 22 of /proc/PID/stat), to recognise it later.
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    // rest starts at field 3 (state); field 22 is index 19 of it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills every process in `name`, then deletes it. Missing namespaces are fine.
pub fn destroy(name: &str) -> Result<(), Error> {
    if !exists(name) {
        return Ok(());
    }
    let p = pids(name);
    if !p.is_empty() {
        terminate(&p, Duration::from_secs(3));
    }
    match ip(&["netns", "del", name]) {
        Ok(_) => Ok(()),
        Err(_) if !exists(name) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `f` on a new thread that has entered network namespace `name`.
/// Sockets created there belong to that namespace wherever they are used later.
pub fn spawn_in<T, F>(
    name: &str,
    thread_name: String,
    f: F,
) -> Result<JoinHandle<Result<T, Error>>, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    let file = File::open(netns_path(name)).map_err(|e| Error::Io {
        what: format!("opening network namespace {name}"),
        source: e,
    })?;
    let ns = name.to_string();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Command {
                what: format!("setns into {ns}"),
                reason: e.to_string(),
            })?;
            drop(file);
            f()
        })
        .map_err(|e| Error::Io {
            what: "spawning a thread".into(),
            source: e,
        })
}

/// Runs `f` inside network namespace `name` and waits for it.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    spawn_in(name, format!("in-{name}"), f)?
        .join()
        .map_err(|_| Error::Command {
            what: format!("thread in {name}"),
            reason: "panicked".into(),
        })?
}

/// Writes net sysctls (`("net/ipv4/ip_forward", "1")`) inside `name`.
/// /proc/sys/net resolves against the calling thread's namespace.
pub fn sysctls(name: &str, values: Vec<(String, String)>) -> Result<(), Error> {
    run_in(name, move || {
        for (k, v) in &values {
            std::fs::write(format!("/proc/sys/{k}"), v).map_err(|e| Error::Io {
                what: format!("setting {k}={v}"),
                source: e,
            })?;
        }
        Ok(())
    })
}

/// Loads an nftables ruleset (`nft -f -`) in `name`.
pub fn nft(name: &str, ruleset: &str) -> Result<(), Error> {
    let what = format!("nft -f - in {name}");
    let mut child = command(name, "nft", &["-f".into(), "-".into()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            what: what.clone(),
            reason: format!("{e} (is nftables installed? scripts/setup.sh installs it)"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| Error::Command {
                what: what.clone(),
                reason: e.to_string(),
            })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Command {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            what,
            reason: format!("{}\n{ruleset}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// `ip netns exec NAME program args…` (the namespace's /etc/netns/NAME files are bind-mounted).
pub fn command(name: &str, program: &str, args: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", name, program]).args(args);
    c
}

/// Forwards TCP connections accepted on `listener` (in this process's
/// namespace, e.g. the host's loopback) to `target` inside namespace `name`,
/// until the process ends. Each connection's outgoing socket is made on a
/// thread inside `name` (a socket belongs to the namespace it was made in);
/// two threads copy the bytes.
pub fn forward_tcp(
    listener: std::net::TcpListener,
    name: &str,
    target: std::net::SocketAddr,
) -> Result<(), Error> {
    for conn in listener.incoming() {
        let client = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a forwarded connection");
                continue;
            }
        };
        let ns = name.to_string();
        std::thread::spawn(move || {
            let upstream = run_in(&ns, move || {
                std::net::TcpStream::connect(target).map_err(|e| Error::Io {
                    what: format!("connecting to {target}"),
                    source: e,
                })
            });
            let upstream = match upstream {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "forwarding a connection");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let (mut c1, mut u1) = (client, upstream);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut u1);
                let _ = u1.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
    Ok(())
}
