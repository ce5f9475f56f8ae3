{{/* Fails when a table holds a secret by value (a key naming a password, token, secret or
API key, other than a `*_file` path): secrets come from mounted files or the environment,
never from the ConfigMap. */}}
{{- define "notify.noSecrets" -}}
{{- range $k, $val := .table }}
{{- if kindIs "map" $val }}
{{- include "notify.noSecrets" (dict "path" (printf "%s.%s" $.path $k) "table" $val) }}
{{- else if and (regexMatch "(^|_)(password|secret|token|api_key|private_key)$" $k) (not (hasSuffix "_file" $k)) }}
{{- fail (printf "%s.%s would put a secret into the ConfigMap: give a *_file path to a mounted Secret instead" $.path $k) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Kafka security properties shared by every process (the per-user parts are environment
variables, see notify.kafkaEnv). */}}
{{- define "notify.kafkaProperties" -}}
{{- $k := .Values.kafka -}}
{{- $users := and .Values.strimzi.users.enabled -}}
{{- $sasl := or (and (not $users) $k.sasl.mechanism) (and $users (eq .Values.strimzi.users.authentication "scram-sha-512")) -}}
{{- $props := dict -}}
{{- if or $sasl $k.tls.enabled -}}
{{- $_ := set $props "security.protocol" (printf "%s%s" (ternary "SASL_" "" (not (not $sasl))) (ternary "SSL" "PLAINTEXT" $k.tls.enabled)) -}}
{{- end -}}
{{- if $sasl -}}
{{- $_ := set $props "sasl.mechanism" (ternary "SCRAM-SHA-512" $k.sasl.mechanism $users) -}}
{{- end -}}
{{- if and $k.tls.enabled $k.tls.secret -}}
{{- $_ := set $props "ssl.ca.location" (printf "/etc/notify/kafka-tls/%s" $k.tls.caKey) -}}
{{- if and $k.tls.certKey (not $users) -}}
{{- $_ := set $props "ssl.certificate.location" (printf "/etc/notify/kafka-tls/%s" $k.tls.certKey) -}}
{{- $_ := set $props "ssl.key.location" (printf "/etc/notify/kafka-tls/%s" $k.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- range $name, $_ := $k.properties }}
{{- if regexMatch "(password|secret|\\.key\\.pem|sasl\\.jaas\\.config|oauthbearer\\.client\\.secret)" $name }}
{{- fail (printf "kafka.properties.%s would put a secret into the ConfigMap: use kafka.sasl.passwordSecret, kafka.tls.secret or processors.<p>.extraEnv with a secretKeyRef" $name) }}
{{- end }}
{{- end }}
{{- toJson (mergeOverwrite $props (deepCopy $k.properties)) -}}
{{- end -}}

{{/* The provider table a delivery processor gets from `channels`. */}}
{{- define "notify.providerConfig" -}}
{{- $c := index .root.Values.channels .channel -}}
{{- $dir := printf "/etc/notify/secrets/%s" .channel -}}
{{- $p := dict -}}
{{- if eq .channel "apns" -}}
{{- $p = dict "base_url" $c.baseUrl "key_file" (printf "%s/%s" $dir $c.keyFileKey) "key_id" $c.keyId "team_id" $c.teamId "topic" $c.topic -}}
{{- else if eq .channel "fcm" -}}
{{- $p = dict "base_url" $c.baseUrl "service_account_file" (printf "%s/%s" $dir $c.serviceAccountKey) -}}
{{- else if eq .channel "sms" -}}
{{- $p = dict "base_url" $c.baseUrl "account_sid" $c.accountSid "auth_token_file" (printf "%s/%s" $dir $c.authTokenKey) -}}
{{- if $c.from }}{{ $_ := set $p "from" $c.from }}{{ else }}{{ $_ := set $p "messaging_service_sid" $c.messagingServiceSid }}{{ end -}}
{{- else if eq .channel "email" -}}
{{- $p = dict "kind" $c.kind "from" $c.from -}}
{{- if eq $c.kind "sendgrid" -}}
{{- $_ := set $p "sendgrid_api_key_file" (printf "%s/%s" $dir $c.sendgridApiKeyKey) -}}
{{- else -}}
{{- $_ := set $p "smtp_host" $c.smtp.host -}}
{{- $_ := set $p "smtp_port" $c.smtp.port -}}
{{- $_ := set $p "smtp_security" $c.smtp.security -}}
{{- if $c.smtp.username -}}
{{- $_ := set $p "smtp_username" $c.smtp.username -}}
{{- $_ := set $p "smtp_password_file" (printf "%s/%s" $dir $c.passwordKey) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $p -}}
{{- end -}}

{{/* notify.toml: the shared sections and the table of every deployed processor. */}}
{{- define "notify.toml" -}}
{{- $v := .Values -}}
[kafka]
bootstrap_servers = {{ $v.kafka.bootstrapServers | quote }}
group_prefix = {{ $v.kafka.groupPrefix | quote }}
transactional = {{ $v.kafka.transactional }}
{{- $props := include "notify.kafkaProperties" . | fromJson }}
{{- range $section, $map := dict "properties" $props "consumer" $v.kafka.consumer "producer" $v.kafka.producer }}
{{- if $map }}

[kafka.{{ $section }}]
{{- range $k, $val := $map }}
{{ $k | quote }} = {{ $val | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

[registry]
url = {{ $v.registry.url | quote }}
{{- with $v.registry.username }}
username = {{ . | quote }}
{{- end }}
{{- if $v.registry.passwordSecret.name }}
password_file = "/etc/notify/secrets/registry/{{ $v.registry.passwordSecret.key }}"
{{- end }}
{{- if $v.registry.caSecret.name }}
ca_file = "/etc/notify/secrets/registry-ca/{{ $v.registry.caSecret.key }}"
{{- end }}

[cql]
nodes = {{ include "notify.tomlScalar" $v.cql.nodes }}
keyspace = {{ $v.cql.keyspace | quote }}
replication_factor = {{ $v.cql.replicationFactor | int }}
{{- with $v.cql.username }}
username = {{ . | quote }}
{{- end }}
{{- if $v.cql.passwordSecret.name }}
password_file = "/etc/notify/secrets/cql/{{ $v.cql.passwordSecret.key }}"
{{- end }}

[http]
# Loopback here; each Deployment sets NOTIFY_HTTP__LISTEN to its pod's address.
listen = "127.0.0.1:{{ $v.metricsPort | int }}"

[runtime]
lanes = {{ $v.runtime.lanes | int }}
max_in_flight = {{ $v.runtime.maxInFlight | int }}
shutdown_grace_ms = {{ $v.runtime.shutdownGraceMs | int }}
status_topic = {{ $v.runtime.statusTopic | quote }}
dlq_topic = {{ $v.runtime.dlqTopic | quote }}
{{- /* The chain builds its stages from their own tables, as the split processors do. */}}
{{- $deployed := include "notify.deployed" . | fromJson }}
{{- $tables := keys $deployed }}
{{- if eq $v.pipeline.mode "chain" }}
{{- $tables = concat $tables (list "preferences" "dedup" "templates" "ratelimit" "fanout") }}
{{- end }}
{{- range $name := $tables | sortAlpha }}
{{- $table := deepCopy ((index $v.processors $name | default dict).config | default dict) }}
{{- include "notify.noSecrets" (dict "path" (printf "processors.%s.config" $name) "table" $table) }}
{{- $channel := (index $deployed $name | default dict).channel }}
{{- if $channel }}
{{- $provider := include "notify.providerConfig" (dict "root" $ "channel" $channel) | fromJson }}
{{- $_ := set $table "provider" (mergeOverwrite $provider (index $table "provider" | default dict)) }}
{{- end }}
{{- if $table }}
{{ include "notify.tomlTable" (dict "path" (printf "processors.%s" $name) "table" $table "array" false) }}
{{- end }}
{{- end }}
{{- end -}}
