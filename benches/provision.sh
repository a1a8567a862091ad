#!/usr/bin/env bash
# What `make bench` needs beyond nats-server: the peer (etcd, Debian's `etcd-server`),
# `protoc` (the etcd client's build compiles etcd's .proto files) and `wrk` (the sidecar's
# HTTP load). Installed with apt-get when missing; prints what it has. (The Python client's
# venv comes from clients/python/provision.sh.)
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "benches/provision.sh: please install ${missing[*]} (Debian packages)" >&2
    exit 1
  fi
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "benches/provision.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's package may start its own etcd service where systemd runs; the bench starts its own
# on free ports and never talks to that one.
echo "$(etcd --version | head -1); $(protoc --version); $(wrk --version 2>&1 | head -1)"
