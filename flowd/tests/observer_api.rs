//! The Observer API over loopback gRPC, fed with synthetic flows: every RPC,
//! GetFlows selection (number/first/follow/since/until), filters, field
//! masks, errors and loss notices.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod observer_common;

use std::time::Duration;

use flowd::observer::ObserverConfig;
use flowd_proto::flow::{Flow, FlowFilter, LostEventSource};
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::{
    GetAgentEventsRequest, GetDebugEventsRequest, GetFlowsRequest, GetNamespacesRequest,
    GetNodesRequest, ServerStatusRequest,
};
use flowd_proto::pbjson_types::FieldMask;
use flowd_proto::relay::NodeState;
use observer_common::*;
use tonic::Code;

const HUBBLE_RING: i32 = LostEventSource::HubbleRingBuffer as i32;
const PERF_RING: i32 = LostEventSource::PerfEventRingBuffer as i32;

fn req() -> GetFlowsRequest {
    GetFlowsRequest::default()
}

fn range(a: u64, b: u64) -> Vec<u64> {
    (a..b).collect()
}

#[tokio::test]
async fn status_nodes_namespaces_and_unimplemented() {
    let mut srv = Server::start(config(63)).await;
    for i in 0..10 {
        srv.writer.push(&tcp_flow(i));
    }
    for i in 10..15 {
        srv.writer.push(&udp_flow(i));
    }
    srv.writer.report_kernel_lost(3, Some(1));
    let mut c = srv.client().await;

    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    // The buffer holds 15 flows and 1 loss notice (Hubble's ring counts both).
    assert_eq!(st.num_flows, 16);
    assert_eq!(st.max_flows, 63);
    assert_eq!(st.seen_flows, 15);
    assert_eq!(st.lost_kernel_events, 3);
    assert_eq!(st.num_connected_nodes.map(|v| v.value), Some(1));
    assert_eq!(st.num_unavailable_nodes.map(|v| v.value), Some(0));
    assert_eq!(st.version, flowd::observer::default_version());
    assert!(st.uptime_ns > 0);
    // 15 flows within the last minute.
    assert_eq!(st.flows_rate, 15.0 / 60.0);

    let nodes = c
        .get_nodes(GetNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.name, "node-a");
    assert_eq!(n.address, "10.0.0.1:4244");
    assert_eq!(n.state, NodeState::NodeConnected as i32);
    assert_eq!((n.num_flows, n.max_flows, n.seen_flows), (16, 63, 15));
    assert!(n.uptime_ns > 0);

    let ns = c
        .get_namespaces(GetNamespacesRequest {})
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    let ns: Vec<_> = ns
        .iter()
        .map(|n| (n.cluster.as_str(), n.namespace.as_str()))
        .collect();
    assert_eq!(ns, [("default", "ecommerce"), ("default", "kube-system")]);

    let e = c
        .get_agent_events(GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    let e = c
        .get_debug_events(GetDebugEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    srv.shutdown().await;
}

#[tokio::test]
async fn number_first_since_until() {
    let mut srv = Server::start(config(255)).await;
    for i in 0..100 {
        srv.writer.push(&tcp_flow(i));
    }
    let c = srv.client().await;
    let get = |r: GetFlowsRequest| {
        let mut c = c.clone();
        async move { collect(&mut c, r).await.flows }
    };

    // Last N, oldest first.
    assert_eq!(
        get(GetFlowsRequest {
            number: 10,
            ..req()
        })
        .await,
        range(90, 100)
    );
    // First N.
    let first = GetFlowsRequest {
        number: 10,
        first: true,
        ..req()
    };
    assert_eq!(get(first).await, range(0, 10));
    // Neither number nor follow: everything buffered.
    assert_eq!(get(req()).await, range(0, 100));
    // More than buffered: everything.
    assert_eq!(
        get(GetFlowsRequest {
            number: 1000,
            ..req()
        })
        .await,
        range(0, 100)
    );

    let since = Some(ts(20));
    let until = Some(ts(29));
    assert_eq!(
        get(GetFlowsRequest {
            since,
            until,
            ..req()
        })
        .await,
        range(20, 30)
    );
    // Last 5 within the time range.
    let r = GetFlowsRequest {
        since,
        until,
        number: 5,
        ..req()
    };
    assert_eq!(get(r).await, range(25, 30));
    // First 3 within the time range.
    let r = GetFlowsRequest {
        since,
        until,
        number: 3,
        first: true,
        ..req()
    };
    assert_eq!(get(r).await, range(20, 23));
    assert_eq!(
        get(GetFlowsRequest {
            until: Some(ts(4)),
            ..req()
        })
        .await,
        range(0, 5)
    );
    assert_eq!(
        get(GetFlowsRequest {
            since: Some(ts(95)),
            ..req()
        })
        .await,
        range(95, 100)
    );

    // Capacity: after 300 flows only the last 255 are kept.
    for i in 100..300 {
        srv.writer.push(&tcp_flow(i));
    }
    assert_eq!(get(req()).await, range(45, 300));
    let first = GetFlowsRequest {
        number: 2,
        first: true,
        ..req()
    };
    assert_eq!(get(first).await, vec![45, 46]);
    srv.shutdown().await;
}

fn dport(p: &str) -> FlowFilter {
    FlowFilter {
        destination_port: vec![p.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn whitelist_and_blacklist() {
    let mut srv = Server::start(config(255)).await;
    // i % 3 == 0: UDP to kube-system/coredns:53; i % 3 == 1: TCP to
    // ecommerce/order-service:8080; i % 3 == 2: HTTP responses with status
    // 200, 404 or 503 in turn.
    for i in 0..60 {
        let f = match i % 3 {
            0 => udp_flow(i),
            1 => tcp_flow(i),
            _ => http_flow(i, [200, 404, 503][(i as usize / 3) % 3]),
        };
        srv.writer.push(&f);
    }
    let c = srv.client().await;
    let get = |whitelist: Vec<FlowFilter>, blacklist: Vec<FlowFilter>, number: u64| {
        let mut c = c.clone();
        async move {
            let r = GetFlowsRequest {
                whitelist,
                blacklist,
                number,
                ..req()
            };
            collect(&mut c, r).await.flows
        }
    };
    let all: Vec<u64> = range(0, 60);
    let udp: Vec<u64> = all.iter().copied().filter(|i| i % 3 == 0).collect();
    let not_udp: Vec<u64> = all.iter().copied().filter(|i| i % 3 != 0).collect();

    assert_eq!(get(vec![dport("53")], vec![], 0).await, udp);
    assert_eq!(get(vec![], vec![dport("53")], 0).await, not_udp);
    // OR across filters.
    assert_eq!(get(vec![dport("53"), dport("8080")], vec![], 0).await, all);
    // AND within a filter: port 53 and pod in ecommerce → none (coredns is
    // in kube-system).
    let and = FlowFilter {
        destination_port: vec!["53".into()],
        destination_pod: vec!["ecommerce/".into()],
        ..Default::default()
    };
    assert_eq!(get(vec![and], vec![], 0).await, Vec::<u64>::new());
    // Whitelist minus blacklist.
    let pods = FlowFilter {
        destination_pod: vec!["ecommerce/order-service".into()],
        ..Default::default()
    };
    let http5xx = FlowFilter {
        http_status_code: vec!["5+".into()],
        ..Default::default()
    };
    let expect_5xx: Vec<u64> = all
        .iter()
        .copied()
        .filter(|i| i % 3 == 2 && (*i as usize / 3) % 3 == 2)
        .collect();
    assert_eq!(get(vec![http5xx.clone()], vec![], 0).await, expect_5xx);
    let expect: Vec<u64> = not_udp
        .iter()
        .copied()
        .filter(|i| !expect_5xx.contains(i))
        .collect();
    assert_eq!(get(vec![pods.clone()], vec![http5xx], 0).await, expect);
    // `number` counts matching flows: the last 4 UDP flows.
    assert_eq!(
        get(vec![dport("53")], vec![], 4).await,
        udp[udp.len() - 4..]
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let srv = Server::start(config(63)).await;
    let mut c = srv.client().await;
    let cases: Vec<(GetFlowsRequest, &[&str])> = vec![
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    source_ip: vec!["not-an-ip".into()],
                    ..Default::default()
                }],
                ..req()
            },
            &["whitelist[0].source_ip", "not-an-ip"],
        ),
        (
            GetFlowsRequest {
                blacklist: vec![
                    dport("53"),
                    FlowFilter {
                        http_path: vec!["(unclosed".into()],
                        ..Default::default()
                    },
                ],
                ..req()
            },
            &["blacklist[1].http_path", "(unclosed"],
        ),
        (
            GetFlowsRequest {
                whitelist: vec![FlowFilter {
                    http_status_code: vec!["abc".into()],
                    ..Default::default()
                }],
                ..req()
            },
            &["http_status_code", "abc"],
        ),
        (
            GetFlowsRequest {
                since: Some(flowd_proto::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..req()
            },
            &["since"],
        ),
        (
            GetFlowsRequest {
                field_mask: Some(FieldMask {
                    paths: vec!["source.pod_name".into(), "bogus".into()],
                }),
                ..req()
            },
            &["field_mask", "bogus"],
        ),
        (
            // Nested paths are checked too, as Hubble's server does.
            GetFlowsRequest {
                field_mask: Some(FieldMask {
                    paths: vec!["source.podName".into()],
                }),
                ..req()
            },
            &["field_mask", "source.podName", "flow.Endpoint"],
        ),
    ];
    for (r, words) in cases {
        let e = c.get_flows(r).await.expect_err("request must be refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        for w in words {
            assert!(e.message().contains(w), "{:?} lacks {w:?}", e.message());
        }
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn field_mask_keeps_only_the_listed_fields() {
    let mut srv = Server::start(config(63)).await;
    srv.writer.push(&http_flow(1, 404));
    let mut c = srv.client().await;
    let r = GetFlowsRequest {
        field_mask: Some(FieldMask {
            paths: vec!["time".into(), "source.pod_name".into(), "l7".into()],
        }),
        ..req()
    };
    let mut s = c.get_flows(r).await.unwrap().into_inner();
    let Some(ResponseTypes::Flow(f)) = s.message().await.unwrap().unwrap().response_types else {
        panic!("expected a flow");
    };
    let full = http_flow(1, 404);
    assert_eq!(f.time, full.time);
    assert_eq!(f.l7, full.l7);
    let src = f.source.expect("source kept");
    assert_eq!(src.pod_name, "frontend-7d9f8b6c5-x2x7k");
    assert!(src.namespace.is_empty() && src.labels.is_empty());
    assert!(f.destination.is_none() && f.ip.is_none() && f.l4.is_none());
    assert!(s.message().await.unwrap().is_none());
    srv.shutdown().await;
}

/// Every field of Hubble's Flow is a valid path, the deprecated `reply`,
/// `drop_reason` and `Summary` included (they select what the flow holds);
/// a path through a repeated message keeps that field of each.
#[tokio::test]
#[allow(deprecated)] // `reply`, `drop_reason`, `Summary`: deprecated by Hubble.
async fn field_mask_deprecated_fields_and_repeated_messages() {
    let mut srv = Server::start(config(63)).await;
    let mut full = http_flow(1, 404);
    full.reply = true;
    full.drop_reason = 133;
    full.summary = "HTTP/1.1 404 12ms (GET http://order-service/x)".into();
    srv.writer.push(&full);
    let mut c = srv.client().await;
    for (paths, want) in [
        (
            vec!["reply", "Summary"],
            Flow {
                reply: true,
                summary: full.summary.clone(),
                ..Default::default()
            },
        ),
        (
            vec!["drop_reason", "time"],
            Flow {
                time: full.time,
                drop_reason: 133,
                ..Default::default()
            },
        ),
        (
            // Fields flowd never fills are valid and stay empty.
            vec!["ip_trace_id", "tunnel", "file", "emitter", "trace_reason"],
            Flow::default(),
        ),
        (
            vec!["source.workloads.kind"],
            Flow {
                source: Some(flowd_proto::flow::Endpoint {
                    workloads: vec![flowd_proto::flow::Workload {
                        name: String::new(),
                        kind: "Deployment".into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ] {
        let r = GetFlowsRequest {
            field_mask: Some(FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            ..req()
        };
        let mut s = c.get_flows(r).await.unwrap().into_inner();
        let Some(ResponseTypes::Flow(f)) = s.message().await.unwrap().unwrap().response_types
        else {
            panic!("expected a flow for {paths:?}");
        };
        assert_eq!(f, want, "{paths:?}");
        assert!(s.message().await.unwrap().is_none());
    }
    srv.shutdown().await;
}

async fn next(s: &mut tonic::Streaming<flowd_proto::observer::GetFlowsResponse>) -> Collected {
    let mut c = Collected::default();
    let r = tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("a response in time")
        .expect("stream item")
        .expect("stream still open");
    record(&mut c, r);
    c
}

async fn take(
    s: &mut tonic::Streaming<flowd_proto::observer::GetFlowsResponse>,
    n: usize,
) -> Collected {
    let mut c = Collected::default();
    for _ in 0..n {
        let one = next(s).await;
        c.flows.extend(one.flows);
        c.lost.extend(one.lost);
    }
    c
}

#[tokio::test]
async fn follow_streams_live_flows_and_kernel_losses() {
    let mut srv = Server::start(config(255)).await;
    for i in 0..5 {
        srv.writer.push(&tcp_flow(i));
    }
    let mut c = srv.client().await;
    let follow = |r: GetFlowsRequest| {
        let mut c = c.clone();
        async move {
            c.get_flows(GetFlowsRequest { follow: true, ..r })
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Without number or since: starts now.
    let mut live = follow(req()).await;
    // Last 3, then live.
    let mut last3 = follow(GetFlowsRequest { number: 3, ..req() }).await;
    // From since, then live.
    let mut since = follow(GetFlowsRequest {
        since: Some(ts(3)),
        ..req()
    })
    .await;
    // Live, but only port 53.
    let mut udp_only = follow(GetFlowsRequest {
        whitelist: vec![dport("53")],
        ..req()
    })
    .await;
    for i in 5..10 {
        srv.writer
            .push(&if i % 2 == 0 { udp_flow(i) } else { tcp_flow(i) });
    }
    srv.writer.report_kernel_lost(7, None);
    srv.writer.push(&udp_flow(10));

    let kernel = vec![(PERF_RING, 7)];
    let c1 = take(&mut live, 7).await;
    assert_eq!((c1.flows, c1.lost), (range(5, 11), kernel.clone()));
    let c2 = take(&mut last3, 10).await;
    assert_eq!((c2.flows, c2.lost), (range(2, 11), kernel.clone()));
    let c3 = take(&mut since, 9).await;
    assert_eq!((c3.flows, c3.lost), (range(3, 11), kernel.clone()));
    let c4 = take(&mut udp_only, 4).await;
    assert_collected(c4, vec![6, 8, 10], kernel.clone());
    let st = c
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.lost_kernel_events, 7);
    srv.shutdown().await;
}

#[tokio::test]
async fn follow_until_ends_the_stream() {
    let mut srv = Server::start(config(255)).await;
    let mut c = srv.client().await;
    let now = std::time::SystemTime::now();
    let at = |secs: u64| flowd_proto::Timestamp::from(now + Duration::from_secs(secs));
    // Until a minute from now: ends at the first flow stamped after it.
    let r = GetFlowsRequest {
        follow: true,
        until: Some(at(60)),
        ..req()
    };
    let mut s = c.get_flows(r).await.unwrap().into_inner();
    for (i, secs) in [(1, 0), (2, 1), (3, 2), (4, 3600), (5, 3)] {
        let mut f = tcp_flow(i);
        f.time = Some(at(secs));
        srv.writer.push(&f);
    }
    let mut got = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("until stream ends")
        .unwrap()
    {
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => got.push(f.uuid),
            other => panic!("unexpected {other:?}"),
        }
    }
    let want: Vec<String> = [1, 2, 3].iter().map(|&i| tcp_flow(i).uuid).collect();
    assert_eq!(got, want);

    // Until a time already past: nothing live to wait for, the stream ends.
    let r = GetFlowsRequest {
        follow: true,
        until: Some(ts(0)),
        ..req()
    };
    let mut s = c.get_flows(r).await.unwrap().into_inner();
    let end = tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("past-until stream ends");
    assert!(end.unwrap().is_none());
    srv.shutdown().await;
}

fn assert_collected(c: Collected, flows: Vec<u64>, lost: Vec<(i32, u64)>) {
    assert_eq!((c.flows, c.lost), (flows, lost));
}

/// Every flow the writer pushed is either delivered, in order, or counted in
/// the LostEvent that precedes the next delivered flow.
fn assert_exact_accounting(c: &Collected, responses: &[Response], total: u64) {
    let mut expected = 0;
    for r in responses {
        match *r {
            Response::Flow(i) => {
                assert_eq!(i, expected, "flow out of order or lost without notice");
                expected += 1;
            }
            Response::Lost(src, n) => {
                assert_eq!(src, HUBBLE_RING);
                expected += n;
            }
        }
    }
    assert_eq!(expected, total);
    assert!(!c.lost.is_empty(), "the reader was never lapped");
}

enum Response {
    Flow(u64),
    Lost(i32, u64),
}

#[tokio::test]
async fn lapped_reader_gets_exact_lost_counts() {
    // A tiny buffer and a one-slot queue; the client reads nothing until the
    // writer is done, so its reader is lapped many times.
    let cfg = ObserverConfig {
        stream_queue: 1,
        ..config(15)
    };
    let mut srv = Server::start(cfg).await;
    let mut c = srv.client().await;
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..req()
        })
        .await
        .unwrap()
        .into_inner();
    const N: u64 = 20_000;
    for i in 0..N {
        srv.writer.push(&tcp_flow(i));
    }
    let mut seen = 0;
    let mut c = Collected::default();
    let mut responses = Vec::new();
    while seen < N {
        let r = next(&mut s).await;
        for &i in &r.flows {
            responses.push(Response::Flow(i));
            seen = i + 1;
        }
        for &(src, n) in &r.lost {
            responses.push(Response::Lost(src, n));
            seen += n;
        }
        c.flows.extend(r.flows);
        c.lost.extend(r.lost);
    }
    assert_exact_accounting(&c, &responses, N);
    srv.shutdown().await;
}

#[tokio::test]
async fn stream_cap_refuses_with_resource_exhausted() {
    let cfg = ObserverConfig {
        max_streams: 2,
        ..config(15)
    };
    let srv = Server::start(cfg).await;
    let mut c = srv.client().await;
    let follow = GetFlowsRequest {
        follow: true,
        ..req()
    };
    let a = c.get_flows(follow.clone()).await.unwrap().into_inner();
    let _b = c.get_flows(follow.clone()).await.unwrap().into_inner();
    let e = c
        .get_flows(follow.clone())
        .await
        .expect_err("third stream refused");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limit 2"), "{}", e.message());
    assert_eq!(srv.observer.stats().active_streams, 2);

    // Closing one frees its slot (the server notices the cancelled stream).
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while srv.observer.stats().active_streams != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream slot not freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.get_flows(follow).await.expect("a slot is free again");
    srv.shutdown().await;
}

#[test]
fn bad_capacity_is_refused() {
    for cap in [0, 1000, 65536] {
        let e = flowd::observer::Observer::new(config(cap))
            .err()
            .expect("refused");
        assert!(e.to_string().contains(&cap.to_string()), "{e}");
        assert!(
            e.to_string().contains("hubble-event-buffer-capacity"),
            "{e}"
        );
    }
}
