#!/usr/bin/env bash
# The configuration the chart renders passes `notify run <processor> --check-config` for every
# processor it deploys, with each container's own environment.
#
# Usage: check-config.sh NOTIFY_BINARY EXTRACTED_DIR...
#   EXTRACTED_DIR: what `notify-validate -extract` wrote for one rendered release.
# Files the pods get from Secrets (credentials, Kafka CA, passwords) are made up here in a
# temporary directory that stands for /etc/notify: real key formats (an EC P-256 key for APNs,
# an RSA key in a service-account JSON for FCM), so the clients are built as at start-up.
set -euo pipefail
notify=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fake_etc() { # $1 = directory standing for /etc/notify
  local etc=$1
  mkdir -p "$etc"/secrets/{apns,fcm,sms,email,registry,registry-ca,cql} "$etc"/kafka-tls "$etc"/kafka-user
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$etc/secrets/apns/key.p8" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/fcm.pem" 2>/dev/null
  python3 - "$work/fcm.pem" "$etc/secrets/fcm/service-account.json" <<'EOF'
import json, sys
key = open(sys.argv[1]).read()
json.dump({"type": "service_account", "project_id": "check-config", "private_key_id": "k1",
           "private_key": key, "client_email": "notify@check-config.iam.gserviceaccount.com",
           "token_uri": "https://oauth2.googleapis.com/token"}, open(sys.argv[2], "w"))
EOF
  for f in sms/auth-token email/api-key email/password registry/password cql/password; do
    echo "made-up-secret" >"$etc/secrets/$f"
  done
  openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=check-config -days 1 \
    -keyout "$etc/kafka-tls/tls.key" -out "$etc/kafka-tls/ca.crt" 2>/dev/null
  cp "$etc/kafka-tls/ca.crt" "$etc/kafka-user/user.crt"
  cp "$etc/kafka-tls/ca.crt" "$etc/secrets/registry-ca/ca.crt"
  cp "$etc/kafka-tls/tls.key" "$etc/kafka-user/user.key"
}

checked=0
failed=0
unknown=()
# The processors this binary knows, from its own error for an unknown one.
known=$({ "$notify" run unknown-processor --check-config 2>&1 || true; } | sed -n 's/.*known: //p' | tr -d ' ' | tr ',' ' ')
for dir in "$@"; do
  release=$(basename "$dir")
  etc="$work/$release/etc"
  fake_etc "$etc"
  for args in "$dir"/deployment-*.args; do
    base=${args%.args}
    mapfile -t argv <"$args"
    [ "${argv[0]:-}" = run ] || { echo "[check-config] $base: not a 'notify run' container" >&2; failed=$((failed + 1)); continue; }
    processor=${argv[1]}
    # The pod's environment: literal values as written, Secret values made up.
    env_args=()
    config=""
    while IFS='=' read -r name value; do
      [ -n "$name" ] || continue
      case "$value" in @secret:*) value="made-up-secret" ;; esac
      value=${value//\/etc\/notify/$etc}
      # The kubelet expands $(POD_IP) (a downward-API variable) to the pod's address.
      value=${value//\$(POD_IP)/10.1.2.3}
      if [ "$name" = NOTIFY_CONFIG ]; then config=$value; continue; fi
      env_args+=("$name=$value")
    done <"$base.env"
    [ -n "$config" ] || { echo "[check-config] $base: no NOTIFY_CONFIG" >&2; failed=$((failed + 1)); continue; }
    # The ConfigMap mounted at NOTIFY_CONFIG, with /etc/notify standing for $etc.
    cm=$(ls -d "$dir"/configmap-*-config)
    mkdir -p "$(dirname "$config")"
    sed "s#/etc/notify#$etc#g" "$cm/notify.toml" >"$config"
    if ! grep -qw -- "$processor" <<<"$known"; then
      unknown+=("$release/$processor")
      continue
    fi
    if out=$(env -i PATH="$PATH" "${env_args[@]}" "$notify" --config "$config" run "$processor" --check-config 2>&1); then
      checked=$((checked + 1))
    else
      echo "[check-config] $release: notify run $processor --check-config failed:" >&2
      echo "$out" | sed 's/^/    /' >&2
      failed=$((failed + 1))
    fi
  done
done
if [ ${#unknown[@]} -gt 0 ]; then
  echo "[check-config] NOT CHECKED: this binary has no processor ${unknown[*]} (known: $known)." >&2
  echo "[check-config] The chart deploys it; 'chain' comes with issue 12 on main." >&2
  failed=$((failed + ${#unknown[@]}))
fi
echo "[check-config] $checked processors' rendered configuration passed --check-config, $failed failed" >&2
[ "$failed" -eq 0 ]
