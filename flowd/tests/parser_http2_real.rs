//! The HTTP/2 parser on the bytes of real clients and servers: tonic's gRPC
//! client and server (the lab's Inventory service) and hyper's h2c client
//! and server, relayed and recorded on loopback, cut into segments and
//! turned into the kernel walker's records by the testkit's model, through
//! the Parser. The oracles are the clients' outcomes.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use flowd::parser::http2::testkit::{KernelModel, Rng, Side, keys, send_ts};
use flowd::parser::{HttpConfig, Parser, ParserConfig, RedactConfig};
use flowd_lab::grpc::{self, Call, Kind, SERVICE};
use flowd_proto::flow::layer7::Record;
use flowd_proto::flow::{Http, L7FlowType, grpc::Type as GrpcType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

type Chunks = Arc<Mutex<Vec<(Side, Vec<u8>)>>>;

/// Relays one connection from `listener` to `upstream`, recording what each
/// side sent, in the order it was read (before it is forwarded, so an
/// answer is always recorded after what it answers).
async fn relay(listener: TcpListener, upstream: SocketAddr, chunks: Chunks) {
    let (down, _) = listener.accept().await.unwrap();
    let up = TcpStream::connect(upstream).await.unwrap();
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let c1 = chunks.clone();
    let a = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = dr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            c1.lock().unwrap().push((Side::Client, buf[..n].to_vec()));
            if uw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let b = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = ur.read(&mut buf).await {
            if n == 0 {
                break;
            }
            chunks
                .lock()
                .unwrap()
                .push((Side::Server, buf[..n].to_vec()));
            if dw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let _ = tokio::join!(a, b);
}

/// The kernel walker's records of the recorded chunks (each chunk one
/// segment, sent at `send_ts(i)`); with `join`, the walker starts at that
/// byte of each direction, as for a connection open before flowd started.
fn records(chunks: &[(Side, Vec<u8>)], join: Option<[usize; 2]>) -> Vec<flowd::datapath::H2Record> {
    let mut streams = [Vec::new(), Vec::new()];
    for (side, b) in chunks {
        streams[*side as usize].extend_from_slice(b);
    }
    let (ck, sk) = keys(5, 40_000);
    let mut models = [
        KernelModel::new(&streams[0], ck, 1),
        KernelModel::new(&streams[1], sk, 2),
    ];
    if let Some(at) = join {
        models[0].join(at[0]);
        models[1].join(at[1]);
    }
    let mut at = [0usize; 2];
    let mut rng = Rng::new(1);
    let mut out = Vec::new();
    for (i, (side, b)) in chunks.iter().enumerate() {
        let s = *side as usize;
        let start = at[s];
        at[s] += b.len();
        if join.is_some_and(|j| start < j[s]) {
            continue;
        }
        out.extend(models[s].segment(&streams[s], start, at[s], send_ts(i), &mut rng));
    }
    out
}

/// One flow the parser gave.
struct Seen {
    response: bool,
    http: Http,
    exchange_id: u64,
    latency_ns: u64,
    unpaired: bool,
}

fn run(recs: &[flowd::datapath::H2Record]) -> (Vec<Seen>, Parser) {
    let mut p = Parser::new(ParserConfig {
        http: HttpConfig::new(&[], RedactConfig::default()).unwrap(),
        ..ParserConfig::default()
    });
    let mut out = Vec::new();
    for r in recs {
        for (flow, _) in p.h2_flows(r, 1) {
            let l7 = flow.l7.unwrap();
            let Some(Record::Http(h)) = l7.record else {
                panic!("not HTTP")
            };
            out.push(Seen {
                response: l7.r#type == L7FlowType::Response as i32,
                http: h,
                exchange_id: l7.exchange_id,
                latency_ns: l7.latency_ns,
                unpaired: l7.unpaired,
            });
        }
    }
    (out, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_grpc_calls_of_every_kind_and_status() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(grpc::serve(server));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let chunks: Chunks = Arc::default();
    let relayed = tokio::spawn(relay(front, server_addr, chunks.clone()));

    let mut client = grpc::connect(front_addr).await.unwrap();
    let statuses = [
        Code::Ok,
        Code::NotFound,
        Code::Internal,
        Code::Unavailable,
        Code::InvalidArgument,
    ];
    let mut plan = Vec::new();
    for kind in [
        Kind::Unary,
        Kind::ServerStreaming,
        Kind::ClientStreaming,
        Kind::Bidi,
    ] {
        for s in statuses {
            plan.push(Call::new(kind, s, 3));
        }
    }
    // Large fresh metadata: HPACK evictions in both tables.
    for i in 0..6 {
        let mut c = Call::new(Kind::Unary, Code::Ok, 1);
        c.header_bytes = 1500 + i * 100;
        c.behaviour.header_bytes = 1200 + i * 100;
        plan.push(c);
    }
    let mut outcomes = Vec::new();
    for c in &plan {
        outcomes.push(grpc::make(&mut client, c).await.unwrap());
    }
    drop(client);
    relayed.await.unwrap();
    let chunks = chunks.lock().unwrap().clone();

    let recs = records(&chunks, None);
    for r in recs.iter().take(12) {
        eprintln!(
            "rec port {} flags {} chunks {:?}",
            r.key.src_port,
            r.flags,
            r.chunks
                .iter()
                .map(|c| (c.seq, c.bytes.len(), c.bytes.get(..9).map(|b| b.to_vec())))
                .collect::<Vec<_>>()
        );
    }
    let (flows, p) = run(&recs);
    let reqs: Vec<_> = flows.iter().filter(|f| !f.response).collect();
    let resps: Vec<_> = flows.iter().filter(|f| f.response).collect();
    assert_eq!(
        (reqs.len(), resps.len()),
        (plan.len(), plan.len()),
        "{:?}",
        p.stats().http2
    );
    let authority = format!("http://{front_addr}");
    for ((req, resp), o) in reqs.iter().zip(&resps).zip(&outcomes) {
        let path = o.kind.path();
        assert_eq!(req.http.method, "POST");
        assert_eq!(req.http.url, format!("{authority}{path}"));
        assert!(!req.http.partial && !resp.http.partial);
        let g = req.http.grpc.as_ref().unwrap();
        assert_eq!(
            (g.service.as_str(), g.method.as_str()),
            (SERVICE, o.kind.method())
        );
        // Calls are sequential: each response pairs with its request.
        assert_eq!(resp.exchange_id, req.exchange_id);
        assert!(resp.latency_ns > 0 && !resp.unpaired);
        assert_eq!(resp.http.code, 200);
        let g = resp.http.grpc.as_ref().unwrap();
        assert_eq!(g.status_code, Some(o.code as u32), "{path}");
        assert!(g.reset.is_empty());
        if g.messages_exact {
            assert_eq!(
                (g.request_messages, g.response_messages),
                (o.requests, o.responses),
                "{path}"
            );
            let t = match (o.requests > 1, o.responses > 1) {
                (true, true) => GrpcType::BidiStreaming,
                (true, false) => GrpcType::ClientStreaming,
                (false, true) => GrpcType::ServerStreaming,
                (false, false) => GrpcType::Unary,
            };
            assert_eq!(g.r#type, t as i32, "{path}");
        }
        if o.kind == Kind::Unary {
            assert!(g.messages_exact, "{path}: one message each way");
        }
    }
    let s = p.stats().http2;
    assert_eq!((s.losses_parser, s.partial_messages), (0, 0));

    // The same connection joined in its middle (half of each direction's
    // bytes already gone): nothing reported is false.
    let totals = [Side::Client, Side::Server].map(|side| {
        chunks
            .iter()
            .filter(|(s, _)| *s == side)
            .map(|(_, b)| b.len())
            .sum::<usize>()
    });
    let (flows, p) = run(&records(&chunks, Some([totals[0] / 2, totals[1] / 2])));
    assert!(!flows.is_empty());
    for Seen {
        response, http: h, ..
    } in &flows
    {
        assert!(h.method.is_empty() || h.method == "POST");
        assert!(
            h.url.is_empty()
                || h.url.ends_with(&format!("/{SERVICE}/Reserve"))
                || [Kind::ServerStreaming, Kind::ClientStreaming, Kind::Bidi]
                    .iter()
                    .any(|k| h.url.ends_with(&k.path()))
        );
        if let Some(g) = &h.grpc
            && *response
            && let Some(code) = g.status_code
        {
            assert!(statuses.iter().any(|s| *s as u32 == code));
        }
    }
    // The kernel flags its sync on a connection seen from the middle as a
    // loss (what came before is unknown), once per direction; the parser
    // finds none of its own.
    let s = p.stats().http2;
    assert_eq!((s.losses_kernel, s.losses_parser), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_h2c_requests_have_no_grpc() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(grpc::serve_h2c(server));
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let chunks: Chunks = Arc::default();
    let relayed = tokio::spawn(relay(front, server_addr, chunks.clone()));
    let requests: Vec<(&str, String)> = (0..20)
        .map(|i| {
            let m = ["GET", "POST", "DELETE"][i % 3];
            (m, format!("/status/{}?i={i}", [200, 404, 503, 204][i % 4]))
        })
        .collect();
    let outcomes = grpc::h2c_requests(front_addr, "shop.local", &requests)
        .await
        .unwrap();
    relayed.await.unwrap();
    let chunks = chunks.lock().unwrap().clone();
    let (flows, p) = run(&records(&chunks, None));
    assert_eq!(flows.len(), 2 * outcomes.len());
    for o in &outcomes {
        let path = o.path.split('?').next().unwrap();
        let url = format!("http://shop.local{path}");
        let req = flows
            .iter()
            .filter(|f| !f.response && f.http.url == url && f.http.method == o.method)
            .map(|f| f.exchange_id)
            .collect::<Vec<_>>();
        assert!(!req.is_empty(), "{url}");
        let resp = flows
            .iter()
            .find(|f| f.response && req.contains(&f.exchange_id))
            .unwrap();
        assert_eq!(resp.http.code, u32::from(o.status));
        assert!(resp.http.grpc.is_none() && !resp.http.partial);
    }
    assert_eq!(p.stats().http2.partial_messages, 0);
}
