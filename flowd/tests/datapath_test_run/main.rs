//! BPF_PROG_TEST_RUN tests of the datapath programs on crafted packets.
//!
//! Every test loads its own copy of the eBPF object (own maps, so tests run in
//! parallel without sharing state), runs one program on packets built with
//! etherparse, and checks the return value, the FLOWS map, the COUNTERS and
//! the EVENTS ring buffer exactly. The kernel's verifier checks the programs
//! on every load, so these tests also prove the object loads.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF.
//!
//! What BPF_PROG_TEST_RUN does with the input (found out here, asserted in
//! `short_inputs_are_refused_by_the_kernel`): TC and XDP refuse data shorter
//! than an Ethernet header (14 bytes) with EINVAL before our program runs.
//! The skb it builds has `ifindex` 1 (the loopback device of the caller's
//! namespace) and linear data; XDP gets `ingress_ifindex` 1 and, for an
//! `xdp.frags` program, puts data beyond the first page into fragments.
//!
//! Run: cargo test -p flowd --test datapath_test_run
//!
//! [`harness`] loads the object and runs programs; [`packets`] builds the
//! inputs; the tests are grouped by what they check: [`parsing`] (headers,
//! truncation), [`accounting`] (counters, events, the flow cache, the ring
//! buffer), [`l7`] (HTTP and DNS capture), [`h2`] (the HTTP/2 frame walker),
//! [`xdp`] (multi-buffer frames and the empty programs).
// Tests and benches: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{mem::size_of, net::Ipv6Addr, ptr};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
    PacketBuilderStep, TcpHeader, VlanId,
};
use flowd::datapath::{
    EBPF_OBJECT, FULL_PATHS_TC, FULL_PATHS_XDP, H2Record,
    cache::FlowCache,
    decode::{Record as DpRecord, decode},
    install_full_paths,
};
use flowd_common::{
    CNT_EVENTS_LOST, CNT_EVENTS_SUBMITTED, CNT_FULL_PATH_MISSING, CNT_FULL_PATH_RUNS,
    CNT_L7_EVENTS, CNT_MAX, CNT_PACKETS, CNT_PACKETS_OTHER, CNT_PACKETS_TRUNCATED, CacheSlot,
    Config, DIR_EGRESS, DIR_INGRESS, EV_H2, EV_L7, EV_NEW_FLOW, EV_TCP_FLAGS, EV_UPDATE,
    EventHeader, FAMILY_IPV4, FAMILY_IPV6, FLOW_CACHE_SLOTS, FLOW_L7_OFF, FLOW_L7_PROBED,
    FlowEvent, FlowKey, FlowStats, H2Event, KEY_F_FRAGMENT, KEY_F_VLAN, L7_DNS, L7_HTTP_REQUEST,
    L7_HTTP_RESPONSE, L7_MAX_PAYLOAD, L7_PORT_DNS, L7_PORT_H2, L7Event, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_NS, TCP_PSH, TCP_RST,
    TCP_SYN, TCP_URG, TRANSITION_FIN, TRANSITION_RST, TRANSITION_SYN, TRANSITION_SYN_ACK, names,
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

mod harness;
mod packets;

mod accounting;
mod h2;
mod l7;
mod parsing;
mod xdp;

use harness::*;
use packets::*;
