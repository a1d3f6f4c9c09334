#!/usr/bin/env bash
# Stock cloudflared `--protocol quic` through ringflare's built-in edge (issue 12 item 5), in a
# loopback-only network namespace: GET, POST with a length and chunked (checksums), a 64 MiB
# download (sha256 against the origin), SSE (events not buffered), WebSocket echo, and a
# graceful shutdown (SIGTERM to cloudflared while a request is in flight: it completes).
#
# Usage: tests/quic_edge/run.sh [RINGFLARE] [CLOUDFLARED] [PROTOCOL]
#   RINGFLARE   default $CARGO_TARGET_DIR/debug/ringflare (or target/debug/ringflare)
#   CLOUDFLARED default /root/.cache/cloudflared-ref/cloudflared-2026.8.2
#   PROTOCOL    quic (default) or http2 (the same checks over the other transport)
# Needs unshare (user + net namespaces), ip, curl and python3. Exit 0 when every check passes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ringflare=${1:-${CARGO_TARGET_DIR:-$here/../../target}/debug/ringflare}
cloudflared=${2:-/root/.cache/cloudflared-ref/cloudflared-2026.8.2}
protocol=${3:-quic}
if [ -z "${RINGFLARE_QUIC_EDGE_NETNS:-}" ]; then
    exec unshare --user --map-root-user --net -- env RINGFLARE_QUIC_EDGE_NETNS=1 \
        bash "$0" "$(realpath "$ringflare")" "$(realpath "$cloudflared")" "$protocol"
fi
ip link set lo up
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
die() { echo "FAIL: $*"; for f in "$work"/*.log; do echo "== $f"; tail -n 30 "$f"; done; exit 1; }

"$ringflare" bench serve --listen 127.0.0.1:18080 >"$work/bench-origin.log" 2>&1 & pids+=($!)
python3 "$here/peers.py" origin 18081 >"$work/py-origin.log" 2>&1 & pids+=($!)
"$ringflare" edge init --state-dir "$work/state" >"$work/init.out"
token=$(awk '/^Tunnel token/{getline; print $1; exit}' "$work/init.out")
[ -n "$token" ] || token=$(grep -Eo 'ey[A-Za-z0-9_=-]{40,}' "$work/init.out" | head -n1)
[ -n "$token" ] || die "no token from edge init: $(cat "$work/init.out")"
"$ringflare" edge --state-dir "$work/state" --listen 127.0.0.1:17844 --eyeball 127.0.0.1:18000 \
    >"$work/edge.log" 2>&1 & pids+=($!)
cat >"$work/config.yml" <<YML
ingress:
  - path: ^/(sse|slow)
    service: http://127.0.0.1:18081
  - service: http://127.0.0.1:18080
YML
"$cloudflared" tunnel --no-autoupdate --config "$work/config.yml" --edge 127.0.0.1:17844 \
    --ha-connections 1 --cacert "$work/state/ca.pem" --protocol "$protocol" \
    --metrics 127.0.0.1:18500 --grace-period 10s run --token "$token" \
    >"$work/cloudflared.log" 2>&1 &
cfd=$!; pids+=($cfd)

for _ in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: app.example.com' \
        http://127.0.0.1:18000/bytes/1 || true)
    [ "$code" = 200 ] && break
    sleep 0.2
done
[ "$code" = 200 ] || die "tunnel not ready (last status $code)"
registered=$(grep "Registered tunnel connection" "$work/edge.log" || true)
if [ "$protocol" = quic ]; then
    echo "$registered" | grep -q "protocol=quic" || die "the edge logged no QUIC registration"
else
    [ -n "$registered" ] && ! echo "$registered" | grep -q "protocol=quic" \
        || die "the edge logged no http2-only registration"
fi
echo "ok: cloudflared registered over $protocol and serves through the edge"

export ORIGIN_SHA256
ORIGIN_SHA256=$(curl -s http://127.0.0.1:18080/bytes/67108864 | sha256sum | cut -d' ' -f1)
python3 "$here/peers.py" check 127.0.0.1:18000 || die "eyeball checks"

# Graceful shutdown: a request in flight when cloudflared gets SIGTERM completes.
python3 "$here/peers.py" slow 127.0.0.1:18000 "$work/slow.out" & slow=$!
for _ in $(seq 1 100); do
    grep -q "slow request started" "$work/py-origin.log" && break
    sleep 0.1
done
grep -q "slow request started" "$work/py-origin.log" || die "the slow request never reached the origin"
kill -TERM "$cfd"
wait "$slow" || true
result=$(cat "$work/slow.out")
[ "$result" = "200 1024" ] || die "request in flight during SIGTERM: $result"
rc=0; wait "$cfd" || rc=$?
[ "$rc" = 0 ] || die "cloudflared exited with $rc after SIGTERM"
grep -q "Unregistered tunnel connection" "$work/edge.log" || die "no unregistration in the edge log"
echo "ok: SIGTERM drained: the in-flight request completed (200, 1024 bytes), cloudflared exited 0, the edge logged the unregistration"
echo "PASS: stock cloudflared --protocol $protocol through ringflare's edge"
