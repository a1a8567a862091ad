#!/usr/bin/env bash
# The demo: provisions nats-server, starts it and the validator, pushes the example schema and
# config, starts an example service that subscribes, changes a value with the CLI, and shows the
# service holding it with the measured delay. Everything it starts is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

nats_server="$(./nats/provision.sh)"
echo "==> building (release)"
cargo build --release --quiet --bin mycosynth --example payment_service -p mycosynth -p mycosynth-subscriber
bin="$root/target/release/mycosynth"
example="$root/target/release/examples/payment_service"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port="${MYCOSYNTH_DEMO_PORT:-14222}"
export MYCOSYNTH_NATS_URL="nats://127.0.0.1:$port"
export MYCOSYNTH_AUTHOR="demo-operator"
sed -e "s|127.0.0.1:4222|127.0.0.1:$port|" -e "s|^http: .*||" -e "s|.tools/nats-data|$work/jetstream|" \
  nats/dev.conf > "$work/nats.conf"

echo "==> starting nats-server ($("$nats_server" --version)) on 127.0.0.1:$port"
"$nats_server" -c "$work/nats.conf" > "$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done

echo "==> starting the validator (metrics on http://127.0.0.1:19464/metrics)"
NO_COLOR=1 "$bin" serve --http 127.0.0.1:19464 > "$work/validator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "ready" "$work/validator.log" && break; sleep 0.1; done

echo "==> mycosynth schema push payment-service schemas/payment-service.schema.json"
"$bin" schema push payment-service schemas/payment-service.schema.json
echo "==> mycosynth validate .   (the config repository: config/<namespace>/<env>.yaml, offline)"
"$bin" validate .
echo "==> mycosynth deploy .   (one atomic change set per namespace/environment, git commit recorded)"
"$bin" deploy . --reason "initial config"

echo "==> starting the example service (subscriber crate)"
"$example" "$MYCOSYNTH_NATS_URL" > "$work/service.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "started" "$work/service.log" && break; sleep 0.1; done
cat "$work/service.log"

echo "==> mycosynth set payment-service production database.pool_size 80 --reason 'peak traffic'"
"$bin" set payment-service production database.pool_size 80 --reason "peak traffic"
for _ in $(seq 50); do grep -q "database.pool_size = 80" "$work/service.log" && break; sleep 0.1; done
grep "database.pool_size = 80" "$work/service.log"

echo "==> mycosynth status payment-service production --wait-version 2   (did it land everywhere?)"
"$bin" status payment-service production --wait-version 2 --timeout 10

echo "==> an invalid change is refused (exit code 3) and changes nothing:"
"$bin" set payment-service production database.pool_size 0 || echo "    (exit code $?)"

echo "==> mycosynth rollback payment-service production --to 1"
"$bin" rollback payment-service production --to 1
for _ in $(seq 50); do grep -q "version 3" "$work/service.log" && break; sleep 0.1; done
grep "version 3" "$work/service.log" || true

echo "==> mycosynth history payment-service production"
"$bin" history payment-service production
echo "==> demo done; stopping everything"
