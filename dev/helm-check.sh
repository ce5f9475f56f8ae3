#!/usr/bin/env bash
# Lints and renders helm/notify and checks what it renders: a Deployment, Service and PDB per
# processor, the ConfigMap with notify.toml, autoscaling, the ServiceMonitor and the
# PrometheusRule with its alerts. Installs helm into .cache/bin (Go module proxy) when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
HELM=${HELM:-}
if [ -z "$HELM" ]; then
  if command -v helm >/dev/null; then HELM=helm
  else
    HELM=$ROOT/.cache/bin/helm
    if [ ! -x "$HELM" ]; then
      if ! command -v go >/dev/null; then
        # The README's machine has no Go: say so loudly; CI sets NOTIFY_REQUIRE_HELM=1.
        echo "[helm] SKIPPED: neither helm nor go is installed (the chart was not checked)" >&2
        [ "${NOTIFY_REQUIRE_HELM:-0}" = 1 ] && exit 1
        exit 0
      fi
      echo "[helm] installing helm into .cache/bin" >&2
      GOBIN=$ROOT/.cache/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0
    fi
  fi
fi
CHART=helm/notify
fail() { echo "[helm] error: $*" >&2; exit 1; }

"$HELM" lint --strict "$CHART" >/dev/null || { "$HELM" lint --strict "$CHART"; fail "lint"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$HELM" template t "$CHART" --namespace notify >"$out/default.yaml"

processors=(preferences dedup templates ratelimit fanout deliver-apns deliver-fcm deliver-sms deliver-email retry)
count() { grep -c "^kind: $1\$" "$2" || true; }
[ "$(count Deployment "$out/default.yaml")" -eq ${#processors[@]} ] || fail "expected ${#processors[@]} Deployments"
for p in "${processors[@]}"; do
  grep -q "^  name: t-notify-$p\$" "$out/default.yaml" || fail "no resources named t-notify-$p"
  grep -q "args: \[\"run\", \"$p\"\]" "$out/default.yaml" || fail "no container running 'notify run $p'"
done
[ "$(count PodDisruptionBudget "$out/default.yaml")" -eq ${#processors[@]} ] || fail "one PDB per processor"
[ "$(count Service "$out/default.yaml")" -eq ${#processors[@]} ] || fail "one Service per processor"
# Every processor but retry (whose lag is records waiting by design) scales on lag.
[ "$(count ScaledObject "$out/default.yaml")" -eq $((${#processors[@]} - 1)) ] || fail "ScaledObjects"
for kind in ConfigMap ServiceMonitor PrometheusRule; do
  [ "$(count $kind "$out/default.yaml")" -eq 1 ] || fail "expected one $kind"
done
for alert in NotifyDeadLettersGrowing NotifyRetriesExhausted NotifyConsumerLagHigh NotifyProviderErrorRateHigh; do
  grep -q "alert: $alert\$" "$out/default.yaml" || fail "alert $alert missing"
done
grep -q "notify_deliver_apns_provider_errors_total" "$out/default.yaml" || fail "provider error rule"
grep -q "path: /readyz" "$out/default.yaml" || fail "readiness probe"
grep -q "path: /healthz" "$out/default.yaml" || fail "liveness probe"
[ "$(grep -c "name: NOTIFY_RUNTIME__LANES" "$out/default.yaml")" -eq 5 ] || fail "lanes override for ratelimit and the four delivery processors"

# External Kafka with SASL/TLS, secrets for the registry and ScyllaDB, HPA instead of KEDA.
"$HELM" template t "$CHART" \
  --set kafka.bootstrapServers=broker.example:9093 \
  --set kafka.properties.security\\.protocol=SASL_SSL \
  --set kafka.properties.sasl\\.mechanism=SCRAM-SHA-512 \
  --set kafka.saslPasswordSecret.name=kafka-sasl \
  --set kafka.tlsSecret=kafka-ca \
  --set cql.passwordSecret.name=scylla \
  --set defaults.autoscaling.kind=hpa >"$out/external.yaml"
grep -q '"security.protocol" = "SASL_SSL"' "$out/external.yaml" || fail "kafka properties in notify.toml"
grep -q "NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD" "$out/external.yaml" || fail "SASL password from a Secret"
grep -q 'password_file = "/etc/notify/secrets/cql/password"' "$out/external.yaml" || fail "CQL password file"
[ "$(count HorizontalPodAutoscaler "$out/external.yaml")" -eq $((${#processors[@]} - 1)) ] || fail "HPAs"
echo "[helm] chart lints and renders ${#processors[@]} processors, alerts and autoscaling" >&2
