#!/usr/bin/env bash
# Installs the Debian packages the build needs (librdkafka is compiled by the rdkafka crate)
# when they are missing. Safe to run any number of times.
set -euo pipefail
needed=(cmake libssl-dev libsasl2-dev libcurl4-openssl-dev pkg-config)
missing=()
for p in "${needed[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing ${missing[*]} with apt-get (once; usually under a minute)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in cargo java mvn python3; do
  command -v "$tool" >/dev/null || { echo "[setup] error: $tool is required" >&2; exit 1; }
done
echo "[setup] build packages and tools present" >&2
