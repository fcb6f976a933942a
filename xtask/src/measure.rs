//! What the kernel and /proc report: BPF programs' run-time statistics of a
//! process, the machine's busy and steal time, a process's CPU time.
use std::collections::BTreeMap;

use anyhow::{Context, Result, ensure};
use flowd_common::names;

/// The programs the datapath benchmark measures (the kernel keeps 15
/// characters of a name; these are the full ones).
pub(crate) const KNOWN: [&str; 6] = [
    names::PROG_TC_INGRESS,
    names::PROG_TC_EGRESS,
    names::PROG_XDP,
    names::PROG_TC_EMPTY_INGRESS,
    names::PROG_TC_EMPTY_EGRESS,
    names::PROG_XDP_EMPTY,
];

/// Per-program (name → (run_time_ns, run_cnt)) of the programs a process holds,
/// from /proc/<pid>/fdinfo (program fds carry prog_id, run_time_ns, run_cnt).
pub(crate) fn program_stats(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut by_id = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(t), Some(c)) =
            (field("prog_id:"), field("run_time_ns:"), field("run_cnt:"))
        {
            by_id.insert(id, (t, c));
        }
    }
    let mut out = BTreeMap::new();
    for info in aya::programs::loaded_programs().flatten() {
        if let Some(&(t, c)) = by_id.get(&u64::from(info.id())) {
            // The kernel keeps 15 characters of a name: map back to ours.
            let short = info.name_as_str().unwrap_or("?");
            let name = KNOWN
                .iter()
                .find(|n| n.starts_with(short))
                .map_or_else(|| short.to_owned(), |n| (*n).to_owned());
            let e = out.entry(name).or_insert((0, 0));
            e.0 += t;
            e.1 += c;
        }
    }
    Ok(out)
}

/// (steal, all) CPU time of the machine so far, in USER_HZ ticks.
pub(crate) fn steal_times() -> Result<(u64, u64)> {
    let cpu = proc_stat_cpu()?;
    // user nice system idle iowait irq softirq steal (guest time is in user).
    Ok((cpu[7], cpu[..8].iter().sum()))
}

pub(crate) fn steal_share((s0, t0): (u64, u64), (s1, t1): (u64, u64)) -> f64 {
    s1.saturating_sub(s0) as f64 / t1.saturating_sub(t0).max(1) as f64
}

/// The aggregate "cpu" line of /proc/stat, at least 8 fields.
pub(crate) fn proc_stat_cpu() -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat: no cpu line")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(cpu.len() >= 8, "/proc/stat: short cpu line");
    Ok(cpu)
}

/// `/proc/stat` and `/proc/<pid>/stat` count in USER_HZ, 100 on every Linux ABI.
pub(crate) const USER_HZ_NS: u64 = 10_000_000;

/// (CPU time the machine was busy, CPU time of `pid`), in ns.
pub(crate) fn cpu_times(pid: u32) -> Result<(u64, u64)> {
    let cpu = proc_stat_cpu()?;
    // user nice system idle iowait irq softirq steal …: busy = all but idle, iowait, steal.
    let busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6];
    let own = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" that ends the command name: utime and stime are 12th and 13th.
    let rest = own.rsplit_once(')').context("/proc/pid/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    ensure!(f.len() > 12, "/proc/{pid}/stat: short");
    let proc_ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok((busy * USER_HZ_NS, proc_ticks * USER_HZ_NS))
}
