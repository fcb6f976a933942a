//! `cargo xtask bench-l7-load`: what HTTP visibility costs a node. nginx
//! (one worker, keep-alive, a fixed JSON answer) serves a `wrk` load from
//! the other pod of one node ([`crate::node`]); runs alternate between the
//! release flowd daemon observing both pod veths with its default L7
//! settings (statistics on: `hubble-metrics=flow http`) and nothing
//! attached, order flipped every pair.
//!
//! Per pair: requests/s with flowd ÷ without; flowd's process CPU
//! (/proc/PID/stat utime + stime, from the load's start until every
//! response is in its metrics) per 10k requests; its TC programs' run time
//! (kernel.bpf_stats) per request; and the count check: nginx's own count
//! of the requests it served (stub_status on the pod's loopback, not seen by
//! flowd) against the HTTP records flowd counted at each pod's veth
//! (`hubble_http_{requests,responses}_total`, reporter client and server).
use std::{
    fmt::Write as _,
    io::{Read, Write as _},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use flowd_tests::{ChildGuard, flowd::TempDir};

use crate::measure::{cpu_times, program_stats};
use crate::node::{Node, sum};
use crate::stats::{ci, fmt_all};

/// wrk's connections (one thread): keep-alive, one request in flight each.
pub(crate) const CONNECTIONS: u32 = 8;
/// nginx's status page, on the server pod's loopback.
const STATUS: &str = "127.0.0.1:8080";
/// The statistics flowd keeps in this benchmark.
pub(crate) const METRICS_SETS: &str = "hubble-metrics=flow http";

/// nginx in the server pod, stopped on drop (SIGTERM: the master stops its
/// worker; a SIGKILL would leave the worker running).
pub(crate) struct Nginx {
    child: ChildGuard,
    _dir: TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Err(e) = self
            .child
            .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        {
            eprintln!("stopping nginx: {e:#}");
        }
    }
}

impl Nginx {
    /// `rate`: requests/s nginx serves at most (excess requests wait, none
    /// is refused: `limit_req` with an unbounded burst), or unlimited.
    pub(crate) fn start(node: &Node, rate: Option<u32>) -> Result<Self> {
        let dir = TempDir::new("nginx")?;
        let d = dir.0.display();
        // limit_req acts after the rewrite phase, where `return` answers:
        // the paced load answers from a file instead (same body).
        let body = r#"{"items":[1,2,3]}"#;
        std::fs::write(dir.0.join("items.json"), body)?;
        let (zone, content) = match rate {
            Some(r) => (
                format!("  limit_req_zone $host zone=paced:1m rate={r}r/s;\n"),
                format!(
                    "limit_req zone=paced burst=1000000; root {d}; try_files /items.json =404;"
                ),
            ),
            None => (String::new(), format!("return 200 '{body}';")),
        };
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  keepalive_requests 1000000000;\n  keepalive_timeout 120s;\n{zone}\
               server {{ listen {ip}:80; location / {{ default_type application/json; {content} }} }}\n\
               server {{ listen {STATUS}; location / {{ stub_status; }} }}\n}}\n",
            ip = node.b_ip,
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let mut cmd = node.b.command("nginx");
        cmd.arg("-p")
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .arg("-c")
            .arg(&path);
        let mut child = ChildGuard::spawn("nginx (scripts/setup.sh installs it)", &mut cmd)?;
        flowd_tests::wait_until("nginx serving", Duration::from_secs(10), || {
            if let Some(st) = child.try_wait()? {
                bail!("nginx exited: {st}");
            }
            Ok(served(node).ok())
        })?;
        Ok(Self { child, _dir: dir })
    }
}

/// nginx's "requests" total: every request it has handled, this status
/// request included.
pub(crate) fn served(node: &Node) -> Result<u64> {
    node.b.run(|| -> Result<u64> {
        let mut s = TcpStream::connect(STATUS)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: status\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        // "… accepts handled requests\n 3 3 7\n"
        let line = text
            .lines()
            .skip_while(|l| !l.contains("accepts handled requests"))
            .nth(1)
            .context("nginx stub_status: no counts")?;
        line.split_whitespace()
            .nth(2)
            .context("nginx stub_status: no requests count")?
            .parse()
            .context("nginx stub_status: requests count")
    })?
}

/// What wrk reported.
pub(crate) struct Wrk {
    pub(crate) completed: u64,
    pub(crate) rps: f64,
    /// Non-2xx answers and socket errors (both must be 0).
    pub(crate) errors: u64,
}

pub(crate) fn wrk(node: &Node, seconds: u32) -> Result<Wrk> {
    let out = node
        .a
        .command("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            &format!("http://{}/api/v1/items?page=2", node.b_ip),
        ])
        .output()
        .context("running wrk (scripts/setup.sh installs it)")?;
    ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let completed = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("wrk: no \"requests in\" line")?
        .0
        .trim()
        .parse()?;
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("wrk: no Requests/sec")?
        .trim()
        .parse()?;
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>()?;
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                errors += part
                    .split_whitespace()
                    .last()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(Wrk {
        completed,
        rps,
        errors,
    })
}

/// One run with flowd observing both pod veths.
struct FlowdRun {
    wrk: Wrk,
    /// Requests nginx served during the load.
    served: u64,
    cpu_ns: u64,
    /// Run time of flowd's TC programs during the load (all four hooks).
    tc_ns: u64,
    /// Run time of its drop program meanwhile (it sees the whole machine's drops).
    drop_ns: u64,
    /// flowd's HTTP records: (requests, responses) at the client's veth, at the server's.
    client: (u64, u64),
    server: (u64, u64),
    /// L7 flows it processed (hubble_flows_processed_total type L7).
    l7_flows: u64,
    /// Events the kernel could not put in the full ring buffer (counted, never silent).
    lost: u64,
    /// Datapath events flowd read (flowd_datapath_events_total).
    events: u64,
}

fn with_flowd(bin: &Path, node: &Node, seconds: u32) -> Result<FlowdRun> {
    let daemon = node.start_flowd(bin, &[METRICS_SETS])?;
    let pid = daemon.pid()?;
    let before = served(node)?;
    let (_, cpu0) = cpu_times(pid)?;
    let progs0 = program_stats(pid)?;
    let wrk = wrk(node, seconds)?;
    let after = served(node)?;
    // The two status requests: this one and the one before the load.
    let served = after - before - 1;
    // Every response nginx sent is a record at each veth: wait for the last
    // (bounded; a shortfall is reported, not waited out).
    let responses = |m: &str, reporter: &str| {
        sum(
            m,
            "hubble_http_responses_total",
            &[&format!("reporter=\"{reporter}\"")],
        ) as u64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut m = node.metrics()?;
    while (responses(&m, "client") < served || responses(&m, "server") < served)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        m = node.metrics()?;
    }
    let (_, cpu1) = cpu_times(pid)?;
    let progs1 = program_stats(pid)?;
    // The kernel counters reach the metrics at the daemon's 1 s tick.
    std::thread::sleep(Duration::from_millis(1100));
    let m2 = node.metrics()?;
    daemon.stop()?;
    let delta = |pred: &dyn Fn(&str) -> bool| -> u64 {
        progs1
            .iter()
            .filter(|(n, _)| pred(n))
            .map(|(n, (t, _))| t - progs0.get(n).map_or(0, |p| p.0))
            .sum()
    };
    let requests = |reporter: &str| {
        sum(
            &m,
            "hubble_http_requests_total",
            &[&format!("reporter=\"{reporter}\"")],
        ) as u64
    };
    Ok(FlowdRun {
        wrk,
        served,
        cpu_ns: cpu1 - cpu0,
        tc_ns: delta(&|n| n.starts_with("flowd_tc_")),
        drop_ns: delta(&|n| !n.starts_with("flowd_tc_")),
        client: (requests("client"), responses(&m, "client")),
        server: (requests("server"), responses(&m, "server")),
        l7_flows: sum(&m, "hubble_flows_processed_total", &["type=\"L7\""]) as u64,
        lost: sum(&m2, "flowd_datapath_events_lost_total", &[]) as u64,
        events: sum(&m2, "flowd_datapath_events_total", &[]) as u64,
    })
}

struct Pair {
    with: FlowdRun,
    without: Wrk,
    load: f64,
}

pub(crate) fn bench(bin: &Path, pairs: usize, seconds: u32, rate: Option<u32>) -> Result<String> {
    ensure!(pairs >= 1, "--pairs must be at least 1");
    let node = Node::create("l7ld")?;
    let _nginx = Nginx::start(&node, rate)?;
    // Warm-up (page cache, nginx worker, connection set-up): not measured.
    wrk(&node, 1)?;
    let mut out = Vec::new();
    for i in 0..pairs {
        eprintln!("==> bench-l7-load pair {}/{pairs}", i + 1);
        let load = load_average();
        let (with, without) = if i % 2 == 0 {
            let w = with_flowd(bin, &node, seconds)?;
            (w, wrk(&node, seconds)?)
        } else {
            let wo = wrk(&node, seconds)?;
            (with_flowd(bin, &node, seconds)?, wo)
        };
        ensure!(
            with.wrk.errors == 0 && without.errors == 0,
            "wrk saw errors: {} with flowd, {} without",
            with.wrk.errors,
            without.errors
        );
        eprintln!(
            "    {:.0} req/s with flowd, {:.0} without; nginx served {}, wrk completed {}; flowd client req/resp {:?}, server {:?}; CPU {:.1} ms; lost {}",
            with.wrk.rps,
            without.rps,
            with.served,
            with.wrk.completed,
            with.client,
            with.server,
            with.cpu_ns as f64 / 1e6,
            with.lost
        );
        out.push(Pair {
            with,
            without,
            load,
        });
    }
    render(&out, seconds, rate)
}

/// The 1-minute load average (/proc/loadavg).
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn render(pairs: &[Pair], seconds: u32, rate: Option<u32>) -> Result<String> {
    let mut s = String::new();
    let n = pairs.len();
    let col = |f: &dyn Fn(&Pair) -> f64| -> Vec<f64> { pairs.iter().map(f).collect() };
    let (title, paced) = match rate {
        Some(r) => (
            format!(" at {r} requests/s — `cargo xtask bench-l7-load --rate {r}`"),
            format!(
                " nginx serves at most {r} requests/s (`limit_req`, excess requests wait, none refused)."
            ),
        ),
        None => (" — `cargo xtask bench-l7-load`".to_owned(), String::new()),
    };
    writeln!(
        s,
        "### HTTP load on a node{title}\n\n\
         nginx (1 worker, keep-alive, a 17-byte JSON answer) in one pod, `wrk -t1 -c{CONNECTIONS} -d{seconds}s`\n\
         in another pod of the same node (routed: node namespace, a veth per pod, host routes), the\n\
         release flowd daemon in the node namespace observing both pod veths with the default L7\n\
         settings and `{METRICS_SETS}`, vs. nothing attached; {n} alternating pairs in one run,\n\
         BPF run-time statistics on.{paced} Medians over the pairs [90 % bootstrap interval], then every pair.\n"
    )?;
    writeln!(s, "| figure | median [90 % CI] | per pair |\n|---|---|---|")?;
    let ratio = col(&|p| p.with.wrk.rps / p.without.rps);
    let rps_with = col(&|p| p.with.wrk.rps);
    let rps_without = col(&|p| p.without.rps);
    let cpu10k = col(&|p| p.with.cpu_ns as f64 / p.with.served as f64 * 1e4 / 1e6);
    // Each request flowd recorded is four L7 flows (request and response at two veths).
    let cpu10k_recorded =
        col(&|p| p.with.cpu_ns as f64 / (p.with.l7_flows as f64 / 4.0).max(1.0) * 1e4 / 1e6);
    let tc_req = col(&|p| p.with.tc_ns as f64 / p.with.served as f64);
    let drop_req = col(&|p| p.with.drop_ns as f64 / p.with.served as f64);
    let us_event = col(&|p| p.with.cpu_ns as f64 / p.with.events.max(1) as f64 / 1e3);
    let loads = col(&|p| p.load);
    for (name, v, d) in [
        ("requests/s with flowd ÷ without", &ratio, 3),
        ("requests/s with flowd", &rps_with, 0),
        ("requests/s without", &rps_without, 0),
        (
            "flowd process CPU per 10k requests (ms; = mCPU at 10k req/s)",
            &cpu10k,
            1,
        ),
        (
            "flowd process CPU per 10k requests it recorded (ms; differs from the above by the records lost)",
            &cpu10k_recorded,
            1,
        ),
        (
            "eBPF ns per request (flowd's TC programs, both veths, both directions)",
            &tc_req,
            0,
        ),
        (
            "eBPF ns per request of the drop program (machine-wide kfree_skb)",
            &drop_req,
            0,
        ),
        (
            "flowd CPU µs per datapath event it read (L7 and L3/L4)",
            &us_event,
            2,
        ),
        ("1-minute load average at the pair's start", &loads, 2),
    ] {
        writeln!(s, "| {name} | {} | {} |", ci(v, d), fmt_all(v, d))?;
    }
    writeln!(
        s,
        "\nHTTP records flowd counted vs. the servers' and the load generator's counts (with flowd):\n\n\
         | pair | nginx served | wrk completed | flowd requests client / server | flowd responses client / server | L7 flows vs. 4 × served | events lost in the kernel ring | unaccounted |\n\
         |---|---|---|---|---|---|---|---|"
    )?;
    for (i, p) in pairs.iter().enumerate() {
        let w = &p.with;
        writeln!(
            s,
            "| {} | {} | {} | {} / {} | {} / {} | {} ({}) | {} | {} |",
            i + 1,
            w.served,
            w.wrk.completed,
            w.client.0,
            w.server.0,
            w.client.1,
            w.server.1,
            w.l7_flows,
            if w.l7_flows == 4 * w.served {
                "exact".to_owned()
            } else {
                format!("{:+}", w.l7_flows as i64 - 4 * w.served as i64)
            },
            w.lost,
            4 * w.served as i64 - w.l7_flows as i64 - w.lost as i64,
        )?;
    }
    writeln!(
        s,
        "\nnginx's count (stub_status on the pod's loopback) is the exact oracle: every request it\n\
         served is one request and one response record at each pod's veth. wrk counts only the\n\
         responses it read before its deadline, so up to {CONNECTIONS} (one per connection) that nginx\n\
         answered as wrk stopped are served but not completed. Records the kernel could not queue\n\
         (ring buffer full) are counted in `flowd_datapath_events_lost_total` and reach Observer\n\
         clients as LostEvents; that count also holds lost L3/L4 events, so \"unaccounted\" (4 × served −\n\
         L7 flows − lost) is 0 when flowd keeps up and ≤ 0 when every missing record is a counted loss.\n"
    )?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() -> Result<()> {
        let text = "Running 5s test @ http://10.0.0.2/\n  1 threads and 8 connections\n\
                    \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                    \x20   Latency   320.12us  100.00us   2.00ms   90.00%\n\
                    \x20 123456 requests in 5.00s, 20.00MB read\n\
                    \x20 Socket errors: connect 0, read 1, write 0, timeout 2\n\
                    \x20 Non-2xx or 3xx responses: 4\n\
                    Requests/sec:  24691.20\nTransfer/sec:      4.00MB\n";
        let w = parse_wrk(text)?;
        assert_eq!(w.completed, 123_456);
        assert_eq!(w.rps, 24_691.2);
        assert_eq!(w.errors, 7);
        Ok(())
    }
}
