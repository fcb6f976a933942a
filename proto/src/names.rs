//! Names of protocol values as Hubble shows them, one table each, shared by
//! flowd (flow summaries, metric labels, export attributes) and `observe`.
//! Each table says whose names it reproduces; where Hubble itself uses two
//! spellings (DNS rcodes in summaries and in metrics), both are here.
use std::fmt::Write as _;

use crate::flow::TcpFlags;

/// The set flags of `f` in the order Hubble's summaries list them
/// (SYN ACK RST FIN PSH URG ECE CWR NS).
pub fn tcp_flags(f: &TcpFlags) -> impl Iterator<Item = &'static str> {
    [
        (f.syn, "SYN"),
        (f.ack, "ACK"),
        (f.rst, "RST"),
        (f.fin, "FIN"),
        (f.psh, "PSH"),
        (f.urg, "URG"),
        (f.ece, "ECE"),
        (f.cwr, "CWR"),
        (f.ns, "NS"),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| name)
}

/// ICMPv4 type and code as gopacket's `ICMPv4TypeCode.String()` writes them
/// (Hubble's summaries and its `icmp` metric's `type` label).
pub fn icmpv4(t: u8, c: u8) -> String {
    icmp(icmpv4_names(t, c), t, c)
}

/// ICMPv6 type and code as gopacket's `ICMPv6TypeCode.String()` writes them.
pub fn icmpv6(t: u8, c: u8) -> String {
    icmp(icmpv6_names(t, c), t, c)
}

/// gopacket's `TypeCode.String()`: `Name`, `Name(CodeName)`,
/// `Name(Code: 7)` for a code it has no name for, `9(0)` for an unknown type.
enum IcmpNames {
    UnknownType,
    /// A type that uses no code.
    NoCode(&'static str),
    /// A type with named codes; None when this code has no name.
    Code(&'static str, Option<&'static str>),
}

fn icmp(names: IcmpNames, t: u8, c: u8) -> String {
    let mut s = String::with_capacity(48);
    // Writing to a String cannot fail.
    let _ = match names {
        IcmpNames::UnknownType => write!(s, "{t}({c})"),
        IcmpNames::NoCode(name) if c == 0 => write!(s, "{name}"),
        IcmpNames::NoCode(name) | IcmpNames::Code(name, None) => write!(s, "{name}(Code: {c})"),
        IcmpNames::Code(name, Some(code)) => write!(s, "{name}({code})"),
    };
    s
}

fn icmpv4_names(t: u8, c: u8) -> IcmpNames {
    use IcmpNames::{Code, NoCode, UnknownType};
    match t {
        0 => NoCode("EchoReply"),
        3 => Code(
            "DestinationUnreachable",
            [
                "Net",
                "Host",
                "Protocol",
                "Port",
                "FragmentationNeeded",
                "SourceRoutingFailed",
                "NetUnknown",
                "HostUnknown",
                "SourceIsolated",
                "NetAdminProhibited",
                "HostAdminProhibited",
                "NetTOS",
                "HostTOS",
                "CommAdminProhibited",
                "HostPrecedence",
                "PrecedenceCutoff",
            ]
            .get(usize::from(c))
            .copied(),
        ),
        4 => NoCode("SourceQuench"),
        5 => Code(
            "Redirect",
            ["Net", "Host", "TOS+Net", "TOS+Host"]
                .get(usize::from(c))
                .copied(),
        ),
        8 => NoCode("EchoRequest"),
        9 => NoCode("RouterAdvertisement"),
        10 => NoCode("RouterSolicitation"),
        11 => Code(
            "TimeExceeded",
            ["TTLExceeded", "FragmentReassemblyTimeExceeded"]
                .get(usize::from(c))
                .copied(),
        ),
        12 => Code(
            "ParameterProblem",
            ["PointerIndicatesError", "MissingOption", "BadLength"]
                .get(usize::from(c))
                .copied(),
        ),
        13 => NoCode("TimestampRequest"),
        14 => NoCode("TimestampReply"),
        15 => NoCode("InfoRequest"),
        16 => NoCode("InfoReply"),
        17 => NoCode("AddressMaskRequest"),
        18 => NoCode("AddressMaskReply"),
        _ => UnknownType,
    }
}

fn icmpv6_names(t: u8, c: u8) -> IcmpNames {
    use IcmpNames::{Code, NoCode, UnknownType};
    match t {
        1 => Code(
            "DestinationUnreachable",
            [
                "NoRouteToDst",
                "AdminProhibited",
                "BeyondScopeOfSrc",
                "AddressUnreachable",
                "PortUnreachable",
                "SrcAddressFailedPolicy",
                "RejectRouteToDst",
            ]
            .get(usize::from(c))
            .copied(),
        ),
        2 => NoCode("PacketTooBig"),
        3 => Code(
            "TimeExceeded",
            ["HopLimitExceeded", "FragmentReassemblyTimeExceeded"]
                .get(usize::from(c))
                .copied(),
        ),
        4 => Code(
            "ParameterProblem",
            [
                "ErroneousHeaderField",
                "UnrecognizedNextHeader",
                "UnrecognizedIPv6Option",
            ]
            .get(usize::from(c))
            .copied(),
        ),
        128 => NoCode("EchoRequest"),
        129 => NoCode("EchoReply"),
        133 => NoCode("RouterSolicitation"),
        134 => NoCode("RouterAdvertisement"),
        135 => NoCode("NeighborSolicitation"),
        136 => NoCode("NeighborAdvertisement"),
        137 => NoCode("Redirect"),
        _ => UnknownType,
    }
}

/// A DNS rcode as gopacket's `DNSResponseCode.String()` writes it (Hubble's
/// DNS summaries; its "Server Failure " with the trailing space included).
pub fn dns_rcode(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure ",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Server Not Authoritative for zone",
        10 => "Name not contained in zone",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad Cookie",
        _ => "Unknown",
    }
}

/// A DNS rcode as Hubble's `dns` metrics handler labels it (`rcode`); empty
/// for codes it has no name for.
pub fn dns_rcode_metric(rcode: u32) -> &'static str {
    match rcode {
        0 => "No Error",
        1 => "Format Error",
        2 => "Server Failure",
        3 => "Non-Existent Domain",
        4 => "Not Implemented",
        5 => "Query Refused",
        6 => "Name Exists when it should not",
        7 => "RR Set Exists when it should not",
        8 => "RR Set that should exist does not",
        9 => "Not Authorized",
        10 => "Name not contained in zone",
        11 => "DSO-TYPE Not Implemented",
        16 => "Bad OPT Version",
        17 => "Key not recognized",
        18 => "Signature out of time window",
        19 => "Bad TKEY Mode",
        20 => "Duplicate key name",
        21 => "Algorithm not supported",
        22 => "Bad Truncation",
        23 => "Bad/missing Server Cookie",
        _ => "",
    }
}

/// The gRPC status codes (grpc/doc/statuscodes.md): the code, its
/// canonical name (`grpc-status` documentation, `flow.GRPC.status_name`)
/// and Go's `codes.Code.String()`, the `grpc_code` label value of
/// go-grpc-prometheus (and of flowd's `grpc` metrics).
pub const GRPC_STATUS: [(u32, &str, &str); 17] = [
    (0, "OK", "OK"),
    (1, "CANCELLED", "Canceled"),
    (2, "UNKNOWN", "Unknown"),
    (3, "INVALID_ARGUMENT", "InvalidArgument"),
    (4, "DEADLINE_EXCEEDED", "DeadlineExceeded"),
    (5, "NOT_FOUND", "NotFound"),
    (6, "ALREADY_EXISTS", "AlreadyExists"),
    (7, "PERMISSION_DENIED", "PermissionDenied"),
    (8, "RESOURCE_EXHAUSTED", "ResourceExhausted"),
    (9, "FAILED_PRECONDITION", "FailedPrecondition"),
    (10, "ABORTED", "Aborted"),
    (11, "OUT_OF_RANGE", "OutOfRange"),
    (12, "UNIMPLEMENTED", "Unimplemented"),
    (13, "INTERNAL", "Internal"),
    (14, "UNAVAILABLE", "Unavailable"),
    (15, "DATA_LOSS", "DataLoss"),
    (16, "UNAUTHENTICATED", "Unauthenticated"),
];

/// The canonical name of a gRPC status code (`NOT_FOUND`); `None` above 16.
pub fn grpc_status_name(code: u32) -> Option<&'static str> {
    GRPC_STATUS.get(code as usize).map(|(_, name, _)| *name)
}

/// A gRPC status code as go-grpc-prometheus labels it (`NotFound`); `None`
/// above 16.
pub fn grpc_status_metric(code: u32) -> Option<&'static str> {
    GRPC_STATUS.get(code as usize).map(|(_, _, go)| *go)
}

/// The code of a status name, in either spelling of [`GRPC_STATUS`] and in
/// any case (`NOT_FOUND`, `not_found`, `NotFound`).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS
        .iter()
        .find(|(_, canonical, go)| {
            name.eq_ignore_ascii_case(canonical) || name.eq_ignore_ascii_case(go)
        })
        .map(|(code, _, _)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_names_follow_gopacket() {
        assert_eq!(icmpv4(8, 0), "EchoRequest");
        assert_eq!(icmpv4(8, 3), "EchoRequest(Code: 3)");
        assert_eq!(icmpv4(3, 3), "DestinationUnreachable(Port)");
        assert_eq!(icmpv4(3, 200), "DestinationUnreachable(Code: 200)");
        assert_eq!(icmpv4(5, 2), "Redirect(TOS+Net)");
        assert_eq!(icmpv4(99, 1), "99(1)");
        assert_eq!(icmpv6(1, 4), "DestinationUnreachable(PortUnreachable)");
        assert_eq!(icmpv6(128, 0), "EchoRequest");
        assert_eq!(icmpv6(200, 0), "200(0)");
    }

    #[test]
    fn tcp_flags_in_hubbles_order() {
        let f = TcpFlags {
            fin: true,
            rst: true,
            ack: true,
            syn: true,
            ..TcpFlags::default()
        };
        assert_eq!(
            tcp_flags(&f).collect::<Vec<_>>(),
            ["SYN", "ACK", "RST", "FIN"]
        );
    }

    #[test]
    fn the_two_rcode_spellings() {
        assert_eq!(dns_rcode(2), "Server Failure ");
        assert_eq!(dns_rcode_metric(2), "Server Failure");
        assert_eq!(dns_rcode(99), "Unknown");
        assert_eq!(dns_rcode_metric(99), "");
    }

    #[test]
    fn grpc_status_spellings() {
        for (i, (code, _, _)) in GRPC_STATUS.iter().enumerate() {
            assert_eq!(*code as usize, i);
        }
        assert_eq!(grpc_status_name(5), Some("NOT_FOUND"));
        assert_eq!(grpc_status_metric(5), Some("NotFound"));
        assert_eq!(grpc_status_name(17), None);
        assert_eq!(grpc_status_metric(99), None);
        for name in ["NOT_FOUND", "not_found", "NotFound", "notfound"] {
            assert_eq!(grpc_status_code(name), Some(5), "{name}");
        }
        assert_eq!(grpc_status_code("CANCELLED"), Some(1));
        assert_eq!(grpc_status_code("Canceled"), Some(1));
        assert_eq!(grpc_status_code("ok"), Some(0));
        assert_eq!(grpc_status_code("NOT FOUND"), None);
        assert_eq!(grpc_status_code("5"), None);
    }
}
