#!/usr/bin/env bash
# The flowd demo: a two-node lab cluster with real traffic, observed by flowd on
# every node and merged by the relay. Needs root.
#
#   sudo ./scripts/demo.sh                  # runs until Ctrl-C
#   FLOWD_DEMO_SECONDS=30 ./scripts/demo.sh # ends by itself (used by the tests)
#   FLOWD_DEMO_PROFILE=dev                  # debug build (faster to build)
#   FLOWD_DEMO_DIR=/tmp/x                   # where the lab keeps its state and logs
#   FLOWD_DEMO_BIN_DIR=target/debug         # skip the build, use these binaries
#   FLOWD_DEMO_TLS=0                        # plain text between the relay and the
#                                           # nodes (debugging; default: mTLS)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_TO_RUN="${FLOWD_DEMO_SECONDS:-0}"
DIR="${FLOWD_DEMO_DIR:-$ROOT/lab-run}"
TLS="${FLOWD_DEMO_TLS:-1}"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

bash scripts/setup.sh
PROFILE="${FLOWD_DEMO_PROFILE:-release}"
if [ -n "${FLOWD_DEMO_BIN_DIR:-}" ]; then
  # Already built (the demo test uses the binaries of the test build).
  BIN="$FLOWD_DEMO_BIN_DIR"
  step "using the binaries in $BIN"
else
  step "building flowd, relay, observe and the lab ($PROFILE)"
  cargo build --profile "$PROFILE" --locked -p flowd -p flowd-relay -p observe-cli -p flowd-lab
  [ "$PROFILE" = dev ] && PROFILE_DIR=debug || PROFILE_DIR=$PROFILE
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_DIR"
fi
for b in flowd relay observe lab; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing"; done
LAB="$BIN/lab"

pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  "$LAB" down --dir "$DIR" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$LAB" down --dir "$DIR" >/dev/null 2>&1 || true
step "starting the lab cluster (network namespaces: nodes, pods, DNS, HTTP and gRPC services)"
"$LAB" up --dir "$DIR"
# "name ip" per node, from the lab's state file.
node_list=$(python3 -c 'import json,sys; [print(n["name"], n["underlay_ip"]) for n in json.load(open(sys.argv[1]))["nodes"]]' "$DIR/lab-state.json")
nodes=$(echo "$node_list" | awk '{print $1}' | tr '\n' ' ')

# mTLS between the relay and the nodes, as in the Kubernetes deployment:
# flowd certgen writes the CA and the certificates laid out as the Secrets
# kubelet mounts (DIR/tls/<secret>/<key>); flowd serves the nodes'
# certificate and requires the relay's, the relay dials with it.
if [ "$TLS" = 1 ]; then
  step "making the CA and certificates (flowd certgen --output-dir $DIR/tls)"
  "$BIN/flowd" certgen --output-dir "$DIR/tls" 2>>"$DIR/certgen.log"
  SRV="$DIR/tls/flowd-server-certs"
  CLI="$DIR/tls/flowd-relay-client-certs"
  flowd_tls=(--set hubble-disable-tls=false --set "hubble-tls-cert-file=$SRV/tls.crt"
    --set "hubble-tls-key-file=$SRV/tls.key" --set "hubble-tls-client-ca-files=$SRV/ca.crt")
  # Static peers carry no TLS name: any name under the nodes' certificate
  # (*.default.hubble-grpc.cilium.io) verifies them.
  relay_tls=(--tls-hubble-server-ca-files "$CLI/ca.crt" --tls-hubble-client-cert-file "$CLI/tls.crt"
    --tls-hubble-client-key-file "$CLI/tls.key" --tls-hubble-server-name hubble-peer.default.hubble-grpc.cilium.io)
else
  flowd_tls=(--set hubble-disable-tls=true)
  relay_tls=()
fi

step "starting flowd on every node (examples/configmap.yaml)"
peers=()
for node in $nodes; do
  NO_COLOR=1 "$LAB" exec --dir "$DIR" --node "$node" -- "$BIN/flowd" \
    --config "$ROOT/examples/configmap.yaml" \
    --set "flowd-node-name=$node" \
    --set "flowd-manifests-dir=$DIR/manifests" \
    "${flowd_tls[@]}" \
    >"$DIR/flowd-$node.log" 2>&1 &
  pids+=($!)
  ip=$(echo "$node_list" | awk -v n="$node" '$1 == n {print $2}')
  peers+=(--peer "$node=$ip:4244")
done
# Pods per node, from the lab's state file: flowd is ready on a node when it
# has attached to that many pod veths.
pods_on() { python3 -c 'import json,sys; print(sum(1 for p in json.load(open(sys.argv[1]))["pods"] if p["node"] == sys.argv[2]))' "$DIR/lab-state.json" "$1"; }
for node in $nodes; do
  want=$(pods_on "$node")
  for _ in $(seq 1 300); do
    got=$(grep -c 'flowd::daemon.*attached ifname=' "$DIR/flowd-$node.log" 2>/dev/null || true)
    [ "${got:-0}" -ge "$want" ] && break
    grep -q '^Error' "$DIR/flowd-$node.log" 2>/dev/null && break
    sleep 0.1
  done
  [ "${got:-0}" -ge "$want" ] || die "flowd on $node did not attach to its $want pods; see $DIR/flowd-$node.log"
  echo "flowd on $node: attached to $got pod interfaces"
done

UI_PORT="${FLOWD_DEMO_UI_PORT:-12000}"
if [ "$TLS" = 1 ]; then
  step "starting the relay in the router namespace (:4245, web UI :$UI_PORT; mTLS to the nodes, plain text to its clients on the router's loopback)"
else
  step "starting the relay in the router namespace (:4245, web UI :$UI_PORT; plain text to the nodes: FLOWD_DEMO_TLS=0)"
fi
"$LAB" exec --dir "$DIR" --router -- "$BIN/relay" "${peers[@]}" "${relay_tls[@]}" --ui-listen "127.0.0.1:$UI_PORT" >"$DIR/relay.log" 2>&1 &
pids+=($!)
# The router namespace is not reachable from this machine's browser: the lab
# forwards this machine's loopback port to the relay's UI.
"$LAB" forward --dir "$DIR" --listen "127.0.0.1:$UI_PORT" --to "127.0.0.1:$UI_PORT" >>"$DIR/relay.log" 2>&1 &
pids+=($!)
observe() { "$LAB" exec --dir "$DIR" --router -- "$BIN/observe" --server 127.0.0.1:4245 "$@"; }
n_nodes=$(echo "$nodes" | wc -w)
for _ in $(seq 1 150); do
  observe status 2>/dev/null | grep -q "Connected Nodes: $n_nodes/$n_nodes" && break
  sleep 0.2
done
observe status | grep -q "Connected Nodes: $n_nodes/$n_nodes" \
  || die "the relay did not connect to all $n_nodes nodes; see $DIR/relay.log and $DIR/flowd-*.log"
observe status
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$UI_PORT/api/status" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$UI_PORT/api/status" >/dev/null \
  || die "the relay's web UI does not answer on 127.0.0.1:$UI_PORT; see $DIR/relay.log"

T0=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
step "sending one round of the traffic mix from the loadgen pod (its report: $DIR/traffic-first-round.json)"
"$LAB" traffic --dir "$DIR" --rounds 1 >"$DIR/traffic-first-round.json" 2>"$DIR/traffic.log" \
  || die "the traffic generator failed; see $DIR/traffic.log"
python3 - "$DIR/traffic-first-round.json" <<'PY'
import collections, json, sys
r = json.load(open(sys.argv[1]))
http = collections.Counter()
for h in r["sent"]["http"]:
    http[h["status"]] += h["count"]
dns = collections.Counter()
for d in r["sent"]["dns"]:
    dns[d["rcode"]] += d["count"]
errors = sum(h["count"] for h in r["expected"]["http"] if h["status"] >= 400)
# gRPC status names (the report has the codes).
names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
         "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
         "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
         "UNAUTHENTICATED"]
grpc = collections.Counter()
for g in r["expected"].get("grpc", []):
    code = g["code"]
    grpc[names[code] if code is not None and code < len(names) else str(code)] += g["count"]
print("sent: " + ", ".join(f"{n}x HTTP {s}" for s, n in sorted(http.items()))
      + "; DNS " + ", ".join(f"{n}x {c}" for c, n in sorted(dns.items())))
print(f"HTTP exchanges with a 4xx/5xx answer in the whole cluster (downstream calls included): {errors}")
print("gRPC calls order-service -> inventory (Reserve): "
      + ", ".join(f"{n}x {c}" for c, n in sorted(grpc.items())))
PY
step "then the same mix every second, in the background"
"$LAB" traffic --dir "$DIR" --rounds 1000000 --interval-ms 1000 >"$DIR/traffic.json" 2>>"$DIR/traffic.log" &
pids+=($!)

step "observe --namespace ecommerce --http-status 400-599   (HTTP errors, all nodes, since the first round)"
echo "(one line per observation point: a pod's veth on the client's node and on the server's node)"
timeout 5 bash -c "$(declare -f observe); LAB=$LAB DIR=$DIR BIN=$BIN; observe --namespace ecommerce --http-status 400-599 --since $T0 --follow" || true

step "observe --namespace ecommerce --protocol grpc --grpc-status 1-16   (failing gRPC calls, since the first round)"
echo "(their HTTP status is 200: the gRPC status, from the trailers, says what failed; no proxy)"
timeout 5 bash -c "$(declare -f observe); LAB=$LAB DIR=$DIR BIN=$BIN; observe --namespace ecommerce --protocol grpc --grpc-status 1-16 --since $T0 --follow" || true

step "observe --protocol dns --last 10   (DNS, from the datapath; no proxy)"
observe --protocol dns --last 10 || true

step "a sample of the metrics (node-a, :9965)"
metrics=$("$LAB" exec --dir "$DIR" --node "${nodes%% *}" -- curl -s 127.0.0.1:9965/metrics 2>/dev/null || true)
for m in http_requests_total grpc_requests_total dns_responses_total drop_total flows_processed_total; do
  echo "$metrics" | grep -E "^hubble_${m}\{" | head -4 || true
done

cat <<EOM

Web UI (service map, flows, node status): http://127.0.0.1:$UI_PORT/

Your own queries (the relay listens in the lab's router namespace; the nodes
require the relay's client certificate: $DIR/tls/flowd-relay-client-certs):
  $LAB exec --dir $DIR --router -- $BIN/observe --server 127.0.0.1:4245 --namespace ecommerce -f
  $LAB exec --dir $DIR --router -- $BIN/observe --server 127.0.0.1:4245 --to-pod ecommerce/payment-service -o json --last 5
  $LAB exec --dir $DIR --router -- $BIN/observe --server 127.0.0.1:4245 list nodes
Stop with Ctrl-C: flowd, the relay and the lab are torn down.
EOM

step "following ecommerce traffic"
if [ "$SECONDS_TO_RUN" -gt 0 ]; then
  timeout "$SECONDS_TO_RUN" bash -c "$(declare -f observe); LAB=$LAB DIR=$DIR BIN=$BIN; observe --namespace ecommerce --follow" || true
else
  observe --namespace ecommerce --follow || true
fi
