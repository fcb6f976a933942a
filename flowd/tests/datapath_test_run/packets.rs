//! Packets built with etherparse (and DNS messages with hickory).
use super::*;

pub(crate) fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

pub(crate) fn vid(v: u16) -> VlanId {
    VlanId::try_new(v).unwrap_or(VlanId::ZERO)
}

pub(crate) fn finish_tcp(b: PacketBuilderStep<TcpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("etherparse writes into a Vec");
    out
}

/// A TCP packet with exactly the given flags (TCP_* bits, incl. NS).
pub(crate) fn tcp_pkt(
    v6: bool,
    sport: u16,
    dport: u16,
    flags: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = TcpHeader::new(sport, dport, seq, 65535);
    h.fin = flags & TCP_FIN != 0;
    h.syn = flags & TCP_SYN != 0;
    h.rst = flags & TCP_RST != 0;
    h.psh = flags & TCP_PSH != 0;
    h.ack = flags & TCP_ACK != 0;
    h.urg = flags & TCP_URG != 0;
    h.ece = flags & TCP_ECE != 0;
    h.cwr = flags & TCP_CWR != 0;
    h.ns = flags & TCP_NS != 0;
    if h.ack {
        h.acknowledgment_number = 1;
    }
    let b = if v6 {
        eth().ipv6(v6_a(), v6_b(), 64).tcp_header(h)
    } else {
        eth().ipv4(V4_A, V4_B, 64).tcp_header(h)
    };
    finish_tcp(b, payload)
}

pub(crate) fn udp_pkt(v6: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = if v6 {
        eth().ipv6(v6_a(), v6_b(), 64).udp(sport, dport)
    } else {
        eth().ipv4(V4_A, V4_B, 64).udp(sport, dport)
    };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)
        .expect("etherparse writes into a Vec");
    out
}

/// IP packet whose L4 etherparse cannot build (SCTP, GRE): headers by
/// etherparse, the L4 bytes given.
pub(crate) fn ip_raw_pkt(ip: IpHeaders, proto: IpNumber, l4: &[u8]) -> Vec<u8> {
    let b = eth().ip(ip);
    let mut out = Vec::with_capacity(b.size(l4.len()));
    b.write(&mut out, proto, l4)
        .expect("etherparse writes into a Vec");
    out
}

pub(crate) fn ipv4_hdr(proto: IpNumber) -> Ipv4Header {
    Ipv4Header::new(0, 64, proto, V4_A, V4_B).expect("valid IPv4 header")
}

pub(crate) fn ipv6_hdr() -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: v6_a(),
        destination: v6_b(),
    }
}

/// SCTP common header: ports, verification tag, checksum (not validated by us).
pub(crate) fn sctp_common(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

pub(crate) fn raw_ext(len8: usize) -> Ipv6RawExtHeader {
    // Payload sizes of 6 + 8n bytes; contents are padding options (PadN-like).
    Ipv6RawExtHeader::new_raw(IpNumber::UDP, &vec![0u8; 6 + 8 * len8]).expect("valid ext header")
}

pub(crate) fn dns_query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        rtype,
    ));
    m.to_vec().expect("encodable DNS message")
}

pub(crate) fn dns_response(id: u16, name: &str) -> Vec<u8> {
    let n = Name::from_ascii(name).expect("valid name");
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_response_code(ResponseCode::NoError);
    m.add_query(Query::query(n.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(n, 30, RData::A(A::new(10, 1, 2, 3))));
    m.to_vec().expect("encodable DNS message")
}

pub(crate) fn http_request(method: &str) -> Vec<u8> {
    format!("{method} /cart?id=7 HTTP/1.1\r\nHost: shop\r\nUser-Agent: t\r\n\r\n").into_bytes()
}
