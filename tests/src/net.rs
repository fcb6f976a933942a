//! Traffic helpers that need no external tools: ICMP echo over raw sockets
//! (this machine has no `ping`), and SO_LINGER 0 for connections ended by RST.
//! Call them inside a namespace ([`crate::Netns::run`]).
use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::{
    socket::{
        AddressFamily, SockFlag, SockProtocol, SockType, SockaddrStorage, recvfrom, sendto,
        setsockopt, socket, sockopt,
    },
    time::TimeVal,
};

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests with `payload_len` bytes of payload to
/// `dst`, one at a time, each waiting for its reply. Returns the replies received.
pub fn ping(dst: IpAddr, count: u16, payload_len: usize) -> Result<u16> {
    let (family, proto, req_type, rep_type) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8u8, 0u8),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128, 129),
    };
    let fd = socket(family, SockType::Raw, SockFlag::empty(), proto).context("raw ICMP socket")?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
    let ident = (std::process::id() & 0xffff) as u16;
    let to = SockaddrStorage::from(SocketAddr::new(dst, 0));
    let mut got = 0;
    for seq in 1..=count {
        let mut pkt = vec![req_type, 0, 0, 0];
        pkt.extend_from_slice(&ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend((0..payload_len).map(|i| i as u8));
        if dst.is_ipv4() {
            // The kernel fills the ICMPv6 checksum itself, not the ICMPv4 one.
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        sendto(
            fd.as_fd().as_raw_fd_compat(),
            &pkt,
            &to,
            nix::sys::socket::MsgFlags::empty(),
        )
        .context("sending echo request")?;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        loop {
            if Instant::now() > deadline {
                bail!("no echo reply {seq} from {dst}");
            }
            let Ok((n, _)) = recvfrom::<SockaddrStorage>(fd.as_fd().as_raw_fd_compat(), &mut buf)
            else {
                continue;
            };
            // Raw IPv4 sockets deliver the IP header too.
            let icmp = if dst.is_ipv4() {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                &buf[ihl.min(n)..n]
            } else {
                &buf[..n]
            };
            if icmp.len() >= 8
                && icmp[0] == rep_type
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                got += 1;
                break;
            }
        }
    }
    Ok(got)
}

trait RawFdCompat {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd;
}
impl RawFdCompat for std::os::fd::BorrowedFd<'_> {
    fn as_raw_fd_compat(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.as_raw_fd()
    }
}

/// Makes `close()` send RST instead of FIN (SO_LINGER with a zero timeout).
pub fn set_linger_zero(s: &TcpStream) -> Result<()> {
    setsockopt(
        s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .context("SO_LINGER 0")
}
