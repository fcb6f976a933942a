//! Follows interfaces through rtnetlink: RTNLGRP_LINK notifications attach
//! matching interfaces that appear and forget those that go away. A periodic
//! full listing repairs anything a notification overflow (ENOBUFS) hid.
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    },
    sys::{AsyncSocket, SocketAddr},
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Attacher, DatapathEvent, Error, lock};

const RESYNC_EVERY: Duration = Duration::from_secs(10);

type Messages = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

pub(super) struct Netlink {
    handle: Handle,
    messages: Messages,
    conn_task: JoinHandle<()>,
}

/// Opens an rtnetlink socket; with `subscribe`, joined to RTNLGRP_LINK
/// before anything is listed so that no interface is missed in between.
pub(super) fn open(subscribe: bool) -> Result<Netlink, Error> {
    let (mut conn, handle, messages) =
        rtnetlink::new_connection().map_err(|e| Error::Netlink(format!("opening socket: {e}")))?;
    if subscribe {
        let groups = rtnetlink::constants::RTMGRP_LINK;
        conn.socket_mut()
            .socket_mut()
            .bind(&SocketAddr::new(0, groups))
            .map_err(|e| Error::Netlink(format!("joining RTNLGRP_LINK: {e}")))?;
    }
    let conn_task = tokio::spawn(conn);
    Ok(Netlink {
        handle,
        messages,
        conn_task,
    })
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

impl Netlink {
    /// (ifindex, name) of every interface in flowd's network namespace.
    pub async fn list_links(&self) -> Result<BTreeMap<u32, String>, Error> {
        let mut out = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(|e| Error::Netlink(format!("listing links: {e}")))?
        {
            if let Some(name) = name_of(&link) {
                out.insert(link.header.index, name);
            }
        }
        Ok(out)
    }
}

fn attach(attacher: &Mutex<Attacher>, tx: &mpsc::Sender<DatapathEvent>, ifindex: u32, name: &str) {
    match lock(attacher).attach_if_matching(ifindex, name) {
        Ok(Some(a)) => {
            let _ = tx.try_send(DatapathEvent::Attached(a));
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "attaching to a new interface"),
    }
}

fn forget(attacher: &Mutex<Attacher>, tx: &mpsc::Sender<DatapathEvent>, ifindex: u32) {
    if let Some(a) = lock(attacher).forget(ifindex) {
        tracing::info!(interface = %a.ifname, ifindex, "interface gone");
        let _ = tx.try_send(DatapathEvent::Detached {
            ifindex,
            ifname: a.ifname,
        });
    }
}

pub(super) fn spawn(
    mut nl: Netlink,
    attacher: Arc<Mutex<Attacher>>,
    tx: mpsc::Sender<DatapathEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        loop {
            tokio::select! {
                msg = nl.messages.next() => {
                    let Some((msg, _)) = msg else {
                        tracing::error!("rtnetlink notifications ended; new interfaces are only found by the periodic resync");
                        break;
                    };
                    match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                            if let Some(name) = name_of(&link) {
                                attach(&attacher, &tx, link.header.index, &name);
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                            forget(&attacher, &tx, link.header.index);
                        }
                        _ => {}
                    }
                }
                _ = resync.tick() => resync_once(&nl, &attacher, &tx).await,
            }
        }
        loop {
            resync.tick().await;
            resync_once(&nl, &attacher, &tx).await;
        }
    })
}

async fn resync_once(nl: &Netlink, attacher: &Mutex<Attacher>, tx: &mpsc::Sender<DatapathEvent>) {
    let links = match nl.list_links().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "interface resync");
            return;
        }
    };
    let gone: Vec<u32> = lock(attacher)
        .attached()
        .iter()
        .filter(|a| links.get(&a.ifindex) != Some(&a.ifname))
        .map(|a| a.ifindex)
        .collect();
    for ifindex in gone {
        forget(attacher, tx, ifindex);
    }
    for (ifindex, name) in &links {
        attach(attacher, tx, *ifindex, name);
    }
}
