//! What the parser must report of a conversation, checked: complete and
//! right when flowd saw everything ([`complete`]), and never false when it
//! did not ([`truthful`]).

#![allow(deprecated)] // Flow.summary: Hubble deprecated it; its clients read it.

use flowd_proto::flow::{Flow, Http, L7FlowType, grpc::Type as GrpcType, layer7::Record};

use super::{Call, Conversation, KernelModel, Rng, Segmenting, keys, records, send_ts};
use crate::datapath::H2Record;
use crate::parser::Parser;
use crate::parser::http2::flow::{error_code_name, grpc_status_name};

/// One flow as the checks look at it.
#[derive(Clone, Debug)]
pub struct Got {
    pub response: bool,
    pub http: Http,
    pub exchange_id: u64,
    pub latency_ns: u64,
    pub unpaired: bool,
    pub flow: Flow,
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The parser's flows of `recs`, each checked to be an HTTP/2 record from
/// the right direction (requests from `client_port`'s side).
pub fn run_records(p: &mut Parser, recs: &[(usize, H2Record)]) -> Result<Vec<Got>, String> {
    let mut out = Vec::new();
    for (_, r) in recs {
        for (flow, dir) in p.h2_flows(r, 1_700_000_000_000_000_000 + r.header.ts_ns) {
            let l7 = flow.l7.clone().ok_or("flow without l7")?;
            let Some(Record::Http(http)) = l7.record.clone() else {
                return Err(format!("not HTTP: {flow:?}"));
            };
            check!(http.protocol == "HTTP/2", "protocol {:?}", http.protocol);
            let response = l7.r#type == L7FlowType::Response as i32;
            let src_port = flow.l4.as_ref().and_then(|l| match &l.protocol {
                Some(flowd_proto::flow::layer4::Protocol::Tcp(t)) => Some(t.source_port),
                _ => None,
            });
            // The testkit's server listens on 50051: responses come from it.
            check!(
                (src_port == Some(50051)) == response,
                "{} from port {src_port:?}",
                if response { "response" } else { "request" }
            );
            let key_dir = if response {
                flowd_common::DIR_EGRESS
            } else {
                flowd_common::DIR_INGRESS
            };
            check!(dir == key_dir, "hook direction {dir} of {http:?}");
            out.push(Got {
                response,
                http,
                exchange_id: l7.exchange_id,
                latency_ns: l7.latency_ns,
                unpaired: l7.unpaired,
                flow,
            });
        }
    }
    Ok(out)
}

pub fn url(c: &Call) -> String {
    format!("http://{}{}", c.authority, c.path)
}

/// Every call gave exactly its REQUEST and RESPONSE records, complete and right.
pub fn complete(conv: &Conversation, flows: &[Got]) -> Result<(), String> {
    check!(
        flows.len() == 2 * conv.expected.len(),
        "{} flows for {} calls: {flows:#?}",
        flows.len(),
        conv.expected.len()
    );
    for e in &conv.expected {
        let c = &e.call;
        let p = &c.path;
        let req: Vec<&Got> = flows
            .iter()
            .filter(|g| !g.response && g.http.url == url(c))
            .collect();
        check!(req.len() == 1, "{} requests of {p}", req.len());
        let req = req[0];
        check!(
            req.http.method == c.method,
            "{p}: method {}",
            req.http.method
        );
        check!(!req.http.partial, "{p}: request partial");
        check!(
            req.flow.summary == format!("HTTP/2 {} {}", c.method, url(c)),
            "{p}: summary {}",
            req.flow.summary
        );
        let resp: Vec<&Got> = flows
            .iter()
            .filter(|g| g.response && g.exchange_id == req.exchange_id)
            .collect();
        check!(resp.len() == 1, "{} responses of {p}", resp.len());
        let resp = resp[0];
        check!(
            !resp.unpaired && !resp.http.partial,
            "{p}: response {resp:?}"
        );
        let latency = send_ts(e.response_send) - send_ts(e.request_send);
        check!(
            resp.latency_ns == latency,
            "{p}: latency {}",
            resp.latency_ns
        );
        check!(
            resp.http.url == url(c) && resp.http.method == c.method,
            "{p}: {resp:?}"
        );
        let code = u32::from(c.status);
        check!(resp.http.code == code, "{p}: code {}", resp.http.code);
        let summary = format!(
            "HTTP/2 {code} {}ms ({} {})",
            latency / 1_000_000,
            c.method,
            url(c)
        );
        check!(resp.flow.summary == summary, "{p}: {}", resp.flow.summary);
        if !c.grpc {
            check!(
                req.http.grpc.is_none() && resp.http.grpc.is_none(),
                "{p}: gRPC on plain HTTP/2"
            );
            continue;
        }
        let (service, method) = c.path[1..].rsplit_once('/').ok_or("path")?;
        let rg = req.http.grpc.as_ref().ok_or("request without grpc")?;
        check!(
            (rg.service.as_str(), rg.method.as_str()) == (service, method),
            "{p}: {rg:?}"
        );
        check!(rg.status_code.is_none(), "{p}: status on a request");
        let g = resp.http.grpc.as_ref().ok_or("response without grpc")?;
        check!(
            (g.service.as_str(), g.method.as_str()) == (service, method),
            "{p}: {g:?}"
        );
        if let Some(code) = c.reset {
            check!(g.status_code.is_none(), "{p}: status of a reset stream");
            check!(g.reset == error_code_name(code), "{p}: reset {}", g.reset);
            check!(!g.messages_exact, "{p}: exact counts of a reset stream");
            continue;
        }
        check!(
            g.status_code == c.grpc_status,
            "{p}: status {:?}",
            g.status_code
        );
        let name = c.grpc_status.map_or("", grpc_status_name);
        check!(g.status_name == name, "{p}: status name {}", g.status_name);
        let msg = c.grpc_message.clone().unwrap_or_default();
        check!(g.message == msg, "{p}: message {:?}", g.message);
        let wire_status = resp
            .http
            .headers
            .iter()
            .find(|h| h.key == "grpc-status")
            .map(|h| h.value.clone());
        check!(
            wire_status == c.grpc_status.map(|s| s.to_string()),
            "{p}: grpc-status header {wire_status:?}"
        );
        let req_bytes: usize = c.request_messages.iter().map(|n| n + 5).sum();
        let resp_bytes: usize = c.response_messages.iter().map(|n| n + 5).sum();
        check!(
            (g.request_bytes, g.response_bytes) == (req_bytes as u64, resp_bytes as u64),
            "{p}: bytes {} {}",
            g.request_bytes,
            g.response_bytes
        );
        check!(
            g.messages_exact == e.messages_exact,
            "{p}: messages_exact {}",
            g.messages_exact
        );
        let (q, r) = (c.request_messages.len(), c.response_messages.len());
        let t = match (q > 1, r > 1) {
            (true, true) => GrpcType::BidiStreaming,
            (true, false) => GrpcType::ClientStreaming,
            (false, true) => GrpcType::ServerStreaming,
            (false, false) => GrpcType::Unary,
        };
        if e.messages_exact {
            check!(
                (g.request_messages as usize, g.response_messages as usize) == (q, r),
                "{p}: counts {} {}",
                g.request_messages,
                g.response_messages
            );
            check!(g.r#type == t as i32, "{p}: type {}", g.r#type);
        } else {
            check!(
                (g.request_messages, g.response_messages) == (0, 0),
                "{p}: inexact counts reported"
            );
            // The shape, when given, is the call's.
            check!(
                g.r#type == 0 || g.r#type == t as i32,
                "{p}: type {} without exact counts",
                g.r#type
            );
        }
    }
    Ok(())
}

/// No record says anything false: every field a record fills is the truth
/// of the call it belongs to (a request is matched by what it shows, a
/// response by its exchange id, an unpaired one against every call).
pub fn truthful(calls: &[Call], flows: &[Got]) -> Result<(), String> {
    let mut by_exchange = std::collections::HashMap::new();
    for g in flows.iter().filter(|g| !g.response) {
        let cands: Vec<&Call> = calls
            .iter()
            .filter(|c| {
                (g.http.url.is_empty() || g.http.url == url(c) || g.http.url == c.path)
                    && (g.http.method.is_empty() || g.http.method == c.method)
                    && g.http.grpc.as_ref().is_none_or(|gr| {
                        c.grpc && c.path == format!("/{}/{}", gr.service, gr.method)
                    })
            })
            .collect();
        check!(!cands.is_empty(), "request matches no call: {:?}", g.http);
        if !g.http.partial {
            check!(
                cands.iter().any(|c| g.http.url == url(c)),
                "complete request with URL {}",
                g.http.url
            );
        }
        by_exchange.insert(g.exchange_id, cands);
    }
    for g in flows.iter().filter(|g| g.response) {
        let cands: Vec<&Call> = match by_exchange.get(&g.exchange_id) {
            Some(c) if !g.unpaired => c.clone(),
            _ => calls.iter().collect(),
        };
        let ok = cands.iter().any(|c| {
            (g.http.code == 0 || g.http.code == u32::from(c.status))
                && g.http.grpc.as_ref().is_none_or(|gr| {
                    c.grpc
                        && (gr.status_code.is_none() || gr.status_code == c.grpc_status)
                        && (gr.reset.is_empty() || c.reset.is_some())
                        && (!gr.messages_exact
                            || (gr.request_messages as usize == c.request_messages.len()
                                && gr.response_messages as usize == c.response_messages.len()))
                })
        });
        check!(ok, "response matches no call: {:?}", g.http);
    }
    Ok(())
}

/// A conversation's records when the kernel joins it at send `join`: the
/// first record of each direction after it is flagged `flags` (sends are
/// frame-aligned: it starts at a header). The kernel flags both its
/// synchronisation on a connection open before flowd started and its
/// resynchronisation after a loss H2_F_START|H2_F_LOST; H2_F_START alone
/// is a connection's start.
pub fn joined_records(
    conv: &Conversation,
    join: usize,
    flags: u8,
    seg: &Segmenting,
    rng: &mut Rng,
) -> Vec<(usize, H2Record)> {
    let (c, s) = keys(3, 41_000);
    let mut started = [false; 2];
    let mut out = Vec::new();
    for (i, mut r) in records(&conv.wire, c, s, seg, rng) {
        if i < join {
            continue;
        }
        let side = usize::from(r.key.src_port != 41_000);
        if !started[side] {
            if r.flags != 0 || r.chunks.is_empty() {
                continue; // a duplicate of a record before the join
            }
            r.flags = flags;
            started[side] = true;
        }
        out.push((i, r));
    }
    out
}

/// A conversation's records with send `victim` lost before the kernel walked
/// it (`noticed`: the kernel flags its next record; else only flowd's own
/// walk can tell).
pub fn lossy_records(
    conv: &Conversation,
    victim: usize,
    noticed: bool,
    rng: &mut Rng,
) -> Vec<(usize, H2Record)> {
    let (c, s) = keys(9, 42_000);
    let mut models = [
        KernelModel::new(&conv.wire.client, c, 77),
        KernelModel::new(&conv.wire.server, s, 99),
    ];
    let mut at = [0usize; 2];
    let mut recs = Vec::new();
    for (i, &(side, end)) in conv.wire.sends.iter().enumerate() {
        let si = side as usize;
        let stream = if si == 0 {
            &conv.wire.client
        } else {
            &conv.wire.server
        };
        if i == victim {
            models[si].lose(at[si], end, noticed);
        } else {
            for r in models[si].segment(stream, at[si], end, send_ts(i), rng) {
                recs.push((i, r));
            }
        }
        at[si] = end;
    }
    recs
}
