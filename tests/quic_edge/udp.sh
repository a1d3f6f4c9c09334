#!/usr/bin/env bash
# Stock cloudflared 2026.8.2 `--protocol quic` carrying UDP sessions opened by ringflare's edge
# (`--udp-route`), in a loopback-only network namespace: datagram v2 (default) and v3
# (`--features support_datagram_v3_2`); a UDP echo origin; payloads of several sizes echo.
#
# Usage: tests/quic_edge/udp.sh [RINGFLARE] [CLOUDFLARED]
# Needs unshare (user + net namespaces), ip and python3. Exit 0 when every check passes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ringflare=${1:-${CARGO_TARGET_DIR:-$here/../../target}/debug/ringflare}
cloudflared=${2:-/root/.cache/cloudflared-ref/cloudflared-2026.8.2}
if [ -z "${RINGFLARE_UDP_EDGE_NETNS:-}" ]; then
    exec unshare --user --map-root-user --net -- env RINGFLARE_UDP_EDGE_NETNS=1 \
        bash "$0" "$(realpath "$ringflare")" "$(realpath "$cloudflared")"
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

python3 - >"$work/echo.log" 2>&1 <<'PY' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 18553))
while True:
    d, a = s.recvfrom(4096)
    s.sendto(d, a)
PY
pids+=($!)
"$ringflare" edge init --state-dir "$work/state" >"$work/init.out"
token=$(awk '/^Tunnel token/{getline; print $1; exit}' "$work/init.out")
"$ringflare" edge --state-dir "$work/state" --listen 127.0.0.1:17844 --eyeball 127.0.0.1:18000 \
    --udp-route 127.0.0.1:18053=127.0.0.1:18553 --loglevel debug >"$work/edge.log" 2>&1 & pids+=($!)
printf 'ingress:\n  - service: http_status:404\n' >"$work/config.yml"

check() { # $1: label, rest: extra cloudflared run flags
    local label=$1; shift
    "$cloudflared" tunnel --no-autoupdate --config "$work/config.yml" --edge 127.0.0.1:17844 \
        --ha-connections 1 --cacert "$work/state/ca.pem" --protocol quic --loglevel debug \
        run --token "$token" "$@" >"$work/cloudflared-$label.log" 2>&1 &
    local cfd=$!; pids+=($cfd)
    for _ in $(seq 1 150); do
        grep -q "Registered tunnel connection" "$work/cloudflared-$label.log" && break
        sleep 0.2
    done
    grep -q "Registered tunnel connection" "$work/cloudflared-$label.log" || die "$label: not registered"
    python3 - <<'PY' || die "$label: echo failed"
import socket, sys
for src in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect(("127.0.0.1", 18053))
    for n in (1, 64, 512, 1100):
        msg = bytes((i * 7 + n + src) % 256 for i in range(n))
        for _ in range(10):
            s.send(msg)
            try:
                if s.recv(4096) == msg:
                    break
            except socket.timeout:
                pass
        else:
            sys.exit(f"no echo of {n} bytes from source {src}")
print("echo ok")
PY
    echo "PASS: $label: 2 sources x 4 sizes echoed through stock cloudflared"
    kill "$cfd"; wait "$cfd" 2>/dev/null || true
}
check v2
check v3 --features support_datagram_v3_2
