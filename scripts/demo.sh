#!/usr/bin/env bash
# The flowd demo: a two-node lab cluster with real traffic, observed by flowd on
# every node and merged by the relay. Needs root.
#
#   sudo ./scripts/demo.sh                  # runs until Ctrl-C
#   FLOWD_DEMO_SECONDS=30 ./scripts/demo.sh # ends by itself (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_TO_RUN="${FLOWD_DEMO_SECONDS:-0}"
DIR="${FLOWD_DEMO_DIR:-$ROOT/lab-run}"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

bash scripts/setup.sh
PROFILE="${FLOWD_DEMO_PROFILE:-release}"
step "building flowd, relay, observe and the lab ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p flowd -p flowd-relay -p observe-cli -p flowd-lab
[ "$PROFILE" = dev ] && PROFILE_DIR=debug || PROFILE_DIR=$PROFILE
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE_DIR"
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
step "starting the lab cluster (network namespaces: nodes, pods, DNS, HTTP services)"
"$LAB" up --dir "$DIR"
# "name ip" per node, from the lab's state file.
node_list=$(python3 -c 'import json,sys; [print(n["name"], n["underlay_ip"]) for n in json.load(open(sys.argv[1]))["nodes"]]' "$DIR/lab-state.json")
nodes=$(echo "$node_list" | awk '{print $1}' | tr '\n' ' ')

step "starting flowd on every node (examples/configmap.yaml)"
peers=()
for node in $nodes; do
  "$LAB" exec --dir "$DIR" --node "$node" -- "$BIN/flowd" \
    --config "$ROOT/examples/configmap.yaml" \
    --set "flowd-node-name=$node" \
    --set "flowd-manifests-dir=$DIR/manifests" \
    >"$DIR/flowd-$node.log" 2>&1 &
  pids+=($!)
  ip=$(echo "$node_list" | awk -v n="$node" '$1 == n {print $2}')
  peers+=(--peer "$node=$ip:4244")
done

step "starting the relay in the router namespace (:4245)"
"$LAB" exec --dir "$DIR" --router -- "$BIN/relay" "${peers[@]}" >"$DIR/relay.log" 2>&1 &
pids+=($!)
observe() { "$LAB" exec --dir "$DIR" --router -- "$BIN/observe" --server 127.0.0.1:4245 "$@"; }
for _ in $(seq 1 100); do observe status >/dev/null 2>&1 && break; sleep 0.2; done
observe status || die "the relay did not come up; see $DIR/relay.log and $DIR/flowd-*.log"

step "sending traffic: the loadgen pod runs a fixed mix (200/201/402/404/503 and DNS) every second"
"$LAB" traffic --dir "$DIR" --rounds 1000000 --interval-ms 1000 >"$DIR/traffic.json" 2>"$DIR/traffic.log" &
pids+=($!)

step "observe --namespace ecommerce --http-status 400-599   (HTTP errors, all nodes)"
timeout 5 bash -c "$(declare -f observe); LAB=$LAB DIR=$DIR BIN=$BIN; observe --namespace ecommerce --http-status 400-599 --follow" || true

step "observe --protocol dns --last 10   (DNS, from the datapath; no proxy)"
observe --protocol dns --last 10 || true

step "a sample of the metrics (node-a, :9965)"
"$LAB" exec --dir "$DIR" --node "${nodes%% *}" -- curl -s 127.0.0.1:9965/metrics 2>/dev/null \
  | grep -E '^hubble_(http_requests_total|dns_responses_total|flows_processed_total)' | head -12 || true

cat <<EOM

Your own queries (the relay listens in the lab's router namespace):
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
