//! Debian's Prometheus for the tests: finding the binary and querying its
//! HTTP API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
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

/// The binary; Err says how to get it. Tests install nothing:
/// `scripts/setup.sh` installs Debian's `prometheus` package.
pub fn prometheus_binary() -> Result<PathBuf, String> {
    find_prometheus().ok_or_else(|| {
        "no prometheus binary in PATH or /usr/bin: run scripts/setup.sh (Debian's prometheus package)"
            .into()
    })
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

/// GET over HTTP/1.0 (the server closes the connection after the body, so
/// large answers are never chunked): the status line and the body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(String, String), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .map_err(|_| format!("GET {path}: no answer in 30 s"))?
        .map_err(|e| e.to_string())?;
    let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no header end"))?;
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

/// [`get`] of a Prometheus API path: the JSON body of a successful answer.
pub async fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let (head, body) = get(addr, path).await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {head}\n{body}"))?;
    if v.get("status").and_then(|s| s.as_str()) != Some("success") {
        return Err(format!("GET {path}: {v}"));
    }
    Ok(v)
}

/// One series of a range query: its labels and its (time, value) samples.
#[derive(Debug, Clone)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<(f64, f64)>,
}

/// `/api/v1/query_range` from `start` to `end` (Unix seconds) every `step` s.
pub async fn query_range(
    prom: SocketAddr,
    promql: &str,
    start: f64,
    end: f64,
    step: f64,
) -> Result<Vec<RangeSeries>, String> {
    let v = get_json(
        prom,
        &format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step}",
            url_encode(promql)
        ),
    )
    .await?;
    let result = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result array: {v}"))?;
    let mut out = Vec::new();
    for r in result {
        let labels = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let values = r["values"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter_map(|p| {
                        let t = p.get(0)?.as_f64()?;
                        // NaN, +Inf and -Inf come as strings too: parse() keeps them.
                        let v = p.get(1)?.as_str()?.parse::<f64>().ok()?;
                        Some((t, v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(RangeSeries { labels, values });
    }
    Ok(out)
}
