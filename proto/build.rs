//! Compiles proto/*.proto without protoc: protox parses them into a
//! FileDescriptorSet, tonic-prost-build generates messages and gRPC
//! client/server code, pbjson-build generates protojson serde impls.
use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/observer/observer.proto",
    "proto/peer/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(PROTOS, ["proto"])?;
    let fds_bytes = fds.encode_to_vec();
    fs::write(out_dir.join("flowd_descriptor.bin"), &fds_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Servers only implement what they support; the rest answer
        // Unimplemented (GetAgentEvents, GetDebugEvents).
        .generate_default_stubs(true)
        // Well-known types come from pbjson-types so that they serialize as
        // protojson (RFC 3339 timestamps, bare wrapper values).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // pbjson-types prints timestamps as `+00:00`; ours print `Z` like protojson.
        .extern_path(".google.protobuf.Timestamp", "crate::Timestamp")
        .compile_fds(fds)?;

    // Hubble's JSON (hubble observe -o json, export files) is protojson with
    // UseProtoNames: field names as in the .proto (`pod_name`, `IP`, `Type`).
    pbjson_build::Builder::new()
        .register_descriptors(&fds_bytes)?
        .preserve_proto_field_names()
        .build(&[".flow", ".relay", ".observer", ".peer"])?;
    Ok(())
}
