//! Value parsers of the keys: Cilium's spellings of booleans, durations,
//! lists and addresses, and flowd's own value types.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::options::cluster::valid_cluster_name;
use crate::options::interfaces::InterfaceSpec;

pub(super) fn p_bool(v: &str) -> Result<bool, String> {
    // The spellings Go's strconv.ParseBool (Cilium) accepts.
    match v {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        _ => Err(String::new()),
    }
}

pub(super) fn p_u32(v: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = v.parse().map_err(|_| String::new())?;
    if n < min || n > max {
        return Err(String::new());
    }
    Ok(n)
}

/// `:port`, `ip:port` or `[v6]:port`; empty disables. `:port` binds all IPv4
/// addresses (works in network namespaces without IPv6).
pub(super) fn p_addr(v: &str) -> Result<Option<SocketAddr>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(port) = v.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| String::new())?;
        return Ok(Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )));
    }
    v.parse::<SocketAddr>().map(Some).map_err(|_| String::new())
}

/// Go-style durations as Cilium writes them (`5s`, `1m30s`, `500ms`, `1h`);
/// `0` is zero.
pub(super) fn p_duration(v: &str) -> Result<Duration, String> {
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v).map_err(|_| String::new())
}

/// Lists as Cilium's string slices accept them: commas and/or whitespace.
pub(super) fn p_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cilium's rule for `cluster-name`.
pub(super) fn p_cluster_name(v: &str) -> Result<String, String> {
    if valid_cluster_name(v) {
        Ok(v.to_string())
    } else {
        Err(String::new())
    }
}

pub(super) fn p_opt_string(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_string())
}

/// A stream of JSON objects (Hubble's allow/deny list format), e.g.
/// `{"source_pod":["ns/"]}{"verdict":["DROPPED"]}`, optionally as a JSON array.
pub(super) fn p_filters(v: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for item in serde_json::Deserializer::from_str(v).into_iter::<serde_json::Value>() {
        match item.map_err(|e| format!(" ({e})"))? {
            serde_json::Value::Array(a) => out.extend(a),
            other => out.push(other),
        }
    }
    if out.iter().any(|f| !f.is_object()) {
        return Err(" (every filter must be a JSON object)".to_string());
    }
    Ok(out)
}

pub(super) fn p_interfaces(v: &str) -> Result<Vec<InterfaceSpec>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<InterfaceSpec>()
                .map_err(|e| format!(" (entry {item:?}: {e})"))
        })
        .collect()
}

pub(super) fn p_ports(v: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for p in p_list(v) {
        let n: u16 = p.parse().map_err(|_| format!(" ({p:?} is not a port)"))?;
        if n == 0 {
            return Err(" (port 0)".to_string());
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

pub(super) fn default_queue_size() -> u32 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cpus.saturating_mul(1024)).min(16384) as u32
}

pub(super) fn host_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
