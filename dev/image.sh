#!/usr/bin/env bash
# `make image`: builds the Dockerfile with the first container tool that works here (docker,
# podman, buildah), tagged notify:<version> (IMAGE=name:tag overrides it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
image=${IMAGE:-notify:$version}
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
build_args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
tried=()
for tool in docker podman buildah; do
  command -v "$tool" >/dev/null || { tried+=("$tool: not installed"); continue; }
  case $tool in
    buildah) probe=(buildah info) ; build=(buildah bud) ;;
    *) probe=("$tool" info) ; build=("$tool" build) ;;
  esac
  if err=$("${probe[@]}" 2>&1 >/dev/null); then
    echo "[image] building $image with $tool" >&2
    exec "${build[@]}" "${build_args[@]}" -t "$image" .
  fi
  tried+=("$tool: $(tail -1 <<<"$err")")
done
echo "[image] no container tool works on this machine, so the image was NOT built:" >&2
printf '  %s\n' "${tried[@]}" >&2
echo "[image] dev/image-check.sh (make test) checks the Dockerfile without one." >&2
exit 1
