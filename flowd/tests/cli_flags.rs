//! flowd's command line, through the binary. In daemon mode
//! (`--config`/`--set`) every typed flag either changes what the daemon
//! does (winning over the ConfigMap, losing to `--set`) or is refused with
//! one line naming it; the same flags change the datapath alone (without
//! them); errors are one line whatever RUST_BACKTRACE says; a configured
//! interface that does not exist yet is logged.
//!
//! The runs that attach programs need root (eBPF, namespaces) and the
//! `observe` binary (`cargo build --workspace --bins --exclude flowd-ebpf`).
mod daemon_support;

use std::{
    io::Read,
    net::{IpAddr, TcpListener},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use daemon_support::{BIN, Daemon, configmap, l7, read};
use flowd_tests::{
    Netns, Pair, VethPair,
    flowd::{Flowd, TempDir},
    net::ping,
    wait_until,
};
use nix::sys::signal::Signal;
use serde_json::Value;

// ------------------------------------------------------------- typed flags --

/// `--l7-max-bytes 0` is the privacy switch: with it, a real HTTP exchange
/// gives no L7 record and its URL appears in no flow, although the
/// ConfigMap says 512. Without the flag the same exchange gives its
/// REQUEST and RESPONSE with the URL; `--set` wins over the flag.
#[test]
fn l7_max_bytes_zero_captures_no_url_with_config() -> Result<()> {
    let cm = [("flowd-l7-max-bytes", "512")];
    let path = "/private/orders/42";

    let d = Daemon::start("fl7", &cm, &["--l7-max-bytes", "0"])?;
    let flows = d.http_exchange(path)?;
    ensure!(l7(&flows).is_empty(), "L7 flows: {:#?}", l7(&flows));
    let text = serde_json::to_string(&flows)?;
    ensure!(!text.contains(path), "the URL was captured: {text}");
    drop(d);

    let d = Daemon::start("fl7c", &cm, &[])?;
    let flows = d.http_exchange(path)?;
    let urls: Vec<(&str, &str)> = l7(&flows)
        .iter()
        .map(|f| {
            (
                f["l7"]["type"].as_str().unwrap_or_default(),
                f["l7"]["http"]["url"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let url = format!("http://{}{path}", Pair::B4);
    ensure!(
        urls == [("REQUEST", url.as_str()), ("RESPONSE", url.as_str())],
        "without the flag: {urls:?}"
    );
    drop(d);

    let d = Daemon::start(
        "fl7s",
        &[],
        &["--l7-max-bytes", "0", "--set", "flowd-l7-max-bytes=512"],
    )?;
    let flows = d.http_exchange(path)?;
    ensure!(l7(&flows).len() == 2, "--set should win: {flows:#?}");
    Ok(())
}

/// (max_entries of FLOWS, of EVENTS) of the maps process `pid` holds.
fn map_sizes(pid: u32) -> Result<(u32, u32)> {
    let (mut flows, mut events) = (None, None);
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let info = aya::maps::MapInfo::from_id(id)?;
        match info.name_as_str() {
            Some("FLOWS") => flows = Some(info.max_entries()),
            Some("EVENTS") => events = Some(info.max_entries()),
            _ => {}
        }
    }
    Ok((
        flows.context("no FLOWS map in flowd")?,
        events.context("no EVENTS map in flowd")?,
    ))
}

/// `--flow-map-entries` and `--ring-buffer-bytes` size the kernel's flow
/// table and ring buffer (read back from the kernel), over the ConfigMap's
/// values; `--set` wins over them.
#[test]
fn flow_map_entries_and_ring_buffer_bytes_size_the_kernel_maps() -> Result<()> {
    let cm = [
        ("flowd-flow-map-entries", "65536"),
        ("flowd-ring-buffer-bytes", "8388608"),
    ];
    let sizes = |d: &Daemon| map_sizes(d.flowd.pid().context("flowd pid")?);

    let d = Daemon::start("fmap", &cm, &[])?;
    ensure!(sizes(&d)? == (65536, 8_388_608), "{:?}", sizes(&d)?);
    drop(d);
    let flags = [
        "--flow-map-entries",
        "4096",
        "--ring-buffer-bytes",
        "262144",
    ];
    let d = Daemon::start("fmapf", &cm, &flags)?;
    ensure!(sizes(&d)? == (4096, 262_144), "{:?}", sizes(&d)?);
    drop(d);
    let mut args = flags.to_vec();
    args.extend(["--set", "flowd-flow-map-entries=2048"]);
    let d = Daemon::start("fmaps", &cm, &args)?;
    ensure!(sizes(&d)? == (2048, 262_144), "{:?}", sizes(&d)?);
    Ok(())
}

/// `-i` replaces the ConfigMap's flowd-interfaces (Daemon::start waits for
/// veth-a, which only the flag names).
#[test]
fn interface_flag_wins_over_the_configmap() -> Result<()> {
    let d = Daemon::start("fif", &[("flowd-interfaces", "nosuch0")], &["-i", "veth-a"])?;
    ensure!(!d.log_text().contains("nosuch0"), "{}", d.log_text());
    Ok(())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// Flow events flowd printed (`--print --print-format json`) for the ICMP
/// echo requests a → b.
fn echo_request_events(lines: &[String]) -> usize {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            matches!(s(e, "event"), "new_flow" | "update" | "tcp_flags")
                && s(e, "direction") == "egress"
                && s(e, "protocol") == "ICMPv4"
                && s(e, "src_addr") == Pair::A4
                && e["src_port"] == 8
        })
        .count()
}

/// Pings b from a `n` times, stops flowd (SIGTERM: the ring is drained) and
/// returns what it printed.
fn ping_and_stop(d: &mut Daemon, n: u16) -> Result<Vec<String>> {
    let dst: IpAddr = Pair::B4.parse()?;
    let replies = d.pair.a.run(move || ping(dst, n, 8))??;
    ensure!(replies == n, "{replies} of {n} echo replies");
    let st = d.flowd.stop(Signal::SIGTERM, Duration::from_secs(20))?;
    ensure!(st.success(), "flowd exited with {st}: {}", d.log_text());
    d.flowd.stdout.wait_end(Duration::from_secs(5))
}

/// `--aggregation-interval` over the ConfigMap's monitor-aggregation-interval:
/// `none` reports every packet (4 pings, 4 events) where the ConfigMap's 1h
/// reports one; `1h` reports one where the ConfigMap's 0 reports every packet.
#[test]
fn aggregation_interval_wins_over_the_configmap() -> Result<()> {
    let print = ["--print", "--print-format", "json"];
    for (cm_interval, flag, want) in [
        ("1h", None, 1),
        ("1h", Some("none"), 4),
        ("0", None, 4),
        ("0", Some("1h"), 1),
    ] {
        let mut args = print.to_vec();
        if let Some(f) = flag {
            args.extend(["--aggregation-interval", f]);
        }
        let mut d = Daemon::start(
            "fagg",
            &[("monitor-aggregation-interval", cm_interval)],
            &args,
        )?;
        let out = ping_and_stop(&mut d, 4)?;
        let n = echo_request_events(&out);
        ensure!(
            n == want,
            "ConfigMap interval {cm_interval}, flag {flag:?}: {n} events, want {want}"
        );
    }
    Ok(())
}

/// `--print --print-format json` and `--dump-flows-on-exit` with --config:
/// the ready line names veth-a, each flow event is a line, and at exit the
/// kernel flow map holds the 3 echo requests and 3 replies; `--print`
/// alone prints text lines.
#[test]
fn print_and_dump_flows_on_exit_with_config() -> Result<()> {
    let dir = TempDir::new("fdump")?;
    let dump = dir.0.join("dump.json");
    let dump_arg = dump.display().to_string();
    let mut d = Daemon::start(
        "fprint",
        &[],
        &[
            "--print",
            "--print-format",
            "json",
            "--dump-flows-on-exit",
            &dump_arg,
        ],
    )?;
    let out = ping_and_stop(&mut d, 3)?;
    let ready: Value = serde_json::from_str(out.first().context("no output")?)?;
    ensure!(
        ready["event"] == "ready" && ready["attached"][0]["ifname"] == "veth-a",
        "first line: {ready}"
    );
    ensure!(echo_request_events(&out) == 1, "{out:#?}");
    let doc: Value = serde_json::from_str(&read(&dump))?;
    let packets = |dir: &str, src: &str, ty: u64| {
        doc["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| {
                s(f, "direction") == dir
                    && s(f, "protocol") == "ICMPv4"
                    && s(f, "src_addr") == src
                    && f["src_port"] == ty
            })
            .map(|f| f["packets"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    ensure!(
        packets("egress", Pair::A4, 8) == 3 && packets("ingress", Pair::B4, 0) == 3,
        "dump: {doc:#}"
    );
    ensure!(
        doc["counters"]["events_submitted"].as_u64() > Some(0),
        "{doc:#}"
    );
    drop(d);

    let mut d = Daemon::start("fprintt", &[], &["--print"])?;
    let out = ping_and_stop(&mut d, 1)?;
    let want = format!("{} type=8 -> {} code=0", Pair::A4, Pair::B4);
    ensure!(
        out.iter()
            .any(|l| l.contains("new_flow") && l.contains("veth-a") && l.contains(&want)),
        "text lines: {out:#?}"
    );
    Ok(())
}

/// `--no-watch-links` (flowd-watch-links=false): an interface matching
/// flowd-interfaces that appears after start is not attached, and the
/// start says so; without the flag the same interface is attached when it
/// appears (the control run waits for that).
#[test]
fn no_watch_links_with_config() -> Result<()> {
    let cm = [("flowd-interfaces", "veth-a late*")];
    for watch in [true, false] {
        let args: &[&str] = if watch { &[] } else { &["--no-watch-links"] };
        let mut d = Daemon::start("fwatch", &cm, args)?;
        let log = d.log_text();
        let off = "none will be attached later: the link watch is off";
        ensure!(log.contains(off) != watch, "watch {watch}: {log}");
        d.pair.a.ip(&[
            "link", "add", "late0", "type", "veth", "peer", "name", "x-late0",
        ])?;
        d.pair.a.ip(&["link", "set", "late0", "up"])?;
        if watch {
            wait_until("late0 attached", Duration::from_secs(20), || {
                Ok(d.log_text()
                    .lines()
                    .any(|l| l.contains(" attached") && l.contains("late0"))
                    .then_some(()))
            })?;
        } else {
            // Nothing to wait for: the link watch would have reported late0
            // through the same log; flowd stops with it unattached.
            let st = d.flowd.stop(Signal::SIGTERM, Duration::from_secs(20))?;
            ensure!(st.success(), "{st}");
            let log = d.log_text();
            ensure!(
                !log.lines()
                    .any(|l| l.contains(" attached") && l.contains("late0")),
                "{log}"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------- the same flags, datapath alone --

/// flowd alone on veth-a of a new pair (`--print --print-format json
/// --dump-flows-on-exit`, the datapath tests' harness), links up.
fn alone(tag: &str, args: &[&str]) -> Result<(Pair, Flowd)> {
    let pair = Pair::create(tag)?;
    let mut all = vec!["-i", "veth-a"];
    all.extend_from_slice(args);
    let flowd = Flowd::start(std::path::Path::new(BIN), &pair.a, &all)?;
    pair.up()?;
    Ok((pair, flowd))
}

/// Without --config: `--flow-map-entries` and `--ring-buffer-bytes` size
/// the kernel maps (defaults 65536 and 1 MiB).
#[test]
fn alone_flow_map_entries_and_ring_buffer_bytes() -> Result<()> {
    let (_p, f) = alone("amap", &[])?;
    let pid = f.child.pid().context("pid")?;
    ensure!(map_sizes(pid)? == (65536, 1 << 20), "{:?}", map_sizes(pid)?);
    drop(f);
    let (_p, f) = alone(
        "amapf",
        &["--flow-map-entries", "100", "--ring-buffer-bytes", "65536"],
    )?;
    let pid = f.child.pid().context("pid")?;
    ensure!(map_sizes(pid)? == (100, 65536), "{:?}", map_sizes(pid)?);
    Ok(())
}

/// Without --config: `--l7-max-bytes 0` copies no payload (the kernel's L7
/// event counter stays 0 for an HTTP exchange that gives 2 by default).
#[test]
fn alone_l7_max_bytes_zero() -> Result<()> {
    for (args, want) in [(&[][..], 2), (&["--l7-max-bytes", "0"][..], 0)] {
        let (pair, mut f) = alone("al7", args)?;
        let listener = pair.b.run(|| TcpListener::bind((Pair::B4, 8080)))??;
        let server = std::thread::spawn(move || -> Result<()> {
            use std::io::Write;
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf)?;
            ensure!(buf[..n].ends_with(b"\r\n\r\n"), "partial request");
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            Ok(())
        });
        pair.a.run(|| -> Result<()> {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect((Pair::B4, 8080))?;
            s.write_all(b"GET /private HTTP/1.1\r\nHost: b\r\n\r\n")?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp)?;
            ensure!(resp.starts_with(b"HTTP/1.1 200"), "{resp:?}");
            Ok(())
        })??;
        server
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))??;
        let dump = f.stop()?;
        let l7_events = dump["counters"]["l7_events"].as_u64();
        ensure!(l7_events == Some(want), "{args:?}: {:#}", dump["counters"]);
    }
    Ok(())
}

/// Without --config: `--no-watch-links`: an interface matching `-i` that
/// appears later is not attached; without the flag it is (the control
/// waits for its `attached` event).
#[test]
fn alone_no_watch_links() -> Result<()> {
    for watch in [true, false] {
        let pair = Pair::create("awatch")?;
        let mut args = vec!["-i", "veth-a", "-i", "late*"];
        if !watch {
            args.push("--no-watch-links");
        }
        let mut f = Flowd::start(std::path::Path::new(BIN), &pair.a, &args)?;
        pair.a.ip(&[
            "link", "add", "late0", "type", "veth", "peer", "name", "x-late0",
        ])?;
        let attached_late0 = |f: &Flowd| {
            f.events()
                .iter()
                .any(|e| e["event"] == "attached" && e["interface"]["ifname"] == "late0")
        };
        if watch {
            wait_until("late0 attached", Duration::from_secs(20), || {
                Ok(attached_late0(&f).then_some(()))
            })?;
        } else {
            f.stop()?;
            ensure!(!attached_late0(&f), "{:#?}", f.events());
        }
    }
    Ok(())
}

/// Without --config: `--drops-all` reports kernel drops of every packet
/// (here: UDP to a closed port of b, NO_SOCKET, exactly as many as sent);
/// without it the datapath alone has no addresses to select drops by.
#[test]
fn alone_drops_all() -> Result<()> {
    const N: u64 = 5;
    for (all, want) in [(false, 0), (true, N)] {
        // Every drop reported as it happens, so the totals are exact at exit.
        let mut args = vec!["--aggregation-interval", "none"];
        if all {
            args.push("--drops-all");
        }
        let (pair, mut f) = alone("adrop", &args)?;
        // A source port of our own picks our drops out of the host's.
        let sport = pair.a.run(|| -> Result<u16> {
            let s = std::net::UdpSocket::bind((Pair::A4, 0))?;
            for _ in 0..N {
                s.send_to(b"x", (Pair::B4, 9))?;
            }
            Ok(s.local_addr()?.port())
        })??;
        f.stop()?;
        let total = f
            .events()
            .iter()
            .filter(|e| e["event"] == "drop" && e["src_port"] == sport && e["dst_port"] == 9)
            .filter_map(|e| e["total"].as_u64())
            .max()
            .unwrap_or(0);
        ensure!(
            total == want,
            "--drops-all {all}: {total} drops, want {want}"
        );
    }
    Ok(())
}

/// Without --config: `--bench-empty-programs` attaches the empty
/// pass-through programs (the benchmark baseline) instead of flowd's.
#[test]
fn alone_bench_empty_programs() -> Result<()> {
    for (args, want) in [
        (&[][..], "flowd_tc_ingress"),
        (&["--bench-empty-programs"][..], "empty"),
    ] {
        let (_p, f) = alone("abench", args)?;
        let ready = f
            .events()
            .into_iter()
            .find(|e| e["event"] == "ready")
            .context("no ready line")?;
        let programs = ready["attached"][0]["programs"].to_string();
        ensure!(programs.contains(want), "{args:?}: {programs}");
    }
    Ok(())
}

// ------------------------------------------------------ refused flags, errors --

/// Runs flowd to completion with `args` and `RUST_BACKTRACE=1` (as many
/// machines set it); returns the exit code and the stderr lines.
fn run_flowd(args: &[&str]) -> Result<(Option<i32>, Vec<String>)> {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("flowd {args:?} did not exit: it started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .context("stderr")?
        .read_to_string(&mut err)?;
    Ok((status.code(), err.lines().map(str::to_string).collect()))
}

fn expect_one_line(args: &[&str], code: i32, want: &str) -> Result<()> {
    let (got, lines) = run_flowd(args)?;
    ensure!(
        got == Some(code) && lines == [want],
        "flowd {args:?}: exit {got:?}, stderr {lines:#?}\nwant exit {code} and only: {want}"
    );
    Ok(())
}

/// Flags without meaning with --config/--set are refused, naming the flag;
/// a typed flag's bad value names the flag and the key; `--print-format`
/// without `--print` is refused in both modes.
#[test]
fn flags_without_meaning_are_refused_naming_them() -> Result<()> {
    let dir = TempDir::new("frefuse")?;
    let cm = configmap(&dir.0, &[("hubble-metrics-server", "")])?;
    let cm = cm.to_str().context("path")?;
    expect_one_line(
        &["--config", cm, "--drops-all"],
        2,
        "flowd: --drops-all cannot be combined with --config/--set: the daemon reports the drops of its pods' packets (flowd-drops-enabled)",
    )?;
    expect_one_line(
        &["--set", "flowd-node-name=x", "--bench-empty-programs"],
        2,
        "flowd: --bench-empty-programs cannot be combined with --config/--set: it measures the datapath alone (benchmark baseline)",
    )?;
    expect_one_line(
        &["--config", cm, "--l7-max-bytes", "600"],
        2,
        "flowd: --l7-max-bytes 600: invalid value \"600\" for key \"flowd-l7-max-bytes\": expected an integer from 0 to 512 (0 disables L7)",
    )?;
    expect_one_line(
        &["--config", cm, "--flow-map-entries", "100"],
        2,
        "flowd: --flow-map-entries 100: invalid value \"100\" for key \"flowd-flow-map-entries\": expected an integer from 1024 to 16777216",
    )?;
    expect_one_line(
        &[
            "--config",
            cm,
            "--print",
            "--set",
            "hubble-export-file-path=stdout",
        ],
        2,
        "flowd: --print cannot be combined with hubble-export-file-path=stdout: both write to stdout",
    )?;
    for mode in [&["--config", cm][..], &["-i", "veth0"][..]] {
        let mut args = mode.to_vec();
        args.extend(["--print-format", "json"]);
        expect_one_line(
            &args,
            2,
            "flowd: the following required arguments were not provided: --print (see --help)",
        )?;
    }
    Ok(())
}

/// With RUST_BACKTRACE=1 a bad configuration gives exactly one line naming
/// the key, the value and what is expected; a clap error too; a busy
/// Observer port names hubble-listen-address.
#[test]
fn errors_are_one_line_whatever_rust_backtrace() -> Result<()> {
    let dir = TempDir::new("ferr")?;
    expect_one_line(
        &["--set", "hubble-event-buffer-capacity=4096"],
        1,
        "flowd: invalid value \"4096\" for key \"hubble-event-buffer-capacity\": expected one less than a power of two, from 1 to 65535 (1, 3, 7, …, 4095, …, 65535)",
    )?;
    let cm = configmap(&dir.0, &[("flowd-max-streams", "0")])?;
    expect_one_line(
        &["--config", cm.to_str().context("path")?],
        1,
        "flowd: invalid value \"0\" for key \"flowd-max-streams\": expected an integer from 1 to 65536",
    )?;
    let bad_yaml = dir.0.join("bad.yaml");
    std::fs::write(&bad_yaml, "kind: ConfigMap\ndata: [unclosed\n")?;
    let (code, lines) = run_flowd(&["--config", bad_yaml.to_str().context("path")?])?;
    ensure!(
        code == Some(1)
            && lines.len() == 1
            && lines[0].starts_with(&format!(
                "flowd: cannot parse ConfigMap YAML {}: ",
                bad_yaml.display()
            )),
        "{code:?} {lines:#?}"
    );
    let (code, lines) = run_flowd(&["--ring-buffer-bytes", "lots", "-i", "x"])?;
    ensure!(
        code == Some(2)
            && lines.len() == 1
            && lines[0]
                .starts_with("flowd: invalid value 'lots' for '--ring-buffer-bytes <BYTES>'"),
        "{code:?} {lines:#?}"
    );
    // A port someone else holds.
    let busy = TcpListener::bind("127.0.0.1:0")?;
    let addr = busy.local_addr()?;
    let set = format!("hubble-listen-address={addr}");
    let (code, lines) = run_flowd(&["--set", &set, "--set", "hubble-metrics-server="])?;
    let want = format!(
        "flowd: hubble-listen-address {addr}: cannot listen for the Observer API: Address already in use (os error 98)"
    );
    ensure!(
        code == Some(1) && lines.last() == Some(&want),
        "{code:?} {lines:#?}"
    );
    ensure!(
        !lines
            .iter()
            .any(|l| l.contains("backtrace") || l.contains("Caused by")),
        "{lines:#?}"
    );
    Ok(())
}

/// A name in flowd-interfaces that does not exist yet gets one warning at
/// start, and is attached when it appears (the link watch).
#[test]
fn absent_interface_is_logged_and_attached_when_it_appears() -> Result<()> {
    let ns = Netns::new("fabs")?;
    let peer = Netns::new("fabsp")?;
    let dir = TempDir::new("fabs")?;
    let log = dir.0.join("flowd.log");
    let mut cmd = ns.command(BIN);
    cmd.args([
        "--set",
        "hubble-metrics-server=",
        "--set",
        "hubble-listen-address=127.0.0.1:4244",
        "-i",
        "late0",
    ])
    .env("RUST_LOG", "info")
    .stderr(std::fs::File::create(&log)?);
    let mut flowd = flowd_tests::ChildGuard::spawn("flowd", &mut cmd)?;
    let warning = "configured interface does not exist yet; it will be attached when it appears";
    wait_until(
        "the absent-interface warning",
        Duration::from_secs(30),
        || {
            if let Some(st) = flowd.try_wait()? {
                bail!("flowd exited ({st}): {}", read(&log));
            }
            Ok(read(&log).contains(warning).then_some(()))
        },
    )?;
    let lines: Vec<String> = read(&log)
        .lines()
        .filter(|l| l.contains("late0"))
        .map(str::to_string)
        .collect();
    ensure!(
        lines.len() == 1 && lines[0].contains("WARN") && lines[0].contains("interface=\"late0\""),
        "{lines:#?}"
    );
    VethPair::create(&ns, "late0", &peer, "late0p")?;
    wait_until("late0 attached", Duration::from_secs(20), || {
        Ok(read(&log)
            .lines()
            .any(|l| l.contains(" attached") && l.contains("late0"))
            .then_some(()))
    })?;
    Ok(())
}
