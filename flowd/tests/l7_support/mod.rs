//! The L7 end-to-end tests' harness: two network namespaces, the flowd
//! daemon on veth-a (client side, API on 127.0.0.1:4244 in namespace `a`),
//! its L7 flows read back through the Observer API as users read them.
#![allow(dead_code)] // each test binary uses part of it

use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use flowd_proto::flow::{
    Dns, Flow, FlowFilter, FlowType, Http, L7FlowType, layer4::Protocol, layer7::Record as L7Rec,
};
use flowd_proto::observer::{
    GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
};
use flowd_tests::{ChildGuard, Netns, Pair, wait_until};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_flowd");
pub const API: &str = "http://127.0.0.1:4244";
pub const CLIENT: &str = Pair::A4;
pub const SERVER: &str = Pair::B4;
pub const FLOWS_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the future made by `f` on a current-thread runtime, on a thread that
/// has entered `ns`: every socket it opens (clients, the gRPC channel)
/// belongs to `ns`.
pub fn block_on_in<F, Fut, R>(ns: &Netns, f: F) -> Result<R>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<R>>,
    R: Send + 'static,
{
    ns.run(move || -> Result<R> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })?
}

/// TCX programs attached to `ifname` in `ns` (ingress, egress).
pub fn tcx_programs(ns: &Netns, ifname: &'static str) -> Result<(usize, usize)> {
    use aya::programs::{SchedClassifier, TcAttachType};
    ns.run(move || -> Result<(usize, usize)> {
        let n = |t| -> Result<usize> { Ok(SchedClassifier::query_tcx(ifname, t)?.1.len()) };
        Ok((n(TcAttachType::Ingress)?, n(TcAttachType::Egress)?))
    })?
}

/// Two namespaces and the flowd daemon observing veth-a, attached before
/// the links come up (no message can be missed).
pub struct Lab {
    pub pair: Pair,
    pub daemon: ChildGuard,
}

impl Lab {
    pub fn start(tag: &str, extra: &[&str]) -> Result<Self> {
        let lab = Self::attach(Pair::create(tag)?, extra)?;
        lab.pair.up()?;
        Ok(lab)
    }

    /// Starts flowd on `pair`'s veth-a and waits until it is attached. When
    /// the links are up already, connections opened before flowd are seen
    /// from their middle; otherwise the caller brings them up.
    pub fn attach(pair: Pair, extra: &[&str]) -> Result<Self> {
        let mut cmd = pair.a.command(BIN);
        // `extra` last: a later `--set` of a key wins (metrics on, …).
        cmd.args([
            "-i",
            "veth-a",
            "--set",
            "hubble-listen-address=127.0.0.1:4244",
            "--set",
            "hubble-metrics-server=",
            "--set",
            "flowd-node-name=l7-e2e",
        ])
        .args(extra);
        let mut daemon = ChildGuard::spawn("flowd daemon", &mut cmd)?;
        wait_until("flowd attached to veth-a", Duration::from_secs(30), || {
            if let Some(st) = daemon.try_wait()? {
                bail!("flowd exited early: {st}");
            }
            Ok((tcx_programs(&pair.a, "veth-a")? == (1, 1)).then_some(()))
        })?;
        Ok(Self { pair, daemon })
    }

    /// The daemon is still running (bad input must never stop it).
    pub fn alive(&mut self) -> Result<()> {
        match self.daemon.try_wait()? {
            None => Ok(()),
            Some(st) => bail!("flowd exited: {st}"),
        }
    }

    /// Waits until `done` holds for the daemon's L7 flows, and returns them.
    pub fn l7_flows_when(
        &self,
        what: &'static str,
        done: impl Fn(&[Flow]) -> bool + Send + 'static,
    ) -> Result<Vec<Flow>> {
        block_on_in(&self.pair.a, move || async move {
            let deadline = Instant::now() + FLOWS_TIMEOUT;
            let mut c = loop {
                match ObserverClient::connect(API).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() > deadline => {
                        bail!("Observer API at {API}: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            loop {
                let flows = l7_flows(&mut c).await?;
                if done(&flows) {
                    return Ok(flows);
                }
                if Instant::now() > deadline {
                    bail!(
                        "timed out after {FLOWS_TIMEOUT:?} waiting for {what}; L7 flows: {flows:#?}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

impl Lab {
    /// The flows in the daemon's buffer that match `whitelist` (the server filters).
    pub fn flows_matching(&self, whitelist: Vec<FlowFilter>) -> Result<Vec<Flow>> {
        block_on_in(&self.pair.a, move || async move {
            let mut c = ObserverClient::connect(API).await?;
            let mut s = c
                .get_flows(GetFlowsRequest {
                    number: 65_535,
                    whitelist,
                    ..GetFlowsRequest::default()
                })
                .await?
                .into_inner();
            let mut v = Vec::new();
            while let Some(r) = s.message().await? {
                if let Some(ResponseTypes::Flow(f)) = r.response_types {
                    v.push(f);
                }
            }
            Ok(v)
        })
    }
}

/// Every L7 flow in the daemon's buffer.
pub async fn l7_flows(c: &mut ObserverClient<Channel>) -> Result<Vec<Flow>> {
    let mut s = c
        .get_flows(GetFlowsRequest {
            number: 65_535,
            ..GetFlowsRequest::default()
        })
        .await?
        .into_inner();
    let mut v = Vec::new();
    while let Some(r) = s.message().await? {
        if let Some(ResponseTypes::Flow(f)) = r.response_types
            && f.r#type == FlowType::L7 as i32
        {
            v.push(f);
        }
    }
    Ok(v)
}

pub fn l7_type(f: &Flow) -> Option<L7FlowType> {
    f.l7.as_ref()
        .and_then(|l| L7FlowType::try_from(l.r#type).ok())
}

pub fn http_of(f: &Flow) -> Option<&Http> {
    match f.l7.as_ref()?.record.as_ref()? {
        L7Rec::Http(h) => Some(h),
        _ => None,
    }
}

pub fn dns_of(f: &Flow) -> Option<&Dns> {
    match f.l7.as_ref()?.record.as_ref()? {
        L7Rec::Dns(d) => Some(d),
        _ => None,
    }
}

pub fn latency(f: &Flow) -> u64 {
    f.l7.as_ref().map_or(0, |l| l.latency_ns)
}

pub fn exchange(f: &Flow) -> u64 {
    f.l7.as_ref().map_or(0, |l| l.exchange_id)
}

/// (source address, destination address, source port, destination port).
pub fn endpoints(f: &Flow) -> (String, String, u32, u32) {
    let (src, dst) =
        f.ip.as_ref()
            .map(|i| (i.source.clone(), i.destination.clone()))
            .unwrap_or_default();
    let (sp, dp) = match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => (t.source_port, t.destination_port),
        Some(Protocol::Udp(u)) => (u.source_port, u.destination_port),
        _ => (0, 0),
    };
    (src, dst, sp, dp)
}

/// The path (and query) of a URL as flowd reports it (`http://host/path`).
pub fn path_of(url: &str) -> &str {
    url.strip_prefix(&format!("http://{SERVER}")).unwrap_or(url)
}
