#!/usr/bin/env bash
# CPU time per request of the bench server, of redis-server and of wrk, from
# /proc, for some routes of the bench server: where the time goes, which the
# runner's ratios do not show. Same pinning as the runner (server on CPU 1;
# wrk and Redis on CPU 0). Needs the release bench-server and wrk (the
# runner installs wrk).
#
#   benches/scripts/cpu-per-request.sh [axum|actix] [fresh|replay] [ROUTE...]
#
# Default: axum, fresh keys, /bare /idempotent /floor-redis /idempotent-redis.
set -euo pipefail
cd "$(dirname "$0")/../.."
framework=${1:-axum}
mode=${2:-fresh}
shift $(( $# < 2 ? $# : 2 ))
routes=("$@")
[ ${#routes[@]} -gt 0 ] || routes=(bare idempotent floor-redis idempotent-redis)

cargo build -q --release -p idempotent-benches --bin bench-server
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --save "" --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" --logfile "$work/redis.log" >/dev/null
for _ in $(seq 50); do [ -s "$work/redis.pid" ] && break; sleep 0.1; done
rpid=$(cat "$work/redis.pid")
taskset -p -c 0 "$rpid" >/dev/null
taskset -c 1 target/release/bench-server --framework "$framework" \
  --redis-url "redis://127.0.0.1:$port" >"$work/server.out" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null; redis-cli -p $port shutdown nosave >/dev/null 2>&1; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q listening "$work/server.out" && break; sleep 0.1; done
addr=$(awk '/listening on/ {print $3}' "$work/server.out")

cat >"$work/keys.lua" <<'LUA'
function init(args)
  prefix, fresh, n = args[1], args[2] == "fresh", 0
end
function request()
  n = n + 1
  local key = fresh and (prefix .. "-" .. n) or prefix
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key}, '{"amount":1250,"currency":"EUR"}')
end
LUA

tick=$(getconf CLK_TCK)
cpu_us() { awk -v t="$tick" '{ print ($14 + $15) * 1000000 / t }' "/proc/$1/stat"; }
for round in 1 2 3; do
  for route in "${routes[@]}"; do
    key="r$round-$route-$RANDOM"
    if [ "$mode" = replay ]; then
      curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
        -H "Idempotency-Key: $key" -d '{"amount":1250,"currency":"EUR"}' "http://$addr/$route"
    fi
    s0=$(cpu_us $spid); r0=$(cpu_us "$rpid")
    # wrk's CPU: the subshell's reaped children's time once wrk has exited.
    out=$(taskset -c 0 wrk -t1 -c32 -d5s -s "$work/keys.lua" "http://$addr/$route" \
      -- "$key" "$mode" 2>&1; awk -v t="$tick" '{ print "wrkcpu", ($16 + $17) / t }' "/proc/$BASHPID/stat")
    s1=$(cpu_us $spid); r1=$(cpu_us "$rpid")
    python3 - "$out" "$s0" "$s1" "$r0" "$r1" "$route" <<'PY'
import sys, re
out, s0, s1, r0, r1, route = sys.argv[1], *map(float, sys.argv[2:6]), sys.argv[6]
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
w = float(re.search(r"wrkcpu ([\d.]+)", out).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(f"/{route:<24} {rps:>9,.0f} req/s   server {(s1-s0)/n:5.1f} µs"
      f"   redis {(r1-r0)/n:5.1f} µs   wrk {w*1e6/n:5.1f} µs per request"
      + (f"   ({bad.group(1)} non-2xx!)" if bad else ""))
PY
  done
done
