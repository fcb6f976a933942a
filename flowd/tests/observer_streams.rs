//! 100 concurrent follow streams, one of them deliberately slow: the others
//! receive every flow in order, the slow one is told exactly what it missed,
//! and the buffer and per-stream queues stay within their bounds.
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod observer_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowd::observer::ObserverConfig;
use flowd_proto::flow::LostEventSource;
use flowd_proto::observer::GetFlowsRequest;
use flowd_proto::observer::get_flows_response::ResponseTypes;
use flowd_proto::observer::observer_client::ObserverClient;
use observer_common::*;

const STREAMS: usize = 100;
const CAPACITY: usize = 1023;
const QUEUE: usize = 16;
const N: u64 = 2000;
// Flows pushed before the writer waits for the fast readers; below the
// capacity so that fast readers are never lapped.
const BATCH: u64 = 250;

async fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_followers_one_slow() {
    let cfg = ObserverConfig {
        max_streams: 128,
        stream_queue: QUEUE,
        ..config(CAPACITY)
    };
    let mut srv = Server::start(cfg).await;
    let follow = GetFlowsRequest {
        follow: true,
        ..Default::default()
    };

    // Each client on its own connection, as separate `hubble observe`
    // processes would be (so the slow one cannot hold a shared HTTP/2
    // connection window).
    let received = Arc::new(AtomicU64::new(0));
    let mut fast = Vec::new();
    for _ in 0..STREAMS - 1 {
        let mut c = srv.client().await;
        let mut s = c.get_flows(follow.clone()).await.unwrap().into_inner();
        let received = received.clone();
        fast.push(tokio::spawn(async move {
            let mut flows = Vec::with_capacity(N as usize);
            let mut lost = Vec::new();
            while (flows.len() as u64) < N {
                match s.message().await {
                    Ok(Some(r)) => match r.response_types {
                        Some(ResponseTypes::Flow(f)) => {
                            flows.push(index_of(&f));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(ResponseTypes::LostEvents(l)) => {
                            lost.push(l.num_events_lost);
                            break;
                        }
                        _ => break,
                    },
                    _ => break,
                }
            }
            // Returned so the stream stays open until the checks below.
            (flows, lost, s)
        }));
    }
    // The slow client advertises HTTP/2's minimal windows (64 KiB), so
    // little of what it does not read can be in flight; the rest must stay
    // behind in the ring, not in a queue.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow_client = ObserverClient::new(channel);
    let mut slow = slow_client.get_flows(follow).await.unwrap().into_inner();
    assert_eq!(srv.observer.streams().len(), STREAMS);

    let fast_readers = (STREAMS - 1) as u64;
    let mut pushed = 0;
    while pushed < N {
        let end = (pushed + BATCH).min(N);
        for i in pushed..end {
            srv.writer.push(&tcp_flow(i));
        }
        pushed = end;
        // Bounded at every step, whatever the slow reader does.
        assert!(srv.observer.stats().num_flows <= CAPACITY as u64);
        for s in srv.observer.streams() {
            assert!(s.queued <= QUEUE, "stream queue over its bound: {s:?}");
        }
        let want = fast_readers * pushed;
        poll_until("fast readers", || received.load(Ordering::Relaxed) >= want).await;
    }

    let mut open = Vec::new();
    for t in fast {
        let (flows, lost, s) = t.await.unwrap();
        assert!(lost.is_empty(), "a fast reader lost events: {lost:?}");
        assert_eq!(flows, (0..N).collect::<Vec<_>>());
        open.push(s);
    }

    // The slow reader's task is parked behind its full queue, far behind.
    let infos = srv.observer.streams();
    assert_eq!(infos.len(), STREAMS);
    assert!(infos.iter().all(|s| s.queued <= QUEUE));
    let behind: Vec<_> = infos.iter().filter(|s| s.lag > CAPACITY as u64).collect();
    assert_eq!(behind.len(), 1, "{infos:?}");
    assert_eq!(srv.observer.stats().num_flows, CAPACITY as u64);

    // Now it reads: each flow it gets is the next one or follows a LostEvent
    // counting exactly the gap.
    let mut expected = 0;
    let mut notices = 0;
    while expected < N {
        let r = tokio::time::timeout(Duration::from_secs(30), slow.message())
            .await
            .expect("slow stream responds")
            .unwrap()
            .expect("slow stream open");
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => {
                assert_eq!(index_of(&f), expected, "flow lost without notice");
                expected += 1;
            }
            Some(ResponseTypes::LostEvents(l)) => {
                assert_eq!(l.source, LostEventSource::HubbleRingBuffer as i32);
                assert!(l.num_events_lost > 0);
                expected += l.num_events_lost;
                notices += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(expected, N);
    assert!(notices > 0, "the slow reader got no LostEvent");
    drop(open);
    srv.shutdown().await;
}
