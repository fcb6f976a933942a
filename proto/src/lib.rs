//! The Observer API: Rust types and gRPC client/server code for flowd's
//! Hubble-compatible API (packages `flow`, `observer`, `peer`, `relay`).
//!
//! Every message also implements serde `Serialize`/`Deserialize` producing
//! Hubble's JSON: protojson with the proto field names (`pod_name`, `IP`),
//! enums as names, timestamps as RFC 3339 strings, 64-bit integers as
//! strings, default values omitted. Deserialization accepts proto names and
//! lowerCamelCase names alike.
//!
//! Well-known types: `google.protobuf.Timestamp` is [`Timestamp`] (this
//! crate's, printing protojson's `...Z` form); the others (BoolValue,
//! Int32Value, UInt32Value, FieldMask, Any) are [`pbjson_types`]' (re-exported),
//! not `prost_types`'.

pub use pbjson_types;

pub mod fieldmask;
pub mod health;
pub mod monitor;
pub mod names;
mod responses;
mod timestamp;
pub mod tls;
pub use timestamp::Timestamp;

/// Flow records, filters and events (`package flow`).
#[allow(clippy::all, missing_docs, deprecated)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

/// Node status notices sent by the relay (`package relay`).
#[allow(clippy::all, missing_docs, deprecated)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

/// The Observer service and its messages (`package observer`).
#[allow(clippy::all, missing_docs, deprecated)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

/// The Peer service used by the relay to discover nodes (`package peer`).
#[allow(clippy::all, missing_docs, deprecated)]
pub mod peer {
    include!(concat!(env!("OUT_DIR"), "/peer.rs"));
    include!(concat!(env!("OUT_DIR"), "/peer.serde.rs"));
}

/// Encoded `google.protobuf.FileDescriptorSet` of all flowd protos (for gRPC
/// reflection and descriptor-based tests).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flowd_descriptor.bin"));
