#!/usr/bin/env bash
# The demo: provisions nats-server, starts it and the validator, pushes the example schema and
# config, starts an example service that subscribes, changes a value with the CLI, and shows the
# service holding it with the measured delay. Everything it starts is stopped on exit.
# It runs on the secure config (nats/secure/: nkey identities, subject permissions, signed
# requests, the access policy) with the DEV-ONLY credentials of nats/secure/dev-credentials/.
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
creds="$root/nats/secure/dev-credentials"
# Every CLI command below runs as the identity `admin` unless it says otherwise.
export MYCOSYNTH_NKEY_FILE="$creds/admin.nk"
sed -e "s|127.0.0.1:4222|127.0.0.1:$port|" -e "s|^http: .*||" -e "s|.tools/nats-data-secure|$work/jetstream|" \
  nats/secure/server.conf > "$work/nats.conf"
cp nats/secure/users.conf "$work/users.conf"

echo "==> starting nats-server ($("$nats_server" --version)) on 127.0.0.1:$port"
"$nats_server" -c "$work/nats.conf" > "$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done

echo "==> starting the validator as identity 'validator', signed mode, 'admin' bootstraps the policy"
MYCOSYNTH_NKEY_FILE="$creds/validator.nk" NO_COLOR=1 "$bin" serve --http 127.0.0.1:19464 \
  --auth signed --admin "admin=$(cat "$creds/admin.pub")" > "$work/validator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "ready" "$work/validator.log" && break; sleep 0.1; done

echo "==> mycosynth policy set nats/secure/dev-policy.json   (as admin: alice may write payment-* in staging only)"
"$bin" policy set nats/secure/dev-policy.json

echo "==> mycosynth schema push payment-service schemas/payment-service.schema.json"
"$bin" schema push payment-service schemas/payment-service.schema.json
echo "==> mycosynth validate .   (the config repository: config/<namespace>/<env>.yaml, offline)"
"$bin" validate .
echo "==> mycosynth deploy .   (one atomic change set per namespace/environment, git commit recorded)"
"$bin" deploy . --reason "initial config"

echo "==> starting the example service (subscriber crate)"
MYCOSYNTH_NKEY_FILE="$creds/svc-payment-service.nk" "$example" "$MYCOSYNTH_NATS_URL" > "$work/service.log" 2>&1 &
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

echo "==> as alice: a production change is refused by the policy (exit code 5), nothing changes:"
MYCOSYNTH_NKEY_FILE="$creds/alice.nk" "$bin" set payment-service production database.pool_size 90 || echo "    (exit code $?)"
echo "==> without credentials the NATS server itself refuses the connection (exit code 7):"
env -u MYCOSYNTH_NKEY_FILE "$bin" get payment-service production || echo "    (exit code $?)"

echo "==> mycosynth rollback payment-service production --to 1"
"$bin" rollback payment-service production --to 1
for _ in $(seq 50); do grep -q "version 3" "$work/service.log" && break; sleep 0.1; done
grep "version 3" "$work/service.log" || true

echo "==> mycosynth history payment-service production"
"$bin" history payment-service production

echo "==> mycosynth audit --namespace payment-service --limit 6   (every request, accepted or refused, with the verified identity)"
"$bin" audit --namespace payment-service --limit 6
echo "==> mycosynth audit verify   (the hash chain of the audit log)"
"$bin" audit verify
# ---- auth callout (issue 25): identities decided by `mycosynth auth serve`, no config per service ----
echo "==> auth callout: a second nats-server (nats/callout/server.conf) that asks mycosynth auth serve who each connection is"
cport="${MYCOSYNTH_DEMO_CALLOUT_PORT:-14223}"
callout_url="nats://127.0.0.1:$cport"
sed -e "s|127.0.0.1:4222|127.0.0.1:$cport|" -e "s|^http: .*||" -e "s|.tools/nats-data-callout|$work/jetstream-callout|" \
  nats/callout/server.conf > "$work/callout-nats.conf"
"$nats_server" -c "$work/callout-nats.conf" > "$work/callout-nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -qs "Server is ready" "$work/callout-nats.log" && break; sleep 0.1; done
MYCOSYNTH_NKEY_FILE="$root/nats/callout/dev-credentials/callout.nk" NO_COLOR=1 "$bin" --nats-url "$callout_url" \
  auth serve --config nats/callout/callout.yaml --http 127.0.0.1:19465 > "$work/callout.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -qs "ready" "$work/callout.log" && break; sleep 0.1; done
MYCOSYNTH_NKEY_FILE="$creds/validator.nk" NO_COLOR=1 "$bin" --nats-url "$callout_url" serve --http 127.0.0.1:19466 \
  --auth signed --admin "admin=$(cat "$creds/admin.pub")" > "$work/callout-validator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -qs "ready" "$work/callout-validator.log" && break; sleep 0.1; done
echo "==> as admin (its nkey, decided by the callout's nkey backend): set payment-service staging feature.new_checkout true"
"$bin" --nats-url "$callout_url" set payment-service staging feature.new_checkout true
echo "==> a service with a static token (nats/callout/tokens.txt holds only its hash) reads its namespace:"
env -u MYCOSYNTH_NKEY_FILE "$bin" --nats-url "$callout_url" --token-file nats/callout/dev-credentials/svc-payment-service.token \
  watch payment-service staging > "$work/token-watch.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -qs "watching" "$work/token-watch.log" && break; sleep 0.1; done
cat "$work/token-watch.log"
echo "==> a wrong token is refused by the server (exit code 7); the callout logs why, never the token:"
echo "not-a-token" > "$work/bad.token"
env -u MYCOSYNTH_NKEY_FILE "$bin" --nats-url "$callout_url" --token-file "$work/bad.token" watch payment-service staging 2>&1 | tail -1 || true
grep -E "connection (accepted|refused)" "$work/callout.log" | sed -e 's/^.*connection /    connection /' | cut -c1-160
# ---- end of the auth callout block ----
echo "==> demo done; stopping everything"
