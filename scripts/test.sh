#!/usr/bin/env bash
# The full test suite, as CI runs it: toolchain setup, format, lint, all tests.
# Needs root (eBPF and network namespaces). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

bash scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (stable; flowd-ebpf is built by flowd/build.rs with nightly)"
cargo clippy --workspace --exclude flowd-ebpf --all-targets --locked -- -D warnings

step "cargo clippy of the eBPF programs (the pinned nightly, BPF target)"
nightly=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' flowd-ebpf/rust-toolchain.toml)
(cd flowd-ebpf && cargo +"${FLOWD_NIGHTLY:-$nightly}" clippy --target bpfel-unknown-none \
  -Z build-std=core --locked -- -D warnings)

step "cargo build (all workspace binaries: the cluster e2e tests run flowd, relay, observe, lab-app)"
# cargo builds a package's own binaries for its integration tests, but not other
# packages' (tests/lab runs flowd and the relay); build them all so none is stale.
cargo build --workspace --bins --exclude flowd-ebpf --locked

step "cargo test (unit, BPF_PROG_TEST_RUN and end-to-end tests in network namespaces)"
# Fuzz/property tests run a short round here; FLOWD_FUZZ_CASES=1000000 runs the long one.
cargo test --workspace --exclude flowd-ebpf --locked -- --test-threads="${FLOWD_TEST_THREADS:-4}"

step "flowd with the Kubernetes API (feature kube): clippy, the endpoint source and certgen's Secrets"
# Off by default (kube-rs roughly doubles flowd's cold build), so it is checked
# here on its own: the library and its fake-API-server test only.
cargo clippy -p flowd --features kube --lib --test endpoints_kube --test certgen_kube --locked -- -D warnings
cargo test -p flowd --features kube --locked --test endpoints_kube --test certgen_kube
