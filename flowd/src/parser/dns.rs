//! DNS messages (UDP, or TCP with or without the 2-byte length prefix).
//!
//! Decoding is done by hickory-proto (name compression, pointer loops, bounds).
//! The kernel copies only the first bytes of a message, so we decode record by
//! record and keep what was complete: a message cut inside its answers still
//! gives its query and the answers before the cut.

use std::net::IpAddr;

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::NotL7;

/// How the DNS message is framed in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsFraming {
    /// The payload is the message (UDP, or TCP with the length already skipped).
    Bare,
    /// The payload starts with the 2-byte big-endian length of DNS over TCP.
    TcpLengthPrefix,
}

/// What flowd reports about a DNS query or response (Hubble's `DNS` record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub is_response: bool,
    /// First question's name, fully qualified with the trailing dot ("example.com.").
    pub query: String,
    /// Types of all questions ("A", "AAAA", …).
    pub qtypes: Vec<String>,
    /// Response code (4-bit header rcode; 0 = NOERROR, 3 = NXDOMAIN).
    pub rcode: u16,
    /// Addresses of A and AAAA answers.
    pub ips: Vec<IpAddr>,
    /// Targets of CNAME answers.
    pub cnames: Vec<String>,
    /// Lowest TTL among the answers (0 when there are none).
    pub ttl: u32,
    /// Types of the answer records.
    pub rrtypes: Vec<String>,
    /// The answers were cut short (payload truncated or malformed after the question).
    pub partial: bool,
}

/// Parses the start of a DNS message.
///
/// Returns `NotL7` unless at least the header and every question decode and
/// the header looks like a real query or response (standard opcode, one to a
/// few questions).
pub fn parse_dns(payload: &[u8], framing: DnsFraming) -> Result<DnsMessage, NotL7> {
    let msg = match framing {
        DnsFraming::Bare => payload,
        DnsFraming::TcpLengthPrefix => {
            let (len, rest) = payload.split_first_chunk::<2>().ok_or(NotL7::Incomplete)?;
            let len = usize::from(u16::from_be_bytes(*len));
            if len < Header::len() {
                return Err(NotL7::Malformed(
                    "DNS-over-TCP length shorter than a header",
                ));
            }
            // A truncated capture holds fewer bytes than announced; never read past it.
            &rest[..rest.len().min(len)]
        }
    };
    let mut d = BinDecoder::new(msg);
    let header = Header::read(&mut d).map_err(|_| NotL7::Incomplete)?;
    let qd = header.query_count();
    // Sanity: real resolvers send exactly one question; allow a few.
    if qd == 0 || qd > 4 {
        return Err(NotL7::Malformed("DNS question count not in 1..=4"));
    }
    if u8::from(header.op_code()) != 0 {
        return Err(NotL7::Malformed("DNS opcode is not QUERY"));
    }
    let is_response = header.message_type() == MessageType::Response;
    let mut query = String::new();
    let mut qtypes = Vec::with_capacity(usize::from(qd));
    for i in 0..qd {
        let q = Query::read(&mut d).map_err(|_| {
            if d.is_empty() {
                NotL7::Incomplete
            } else {
                NotL7::Malformed("bad DNS question")
            }
        })?;
        if i == 0 {
            query = q.name().to_string();
        }
        qtypes.push(q.query_type().to_string());
    }
    let mut out = DnsMessage {
        id: header.id(),
        is_response,
        query,
        qtypes,
        rcode: u16::from(header.response_code()) & 0xf,
        ips: Vec::new(),
        cnames: Vec::new(),
        ttl: 0,
        rrtypes: Vec::new(),
        partial: false,
    };
    if !is_response {
        return Ok(out);
    }
    let mut min_ttl: Option<u32> = None;
    for _ in 0..header.answer_count() {
        let Ok(rec) = Record::<RData>::read(&mut d) else {
            out.partial = true;
            break;
        };
        min_ttl = Some(min_ttl.map_or(rec.ttl(), |t| t.min(rec.ttl())));
        out.rrtypes.push(rec.record_type().to_string());
        match rec.data() {
            RData::A(a) => out.ips.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => out.ips.push(IpAddr::V6(a.0)),
            RData::CNAME(c) => out.cnames.push(c.0.to_string()),
            _ => {}
        }
    }
    out.ttl = min_ttl.unwrap_or(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RecordType};
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn response() -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::NoError)
            .add_query(Query::query(name("www.example.com."), RecordType::A))
            .add_answer(Record::from_rdata(
                name("www.example.com."),
                300,
                RData::CNAME(CNAME(name("edge.example.net."))),
            ))
            .add_answer(Record::from_rdata(
                name("edge.example.net."),
                60,
                RData::A(A::new(192, 0, 2, 7)),
            ))
            .add_answer(Record::from_rdata(
                name("edge.example.net."),
                120,
                RData::AAAA(AAAA::from_str("2001:db8::7").unwrap()),
            ));
        m.to_vec().unwrap()
    }

    #[test]
    fn response_with_cname_and_addresses() {
        let bytes = response();
        let r = parse_dns(&bytes, DnsFraming::Bare).unwrap();
        assert_eq!(r.id, 0x1234);
        assert!(r.is_response);
        assert_eq!(r.query, "www.example.com.");
        assert_eq!(r.qtypes, vec!["A"]);
        assert_eq!(r.rcode, 0);
        assert_eq!(r.cnames, vec!["edge.example.net."]);
        assert_eq!(
            r.ips,
            vec![
                IpAddr::from_str("192.0.2.7").unwrap(),
                IpAddr::from_str("2001:db8::7").unwrap()
            ]
        );
        assert_eq!(r.ttl, 60);
        assert_eq!(r.rrtypes, vec!["CNAME", "A", "AAAA"]);
        assert!(!r.partial);
    }

    #[test]
    fn tcp_prefix_and_truncation_at_every_length() {
        let bytes = response();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let full = parse_dns(&bytes, DnsFraming::Bare).unwrap();
        assert_eq!(
            parse_dns(&framed, DnsFraming::TcpLengthPrefix).unwrap(),
            full
        );
        // Every prefix either is rejected or gives the query and a prefix of the answers.
        let q_end = 12 + "www.example.com.".len() + 1 + 4;
        for cut in 0..bytes.len() {
            match parse_dns(&bytes[..cut], DnsFraming::Bare) {
                Ok(r) => {
                    assert!(cut >= q_end, "cut {cut}");
                    assert_eq!(r.query, full.query);
                    assert!(r.partial);
                    assert!(full.rrtypes.starts_with(&r.rrtypes));
                    assert!(full.ips.starts_with(&r.ips));
                }
                Err(e) => {
                    assert!(cut < q_end, "cut {cut}: {e:?}");
                }
            }
            let _ = parse_dns(&framed[..cut], DnsFraming::TcpLengthPrefix);
        }
    }

    #[test]
    fn nxdomain_query_and_aaaa() {
        let mut q = Message::new();
        q.set_id(7)
            .set_message_type(MessageType::Query)
            .add_query(Query::query(
                name("nope.ecommerce.svc.cluster.local."),
                RecordType::AAAA,
            ));
        let qb = q.to_vec().unwrap();
        let r = parse_dns(&qb, DnsFraming::Bare).unwrap();
        assert!(!r.is_response);
        assert_eq!((r.id, r.qtypes.as_slice()), (7, &["AAAA".to_string()][..]));
        let mut resp = Message::new();
        resp.set_id(7)
            .set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::NXDomain)
            .add_query(Query::query(
                name("nope.ecommerce.svc.cluster.local."),
                RecordType::AAAA,
            ));
        let r = parse_dns(&resp.to_vec().unwrap(), DnsFraming::Bare).unwrap();
        assert_eq!(r.rcode, 3);
        assert!(r.ips.is_empty());
        assert_eq!(r.ttl, 0);
    }

    #[test]
    fn pointer_loop_and_garbage_are_not_dns() {
        // Header with one question whose name is a pointer to itself (offset 12).
        let mut b = vec![0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0xc0, 12, 0x00, 0x01, 0x00, 0x01]);
        assert!(parse_dns(&b, DnsFraming::Bare).is_err());
        assert!(parse_dns(b"GET / HTTP/1.1\r\n\r\n", DnsFraming::Bare).is_err());
        assert!(parse_dns(&[], DnsFraming::TcpLengthPrefix).is_err());
        assert!(parse_dns(&[0, 3, 1, 2, 3], DnsFraming::TcpLengthPrefix).is_err());
    }
}
