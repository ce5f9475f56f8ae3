#!/usr/bin/env bash
# What can be checked of the Dockerfile without a container engine (run by `make test`):
#   - the builder runs `cargo build --release --locked --bin notify` and the final stage copies
#     <builder WORKDIR>/target/release/notify: the binary target `notify` of package
#     notify-cli, as `cargo metadata` reports it;
#   - every COPY source exists and is not excluded by .dockerignore, and every workspace
#     member the build needs is copied in;
#   - base images are pinned to a release (no `latest`);
#   - the final stage's USER is numeric and not root, and the chart runs pods as that user;
#   - the final stage installs the libraries the binary links (ldd of target/debug/notify).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
metadata=$(cargo metadata --no-deps --format-version 1)
[ -x target/debug/notify ] || cargo build --quiet --bin notify
libs=$(ldd target/debug/notify | awk '{print $1}')
python3 - "$metadata" "$libs" <<'EOF_PY'
import fnmatch, json, os, re, sys

metadata = json.loads(sys.argv[1])
linked = sys.argv[2].split()
errors = []

def instructions(path):
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out

steps = instructions("Dockerfile")
stages, args = [], {}
for word, rest in steps:
    if word == "ARG" and not stages:
        name, _, default = rest.partition("=")
        args[name] = default
    if word == "FROM":
        image, _, alias = rest.partition(" AS ")
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), image.split()[-1])
        stages.append({"image": image, "alias": alias.strip(), "steps": []})
    elif stages:
        stages[-1]["steps"].append((word, rest))

if len(stages) < 2:
    errors.append("the Dockerfile must build in one stage and run in another")
builder = {s["alias"]: s for s in stages if s["alias"]}.get("builder")
final = stages[-1]
for s in stages:
    tag = s["image"].rsplit(":", 1)[-1] if ":" in s["image"].rsplit("/", 1)[-1] else ""
    if tag in ("", "latest"):
        errors.append(f"base image {s['image']} is not pinned to a release")

# The binary: built by cargo as the workspace's notify-cli `notify` target, copied from there.
cli = [p for p in metadata["packages"] if p["name"] == "notify-cli"]
bins = [t["name"] for p in cli for t in p["targets"] if "bin" in t["kind"]]
if bins != ["notify"]:
    errors.append(f"package notify-cli should have the one binary target notify, has {bins}")
workdir = "/"
built = False
if builder:
    for word, rest in builder["steps"]:
        if word == "WORKDIR":
            workdir = rest
        if word == "RUN" and "cargo build" in rest:
            flags = rest.split()
            built = "--release" in flags and "--locked" in flags and "--bin" in flags \
                and flags[flags.index("--bin") + 1] == "notify"
if not built:
    errors.append("the builder stage must RUN cargo build --release --locked --bin notify")
expected = os.path.join(workdir, "target/release/notify")
copies = [r.split() for w, r in final["steps"] if w == "COPY" and r.startswith("--from=builder")]
if not any(c[1] == expected for c in copies):
    errors.append(f"the final stage must COPY --from=builder {expected} (what cargo builds), copies {copies}")

# Every COPY from the context exists, is not ignored, and the workspace's members are there.
ignored = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
copied = set()
for s in stages:
    for word, rest in s["steps"]:
        if word != "COPY" or rest.startswith("--from"):
            continue
        *sources, _dest = rest.split()
        for src in sources:
            if not os.path.exists(src):
                errors.append(f"COPY {src}: no such path in the build context")
            if any(fnmatch.fnmatch(src, p) or src.startswith(p.rstrip("/") + "/") for p in ignored):
                errors.append(f"COPY {src}: excluded by .dockerignore")
            copied.add(src.rstrip("/"))
root = metadata["workspace_root"]
for p in metadata["packages"]:
    top = os.path.relpath(os.path.dirname(p["manifest_path"]), root).split("/")[0]
    if top not in copied:
        errors.append(f"workspace member {p['name']} ({top}/) is not copied into the builder")
if "topics" not in copied:
    errors.append("topics/ (read by topics apply and schemas register) is not copied")

# Non-root, numeric, and the chart's pods use the same id.
users = [r for w, r in final["steps"] if w == "USER"]
user = users[-1] if users else "root"
uid = user.split(":")[0]
if not uid.isdigit() or uid == "0":
    errors.append(f"the final USER must be a numeric non-root id, is {user!r}")
values = open("helm/notify/values.yaml").read()
if f"runAsUser: {uid}" not in values:
    errors.append(f"helm/notify/values.yaml's podSecurityContext.runAsUser is not {uid}")

# Libraries the binary links, beyond glibc and libgcc (in every Debian image).
packages = {"libssl.so.3": "libssl3", "libcrypto.so.3": "libssl3", "libz.so.1": "zlib1g"}
base = ("linux-vdso", "libc.so", "libm.so", "libgcc_s", "ld-linux", "libpthread", "libdl", "librt")
runs = " ".join(r for w, r in final["steps"] if w == "RUN")
for lib in linked:
    if lib.startswith(base) or lib.startswith("/"):
        continue
    pkg = packages.get(lib)
    if pkg is None:
        errors.append(f"the binary links {lib}: say which Debian package brings it (dev/image-check.sh)")
    elif pkg not in runs.split():
        errors.append(f"the binary links {lib}; the final stage must install {pkg}")

for e in errors:
    print(f"[image] error: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"[image] Dockerfile OK: {len(stages)} stages, copies {expected}, runs as {user}", file=sys.stderr)
EOF_PY
