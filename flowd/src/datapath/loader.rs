//! Loads the eBPF object: sizes the maps, writes CONFIG, loads the programs
//! the configured attach modes need, and takes the maps user space reads.
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{Program, SchedClassifier, Xdp},
};
use flowd_common::{Config, names};

use super::{DatapathConfig, EBPF_OBJECT, Error, Maps, ProgramSet};
use crate::options::interfaces::AttachMode;

pub(super) struct Loaded {
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub maps: Maps,
}

/// Program names for (tc ingress, tc egress, xdp) of a program set.
pub(super) fn program_names(set: ProgramSet) -> (&'static str, &'static str, &'static str) {
    match set {
        ProgramSet::Flowd => (
            names::PROG_TC_INGRESS,
            names::PROG_TC_EGRESS,
            names::PROG_XDP,
        ),
        ProgramSet::BenchEmpty => (
            names::PROG_TC_EMPTY_INGRESS,
            names::PROG_TC_EMPTY_EGRESS,
            names::PROG_XDP_EMPTY,
        ),
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}

/// Development override: load this object file instead of the embedded one
/// (lets eBPF work be tried without rebuilding flowd).
pub const OBJECT_ENV: &str = "FLOWD_EBPF_OBJECT";

pub(super) fn load(cfg: &DatapathConfig) -> Result<Loaded, Error> {
    let from_file = match std::env::var_os(OBJECT_ENV) {
        Some(p) => {
            tracing::warn!(path = ?p, "loading the eBPF object from {OBJECT_ENV}");
            Some(std::fs::read(&p).map_err(|e| Error::Io {
                what: format!("reading {OBJECT_ENV}={}", p.to_string_lossy()),
                source: e,
            })?)
        }
        None => None,
    };
    let object: &[u8] = from_file.as_deref().unwrap_or(EBPF_OBJECT);
    if object.is_empty() {
        return Err(Error::EmptyObject);
    }
    // Locked memory accounting is per-cgroup (memcg) on kernels ≥ 5.11; on
    // older ones the rlimit must be lifted for maps of any size.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not lift RLIMIT_MEMLOCK (fine on kernels with memcg accounting)");
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::MAP_EVENTS, cfg.ring_buffer_bytes)
        .map_max_entries(names::MAP_FLOWS, cfg.flow_map_entries)
        .map_max_entries(names::MAP_FLOW_CACHE, flow_cache_entries()?)
        .map_max_entries(names::MAP_H2_WALK, cfg.http2_walk_entries)
        .load(object)
        .map_err(|e| Error::Load(Box::new(e)))?;

    let config = Config {
        // validate() checked that the interval fits in u64 nanoseconds.
        aggregation_interval_ns: u64::try_from(cfg.aggregation_interval.as_nanos())
            .unwrap_or(u64::MAX),
        l7_max_bytes: cfg.l7_max_bytes,
        _pad: [0; 4],
    };
    {
        let map = ebpf
            .map_mut(names::MAP_CONFIG)
            .ok_or(Error::MissingMap(names::MAP_CONFIG))?;
        let mut arr: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(map_err(names::MAP_CONFIG))?;
        arr.set(0, config, 0).map_err(map_err(names::MAP_CONFIG))?;
    }
    // Extra DNS ports (53 is built in) and HTTP/2 ports.
    let port_bits = super::l7_port_bits(cfg);
    if !port_bits.is_empty() {
        let map = ebpf
            .map_mut(names::MAP_L7_PORTS)
            .ok_or(Error::MissingMap(names::MAP_L7_PORTS))?;
        let mut ports: BpfHashMap<&mut MapData, u16, u8> =
            BpfHashMap::try_from(map).map_err(map_err(names::MAP_L7_PORTS))?;
        for (p, bits) in port_bits {
            ports
                .insert(p, bits, 0)
                .map_err(map_err(names::MAP_L7_PORTS))?;
        }
    }

    let events = RingBuf::try_from(
        ebpf.take_map(names::MAP_EVENTS)
            .ok_or(Error::MissingMap(names::MAP_EVENTS))?,
    )
    .map_err(map_err(names::MAP_EVENTS))?;
    let flows = BpfHashMap::try_from(
        ebpf.take_map(names::MAP_FLOWS)
            .ok_or(Error::MissingMap(names::MAP_FLOWS))?,
    )
    .map_err(map_err(names::MAP_FLOWS))?;
    let counters = PerCpuArray::try_from(
        ebpf.take_map(names::MAP_COUNTERS)
            .ok_or(Error::MissingMap(names::MAP_COUNTERS))?,
    )
    .map_err(map_err(names::MAP_COUNTERS))?;
    // Objects from before the flow cache (FLOWD_EBPF_OBJECT, for benchmark
    // comparisons) have no FLOW_CACHE: FLOWS then holds every count. Those
    // from before it was one array have a per-CPU one, not read here.
    let flow_cache = match ebpf.map(names::MAP_FLOW_CACHE) {
        Some(aya::maps::Map::Array(_)) => ebpf
            .take_map(names::MAP_FLOW_CACHE)
            .map(Array::try_from)
            .transpose()
            .map_err(map_err(names::MAP_FLOW_CACHE))?
            .map(super::cache::FlowCache::new),
        // Left in `ebpf`: the programs still use it.
        Some(_) => {
            tracing::warn!(
                "FLOW_CACHE is not an array (an older object): its pending counts are not read"
            );
            None
        }
        None => {
            tracing::warn!("the eBPF object has no FLOW_CACHE map (an older object)");
            None
        }
    };

    if cfg.interfaces.iter().any(|s| s.mode == AttachMode::Tc) {
        load_for_mode(&mut ebpf, cfg.programs, AttachMode::Tc)?;
    }
    if let Some(s) = cfg.interfaces.iter().find(|s| s.mode != AttachMode::Tc) {
        load_for_mode(&mut ebpf, cfg.programs, s.mode)?;
    }
    Ok(Loaded {
        ebpf,
        events,
        maps: Maps {
            flows,
            counters,
            flow_cache,
        },
    })
}

/// Loads what attaching in `mode` needs: the programs that are attached and,
/// for flowd's own, the full paths they tail-call. A no-op for what is loaded
/// already (interfaces that appear later, e.g. pod veths, come through here too).
pub(super) fn load_for_mode(
    ebpf: &mut Ebpf,
    set: ProgramSet,
    mode: AttachMode,
) -> Result<(), Error> {
    let (ingress, egress, xdp) = program_names(set);
    let (attached, full) = match mode {
        AttachMode::Tc => ([Some(ingress), Some(egress)], FULL_PATHS_TC),
        AttachMode::Xdp | AttachMode::XdpGeneric => ([Some(xdp), None], FULL_PATHS_XDP),
    };
    for name in attached.into_iter().flatten() {
        load_program(ebpf, name)?;
    }
    if set == ProgramSet::Flowd {
        install_full_paths(ebpf, full)?;
    }
    Ok(())
}

/// A program array and its (index, program) entries.
pub type FullPaths = (&'static str, &'static [(u32, &'static str)]);

/// The full paths the TC programs tail-call, and the HTTP/2 walker the
/// full paths tail-call.
pub const FULL_PATHS_TC: FullPaths = (
    names::MAP_FULL_PATH_TC,
    &[
        (
            flowd_common::FULL_PATH_TC_INGRESS,
            names::PROG_TC_INGRESS_FULL,
        ),
        (
            flowd_common::FULL_PATH_TC_EGRESS,
            names::PROG_TC_EGRESS_FULL,
        ),
        (flowd_common::FULL_PATH_TC_H2, names::PROG_TC_H2),
    ],
);
/// The full path the XDP program tail-calls.
pub const FULL_PATHS_XDP: FullPaths = (
    names::MAP_FULL_PATH_XDP,
    &[(flowd_common::FULL_PATH_XDP, names::PROG_XDP_FULL)],
);

/// Entries of FLOW_CACHE for this machine: FLOW_CACHE_SLOTS for every
/// possible CPU (the programs index it by CPU number). Every loader of the
/// object sets it (`EbpfLoader::map_max_entries`); without it only CPU 0
/// has a cache.
pub fn flow_cache_entries() -> Result<u32, Error> {
    let cpus = aya::util::nr_cpus().map_err(|(what, source)| Error::Io {
        what: format!("counting possible CPUs ({what})"),
        source,
    })?;
    Ok(flowd_common::flow_cache_entries(
        u32::try_from(cpus).unwrap_or(u32::MAX),
    ))
}

/// Loads full-path programs and puts them into their program array, where
/// the attached (hit-path) programs tail-call them. The map stays in `ebpf`:
/// the kernel empties a program array when its last user-space reference
/// goes. Objects from before the split (FLOWD_EBPF_OBJECT) have no such map.
pub fn install_full_paths(ebpf: &mut Ebpf, (map_name, full): FullPaths) -> Result<(), Error> {
    let loaded = |ebpf: &Ebpf, name| ebpf.program(name).is_some_and(|p| p.fd().is_ok());
    if full.iter().all(|&(_, name)| loaded(ebpf, name)) {
        return Ok(());
    }
    if ebpf.map(map_name).is_none() {
        tracing::warn!(
            map = map_name,
            "the eBPF object has no full-path map (an older object)"
        );
        return Ok(());
    }
    let mut fds = Vec::with_capacity(full.len());
    for &(idx, name) in full {
        load_program(ebpf, name)?;
        let perr = |e: aya::programs::ProgramError| Error::ProgramLoad {
            program: name,
            source: Box::new(e),
        };
        let prog = ebpf.program(name).ok_or(Error::MissingProgram(name))?;
        let fd = prog
            .fd()
            .map_err(perr)?
            .try_clone()
            .map_err(|e| Error::Io {
                what: format!("duplicating the fd of program {name}"),
                source: e,
            })?;
        fds.push((idx, fd));
    }
    let map = ebpf.map_mut(map_name).ok_or(Error::MissingMap(map_name))?;
    let mut arr = ProgramArray::try_from(map).map_err(map_err(map_name))?;
    for (idx, fd) in &fds {
        arr.set(*idx, fd, 0).map_err(map_err(map_name))?;
    }
    Ok(())
}

/// Loads a program into the kernel unless it is loaded already.
pub(super) fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), Error> {
    let prog = ebpf.program_mut(name).ok_or(Error::MissingProgram(name))?;
    let perr = |e: aya::programs::ProgramError| Error::ProgramLoad {
        program: name,
        source: Box::new(e),
    };
    match prog {
        Program::SchedClassifier(p) => load_once_tc(p).map_err(perr),
        Program::Xdp(p) => load_once_xdp(p).map_err(perr),
        _ => Err(Error::InvalidConfig(format!(
            "program {name} is neither a TC classifier nor XDP"
        ))),
    }
}

// Loading is idempotent: interfaces that appear later come through here too.
fn load_once_tc(p: &mut SchedClassifier) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_ok() { Ok(()) } else { p.load() }
}

fn load_once_xdp(p: &mut Xdp) -> Result<(), aya::programs::ProgramError> {
    if p.fd().is_ok() { Ok(()) } else { p.load() }
}
