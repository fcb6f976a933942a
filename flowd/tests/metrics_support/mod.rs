//! Helpers shared by the metrics tests: synthetic flows and a parser of the
//! text exposition (so tests assert on what a scraper sees).

#![allow(dead_code)]

pub mod prometheus;

use std::collections::BTreeMap;

use flowd_proto::flow::{
    CiliumEventType, Dns, Endpoint, Flow, FlowType, Http, Ip, IpVersion, L7FlowType, Layer4,
    Layer7, TcpFlags, TraceContext, TraceObservationPoint, TraceParent, TraceReason,
    TrafficDirection, Verdict, Workload, layer4, layer7,
};

/// The pod-veth observation point enrichment gives an L7 record with this
/// exchange direction: at the client (EGRESS) the request leaves the pod and
/// the reply enters it; at the server (INGRESS) the other way round.
pub fn pod_point(dir: TrafficDirection, reply: bool) -> i32 {
    let leaving = (dir == TrafficDirection::Egress) != reply;
    if leaving {
        TraceObservationPoint::FromEndpoint as i32
    } else {
        TraceObservationPoint::ToEndpoint as i32
    }
}

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of Prometheus text or OpenMetrics (exemplars,
/// comments and `# EOF` are skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => panic!("bad sample line {line:?}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut key = String::new();
            let end;
            loop {
                let (i, c) = chars.next().expect("unterminated labels");
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'));
                        let mut v = String::new();
                        loop {
                            let (_, c) = chars.next().expect("unterminated value");
                            match c {
                                '\\' => match chars.next().map(|(_, c)| c) {
                                    Some('n') => v.push('\n'),
                                    Some(o) => v.push(o),
                                    None => panic!("bad escape"),
                                },
                                '"' => break,
                                o => v.push(o),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), v);
                    }
                    o => key.push(o),
                }
            }
            rest = &r[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample with exactly these labels, if any.
pub fn get(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(hits.len() <= 1, "duplicate samples for {name} {labels:?}");
    hits.first().map(|s| s.value)
}

/// Number of samples named `name`.
pub fn count(samples: &[Sample], name: &str) -> usize {
    samples.iter().filter(|s| s.name == name).count()
}

/// Sum of all samples named `name`.
pub fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

pub fn pod(ns: &str, pod: &str, workload: &str, app: &str) -> Endpoint {
    Endpoint {
        namespace: ns.to_string(),
        pod_name: pod.to_string(),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        workloads: vec![Workload {
            name: workload.to_string(),
            kind: "Deployment".to_string(),
        }],
        ..Endpoint::default()
    }
}

pub fn world() -> Endpoint {
    Endpoint {
        labels: vec!["reserved:world".to_string()],
        ..Endpoint::default()
    }
}

fn ip(src: &str, dst: &str) -> Option<Ip> {
    let v6 = src.contains(':');
    Some(Ip {
        source: src.to_string(),
        destination: dst.to_string(),
        ip_version: if v6 { IpVersion::IPv6 } else { IpVersion::IPv4 } as i32,
        ..Ip::default()
    })
}

/// An L3/L4 TCP flow record as the parser emits it (trace event).
pub fn tcp(
    src: (&str, u32),
    dst: (&str, u32),
    flags: TcpFlags,
    verdict: Verdict,
    is_reply: Option<bool>,
) -> Flow {
    Flow {
        verdict: verdict as i32,
        ip: ip(src.0, dst.0),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Tcp(flowd_proto::flow::Tcp {
                source_port: src.1,
                destination_port: dst.1,
                flags: Some(flags),
            })),
        }),
        r#type: FlowType::L3L4 as i32,
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        is_reply: is_reply.map(|v| v.into()),
        // As the parser sets it: the SYN's record opens the connection.
        trace_reason: reason(is_reply, flags.syn && !flags.ack) as i32,
        ..Flow::default()
    }
}

/// The parser's trace reason of an L3/L4 record (`first`: the record that
/// creates the request direction's entry).
pub fn reason(is_reply: Option<bool>, first: bool) -> TraceReason {
    match is_reply {
        Some(true) => TraceReason::Reply,
        Some(false) if first => TraceReason::New,
        Some(false) => TraceReason::Established,
        None => TraceReason::Unknown,
    }
}

pub fn udp(src: (&str, u32), dst: (&str, u32), is_reply: Option<bool>) -> Flow {
    Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip(src.0, dst.0),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(flowd_proto::flow::Udp {
                source_port: src.1,
                destination_port: dst.1,
            })),
        }),
        r#type: FlowType::L3L4 as i32,
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        is_reply: is_reply.map(|v| v.into()),
        // Each synthetic UDP record stands for a conversation's first.
        trace_reason: reason(is_reply, true) as i32,
        ..Flow::default()
    }
}

pub fn icmp4(src: &str, dst: &str, t: u32, c: u32) -> Flow {
    Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip(src, dst),
        l4: Some(Layer4 {
            protocol: Some(layer4::Protocol::IcmPv4(flowd_proto::flow::IcmPv4 {
                r#type: t,
                code: c,
            })),
        }),
        r#type: FlowType::L3L4 as i32,
        event_type: Some(CiliumEventType {
            r#type: 4,
            sub_type: 0,
        }),
        ..Flow::default()
    }
}

pub fn icmp6(src: &str, dst: &str, t: u32, c: u32) -> Flow {
    let mut f = icmp4(src, dst, 0, 0);
    f.l4 = Some(Layer4 {
        protocol: Some(layer4::Protocol::IcmPv6(flowd_proto::flow::IcmPv6 {
            r#type: t,
            code: c,
        })),
    });
    f
}

/// The two records of one HTTP exchange as seen at one observation point:
/// the request (client → server) and the response (server → client), both
/// with the exchange's traffic direction relative to the observed endpoint.
#[allow(clippy::too_many_arguments)]
pub fn http_exchange(
    client: (&Endpoint, &str),
    server: (&Endpoint, &str),
    method: &str,
    code: u32,
    latency_ns: u64,
    dir: TrafficDirection,
    trace_id: Option<&str>,
) -> [Flow; 2] {
    let l7 = |typ: L7FlowType, code: u32, latency_ns: u64| {
        Some(Layer7 {
            r#type: typ as i32,
            latency_ns,
            record: Some(layer7::Record::Http(Http {
                code,
                method: method.to_string(),
                url: "http://frontend/cart".to_string(),
                protocol: "HTTP/1.1".to_string(),
                ..Http::default()
            })),
            ..Layer7::default()
        })
    };
    let base = |src: (&Endpoint, &str), dst: (&Endpoint, &str), reply: bool| Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip(src.1, dst.1),
        source: Some(src.0.clone()),
        destination: Some(dst.0.clone()),
        r#type: FlowType::L7 as i32,
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        traffic_direction: dir as i32,
        trace_observation_point: pod_point(dir, reply),
        is_reply: Some(reply.into()),
        trace_context: trace_id.map(|t| TraceContext {
            parent: Some(TraceParent {
                trace_id: t.to_string(),
            }),
        }),
        ..Flow::default()
    };
    let mut req = base(client, server, false);
    req.l7 = l7(L7FlowType::Request, 0, 0);
    let mut resp = base(server, client, true);
    resp.l7 = l7(L7FlowType::Response, code, latency_ns);
    [req, resp]
}

/// A DNS record (query or response).
#[allow(clippy::too_many_arguments)]
pub fn dns(
    src: (&Endpoint, &str),
    dst: (&Endpoint, &str),
    response: bool,
    query: &str,
    qtype: &str,
    rcode: u32,
    ips: &[&str],
    rrtypes: &[&str],
    dir: TrafficDirection,
) -> Flow {
    Flow {
        verdict: Verdict::Forwarded as i32,
        ip: ip(src.1, dst.1),
        source: Some(src.0.clone()),
        destination: Some(dst.0.clone()),
        r#type: FlowType::L7 as i32,
        event_type: Some(CiliumEventType {
            r#type: 129,
            sub_type: 0,
        }),
        traffic_direction: dir as i32,
        trace_observation_point: pod_point(dir, response),
        is_reply: Some(response.into()),
        l7: Some(Layer7 {
            r#type: if response {
                L7FlowType::Response
            } else {
                L7FlowType::Request
            } as i32,
            record: Some(layer7::Record::Dns(Dns {
                query: query.to_string(),
                ips: ips.iter().map(|s| s.to_string()).collect(),
                rcode,
                qtypes: vec![qtype.to_string()],
                rrtypes: rrtypes.iter().map(|s| s.to_string()).collect(),
                ..Dns::default()
            })),
            ..Layer7::default()
        }),
        ..Flow::default()
    }
}

pub fn flags(s: &str) -> TcpFlags {
    let mut f = TcpFlags::default();
    for p in s.split('|') {
        match p {
            "SYN" => f.syn = true,
            "ACK" => f.ack = true,
            "FIN" => f.fin = true,
            "RST" => f.rst = true,
            "PSH" => f.psh = true,
            "" => {}
            o => panic!("flag {o}"),
        }
    }
    f
}

/// GET /metrics over plain HTTP/1.1 (text format); the body.
pub async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .context("scrape timed out")??;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "scrape of {addr}: {head}");
    Ok(body.to_string())
}
