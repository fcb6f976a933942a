//! The `flow.HTTP` records (with `flow.GRPC`) of an HTTP/2 request and of
//! its response.

use flowd_proto::flow::{Grpc, Http, HttpHeader, grpc::Type as GrpcType};

use super::streams::{Head, Request, Stream};
use crate::parser::HttpConfig;
use crate::parser::http::h2_url;

/// `flow.HTTP.protocol` of HTTP/2 records (Cilium's proxy says the same).
pub const PROTOCOL: &str = "HTTP/2";

/// The canonical name of a gRPC status code ("" above 16).
pub fn grpc_status_name(code: u32) -> &'static str {
    flowd_proto::names::grpc_status_name(code).unwrap_or("")
}

/// RFC 9113 §7 error code names (RST_STREAM, GOAWAY).
pub fn error_code_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    match NAMES.get(code as usize) {
        Some(n) => (*n).to_string(),
        None => format!("0x{code:x}"),
    }
}

/// `/package.Service/Method` → ("package.Service", "Method"); None for a
/// path of another shape.
pub fn grpc_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.rsplit_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains(['?', '#']))
        .then_some((service, method))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec); an invalid
/// escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn headers(h: &[(String, String)]) -> Vec<HttpHeader> {
    h.iter()
        .map(|(k, v)| HttpHeader {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn url(head: &Head, cfg: &HttpConfig) -> String {
    head.path.as_deref().map_or_else(String::new, |p| {
        h2_url(
            head.scheme.as_deref(),
            head.authority.as_deref(),
            p,
            cfg.redact(),
        )
    })
}

fn grpc_call(head: &Head) -> Grpc {
    let (service, method) = head.path.as_deref().and_then(grpc_path).unwrap_or_default();
    Grpc {
        service: service.to_string(),
        method: method.to_string(),
        ..Grpc::default()
    }
}

/// The REQUEST record.
pub fn request(req: &Request, cfg: &HttpConfig) -> Http {
    let h = &req.head;
    Http {
        code: 0,
        method: h.method.clone().unwrap_or_default(),
        url: url(h, cfg),
        protocol: PROTOCOL.to_string(),
        headers: headers(&h.headers),
        url_truncated: false,
        grpc: h.is_grpc().then(|| grpc_call(h)),
        partial: req.partial,
    }
}

/// How the response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// END_STREAM from the server.
    Complete,
    /// RST_STREAM with this error code.
    Reset(u32),
    /// The connection went away (GOAWAY, closed): no status.
    Gone,
}

/// The RESPONSE record.
pub fn response(s: &Stream, end: End, cfg: &HttpConfig) -> Http {
    let resp = s.response.as_ref();
    let req = s.request.as_ref();
    let mut hdrs = Vec::new();
    for h in [resp, s.trailers.as_ref()].into_iter().flatten() {
        hdrs.extend(headers(&h.headers));
    }
    let grpc = req.is_some_and(|r| r.head.is_grpc()) || resp.is_some_and(Head::is_grpc);
    let grpc = grpc.then(|| {
        let mut g = req.map_or_else(Grpc::default, |r| grpc_call(&r.head));
        // grpc-status is in the trailers, or in the only head of a
        // trailers-only response; not when the stream was reset or cut.
        let status_head = match end {
            End::Complete => s.trailers.as_ref().or(resp),
            End::Reset(_) | End::Gone => s.trailers.as_ref(),
        };
        if let Some(h) = status_head {
            g.status_code = h.grpc_status.as_deref().and_then(|v| v.parse::<u32>().ok());
            g.status_name = g.status_code.map_or("", grpc_status_name).to_string();
            g.message = h
                .grpc_message
                .as_deref()
                .map(|m| {
                    // A redacted grpc-message stays redacted.
                    let v = cfg.header_value("grpc-message", m.as_bytes());
                    if v == m { percent_decode(m) } else { v }
                })
                .unwrap_or_default();
        }
        // The client's count is known whole only once it ended its side
        // (END_STREAM): a lost last DATA frame is noticed only at the next
        // piece, which may come after the response ended.
        let exact = s.client.exact && s.server.exact && s.client_ended && end == End::Complete;
        g.messages_exact = exact;
        if exact {
            g.request_messages = s.client.messages;
            g.response_messages = s.server.messages;
        }
        // The shape needs only "one or more than one" per side: known for
        // streams of large messages even when frames hide the counts.
        let client_many = s.client.many(s.client_ended);
        let server_many = s.server.many(end == End::Complete);
        if let (Some(c), Some(s)) = (client_many, server_many) {
            g.r#type = match (c, s) {
                (true, true) => GrpcType::BidiStreaming,
                (true, false) => GrpcType::ClientStreaming,
                (false, true) => GrpcType::ServerStreaming,
                (false, false) => GrpcType::Unary,
            } as i32;
        }
        g.request_bytes = s.client.bytes;
        g.response_bytes = s.server.bytes;
        if let End::Reset(code) = end {
            g.reset = error_code_name(code);
        }
        g
    });
    Http {
        code: resp.and_then(|h| h.status).map_or(0, u32::from),
        method: req.and_then(|r| r.head.method.clone()).unwrap_or_default(),
        url: req.map_or_else(String::new, |r| url(&r.head, cfg)),
        protocol: PROTOCOL.to_string(),
        headers: hdrs,
        url_truncated: false,
        grpc,
        partial: s.response_partial || req.is_some_and(|r| r.partial),
    }
}
