#!/usr/bin/env bash
# Installs what the tests need from Debian: `chromium` and `chromium-driver` (the browser tests),
# `prometheus` (the rollout external-signal test),
# with apt, when one is missing. Idempotent and quiet when all are in place; `apt-get update`
# runs only when a package is missing. Needs root (or sudo) on a Debian machine the first time.
set -euo pipefail

packages=(chromium chromium-driver prometheus)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "provision: ${missing[*]} missing and no apt-get: install Chromium and chromedriver, or set CHROMEDRIVER" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  echo "provisioning ${missing[*]} with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >&2
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x /usr/bin/chromedriver ] && [ -z "${CHROMEDRIVER:-}" ]; then
  echo "provision: /usr/bin/chromedriver not found after install" >&2
  exit 1
fi
