//! Attachment follows pods: the host-side veths of this node's pods.
//!
//! A routed CNI (Calico, Cilium, the lab) gives each pod a host route
//! `POD_IP/32 dev <host veth>` (`/128` for IPv6). The veth of a pod is found
//! by dumping the routing tables once and matching the pod's addresses to
//! unicast host routes whose output interface is a veth. (The other way, the
//! veth peer's ifindex inside the pod, needs to enter the pod's namespace;
//! routes do not.) The datapath attaches to [`AttachPlan::attach`] and
//! detaches from [`AttachPlan::detach`]; the store learns which ifindex is
//! which pod for the flows' observation points.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use futures::stream::BoxStream;
use rtnetlink::Handle;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};

use super::Error;
use super::model::{ObjectKey, Pod};
use super::store::{EndpointStore, Interface, InterfaceKind};

/// A pod's host-side veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVeth {
    pub pod: ObjectKey,
    /// The address whose host route led to the veth.
    pub ip: IpAddr,
    pub ifname: String,
    pub ifindex: u32,
}

/// What to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachPlan {
    pub attach: Vec<PodVeth>,
    pub detach: Vec<PodVeth>,
    /// The first plan made after the sources' first full pod list: once it
    /// is applied, every pod of that list is attached (see [`follow`]).
    pub listing: bool,
}

impl AttachPlan {
    pub fn is_empty(&self) -> bool {
        self.attach.is_empty() && self.detach.is_empty()
    }
}

fn route_host_dest(r: &RouteMessage) -> Option<(IpAddr, u32)> {
    let full = match r.header.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if r.header.kind != RouteType::Unicast || r.header.destination_prefix_length != full {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some((dst?, oif?))
}

/// Unicast host routes (`/32`, `/128`) of every table: address → output ifindex.
pub async fn host_routes(handle: &Handle) -> Result<HashMap<IpAddr, u32>, Error> {
    let mut out = HashMap::new();
    let v4 = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
    let v6 = rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build();
    for msg in [v4, v6] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(r) = routes
            .try_next()
            .await
            .map_err(|e| Error::Netlink(format!("dumping routes: {e}")))?
        {
            if let Some((ip, oif)) = route_host_dest(&r) {
                out.entry(ip).or_insert(oif);
            }
        }
    }
    Ok(out)
}

/// Veth interfaces: ifindex → name.
pub async fn veth_links(handle: &Handle) -> Result<HashMap<u32, String>, Error> {
    let mut out = HashMap::new();
    let mut links = handle.link().get().execute();
    while let Some(l) = links
        .try_next()
        .await
        .map_err(|e| Error::Netlink(format!("listing links: {e}")))?
    {
        let mut name = None;
        let mut veth = false;
        for a in &l.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    veth |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)))
                }
                _ => {}
            }
        }
        if let (Some(name), true) = (name, veth) {
            out.insert(l.header.index, name);
        }
    }
    Ok(out)
}

/// Pure matching: the veth of each pod (first address with a host route out
/// a veth), sorted by pod. Pods without one (not wired yet, or not on this
/// node) are left out.
pub fn match_pods(
    pods: &[Arc<Pod>],
    routes: &HashMap<IpAddr, u32>,
    veths: &HashMap<u32, String>,
) -> Vec<PodVeth> {
    let mut out: Vec<PodVeth> = pods
        .iter()
        .filter_map(|p| {
            p.ips.iter().find_map(|ip| {
                let idx = routes.get(ip)?;
                let name = veths.get(idx)?;
                Some(PodVeth {
                    pod: p.key.clone(),
                    ip: *ip,
                    ifname: name.clone(),
                    ifindex: *idx,
                })
            })
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

/// The host-side veths of `pods`, from the routes of the current network
/// namespace (the one `handle`'s socket was opened in).
pub async fn discover_pod_veths(handle: &Handle, pods: &[Arc<Pod>]) -> Result<Vec<PodVeth>, Error> {
    let routes = host_routes(handle).await?;
    let veths = veth_links(handle).await?;
    Ok(match_pods(pods, &routes, &veths))
}

/// Remembers what is attached and computes the changes.
#[derive(Debug, Default)]
pub struct PodVethTracker {
    current: BTreeMap<u32, PodVeth>,
}

impl PodVethTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// What is attached now, by ifindex.
    pub fn current(&self) -> &BTreeMap<u32, PodVeth> {
        &self.current
    }

    /// The changes from the current state to `desired`, which becomes
    /// current (both lists sorted by pod). A veth that now belongs to another pod is detached and
    /// attached again (its flows change owner).
    pub fn plan(&mut self, desired: Vec<PodVeth>) -> AttachPlan {
        let desired: BTreeMap<u32, PodVeth> = desired.into_iter().map(|v| (v.ifindex, v)).collect();
        let mut plan = AttachPlan::default();
        for (idx, old) in &self.current {
            if desired
                .get(idx)
                .is_none_or(|new| new.pod != old.pod || new.ifname != old.ifname)
            {
                plan.detach.push(old.clone());
            }
        }
        for (idx, new) in &desired {
            if self
                .current
                .get(idx)
                .is_none_or(|old| old.pod != new.pod || old.ifname != new.ifname)
            {
                plan.attach.push(new.clone());
            }
        }
        self.current = desired;
        plan.attach.sort_by(|a, b| a.pod.cmp(&b.pod));
        plan.detach.sort_by(|a, b| a.pod.cmp(&b.pod));
        plan
    }

    /// Discovers the veths of the store's local pods, updates the store's
    /// interface table and returns the changes.
    pub async fn reconcile(
        &mut self,
        handle: &Handle,
        store: &EndpointStore,
    ) -> Result<AttachPlan, Error> {
        let pods = store.snapshot().local_pods().to_vec();
        let desired = discover_pod_veths(handle, &pods).await?;
        let plan = self.plan(desired);
        if !plan.is_empty() {
            store.set_pod_veths(self.current.values().map(|v| Interface {
                ifindex: v.ifindex,
                name: v.ifname.clone(),
                kind: InterfaceKind::PodVeth { pod: v.pod.clone() },
            }));
        }
        Ok(plan)
    }
}

/// Follows the store: after every change of it, and every `resync` (routes
/// can appear after the pod object), yields the non-empty plans. Errors are
/// yielded and the stream goes on. The first plan made once the sources have
/// listed their pods is marked [`AttachPlan::listing`] and yielded even when
/// empty: by then the store's interface table reflects that list.
pub fn follow(
    store: Arc<EndpointStore>,
    handle: Handle,
    resync: Duration,
) -> BoxStream<'static, Result<AttachPlan, Error>> {
    let mut changes = store.subscribe();
    let mut tracker = PodVethTracker::new();
    let mut listing_sent = false;
    let stream = async_stream_lite(move |tx| async move {
        loop {
            let pods_listed = store.snapshot().pods_listed;
            let mut r = tracker.reconcile(&handle, &store).await;
            if let Ok(plan) = &mut r
                && pods_listed
                && !listing_sent
            {
                plan.listing = true;
                listing_sent = true;
            }
            let send = match &r {
                Ok(p) => !p.is_empty() || p.listing,
                Err(_) => true,
            };
            if send && tx.send(r).await.is_err() {
                return;
            }
            tokio::select! {
                c = changes.changed() => if c.is_err() { return },
                _ = tokio::time::sleep(resync) => {}
            }
        }
    });
    Box::pin(stream)
}

/// A stream fed by a task through a small channel (the task ends when the
/// stream is dropped).
fn async_stream_lite<T, F, Fut>(f: F) -> tokio_stream::wrappers::ReceiverStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ips: &[&str]) -> Arc<Pod> {
        Arc::new(Pod {
            key: ObjectKey::new(ns, name),
            uid: name.into(),
            labels: Default::default(),
            owners: vec![],
            service_account: None,
            node_name: "n".into(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            host_network: false,
        })
    }

    fn veth(pod: &str, idx: u32) -> PodVeth {
        PodVeth {
            pod: ObjectKey::new("ns", pod),
            ip: "10.0.0.1".parse().unwrap(),
            ifname: format!("lxc{idx}"),
            ifindex: idx,
        }
    }

    #[test]
    fn matching_uses_routes_out_veths_only() {
        let pods = vec![
            pod("ns", "a", &["10.0.0.2"]),
            pod("ns", "b", &["fd00::3", "10.0.0.3"]),
            pod("ns", "c", &["10.0.0.4"]), // route out eth0: not a veth
            pod("ns", "d", &["10.0.0.5"]), // no route yet
        ];
        let routes: HashMap<IpAddr, u32> = [("10.0.0.2", 7), ("10.0.0.3", 8), ("10.0.0.4", 2)]
            .iter()
            .map(|(ip, i)| (ip.parse().unwrap(), *i))
            .collect();
        let veths: HashMap<u32, String> = [(7, "lxca".to_string()), (8, "lxcb".to_string())]
            .into_iter()
            .collect();
        let got = match_pods(&pods, &routes, &veths);
        assert_eq!(
            got,
            vec![
                PodVeth {
                    pod: ObjectKey::new("ns", "a"),
                    ip: "10.0.0.2".parse().unwrap(),
                    ifname: "lxca".into(),
                    ifindex: 7
                },
                PodVeth {
                    pod: ObjectKey::new("ns", "b"),
                    ip: "10.0.0.3".parse().unwrap(),
                    ifname: "lxcb".into(),
                    ifindex: 8
                },
            ]
        );
    }

    #[test]
    fn plans() {
        let mut t = PodVethTracker::new();
        let p = t.plan(vec![veth("a", 1), veth("b", 2)]);
        assert_eq!(p.attach, vec![veth("a", 1), veth("b", 2)]);
        assert!(p.detach.is_empty());
        assert!(t.plan(vec![veth("a", 1), veth("b", 2)]).is_empty());
        // b deleted, c added, a's veth reused by z.
        let p = t.plan(vec![veth("z", 1), veth("c", 3)]);
        assert_eq!(p.detach, vec![veth("a", 1), veth("b", 2)]);
        assert_eq!(p.attach, vec![veth("c", 3), veth("z", 1)]);
        let p = t.plan(vec![]);
        assert_eq!(p.detach.len(), 2);
        assert!(t.current().is_empty());
    }
}
