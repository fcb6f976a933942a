//! Kernel packet drops: the `skb:kfree_skb` tracepoint program.
//!
//! ```text
//! setup: tracefs mounted? → format file: field offsets match the program,
//!        reason names → BTF: sk_buff / net_device member offsets → DROP_CONFIG
//!        → load + attach flowd_kfree_skb
//! kernel: drops (reason > NOT_SPECIFIED) of packets to/from DROP_ADDRS,
//!         aggregated per flow+reason in DROPS → EV_DROP (first, then ≤ 1/interval)
//! sweep:  every interval, DROPS entries that changed → DatapathEvent::Drop
//! ```
//! Which packets count as "observed": those whose source or destination is in
//! `DROP_ADDRS` (pod IPs, set with [`super::Datapath::set_drop_addresses`]), or
//! all of them with [`DropsConfig::all`]. Interfaces cannot decide it: most
//! drops happen inside the pod's network namespace (no socket, the pod's own
//! netfilter rules), on the pod's side of the veth, whose ifindex is only
//! unique within that namespace.
//!
//! Events and sweeps carry running totals per map entry; [`DropCounter`]
//! turns them into exact, never double-counted deltas.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
    programs::TracePoint,
};
use flowd_common::{
    DROP_F_ALL, DROP_F_READY, DROP_IGNORE_BITS, DropConfig, DropEvent, DropKey, DropStats,
    TP_KFREE_SKB_PROTOCOL, TP_KFREE_SKB_REASON, TP_KFREE_SKB_SKBADDR, names,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{DatapathEvent, DropRecord, Error, btf, clock::KernelClock};

const TRACEFS: &str = "/sys/kernel/tracing";
const FORMAT: &str = "/sys/kernel/tracing/events/skb/kfree_skb/format";

/// What the drop program reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropsConfig {
    /// Attach the skb:kfree_skb program at all.
    pub enabled: bool,
    /// Report drops of every packet of the node, not only of `DROP_ADDRS`.
    pub all: bool,
    /// Which program: flowd's, or the empty one (benchmark baseline).
    pub bench_empty: bool,
}

impl Default for DropsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            all: false,
            bench_empty: false,
        }
    }
}

/// The drop maps user space keeps.
pub(crate) struct DropMaps {
    pub drops: BpfHashMap<MapData, DropKey, DropStats>,
    pub addrs: BpfHashMap<MapData, [u8; 16], u8>,
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Mounts tracefs at /sys/kernel/tracing when nothing is there (aya finds
/// tracepoints through it).
fn ensure_tracefs() -> Result<(), Error> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    tracing::info!("mounting tracefs at {TRACEFS}");
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::Io {
        what: format!("mounting tracefs at {TRACEFS}"),
        source: e.into(),
    })
}

/// Field offsets and reason names from the tracepoint's format file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub fields: HashMap<String, usize>,
    /// enum skb_drop_reason value → name without the SKB_DROP_REASON_ prefix.
    pub reasons: HashMap<u32, String>,
}

impl TracepointFormat {
    pub fn parse(text: &str) -> Self {
        let mut f = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("field:") {
                // "void * skbaddr;	offset:8;	size:8;	signed:0;"
                let mut parts = rest.split(';');
                let decl = parts.next().unwrap_or("");
                let name = decl
                    .rsplit(|c: char| c.is_whitespace() || c == '*')
                    .next()
                    .unwrap_or("");
                let off = parts
                    .find_map(|p| p.trim().strip_prefix("offset:"))
                    .and_then(|o| o.parse().ok());
                if let (false, Some(off)) = (name.is_empty(), off) {
                    f.fields.insert(name.to_string(), off);
                }
            } else if line.starts_with("print fmt:") {
                // __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)
                for item in line.split('{').skip(1) {
                    let Some((num, rest)) = item.split_once(',') else {
                        continue;
                    };
                    let Ok(num) = num.trim().parse::<u32>() else {
                        continue;
                    };
                    let mut q = rest.split('"');
                    if let (Some(_), Some(name)) = (q.next(), q.next()) {
                        f.reasons.insert(num, name.to_string());
                    }
                }
            }
        }
        f
    }
}

static REASONS: OnceLock<HashMap<u32, String>> = OnceLock::new();

/// The running kernel's name of a drop reason, e.g. "NO_SOCKET"
/// (`REASON_<n>` when the kernel did not name it).
pub fn reason_name(code: u32) -> String {
    REASONS
        .get()
        .and_then(|m| m.get(&code).cloned())
        .unwrap_or_else(|| format!("REASON_{code}"))
}

/// Loads the kernel's drop-reason names once (also for decoding without a
/// loaded program, e.g. in tests).
pub fn load_reason_names() {
    if REASONS.get().is_some() {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(FORMAT) {
        let _ = REASONS.set(TracepointFormat::parse(&text).reasons);
    }
}

/// Reasons that are frees rather than packet drops: a socket's queues
/// purged when it is destroyed (every TCP close frees its unsent/unacked
/// segments this way). NOT_SPECIFIED and below are filtered in the program.
pub const IGNORED_REASONS: &[&str] = &["QUEUE_PURGE"];

fn ignore_bitmap(reasons: &HashMap<u32, String>) -> [u64; 4] {
    let mut bits = [0u64; 4];
    for (code, name) in reasons {
        if *code < DROP_IGNORE_BITS && IGNORED_REASONS.contains(&name.as_str()) {
            bits[(*code / 64) as usize] |= 1 << (code % 64);
        }
    }
    bits
}

/// Loads and attaches the drop program. Called by `Datapath::start`.
pub(crate) fn setup(
    ebpf: &mut Ebpf,
    cfg: &DropsConfig,
    interval: Duration,
) -> Result<Option<DropMaps>, Error> {
    if !cfg.enabled {
        return Ok(None);
    }
    ensure_tracefs()?;
    let text = std::fs::read_to_string(FORMAT).map_err(io_err(format!("reading {FORMAT}")))?;
    let format = TracepointFormat::parse(&text);
    for (field, want) in [
        ("skbaddr", TP_KFREE_SKB_SKBADDR),
        ("protocol", TP_KFREE_SKB_PROTOCOL),
        ("reason", TP_KFREE_SKB_REASON),
    ] {
        let got = format.fields.get(field).copied();
        if got != Some(want) {
            return Err(Error::InvalidConfig(format!(
                "skb:kfree_skb field {field} is at {got:?} on this kernel, the drop program expects {want}"
            )));
        }
    }
    let ignore = ignore_bitmap(&format.reasons);
    let _ = REASONS.set(format.reasons);

    let kbtf = btf::Btf::from_file(btf::VMLINUX)?;
    let off = |s: &str, m: &str| -> Result<u16, Error> {
        let o = kbtf.member_offset(s, m)?;
        u16::try_from(o).map_err(|_| {
            Error::InvalidConfig(format!("BTF: {s}.{m} at byte {o} does not fit in u16"))
        })
    };
    let mut flags = DROP_F_READY;
    if cfg.all {
        flags |= DROP_F_ALL;
    }
    let dcfg = DropConfig {
        interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        flags,
        skb_head: off("sk_buff", "head")?,
        skb_network_header: off("sk_buff", "network_header")?,
        skb_transport_header: off("sk_buff", "transport_header")?,
        skb_dev: off("sk_buff", "dev")?,
        dev_ifindex: off("net_device", "ifindex")?,
        dev_name: off("net_device", "name")?,
        ignore,
    };
    tracing::debug!(?dcfg, "drop program configuration from BTF");
    {
        let map = ebpf
            .map_mut(names::MAP_DROP_CONFIG)
            .ok_or(Error::MissingMap(names::MAP_DROP_CONFIG))?;
        let mut arr: Array<&mut MapData, DropConfig> =
            Array::try_from(map).map_err(map_err(names::MAP_DROP_CONFIG))?;
        arr.set(0, dcfg, 0)
            .map_err(map_err(names::MAP_DROP_CONFIG))?;
    }
    let drops = BpfHashMap::try_from(
        ebpf.take_map(names::MAP_DROPS)
            .ok_or(Error::MissingMap(names::MAP_DROPS))?,
    )
    .map_err(map_err(names::MAP_DROPS))?;
    let addrs = BpfHashMap::try_from(
        ebpf.take_map(names::MAP_DROP_ADDRS)
            .ok_or(Error::MissingMap(names::MAP_DROP_ADDRS))?,
    )
    .map_err(map_err(names::MAP_DROP_ADDRS))?;

    let name = if cfg.bench_empty {
        names::PROG_TP_EMPTY
    } else {
        names::PROG_KFREE_SKB
    };
    attach_tracepoint(ebpf, name)?;
    Ok(Some(DropMaps { drops, addrs }))
}

/// Loads `name` and attaches it to skb:kfree_skb. The link lives as long as
/// the `Ebpf` (kernel-owned perf link: removed when flowd exits).
pub fn attach_tracepoint(ebpf: &mut Ebpf, name: &'static str) -> Result<(), Error> {
    let perr = |e: aya::programs::ProgramError| Error::ProgramLoad {
        program: name,
        source: Box::new(e),
    };
    let prog: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(perr)?;
    prog.load().map_err(perr)?;
    prog.attach("skb", "kfree_skb").map_err(perr)?;
    Ok(())
}

/// 16-byte map key of an address (IPv4 in the first 4 bytes, as FlowKey).
pub fn addr_key(ip: IpAddr) -> [u8; 16] {
    let mut k = [0u8; 16];
    match ip {
        IpAddr::V4(a) => k[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => k = a.octets(),
    }
    k
}

impl DropMaps {
    /// Makes `DROP_ADDRS` exactly `addrs`.
    pub fn set_addresses(&mut self, addrs: &[IpAddr]) -> Result<(), Error> {
        let want: std::collections::HashSet<[u8; 16]> =
            addrs.iter().map(|a| addr_key(*a)).collect();
        let have: Vec<[u8; 16]> = self.addrs.keys().filter_map(Result::ok).collect();
        for k in have.iter().filter(|k| !want.contains(*k)) {
            // Already gone is fine.
            let _ = self.addrs.remove(k);
        }
        for k in want {
            self.addrs
                .insert(k, 1, 0)
                .map_err(map_err(names::MAP_DROP_ADDRS))?;
        }
        Ok(())
    }
}

pub(crate) fn record(ev: &DropEvent, clock: &KernelClock) -> DropRecord {
    DropRecord {
        time: clock.to_system_time(ev.header.ts_ns),
        cpu: ev.header.cpu,
        key: ev.key,
        reason: ev.reason,
        reason_name: reason_name(ev.reason),
        total: ev.total,
        first_seen_ns: ev.first_seen_ns,
        ifname: ifname(&ev.ifname),
    }
}

fn ifname(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Sweeps `DROPS` every `interval`: entries that changed since the last sweep
/// are sent as drop records (tails the kernel will not report until the next
/// drop), and entries idle for `idle` are deleted.
pub(crate) fn spawn_sweep(
    maps: Arc<std::sync::Mutex<DropMaps>>,
    tx: mpsc::Sender<DatapathEvent>,
    clock: Arc<KernelClock>,
    interval: Duration,
) -> JoinHandle<()> {
    let interval = interval.max(Duration::from_millis(100));
    let idle_ns =
        u64::try_from((interval * 20).max(Duration::from_secs(120)).as_nanos()).unwrap_or(u64::MAX);
    tokio::spawn(async move {
        let mut last_sweep_ns = 0u64;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            clock.refresh_if_stale();
            let now = KernelClock::monotonic_now_ns();
            let out = {
                let mut m = maps.lock().unwrap_or_else(|p| p.into_inner());
                sweep(&mut m, &clock, last_sweep_ns, now, idle_ns)
            };
            last_sweep_ns = now;
            for r in out {
                if tx.send(DatapathEvent::Drop(r)).await.is_err() {
                    return;
                }
            }
        }
    })
}

fn sweep(
    m: &mut DropMaps,
    clock: &KernelClock,
    since: u64,
    now: u64,
    idle_ns: u64,
) -> Vec<DropRecord> {
    let mut out = Vec::new();
    let mut stale = Vec::new();
    for (k, s) in m.drops.iter().filter_map(Result::ok) {
        // Coarse clock: up to a tick behind; a small overlap only resends a
        // total the counter already has (delta 0).
        if s.last_seen_ns.saturating_add(10_000_000) >= since {
            out.push(DropRecord {
                time: clock.to_system_time(s.last_seen_ns),
                cpu: u32::MAX,
                key: k.key,
                reason: k.reason,
                reason_name: reason_name(k.reason),
                total: s.total,
                first_seen_ns: s.first_seen_ns,
                ifname: ifname(&s.ifname),
            });
        } else if now.saturating_sub(s.last_seen_ns) > idle_ns {
            stale.push(k);
        }
    }
    for k in stale {
        let _ = m.drops.remove(&k);
    }
    out
}

/// Turns running totals into deltas: per (key, reason), the entry generation
/// (`first_seen_ns`) and the total already counted. Records may arrive out of
/// order (ring buffer vs sweep): an older total or an older generation counts
/// nothing.
#[derive(Debug, Default)]
pub struct DropCounter {
    seen: HashMap<DropKey, (u64, u64, SystemTime), ahash::RandomState>,
}

impl DropCounter {
    /// Drops `r` adds to what was counted (0 when it is old news).
    pub fn delta(&mut self, r: &DropRecord) -> u64 {
        let dk = DropKey {
            key: r.key,
            reason: r.reason,
            _pad: 0,
        };
        let e = self.seen.entry(dk).or_insert((r.first_seen_ns, 0, r.time));
        let d = if r.first_seen_ns > e.0 {
            *e = (r.first_seen_ns, r.total, r.time);
            r.total
        } else if r.first_seen_ns < e.0 {
            0
        } else {
            let d = r.total.saturating_sub(e.1);
            e.1 = e.1.max(r.total);
            d
        };
        e.2 = r.time;
        d
    }

    /// Forgets entries not reported since `before` (the kernel deletes
    /// idle entries; a later drop starts a new generation anyway).
    pub fn expire(&mut self, before: SystemTime) {
        self.seen.retain(|_, (_, _, t)| *t >= before);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowd_common::FlowKey;

    const FORMAT_6_18: &str = "name: kfree_skb\nID: 2310\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;\n\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\nprint fmt: \"skbaddr=%p reason: %s\", REC->skbaddr, __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, { 12, \"NETFILTER_DROP\" }, { 128, \"MAX\" })\n";

    #[test]
    fn format_file_fields_and_reasons() {
        let f = TracepointFormat::parse(FORMAT_6_18);
        assert_eq!(f.fields.get("skbaddr"), Some(&8));
        assert_eq!(f.fields.get("protocol"), Some(&32));
        assert_eq!(f.fields.get("reason"), Some(&36));
        assert_eq!(f.fields.get("common_type"), Some(&0));
        assert_eq!(f.reasons.get(&3).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(
            f.reasons.get(&12).map(String::as_str),
            Some("NETFILTER_DROP")
        );
        assert_eq!(f.reasons.len(), 4);
        let mut r = f.reasons.clone();
        r.insert(104, "QUEUE_PURGE".into());
        assert_eq!(ignore_bitmap(&r), [0, 1 << (104 - 64), 0, 0]);
    }

    fn rec(first: u64, total: u64) -> DropRecord {
        DropRecord {
            time: SystemTime::UNIX_EPOCH,
            cpu: 0,
            key: FlowKey::default(),
            reason: 3,
            reason_name: "NO_SOCKET".into(),
            total,
            first_seen_ns: first,
            ifname: String::new(),
        }
    }

    #[test]
    fn counter_counts_each_drop_once_whatever_the_order() {
        let mut c = DropCounter::default();
        assert_eq!(c.delta(&rec(10, 1)), 1);
        assert_eq!(c.delta(&rec(10, 5)), 4);
        // The sweep read 9 before the ring's 7 arrived.
        assert_eq!(c.delta(&rec(10, 9)), 4);
        assert_eq!(c.delta(&rec(10, 7)), 0);
        assert_eq!(c.delta(&rec(10, 9)), 0);
        // New entry generation (old one deleted or evicted).
        assert_eq!(c.delta(&rec(20, 2)), 2);
        // A late record of the old generation.
        assert_eq!(c.delta(&rec(10, 12)), 0);
        assert_eq!(c.delta(&rec(20, 3)), 1);
    }
}
