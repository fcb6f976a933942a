//! The DNS name cache (docs/architecture.md, `flowd-dns-name-cache-entries`,
//! `tofqdns-min-ttl`) on a running daemon, through its self-metrics:
//! `flowd_dns_name_cache_entries` counts the (pod, address, name) entries the
//! answers to this node's pods gave, and `flowd_dns_name_cache_evictions_total`
//! the unexpired ones a full cache evicted. A DNS responder in the peer
//! namespace answers from a table the test writes, so every number is known
//! in advance. Root, like flowd.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod daemon_netns;
mod metrics_support;

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use daemon_netns::*;
use flowd_tests::flowd::TempDir;
use flowd_tests::{Netns, Pair, wait_until};
use metrics_support::Sample;

const WAIT: Duration = Duration::from_secs(30);
const NODE: &str = "dn-node";

/// The pod of this node (namespace `a`'s address) and one of another node
/// (a second address in `a`, named in a manifest with another nodeName).
fn manifests(dir: &TempDir) -> Result<()> {
    let pod = |name: &str, uid: &str, node: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: dns, uid: {uid}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: app, image: x}}]}}\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        )
    };
    std::fs::write(
        dir.0.join("local.yaml"),
        pod(
            "resolver",
            "33333333-0000-4000-9000-000000000001",
            NODE,
            Pair::A4,
        ),
    )?;
    std::fs::write(
        dir.0.join("remote.yaml"),
        pod(
            "elsewhere",
            "33333333-0000-4000-9000-000000000002",
            "another-node",
            REMOTE_POD,
        ),
    )?;
    Ok(())
}

/// The other node's pod's address (on `a`'s veth too, so that its DNS
/// traffic crosses the observed interface).
const REMOTE_POD: &str = "10.200.0.3";

/// What the responder answers for a name: CNAMEs (the chain, in order),
/// then A records (owned by the chain's last name); rcode 3 when
/// `nxdomain`.
struct Answer {
    cnames: &'static [&'static str],
    addrs: &'static [[u8; 4]],
    ttl: u32,
    nxdomain: bool,
}

/// `name` in DNS wire format (labels, then the root).
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A query for `name`, type A, with `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&wire_name(name));
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// The response to `q` (a query as [`query`] makes) from `table`.
fn respond(q: &[u8], table: &[(&str, Answer)]) -> Result<Vec<u8>> {
    ensure!(q.len() > 12, "short query");
    // The question: labels from offset 12 to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    while q[i] != 0 {
        let len = usize::from(q[i]);
        labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_string());
        i += 1 + len;
    }
    let question = &q[12..i + 5];
    let name = labels.join(".");
    let (_, a) = table
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        .with_context(|| format!("no answer for {name}"))?;
    let records = if a.nxdomain {
        0
    } else {
        a.cnames.len() + a.addrs.len()
    };
    let mut m = q[..2].to_vec();
    // QR, RD; RA, rcode 3 (NXDOMAIN) or 0.
    let rcode = if a.nxdomain { 3 } else { 0 };
    m.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    m.extend_from_slice(&(records as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(question);
    if a.nxdomain {
        return Ok(m);
    }
    let ttl = a.ttl.to_be_bytes();
    let mut owner = name.clone();
    for target in a.cnames {
        let rdata = wire_name(target);
        m.extend_from_slice(&wire_name(&owner));
        m.extend_from_slice(&[0, 5, 0, 1]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        owner = target.to_string();
    }
    for addr in a.addrs {
        m.extend_from_slice(&wire_name(&owner));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&[0, 4]);
        m.extend_from_slice(addr);
    }
    Ok(m)
}

/// A responder in `b` on port 53 answering `n` queries from `table`.
fn responder(
    pair: &Pair,
    n: usize,
    table: &'static [(&'static str, Answer)],
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let s = pair
        .b
        .run(|| UdpSocket::bind(b_addr(DNS_PORT)))?
        .context("binding the DNS responder")?;
    Ok(std::thread::spawn(move || -> Result<()> {
        let mut buf = [0u8; 512];
        for _ in 0..n {
            let (len, from) = s.recv_from(&mut buf)?;
            s.send_to(&respond(&buf[..len], table)?, from)?;
        }
        Ok(())
    }))
}

/// Resolves each of `names` from `src` in `ns` (a socket per query) and
/// waits for each answer.
fn resolve(ns: &Netns, src: &'static str, names: &'static [&'static str]) -> Result<()> {
    ns.run(move || -> Result<()> {
        for (i, name) in names.iter().enumerate() {
            let s = UdpSocket::bind((src, 0))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.send_to(&query(1000 + i as u16, name), b_addr(DNS_PORT))?;
            let mut buf = [0u8; 512];
            let (len, _) = s.recv_from(&mut buf)?;
            ensure!(len > 12 && buf[2] & 0x80 != 0, "no DNS response for {name}");
        }
        Ok(())
    })?
}

/// Starts flowd in `a` with the pods of [`manifests`], the `dns` metrics
/// handler (to know when every response went through the pipeline) and
/// `args`; brings the link up once flowd is attached.
fn start(pair: &Pair, dir: &TempDir, args: &[&str]) -> Result<Daemon> {
    manifests(dir)?;
    let manifests = format!("flowd-manifests-dir={}", dir.0.display());
    let mut all = vec![
        "-i",
        "veth-a",
        "--set",
        &manifests,
        "--set",
        "hubble-metrics=dns",
    ];
    all.extend_from_slice(args);
    let d = Daemon::start(&pair.a, NODE, &all)?;
    wait_until("flowd attached", WAIT, || {
        Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
    })?;
    quiet_up(pair, true)?;
    flowd_tests::add_addr(&pair.a, &pair.veth.a, &format!("{REMOTE_POD}/24"))?;
    Ok(d)
}

/// The name cache's metrics once the pipeline has handled `responses` DNS
/// responses and a tick has run after them: the gauges are set each second,
/// so the test waits for the responses, sends one more datagram and waits
/// for the tick that counts its event (`flowd_datapath_events_total`, set
/// after the name cache in the same tick).
fn settled(pair: &Pair, responses: f64) -> Result<(f64, f64)> {
    let s = wait_metrics(&pair.a, "every DNS response handled", WAIT, |s| {
        (metrics_support::sum(s, "hubble_dns_responses_total") == responses).then(|| s.to_vec())
    })?;
    let events = value(&s, "flowd_datapath_events_total", &[]);
    udp_from_ports(&pair.a, vec![23_000], b_addr(9))?;
    let s = wait_metrics(&pair.a, "a tick after the responses", WAIT, |s| {
        (value(s, "flowd_datapath_events_total", &[]) > events).then(|| s.to_vec())
    })?;
    ensure!(
        metrics_support::sum(&s, "hubble_dns_responses_total") == responses,
        "more DNS responses than sent"
    );
    Ok(cache(&s))
}

fn cache(s: &[Sample]) -> (f64, f64) {
    (
        value(s, "flowd_dns_name_cache_entries", &[]),
        value(s, "flowd_dns_name_cache_evictions_total", &[]),
    )
}

const TTL: u32 = 300;

/// An answer with A records only.
const fn addrs(addrs: &'static [[u8; 4]], ttl: u32) -> Answer {
    Answer {
        cnames: &[],
        addrs,
        ttl,
        nxdomain: false,
    }
}

static NAMES: [(&str, Answer); 5] = [
    ("one.example", addrs(&[[10, 9, 0, 1]], TTL)),
    ("two.example", addrs(&[[10, 9, 0, 2], [10, 9, 0, 3]], TTL)),
    // A chain: the address belongs to the name asked for.
    (
        "alias.example",
        Answer {
            cnames: &["mid.example", "edge.example"],
            addrs: &[[10, 9, 0, 1]],
            ttl: TTL,
            nxdomain: false,
        },
    ),
    (
        "missing.example",
        Answer {
            cnames: &[],
            addrs: &[],
            ttl: TTL,
            nxdomain: true,
        },
    ),
    ("remote.example", addrs(&[[10, 9, 0, 9]], TTL)),
];

/// The local pod resolves one.example (1 address), two.example (2),
/// alias.example (a CNAME chain to 1 address, the same as one.example's:
/// another entry, since the name differs), ONE.EXAMPLE. again (names are
/// case-insensitive: the same entry) and missing.example (NXDOMAIN: none);
/// the other node's pod resolves remote.example (not this node's pod:
/// none). 7 responses, 1 + 2 + 1 = 4 entries, no evictions.
#[test]
fn entries_count_each_local_pod_address_and_name() -> Result<()> {
    const LOCAL: &[&str] = &[
        "one.example",
        "two.example",
        "alias.example",
        "ONE.EXAMPLE.",
        "missing.example",
    ];
    let dir = TempDir::new("dn-entries")?;
    let pair = Pair::create("dnent")?;
    let mut d = start(&pair, &dir, &[])?;
    let (e0, x0) = cache(&scrape(&pair.a)?);
    assert_eq!((e0, x0), (0.0, 0.0), "an empty cache at start");

    let dns = responder(&pair, LOCAL.len() + 2, &NAMES)?;
    resolve(&pair.a, Pair::A4, LOCAL)?;
    resolve(&pair.a, REMOTE_POD, &["remote.example", "one.example"])?;
    dns.join()
        .map_err(|_| anyhow::anyhow!("responder panicked"))??;

    let (entries, evictions) = settled(&pair, (LOCAL.len() + 2) as f64)?;
    assert_eq!((entries, evictions), (4.0, 0.0));
    d.alive()
}

/// One address per name, TTL 0: expired at once unless `tofqdns-min-ttl`
/// raises it.
static BOUNDED: [(&str, Answer); 5] = [
    ("n1.example", addrs(&[[10, 9, 1, 1]], 0)),
    ("n2.example", addrs(&[[10, 9, 1, 2]], 0)),
    ("n3.example", addrs(&[[10, 9, 1, 3]], 0)),
    ("n4.example", addrs(&[[10, 9, 1, 4]], 0)),
    ("n5.example", addrs(&[[10, 9, 1, 5]], 0)),
];

/// `flowd-dns-name-cache-entries` 2: five names (one address each, TTL 0
/// raised to an hour by `tofqdns-min-ttl` 3600) make five entries; the
/// cache keeps 2 and evicts the 3 others, unexpired, so they are counted.
/// n5 asked again refreshes its entry and evicts nothing. (Without the
/// minimum TTL the evicted entries would have expired: 0 evictions.)
#[test]
fn a_full_cache_keeps_its_bound_and_counts_evictions() -> Result<()> {
    const ASKED: &[&str] = &[
        "n1.example",
        "n2.example",
        "n3.example",
        "n4.example",
        "n5.example",
        "n5.example",
    ];
    let dir = TempDir::new("dn-bound")?;
    let pair = Pair::create("dnbnd")?;
    let mut d = start(
        &pair,
        &dir,
        &[
            "--set",
            "flowd-dns-name-cache-entries=2",
            "--set",
            "tofqdns-min-ttl=3600",
        ],
    )?;
    let dns = responder(&pair, ASKED.len(), &BOUNDED)?;
    resolve(&pair.a, Pair::A4, ASKED)?;
    dns.join()
        .map_err(|_| anyhow::anyhow!("responder panicked"))??;

    let (entries, evictions) = settled(&pair, ASKED.len() as f64)?;
    assert_eq!((entries, evictions), (2.0, 3.0));
    d.alive()
}
