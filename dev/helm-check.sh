#!/usr/bin/env bash
# Checks helm/notify the way a cluster would (run by `make test`):
#   1. helm lint --strict and helm template with the default values (and the dashboard on), a production-like values
#      file (SASL/TLS, existing Secrets, HPA, split pipeline) and the Strimzi option;
#   2. every rendered object decodes strictly into its API type (helm/notify/tests/validate:
#      k8s.io/api, prometheus-operator's types, KEDA's published CRD schemas);
#   3. the rendered PrometheusRule passes `promtool check rules` and the unit tests of
#      helm/notify/tests/rules/alerts_test.yaml;
#   4. the rendered notify.toml passes `notify run <p> --check-config` for every processor the
#      chart deploys (helm/notify/tests/check-config.sh);
#   5. every file of helm/notify/tests/bad-values is refused with a message naming the value;
#   6. the chart's copies of topics/topics.toml and topics/acls.toml are identical to them.
# Tools come from the Go module proxy into .cache/bin (helm, promtool, the validator) and the Go
# module cache (KEDA's CRDs); a cold run installs them once (see helm/notify/README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HELM_VERSION=v4.3.2
PROMETHEUS_VERSION=v0.316.0 # github.com/prometheus/prometheus, which carries promtool
KEDA_VERSION=v2.21.0        # github.com/kedacore/keda/v2, which carries KEDA's CRDs
BIN=$ROOT/.cache/bin
CHART=helm/notify
TESTS=$CHART/tests
started=$SECONDS
log() { echo "[helm] $*" >&2; }
fail() { echo "[helm] error: $*" >&2; exit 1; }

if ! command -v go >/dev/null; then
  # The README's machine may lack Go: say so loudly; CI sets NOTIFY_REQUIRE_HELM=1.
  log "SKIPPED: go is not installed, so neither helm nor promtool (the chart was NOT checked)"
  [ "${NOTIFY_REQUIRE_HELM:-0}" = 1 ] && exit 1
  exit 0
fi
mkdir -p "$BIN"
install_tool() { # name, versioned file, module@version
  if [ ! -x "$BIN/$2" ]; then
    log "installing $1 ($3) into .cache/bin; the first time takes minutes"
    local t0=$SECONDS
    GOBIN=$BIN GOFLAGS=-buildvcs=false go install "$3"
    mv "$BIN/$1" "$BIN/$2"
    log "installed $1 in $((SECONDS - t0)) s"
  fi
}
install_tool helm "helm-$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
install_tool promtool "promtool-$PROMETHEUS_VERSION" "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
HELM=$BIN/helm-$HELM_VERSION
PROMTOOL=$BIN/promtool-$PROMETHEUS_VERSION
(cd "$TESTS/validate" && go build -o "$BIN/notify-validate" .)
VALIDATE=$BIN/notify-validate
keda_dir=$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
KEDA_CRDS=$keda_dir/config/crd/bases
[ -f "$KEDA_CRDS/keda.sh_scaledobjects.yaml" ] || fail "no KEDA CRDs in $keda_dir"
crds=(-crd "$KEDA_CRDS/keda.sh_scaledobjects.yaml" -crd "$KEDA_CRDS/keda.sh_triggerauthentications.yaml")
log "tools ready after $((SECONDS - started)) s"

# 6. Helm reads only files inside the chart: its copies must be the repository's files.
for f in topics.toml acls.toml; do
  cmp -s "topics/$f" "$CHART/files/$f" || fail "$CHART/files/$f differs from topics/$f: cp topics/$f $CHART/files/"
done

# The validator itself rejects what it must (unknown fields, wrong types, bad CRD objects).
(cd "$TESTS/validate" && NOTIFY_KEDA_CRDS=$KEDA_CRDS go test -count=1 ./... >/dev/null) || fail "validator self-test"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
APIS=(--api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1
  --api-versions custom.metrics.k8s.io/v1beta1 --api-versions kafka.strimzi.io/v1beta2)

# 1. Lint, then render: each case is a name and its helm arguments.
for values in "" "-f $TESTS/values/production.yaml" "-f $TESTS/values/strimzi.yaml"; do
  # shellcheck disable=SC2086
  "$HELM" lint --strict $values "$CHART" >"$out/lint" 2>&1 || { cat "$out/lint" >&2; fail "helm lint --strict $values"; }
done
render() { # name, helm template arguments...
  local name=$1
  shift
  "$HELM" template t "$CHART" --namespace notify "$@" >"$out/$name.yaml" 2>"$out/$name.err" \
    || { cat "$out/$name.err" >&2; fail "helm template ($name)"; }
}
render bare                                   # a cluster without any operator
render default "${APIS[@]}"
render split "${APIS[@]}" --set pipeline.mode=split
render production "${APIS[@]}" -f "$TESTS/values/production.yaml"
render strimzi "${APIS[@]}" -f "$TESTS/values/strimzi.yaml"
render dashboard "${APIS[@]}" --set grafanaDashboard.enabled=true
# The longest release name Helm allows (53): every object name still fits in 63.
"$HELM" template "$(printf 'r%.0s' {1..53})" "$CHART" -n notify "${APIS[@]}" -f "$TESTS/values/strimzi.yaml" \
  --set pipeline.mode=split --set-string channels.sms.secret=twilio,channels.sms.accountSid=AC1,channels.sms.from=+15005550006 >"$out/longname.yaml"

# 2. Strict decoding, references between objects, and what later steps need.
for name in bare default split production strimzi longname dashboard; do
  "$VALIDATE" "${crds[@]}" -extract "$out/x/$name" "$out/$name.yaml" >&2 || fail "manifests of $name are invalid"
done

count() { grep -c "^kind: $1\$" "$out/$2.yaml" || true; }
deployments() { sed -n 's/^  name: t-notify-\(.*\)$/\1/p' <(awk '/^kind: Deployment$/{d=1} d&&/^  name:/{print; d=0}' "$out/$1.yaml") | sort | tr '\n' ' '; }
expect_deployments() { # case, expected processors
  local got
  got=$(deployments "$1")
  [ "$got" = "$2 " ] || fail "$1: deploys '$got', expected '$2'"
}
# Defaults: the chain and retry; channels without credentials are not deployed.
expect_deployments bare "chain retry"
expect_deployments split "dedup fanout preferences ratelimit retry templates"
[ "$(grep -c '^kind: Deployment$' "$out/production.yaml")" -eq 10 ] || fail "production: split pipeline and four channels"
expect_deployments strimzi "chain deliver-email retry"
for kind in ServiceMonitor PrometheusRule ScaledObject TriggerAuthentication HorizontalPodAutoscaler KafkaTopic KafkaUser; do
  [ "$(count "$kind" bare)" -eq 0 ] || fail "bare cluster: $kind rendered without its API"
done
[ "$(grep -c '^  replicas: 2$' "$out/bare.yaml")" -eq 2 ] || fail "without KEDA the Deployments keep their replicas"
[ "$(count ScaledObject default)" -eq 1 ] && [ "$(count ServiceMonitor default)" -eq 1 ] || fail "default with the APIs: KEDA for the chain (not retry), a ServiceMonitor"
[ "$(count HorizontalPodAutoscaler production)" -eq 9 ] || fail "production: an HPA for every processor but retry"
[ "$(count KafkaTopic strimzi)" -eq "$(grep -c '^\[\[topic\]\]' topics/topics.toml)" ] || fail "strimzi: a KafkaTopic per topic of topics.toml"
[ "$(count KafkaUser strimzi)" -eq 5 ] || fail "strimzi: users for chain, deliver-email, retry and the two producers"
[ "$(count TriggerAuthentication strimzi)" -eq 2 ] || fail "strimzi: KEDA signs in as each scaled processor"
grep -q 'unhealthyPodEvictionPolicy: AlwaysAllow' "$out/default.yaml" || fail "PDBs must let drains evict unready pods"
grep -q 'path: /healthz' "$out/default.yaml" || fail "liveness on /healthz"
grep -q '"security.protocol" = "SASL_SSL"' "$out/production.yaml" || fail "production: SASL_SSL in notify.toml"
# Secrets by reference only: no ConfigMap holds a password, token or key by value, and the
# HTTP endpoints bind the pod's address (the process itself defaults to loopback).
for name in production strimzi; do
  if cat "$out/x/$name"/configmap-*/* | grep -Ei '^[^#]*(password|secret|token|api_key|private_key)"? *= *"[^/]' | grep -v '_file *='; then
    fail "$name: a secret by value in a ConfigMap"
  fi
done
grep -q 'value: "$(POD_IP):' "$out/production.yaml" || fail "production: /metrics on the pod address"
grep -qF 'args: ["acls","apply","--file","/etc/notify/setup/acls.toml"]' "$out/production.yaml" || fail "production: the setup job applies the ACLs"
grep -q '^listen = "127.0.0.1:' "$out"/x/production/configmap-*-config/notify.toml || fail "notify.toml: loopback unless the pod says otherwise"
grep -q 'image: "registry.example.com/platform/notify@sha256:' "$out/production.yaml" || fail "production: image by digest"
grep -q '^ca_file = "/etc/notify/secrets/registry-ca/ca.crt"' "$out"/x/production/configmap-*-config/notify.toml \
  && grep -q 'secretName: "schema-registry-ca"' "$out/production.yaml" || fail "production: the registry's CA from its Secret"
# Logs are JSON by default; the dashboard ConfigMap is off by default and, when on, carries
# the sidecar's label and the repository's dashboard JSON unchanged.
grep -A1 'name: NOTIFY_LOG_FORMAT' "$out/default.yaml" | grep -q 'value: "json"' || fail "logs must default to JSON"
! grep -q 'grafana_dashboard' "$out/default.yaml" || fail "the dashboard ConfigMap must be off by default"
python3 - "$out/dashboard.yaml" "$CHART/files/grafana-dashboard.json" <<'EOF' || fail "dashboard ConfigMap"
import json, sys
docs = open(sys.argv[1]).read().split("\n---")
cm = [d for d in docs if "grafana_dashboard" in d]
assert len(cm) == 1, "one dashboard ConfigMap"
assert 'grafana_dashboard: "1"' in cm[0], cm[0][:400]
body = cm[0].split("notify.json: |-\n", 1)[1]
lines = [l[4:] for l in body.splitlines() if l.startswith("    ") or not l.strip()]
assert json.loads("\n".join(lines)) == json.load(open(sys.argv[2])), "the ConfigMap's JSON differs from the file"
EOF
# NOTES.txt says what was deployed and which channels were not, and why.
"$HELM" install t "$CHART" -n notify --dry-run=client >"$out/notes" 2>&1 || { cat "$out/notes" >&2; fail "helm install --dry-run=client"; }
for line in "t-notify-chain: reads notify.requests.v1" "deliver-apns: NOT deployed, the channel has no credentials (channels.apns.secret is not set)" \
  "deliver-email: NOT deployed" "logs job/t-notify-setup"; do
  grep -qF -- "$line" "$out/notes" || fail "NOTES.txt does not say: $line"
done
# The setup job's topics file is topics.toml with the release's values applied.
python3 - "$out/x/production/configmap-notify-setup/topics.toml" topics/topics.toml <<'EOF' || fail "setup job's topics.toml"
import sys, tomllib
rendered = tomllib.load(open(sys.argv[1], "rb"))
source = tomllib.load(open(sys.argv[2], "rb"))
names = [t["name"] for t in rendered["topic"]]
assert names == [t["name"] for t in source["topic"]], names
by = {t["name"]: t for t in rendered["topic"]}
assert by["notify.requests.v1"]["partitions"] == 24 and by["notify.templates.v1"]["partitions"] == 1, by
assert by["notify.status.v1"]["config"]["retention.ms"] == "1209600000", by["notify.status.v1"]
EOF
log "rendered and validated 7 releases after $((SECONDS - started)) s"

# 3. Alerts: promtool reads the rendered groups; the unit tests sit next to them.
rules=$out/rules
mkdir -p "$rules"
cp "$out/x/default/prometheusrule-t-notify.yaml" "$rules/rules.yaml"
cp "$TESTS/rules/alerts_test.yaml" "$rules/"
"$PROMTOOL" check rules "$rules/rules.yaml" >"$out/promtool" 2>&1 || { cat "$out/promtool" >&2; fail "promtool check rules"; }
"$PROMTOOL" test rules "$rules/alerts_test.yaml" >"$out/promtool" 2>&1 || { cat "$out/promtool" >&2; fail "promtool test rules"; }
log "promtool: rules valid, $(grep -c '^  - name:' "$TESTS/rules/alerts_test.yaml") alert unit tests pass"

# 5. Bad values: refused, and the message names the value.
bad=0
for f in "$TESTS"/bad-values/*.yaml; do
  want=$(sed -n '1s/^# expect: //p' "$f")
  [ -n "$want" ] || fail "$f: first line must be '# expect: <text of the error>'"
  if "$HELM" template t "$CHART" -f "$f" >/dev/null 2>"$out/bad.err"; then
    fail "$f was accepted"
  fi
  grep -qF -- "$want" "$out/bad.err" || { cat "$out/bad.err" >&2; fail "$f: the error does not say '$want'"; }
  bad=$((bad + 1))
done
log "$bad bad values files refused, each naming the value"

# 4. The rendered configuration against the binary the workspace builds.
cargo build --quiet --bin notify
"$TESTS/check-config.sh" target/debug/notify "$out/x/split" "$out/x/production" "$out/x/strimzi" "$out/x/default"
log "chart OK: lint, 7 renders strictly decoded, alerts unit-tested, $bad bad values refused, --check-config ($((SECONDS - started)) s)"
