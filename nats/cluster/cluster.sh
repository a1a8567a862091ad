#!/usr/bin/env bash
# Starts, stops or shows a three-node JetStream cluster on loopback (client ports 4222-4224).
#   nats/cluster/cluster.sh start | stop | status
# Clients take all three URLs: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
run="$root/.tools/cluster"
mkdir -p "$run"

case "${1:-status}" in
  start)
    server="$(./nats/provision.sh)"
    for i in 1 2 3; do
      if [ -f "$run/n$i.pid" ] && kill -0 "$(cat "$run/n$i.pid")" 2>/dev/null; then
        echo "n$i already running (pid $(cat "$run/n$i.pid"))"
        continue
      fi
      "$server" -c "nats/cluster/n$i.conf" > "$run/n$i.log" 2>&1 &
      echo $! > "$run/n$i.pid"
      echo "n$i started (pid $!, client port $((4221 + i)))"
    done
    for _ in $(seq 100); do
      grep -q "metadata leader" "$run"/n*.log 2>/dev/null && break
      sleep 0.1
    done
    grep -h "metadata leader" "$run"/n*.log | tail -n 1 || echo "warning: no JetStream leader yet"
    ;;
  stop)
    for i in 1 2 3; do
      if [ -f "$run/n$i.pid" ]; then
        kill "$(cat "$run/n$i.pid")" 2>/dev/null || true
        rm -f "$run/n$i.pid"
        echo "n$i stopped"
      fi
    done
    ;;
  status)
    for i in 1 2 3; do
      if [ -f "$run/n$i.pid" ] && kill -0 "$(cat "$run/n$i.pid")" 2>/dev/null; then
        echo "n$i running (pid $(cat "$run/n$i.pid"), client port $((4221 + i)))"
      else
        echo "n$i stopped"
      fi
    done
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
