//! A tiny stub resolver: one UDP query to the cluster DNS, as a pod's libc would
//! send it (FQDN, recursion desired, no search list, no cache).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
/// Query types, re-exported so callers need no hickory dependency.
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::{Name, RData};
use tokio::net::UdpSocket;

use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, …
    pub rcode: String,
    pub addrs: Vec<Ipv4Addr>,
    /// AAAA answers.
    pub addrs6: Vec<Ipv6Addr>,
}

pub fn rcode_name(rc: ResponseCode) -> String {
    match rc {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Sends one query for `name`/`qtype` to `server` and waits up to `timeout` for the answer.
/// No retries: every query sent is one the caller accounts for.
pub async fn query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> Result<Answer, Error> {
    let fail = |reason: String| Error::Dns {
        name: name.to_string(),
        reason,
    };
    let fqdn = Name::from_ascii(if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    })
    .map_err(|e| fail(format!("bad name: {e}")))?;
    let id: u16 = rand::random();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(fqdn, qtype));
    let bytes = msg.to_vec().map_err(|e| fail(format!("encoding: {e}")))?;
    let sock = UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| fail(format!("bind: {e}")))?;
    sock.connect(server)
        .await
        .map_err(|e| fail(format!("connect {server}: {e}")))?;
    sock.send(&bytes)
        .await
        .map_err(|e| fail(format!("send to {server}: {e}")))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| fail(format!("no answer from {server} within {timeout:?}")))?
            .map_err(|e| fail(format!("recv from {server}: {e}")))?;
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            continue; // not a DNS message: keep waiting for ours
        };
        if resp.id() != id || resp.message_type() != MessageType::Response {
            continue;
        }
        let addrs = resp
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        let addrs6 = resp
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect();
        return Ok(Answer {
            rcode: rcode_name(resp.response_code()),
            addrs,
            addrs6,
        });
    }
}
