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

# A free loopback port, or the one asked for if it is free: a port someone else listens on would
# let a stranger's server answer the demo's commands.
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pick_port() { # $1: what for, $2: the port asked for (may be empty)
  if [ -n "$2" ]; then
    port_free "$2" || { echo "demo: port $2 ($1) is in use by another process; free it or choose another" >&2; exit 1; }
    echo "$2"
  else
    free_port
  fi
}
# Waits until $3 appears in the log $2 of part $1 (process $4); if the process exits or 15 s
# pass first, stops the demo with that part's last log lines.
wait_for() {
  local part="$1" log="$2" pattern="$3" pid="$4"
  for _ in $(seq 150); do
    grep -q "$pattern" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: $part did not come up; its last log lines ($log):" >&2
  tail -n 20 "$log" >&2
  exit 1
}

port="$(pick_port "nats-server" "${MYCOSYNTH_DEMO_PORT:-}")"
http_port="$(pick_port "validator /metrics" "${MYCOSYNTH_DEMO_HTTP_PORT:-}")"
export MYCOSYNTH_NATS_URL="nats://127.0.0.1:$port"
creds="$root/nats/secure/dev-credentials"
# Every CLI command below runs as the identity `admin` unless it says otherwise.
export MYCOSYNTH_NKEY_FILE="$creds/admin.nk"
sed -e "s|127.0.0.1:4222|127.0.0.1:$port|" -e "s|^http: .*||" -e "s|.tools/nats-data-secure|$work/jetstream|" \
  nats/secure/server.conf > "$work/nats.conf"
cp nats/secure/users.conf "$work/users.conf"

echo "==> starting nats-server ($("$nats_server" --version)) on 127.0.0.1:$port (MYCOSYNTH_DEMO_PORT chooses)"
"$nats_server" -c "$work/nats.conf" > "$work/nats.log" 2>&1 &
pids+=($!)
wait_for nats-server "$work/nats.log" "Server is ready" "$!"

echo "==> starting the validator as identity 'validator', signed mode, 'admin' bootstraps the policy; /metrics on 127.0.0.1:$http_port"
MYCOSYNTH_NKEY_FILE="$creds/validator.nk" NO_COLOR=1 "$bin" serve --http "127.0.0.1:$http_port" \
  --auth signed --admin "admin=$(cat "$creds/admin.pub")" > "$work/validator.log" 2>&1 &
pids+=($!)
wait_for validator "$work/validator.log" "ready" "$!"

echo "==> mycosynth policy set nats/secure/dev-policy.json   (alice writes payment-* in staging only; production needs one approval from an admin or alice)"
"$bin" policy set nats/secure/dev-policy.json
alice() { MYCOSYNTH_NKEY_FILE="$creds/alice.nk" "$bin" "$@"; }
# The id of the change request a command's --json answer opened.
opened() { python3 -c 'import json,sys; print(json.load(sys.stdin)["proposed"]["id"])'; }
# Waits until the example service printed $1.
service_shows() {
  for _ in $(seq 100); do grep -q "$1" "$work/service.log" && break; sleep 0.1; done
  grep "$1" "$work/service.log"
}

echo "==> mycosynth schema push payment-service schemas/payment-service.schema.json"
"$bin" schema push payment-service schemas/payment-service.schema.json
echo "==> mycosynth validate .   (the config repository: config/<namespace>/<env>.yaml, offline)"
"$bin" validate .
echo "==> mycosynth deploy . --env production   (production needs approval: a change request opens)"
id="$("$bin" --json deploy . --env production --reason "initial config" | python3 -c 'import json,sys; print(json.load(sys.stdin)["targets"][0]["outcome"]["proposed"]["id"])')"
"$bin" requests show "$id"
echo "==> as alice: mycosynth requests list --to-approve; requests approve $id"
alice requests list --to-approve
alice requests approve "$id" --comment "looks right"
echo "==> mycosynth requests apply $id   (committed once, with approved_by)"
"$bin" requests apply "$id"
echo "==> mycosynth deploy .   (production is unchanged now; production-eu, which needs no approval, commits)"
"$bin" deploy . --reason "initial config"

echo "==> starting the example service (subscriber crate)"
MYCOSYNTH_NKEY_FILE="$creds/svc-payment-service.nk" "$example" "$MYCOSYNTH_NATS_URL" > "$work/service.log" 2>&1 &
pids+=($!)
wait_for "the example service" "$work/service.log" "started" "$!"
cat "$work/service.log"

echo "==> mycosynth set payment-service production database.pool_size 80 --emergency --reason 'peak traffic'   (commits at once, opens a review)"
"$bin" set payment-service production database.pool_size 80 --emergency --reason "peak traffic"
service_shows "database.pool_size = 80"

echo "==> mycosynth status payment-service production --wait-version 2   (did it land everywhere?)"
"$bin" status payment-service production --wait-version 2 --timeout 10
echo "==> as alice: mycosynth requests list --review; the emergency change is reviewed"
alice requests list --review
review="$(alice --json requests list --review | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"][0]["id"])')"
alice requests approve "$review"

at="$(python3 -c 'import datetime; print((datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%SZ"))')"
echo "==> mycosynth set payment-service production http.retries 3 --at $at   (a scheduled change request)"
id="$("$bin" --json set payment-service production http.retries 3 --at "$at" --reason "retry more" | opened)"
alice requests approve "$id"
"$bin" requests list --scheduled
echo "    waiting for its time..."
service_shows "http.retries = 3"

echo "==> an invalid change is refused (exit code 3) and changes nothing:"
"$bin" set payment-service production database.pool_size 0 || echo "    (exit code $?)"
echo "==> as alice: her own change requests are never hers to approve (exit code 5):"
own="$(alice --json apply config/payment-service/production.yaml --namespace payment-service --env staging --propose | opened)"
alice requests approve "$own" || echo "    (exit code $?)"
echo "==> as alice: a production change is refused by the policy (exit code 5), nothing changes:"
alice set payment-service production database.pool_size 90 || echo "    (exit code $?)"
echo "==> without credentials the NATS server itself refuses the connection (exit code 7):"
env -u MYCOSYNTH_NKEY_FILE "$bin" get payment-service production || echo "    (exit code $?)"

echo "==> mycosynth rollback payment-service production --to 1   (a change request too); alice approves; it applies"
id="$("$bin" --json rollback payment-service production --to 1 | opened)"
alice requests approve "$id"
"$bin" requests apply "$id"
service_shows "version 4" || true

echo "==> mycosynth history payment-service production"
"$bin" history payment-service production

echo "==> mycosynth audit --namespace payment-service --limit 8   (every request, accepted or refused, with the verified identity)"
"$bin" audit --namespace payment-service --limit 8
echo "==> mycosynth audit verify   (the hash chain of the audit log)"
"$bin" audit verify

# --- issue 24: rollouts (docs/rollouts.md) --------------------------------------------------
echo "==> mycosynth rollout start payment-service production-eu --set http.timeout_ms=350 --steps 10%,50%,100% --bake 2s --auto-rollback"
echo "    (validated like set, served to a canary cohort first; production-eu needs no approval)"
"$bin" rollout start payment-service production-eu --set http.timeout_ms=350 \
  --steps 10%,50%,100% --bake 2s --auto-rollback --health 'http_5xx_ratio<=control*1.1+0.01' \
  --reason 'shorter timeout, canaried'
echo "==> a second rollout on the same environment is refused, naming the running one (exit code 4):"
"$bin" rollout start payment-service production-eu --set http.timeout_ms=300 || echo "    (exit code $?)"
echo "==> steps that do not increase are refused (exit code 3):"
"$bin" rollout start payment-service production-eu --set http.timeout_ms=300 --steps 50%,10% || echo "    (exit code $?)"
echo "==> mycosynth rollout status payment-service production-eu   (who serves the candidate)"
"$bin" rollout status payment-service production-eu
echo "==> mycosynth rollout abort payment-service production-eu   (canaries back on stable at once)"
"$bin" rollout abort payment-service production-eu --reason 'demo'
echo "==> mycosynth impact payment-service production --window 1m   (the fleet's health signals before and after the latest version)"
"$bin" impact payment-service production --window 1m
# --- end of issue 24 --------------------------------------------------------------------------
# --- issue 22: the HTTP sidecar and the Python client (docs/sidecar.md) --------------------
sidecar_port="$(pick_port "sidecar" "${MYCOSYNTH_DEMO_SIDECAR_PORT:-}")"
sidecar="http://127.0.0.1:$sidecar_port"
echo "==> mycosynth sidecar payment-service production --listen 127.0.0.1:$sidecar_port   (as svc-payment-service: it reads what that identity may)"
MYCOSYNTH_NKEY_FILE="$creds/svc-payment-service.nk" NO_COLOR=1 "$bin" sidecar payment-service production \
  --listen "127.0.0.1:$sidecar_port" --cache-dir "$work/sidecar-cache" > "$work/sidecar.log" 2>&1 &
pids+=($!)
wait_for sidecar "$work/sidecar.log" "ready" "$!"
for _ in $(seq 50); do curl -sf "$sidecar/health" > /dev/null && break; sleep 0.1; done
echo "==> curl $sidecar/v1/config/payment-service/production/http.timeout_ms"
curl -s "$sidecar/v1/config/payment-service/production/http.timeout_ms"; echo
echo "==> OFREP: curl -X POST $sidecar/ofrep/v1/evaluate/flags/feature_flags.new_checkout"
curl -s -X POST -H 'Content-Type: application/json' -d '{"context":{}}' \
  "$sidecar/ofrep/v1/evaluate/flags/feature_flags.new_checkout"; echo
echo "==> the change stream (curl -N $sidecar/v1/watch/payment-service/production), then a change: its event names the approvers and the request"
curl -sN "$sidecar/v1/watch/payment-service/production" > "$work/sse.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "^event: state" "$work/sse.log" && break; sleep 0.1; done
echo "    (mycosynth set payment-service production http.timeout_ms 300: a change request; alice approves; it applies)"
id="$("$bin" --json set payment-service production http.timeout_ms 300 --reason "slower upstream" | opened)"
alice requests approve "$id"
"$bin" requests apply "$id"
for _ in $(seq 50); do grep -q "^event: change" "$work/sse.log" && break; sleep 0.1; done
grep -A1 "^event: change" "$work/sse.log" || echo "    (no change event seen; $work/sse.log holds the stream)"
echo "==> the Python client (pip install ./clients/python into .tools/venv): ConfigClient().get"
python="$(./clients/python/provision.sh)"
MYCOSYNTH_SIDECAR_URL="$sidecar" "$python" -c 'from mycosynth import ConfigClient
with ConfigClient() as config:
    print("http.timeout_ms =", config.get("http.timeout_ms"), "at version", config.version)'
# --- end of issue 22 --------------------------------------------------------------------------

# --- issue 23: the web console (docs/console.md) ---------------------------------------------
console_port="$(pick_port "console" "${MYCOSYNTH_DEMO_CONSOLE_PORT:-}")"
console="http://127.0.0.1:$console_port"
echo "==> mycosynth console --listen 127.0.0.1:$console_port   (signs as ci-bot, but acts only for a signed-in person)"
MYCOSYNTH_NKEY_FILE="$creds/ci-bot.nk" NO_COLOR=1 "$bin" console --listen "127.0.0.1:$console_port" \
  > "$work/console.log" 2>&1 &
pids+=($!)
wait_for console "$work/console.log" "console ready" "$!"
echo "==> as alice: mycosynth console login $console   (a sign-in link holding her session token for this console)"
link="$(alice console login "$console")"
echo "    ${link%%token=*}token=..."
curl -s -c "$work/console.cookies" -o /dev/null "$link"
echo "==> the console's overview as alice sees it (curl with her session cookie):"
curl -s -b "$work/console.cookies" "$console/" | python3 -c '
import re, sys
html = sys.stdin.read()
for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    if cells:
        print("    " + " | ".join(cells[:7]))'
echo "    (in a browser: open the link 'mycosynth --nkey-file nats/secure/dev-credentials/alice.nk console login $console' prints)"
# --- end of issue 23 --------------------------------------------------------------------------

# --- issue 26: backup and restore (docs/backup.md) ------------------------------------------
echo "==> mycosynth backup (as nats-admin): one checksummed archive, data keys encrypted with backup.key"
head -c 32 /dev/urandom | base64 > "$work/backup.key"
MYCOSYNTH_NKEY_FILE="$creds/nats-admin.nk" "$bin" backup "$work/cluster.myco" --key-file "$work/backup.key"
port2="$(free_port)"
sed -e "s|127.0.0.1:$port|127.0.0.1:$port2|" -e "s|$work/jetstream|$work/jetstream-restored|" \
  "$work/nats.conf" > "$work/nats-restored.conf"
"$nats_server" -c "$work/nats-restored.conf" > "$work/nats-restored.log" 2>&1 &
pids+=($!)
wait_for "the second nats-server" "$work/nats-restored.log" "Server is ready" "$!"
echo "==> a flipped byte: the archive is refused before anything is written (exit code 13)"
cp "$work/cluster.myco" "$work/damaged.myco"
printf '\x00' | dd of="$work/damaged.myco" bs=1 seek=100 conv=notrunc status=none
MYCOSYNTH_NKEY_FILE="$creds/nats-admin.nk" "$bin" --nats-url "nats://127.0.0.1:$port2" \
  restore "$work/damaged.myco" --key-file "$work/backup.key" || echo "    (exit code $?)"
echo "==> mycosynth restore into a fresh server (as nats-admin, before any validator starts there)"
MYCOSYNTH_NKEY_FILE="$creds/nats-admin.nk" "$bin" --nats-url "nats://127.0.0.1:$port2" \
  restore "$work/cluster.myco" --key-file "$work/backup.key"
MYCOSYNTH_NKEY_FILE="$creds/validator.nk" NO_COLOR=1 "$bin" --nats-url "nats://127.0.0.1:$port2" \
  serve --http "127.0.0.1:$(free_port)" --auth signed > "$work/validator-restored.log" 2>&1 &
pids+=($!)
wait_for "the restored cluster's validator" "$work/validator-restored.log" "ready" "$!"
echo "==> the restored cluster: same history, and the audit chain continues"
"$bin" --nats-url "nats://127.0.0.1:$port2" history payment-service production --limit 3
"$bin" --nats-url "nats://127.0.0.1:$port2" audit verify
# --- end of issue 26 --------------------------------------------------------------------------
# ---- auth callout (issue 25, docs/identity.md): identities decided by `mycosynth auth serve` ----
echo "==> auth callout: a second nats-server (nats/callout/server.conf) that asks mycosynth auth serve who each connection is"
cport="$(pick_port "callout nats-server" "${MYCOSYNTH_DEMO_CALLOUT_PORT:-}")"
callout_http="$(pick_port "callout /metrics" "")"
callout_validator_http="$(pick_port "validator behind the callout /metrics" "")"
callout_url="nats://127.0.0.1:$cport"
sed -e "s|127.0.0.1:4222|127.0.0.1:$cport|" -e "s|^http: .*||" -e "s|.tools/nats-data-callout|$work/jetstream-callout|" \
  nats/callout/server.conf > "$work/callout-nats.conf"
"$nats_server" -c "$work/callout-nats.conf" > "$work/callout-nats.log" 2>&1 &
pids+=($!)
wait_for "the callout's nats-server" "$work/callout-nats.log" "Server is ready" "$!"
MYCOSYNTH_NKEY_FILE="$root/nats/callout/dev-credentials/callout.nk" NO_COLOR=1 "$bin" --nats-url "$callout_url" \
  auth serve --config nats/callout/callout.yaml --http "127.0.0.1:$callout_http" > "$work/callout.log" 2>&1 &
pids+=($!)
wait_for "the auth callout" "$work/callout.log" "ready" "$!"
MYCOSYNTH_NKEY_FILE="$creds/validator.nk" NO_COLOR=1 "$bin" --nats-url "$callout_url" serve --http "127.0.0.1:$callout_validator_http" \
  --auth signed --admin "admin=$(cat "$creds/admin.pub")" > "$work/callout-validator.log" 2>&1 &
pids+=($!)
wait_for "the validator behind the callout" "$work/callout-validator.log" "ready" "$!"
echo "==> as admin (its nkey, decided by the callout's nkey backend): set payment-service staging feature.new_checkout true"
"$bin" --nats-url "$callout_url" set payment-service staging feature.new_checkout true
echo "==> a service with a static token (nats/callout/tokens.txt holds only its hash) reads its namespace:"
env -u MYCOSYNTH_NKEY_FILE "$bin" --nats-url "$callout_url" --token-file nats/callout/dev-credentials/svc-payment-service.token \
  watch payment-service staging > "$work/token-watch.log" 2>&1 &
pids+=($!)
wait_for "watch with a token" "$work/token-watch.log" "watching" "$!"
cat "$work/token-watch.log"
echo "==> a wrong token is refused by the server (exit code 7); the callout logs why, never the token:"
echo "not-a-token" > "$work/bad.token"
env -u MYCOSYNTH_NKEY_FILE "$bin" --nats-url "$callout_url" --token-file "$work/bad.token" watch payment-service staging 2>&1 | tail -1 || true
grep -E "connection (accepted|refused)" "$work/callout.log" | sed -e 's/^.*connection /    connection /' | cut -c1-160
# ---- end of the auth callout block ----
echo "==> demo done; stopping everything"
