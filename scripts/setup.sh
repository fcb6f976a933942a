#!/usr/bin/env bash
# Idempotent setup for building and testing flowd on a fresh Linux machine.
# Installs only what is missing: system packages, the nightly's rust-src, and
# bpf-linker built against the nightly's own LLVM (so the LLVM bitcode rustc
# emits and the linker that reads it always agree).
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
# The pinned nightly (flowd/build.rs reads the same file).
PINNED=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$HERE/flowd-ebpf/rust-toolchain.toml")
NIGHTLY="${FLOWD_NIGHTLY:-$PINNED}"
# Its commit, to recognise an installed "nightly" that is the same build.
PINNED_COMMIT="e50aa6fba"
# FLOWD_SETUP_BUILD_ONLY=1: only what building needs (a container image
# build has no BTF, network namespaces or test tools, and needs none).
BUILD_ONLY="${FLOWD_SETUP_BUILD_ONLY:-0}"
BPF_LINKER_VERSION="0.13.0"
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$BUILD_ONLY" = 1 ] || [ "$(id -u)" = 0 ] || die "must run as root (loading eBPF programs and creating network namespaces needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
[ "$BUILD_ONLY" = 1 ] || grep -qw bpf /proc/filesystems || die "kernel without BPF (no bpf filesystem in /proc/filesystems); flowd needs CONFIG_BPF_SYSCALL"
[ "$BUILD_ONLY" = 1 ] || [ -e /sys/kernel/btf/vmlinux ] || die "kernel has no BTF (/sys/kernel/btf/vmlinux missing); flowd needs a kernel built with CONFIG_DEBUG_INFO_BTF"
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"
command -v rustup >/dev/null || die "rustup not found: the eBPF build needs a nightly toolchain managed by rustup"

need_pkgs=()
# The relay's web UI is built by relay/build.rs with npm (Vite + TypeScript,
# pinned by relay/ui/package-lock.json): Node.js 18 or newer.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then need_pkgs+=(nodejs); fi
command -v npm >/dev/null || need_pkgs+=(npm)
if [ "$BUILD_ONLY" != 1 ]; then
# The UI tests drive Debian's headless Chromium through chromedriver.
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
# The relay's UI tests fetch its pages and JSON with curl (also over TLS).
command -v curl >/dev/null || need_pkgs+=(curl)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
# cargo xtask bench-l7-load: an HTTP server and load generator between two pods.
command -v nginx >/dev/null || need_pkgs+=(nginx-light)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v nft >/dev/null || need_pkgs+=(nftables)
# The lab's cluster DNS (kube-system) is dnsmasq, as kube-dns used to be.
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
# The metrics tests scrape flowd with a real Prometheus (each runs its own).
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
# flowd certgen's certificates are checked with an independent tool.
command -v openssl >/dev/null || need_pkgs+=(openssl)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  step "installing system packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null || die "apt-get install ${need_pkgs[*]} failed"
  # The package's own service (scraping localhost:9090 into /var/lib) is not
  # needed: tests start Prometheus with their own configuration and directory.
  if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    systemctl disable prometheus.service >/dev/null 2>&1 || true
    systemctl stop prometheus.service >/dev/null 2>&1 || true
  fi
  # Likewise nginx's own service: the benchmark runs nginx in a pod namespace.
  if [[ " ${need_pkgs[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null; then
    systemctl disable nginx.service >/dev/null 2>&1 || true
    systemctl stop nginx.service >/dev/null 2>&1 || true
  fi
fi
[ "$BUILD_ONLY" = 1 ] || ip netns list >/dev/null 2>&1 || die "network namespaces are not available (ip netns list failed)"

if ! rustup toolchain list | grep -q "^${NIGHTLY}"; then
  step "installing Rust toolchain ${NIGHTLY}"
  if ! rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src; then
    # Offline: an installed "nightly" that is the pinned build serves under the pinned name.
    if [ "$NIGHTLY" = "$PINNED" ] && rustc +nightly -V 2>/dev/null | grep -q "$PINNED_COMMIT"; then
      step "using the installed nightly ($(rustc +nightly -V)) as ${NIGHTLY}"
      rustup toolchain link "$NIGHTLY" "$(rustc +nightly --print sysroot)" || die "cannot link the nightly as ${NIGHTLY}"
    else
      die "cannot install the ${NIGHTLY} toolchain (and no installed nightly is rustc ${PINNED_COMMIT})"
    fi
  fi
fi
if [ ! -d "$(rustc +"$NIGHTLY" --print sysroot)/lib/rustlib/src/rust/library" ]; then
  step "adding rust-src to ${NIGHTLY} (needed to build core for the bpf target)"
  rustup component add rust-src --toolchain "$NIGHTLY" || die "cannot add rust-src to ${NIGHTLY}"
fi

if [ "$BUILD_ONLY" != 1 ] && ! cargo +"$NIGHTLY" clippy -V >/dev/null 2>&1; then
  step "adding clippy to ${NIGHTLY} (CI lints the eBPF programs with the house rules)"
  rustup component add clippy --toolchain "$NIGHTLY" || die "cannot add clippy to ${NIGHTLY}"
fi

llvm_major=$(rustc +"$NIGHTLY" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
[ -n "$llvm_major" ] || die "cannot read the LLVM version of rustc +${NIGHTLY}"
sysroot=$(rustc +"$NIGHTLY" --print sysroot)
libllvm=$(ls "$sysroot"/lib/libLLVM.so.${llvm_major}* 2>/dev/null | head -n1 || true)
[ -n "$libllvm" ] || die "no libLLVM.so.${llvm_major}* in ${sysroot}/lib"

have_linker() {
  command -v bpf-linker >/dev/null || return 1
  bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION" || return 1
  # The linker records the LLVM it was built against in our stamp file.
  local stamp
  stamp=$(cat "${CARGO_HOME:-$HOME/.cargo}/.flowd-bpf-linker-llvm" 2>/dev/null) || return 1
  # The same path, or an identical library (the same nightly under another name).
  [ "$stamp" = "$libllvm" ] || { [ -f "$stamp" ] && cmp -s "$stamp" "$libllvm"; }
}
if ! have_linker; then
  step "building bpf-linker ${BPF_LINKER_VERSION} against LLVM ${llvm_major} of ${NIGHTLY} (takes a few minutes)"
  prefix="${CARGO_HOME:-$HOME/.cargo}/flowd-llvm-${llvm_major}"
  mkdir -p "$prefix/lib"
  ln -sf "$libllvm" "$prefix/lib/libLLVM.so"
  env LLVM_PREFIX="$prefix" "LLVM_SYS_${llvm_major}1_PREFIX=$prefix" RUSTFLAGS="-C link-arg=-Wl,-rpath,$sysroot/lib" \
    cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-${llvm_major}" --force \
    || die "building bpf-linker failed (see the cargo output above)"
  echo "$libllvm" > "${CARGO_HOME:-$HOME/.cargo}/.flowd-bpf-linker-llvm"
fi
step "toolchain ready: $(rustc +"$NIGHTLY" -V), LLVM ${llvm_major}, $(bpf-linker --version)"
