//! Debian's Prometheus for the tests: finding (or installing) the binary and
//! querying its HTTP API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn find_prometheus() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"));
    candidates.into_iter().find(|p| p.is_file())
}

/// The binary, installing Debian's package if allowed; Err = why not.
pub fn prometheus_binary() -> Result<PathBuf, String> {
    if let Some(p) = find_prometheus() {
        return Ok(p);
    }
    if std::env::var("FLOWD_TEST_NO_INSTALL").as_deref() == Ok("1") {
        return Err("not installed and FLOWD_TEST_NO_INSTALL=1".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not installed, and installing needs root".into());
    }
    eprintln!("metrics_prometheus: installing Debian's prometheus package (apt-get)…");
    let out = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get install prometheus failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    find_prometheus().ok_or_else(|| "installed, but no prometheus binary found".into())
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET on the Prometheus API; the JSON body.
pub async fn api_get(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    // Prometheus answers with a Content-Length body; chunked is not expected.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        panic!("unexpected chunked response from Prometheus: {head}");
    }
    serde_json::from_str(body).ok()
}

/// The single value of an instant query, once Prometheus has one.
pub async fn query(prom: SocketAddr, promql: &str) -> Option<f64> {
    let v = api_get(prom, &format!("/api/v1/query?query={}", url_encode(promql))).await?;
    let result = v.get("data")?.get("result")?.as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0].get("value")?.get(1)?.as_str()?.parse().ok()
}

pub async fn wait_for(prom: SocketAddr, promql: &str, deadline: Instant) -> Option<f64> {
    while Instant::now() < deadline {
        if let Some(v) = query(prom, promql).await {
            return Some(v);
        }
        // Polling an external process for a condition, with a deadline.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// An instant query's vector as `label value → sample value` for `label`
/// (`""` for a single series without it); `None` until Prometheus answers.
pub async fn query_by(
    prom: SocketAddr,
    promql: &str,
    label: &str,
) -> Option<BTreeMap<String, f64>> {
    let v = api_get(prom, &format!("/api/v1/query?query={}", url_encode(promql))).await?;
    let result = v.get("data")?.get("result")?.as_array()?;
    let mut out = BTreeMap::new();
    for r in result {
        let key = r
            .get("metric")
            .and_then(|m| m.get(label))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let value = r.get("value")?.get(1)?.as_str()?.parse().ok()?;
        out.insert(key, value);
    }
    Some(out)
}
