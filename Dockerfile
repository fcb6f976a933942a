# One image for flowd (DaemonSet), the relay (Deployment) and the observe CLI.
#
#   docker build -t ghcr.io/flowd-project/flowd:0.1.0 .
#
# The eBPF programs are built by flowd/build.rs with the nightly toolchain and
# bpf-linker that scripts/setup.sh installs (FLOWD_SETUP_BUILD_ONLY skips the
# checks that only matter where flowd runs: root, BTF, network namespaces).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN FLOWD_SETUP_BUILD_ONLY=1 ./scripts/setup.sh
# The Kubernetes endpoint source is a cargo feature (off for local builds).
RUN cargo build --release --locked -p flowd --features kube -p flowd-relay -p observe-cli \
 && install -D -m 0755 -t /out target/release/flowd target/release/relay target/release/observe

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# flowd needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (see examples/kubernetes/flowd.yaml);
# the relay and observe run as any user.
ENTRYPOINT ["/usr/local/bin/flowd"]
