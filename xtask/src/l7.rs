//! L7 capture cost: per-packet cost of flowd's TC programs with L7
//! capture on (`--l7-max-bytes 512`, the default) vs. off (`--l7-max-bytes 0`)
//! on an HTTP/1.1 keep-alive workload, in the same run.
//!
//! Runs alternate (on/off, order flipped every pair) on one namespace pair
//! with the same request count; each run reports `run_time_ns / run_cnt` of
//! both TC programs (kernel.bpf_stats) and the L7 events the kernel sent.
//! The report gives per-pair ratios and their median.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use flowd_tests::{Pair, flowd::Flowd};

use crate::measure::program_stats;
use crate::stats::median;

const REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: shop.example\r\n\
User-Agent: flowd-bench/1\r\nAccept: application/json\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Content-Length: 17\r\n\r\n{\"items\":[1,2,3]}";
/// Parallel keep-alive connections (one client thread each).
const CONNECTIONS: usize = 4;

/// One keep-alive server thread per connection: reads a request head,
/// answers the fixed response, until the client closes.
fn serve(listener: TcpListener) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..CONNECTIONS {
            let (mut c, _) = listener.accept()?;
            c.set_nodelay(true)?;
            workers.push(std::thread::spawn(move || -> Result<()> {
                let mut buf = [0u8; 512];
                loop {
                    let mut got = 0;
                    while got < REQUEST.len() {
                        let n = c.read(&mut buf[got..REQUEST.len()])?;
                        if n == 0 {
                            return Ok(());
                        }
                        got += n;
                    }
                    c.write_all(RESPONSE)?;
                }
            }));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        }
        Ok(())
    })
}

/// `per_conn` request/response exchanges on each of CONNECTIONS keep-alive
/// connections from a to b. Returns requests per second.
fn workload(pair: &Pair, per_conn: usize) -> Result<f64> {
    let addr: SocketAddr = format!("{}:80", Pair::B4).parse()?;
    let listener = pair.b.run(move || TcpListener::bind(addr))??;
    let server = serve(listener);
    let t = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut c = pair.a.run(move || TcpStream::connect(addr))??;
        clients.push(std::thread::spawn(move || -> Result<()> {
            c.set_nodelay(true)?;
            let mut buf = vec![0u8; RESPONSE.len()];
            for _ in 0..per_conn {
                c.write_all(REQUEST)?;
                c.read_exact(&mut buf)?;
            }
            Ok(())
        }));
    }
    for c in clients {
        c.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let secs = t.elapsed().as_secs_f64();
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok((CONNECTIONS * per_conn) as f64 / secs)
}

struct Run {
    /// program → ns per run
    ns: BTreeMap<String, f64>,
    runs: u64,
    l7_events: u64,
    rps: f64,
}

/// `events_per_packet`: L7 off but `--aggregation-interval none` (a flow
/// event submitted for every packet): what one ring-buffer submit costs,
/// to tell it apart from the L7 check and copy.
fn run(
    bin: &Path,
    pair: &Pair,
    l7_on: bool,
    events_per_packet: bool,
    per_conn: usize,
) -> Result<Run> {
    let l7 = if l7_on { "512" } else { "0" };
    let mut args = vec!["-i", "veth-a", "--no-watch-links", "--l7-max-bytes", l7];
    if events_per_packet {
        args.extend(["--aggregation-interval", "none"]);
    }
    let mut f = Flowd::start(bin, &pair.a, &args)?;
    let rps = workload(pair, per_conn)?;
    let pid = f.child.pid().context("flowd exited early")?;
    let progs = program_stats(pid)?;
    let dump = f.stop()?;
    let l7_events = dump["counters"]["l7_events"]
        .as_u64()
        .context("no counters.l7_events in flowd's dump")?;
    let mut ns = BTreeMap::new();
    let mut runs = 0;
    for (name, (t, c)) in progs {
        if name.starts_with("flowd_tc_") && c > 0 {
            ns.insert(name, t as f64 / c as f64);
            runs += c;
        }
    }
    ensure!(ns.len() == 2, "expected both TC programs to run: {ns:?}");
    Ok(Run {
        ns,
        runs,
        l7_events,
        rps,
    })
}

/// Runs the benchmark and returns its report (markdown).
pub fn bench_l7(bin: &Path, pairs: usize, requests: usize) -> Result<String> {
    ensure!(pairs >= 1, "pairs must be at least 1");
    let per_conn = requests.div_ceil(CONNECTIONS).max(1);
    let pair = Pair::create("bl7")?;
    pair.up()?;
    // Warm-up (ARP, neighbour, page cache of the binary): not measured.
    workload(&pair, 100)?;
    let mut on_runs = Vec::new();
    let mut off_runs = Vec::new();
    let mut ev_runs = Vec::new();
    for i in 0..pairs {
        eprintln!("==> L7 capture on/off pair {}/{pairs}", i + 1);
        let (on, off) = if i % 2 == 0 {
            let on = run(bin, &pair, true, false, per_conn)?;
            (on, run(bin, &pair, false, false, per_conn)?)
        } else {
            let off = run(bin, &pair, false, false, per_conn)?;
            (run(bin, &pair, true, false, per_conn)?, off)
        };
        ev_runs.push(run(bin, &pair, false, true, per_conn)?);
        if on.l7_events == 0 || off.l7_events != 0 {
            bail!(
                "L7 capture not as configured: {} events with it on, {} off",
                on.l7_events,
                off.l7_events
            );
        }
        eprintln!(
            "    on: {:?} ({} L7 events), off: {:?}",
            on.ns, on.l7_events, off.ns
        );
        on_runs.push(on);
        off_runs.push(off);
    }
    render(&on_runs, &off_runs, &ev_runs, pairs, CONNECTIONS * per_conn)
}

fn render(on: &[Run], off: &[Run], ev: &[Run], pairs: usize, requests: usize) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "### L7 capture cost — `cargo xtask bench-l7` (also run by `cargo xtask bench`)\n\n\
         HTTP/1.1 keep-alive: {requests} requests over {CONNECTIONS} connections (TCP_NODELAY, one\n\
         request and one response segment per exchange), flowd TC on the client's veth, L7 capture\n\
         on (`--l7-max-bytes 512`) vs. off (`--l7-max-bytes 0`), same binary, {pairs} alternating\n\
         pairs. ns/run = kernel.bpf_stats `run_time_ns / run_cnt`; every request or response\n\
         segment is one run, ACK-only segments are runs that skip the L7 check (no payload).\n\
         Last column: L7 off with `--aggregation-interval none` (one flow event submitted per\n\
         packet), run after each pair: the cost of a ring-buffer submit alone.\n"
    )?;
    writeln!(
        s,
        "| program | median ns/run L7 on | median ns/run L7 off | ratio on/off (median) | per-pair ratios | ns/run L7 off, event per packet |"
    )?;
    writeln!(s, "|---|---|---|---|---|---|")?;
    for name in on[0].ns.keys() {
        let v = |runs: &[Run]| -> Vec<f64> {
            runs.iter()
                .map(|r| r.ns.get(name).copied().unwrap_or(f64::NAN))
                .collect()
        };
        let (a, b, e) = (v(on), v(off), v(ev));
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
        writeln!(
            s,
            "| {name} | {:.0} | {:.0} | {:.3} | {} | {:.0} |",
            median(a.clone()),
            median(b.clone()),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            median(e),
        )?;
    }
    let m = |f: &dyn Fn(&Run) -> f64, runs: &[Run]| median(runs.iter().map(f).collect());
    writeln!(
        s,
        "\nPer run (medians): program runs {:.0} on / {:.0} off, L7 events {:.0} (on), \
         requests/s {:.0} on / {:.0} off / {:.0} event per packet.\n",
        m(&|r| r.runs as f64, on),
        m(&|r| r.runs as f64, off),
        m(&|r| r.l7_events as f64, on),
        m(&|r| r.rps, on),
        m(&|r| r.rps, off),
        m(&|r| r.rps, ev),
    )?;
    Ok(s)
}
