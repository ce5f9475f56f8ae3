{{/* The topics of files/topics.toml with this release's values applied, as JSON
{"defaults": {...}, "topic": [...]}: the setup job applies them, Strimzi renders them. */}}
{{- define "notify.topics" -}}
{{- $file := .Files.Get "files/topics.toml" | fromToml -}}
{{- if not $file.topic -}}
{{- fail "files/topics.toml is missing or has no [[topic]] (copy topics/topics.toml there)" -}}
{{- end -}}
{{- $t := .Values.topics -}}
{{- $defaults := dict "partitions" ($t.partitions | int) "replication_factor" ($t.replicationFactor | int) "config" ($file.defaults.config | default dict) -}}
{{- $known := list -}}
{{- $topics := list -}}
{{- range $file.topic -}}
{{- $known = append $known .name -}}
{{- $o := index $t.overrides .name | default dict -}}
{{- $topic := dict "name" .name "config" (mergeOverwrite (deepCopy (.config | default dict)) (deepCopy ($o.config | default dict))) -}}
{{- with .value }}{{ $_ := set $topic "value" . }}{{ end -}}
{{- $partitions := $o.partitions | default .partitions | default $defaults.partitions -}}
{{- $_ := set $topic "partitions" ($partitions | int) -}}
{{- $topics = append $topics $topic -}}
{{- end -}}
{{- range $name, $_ := $t.overrides -}}
{{- if not (has $name $known) -}}
{{- fail (printf "topics.overrides.%s: no such topic in topics.toml (known: %s)" $name (join ", " $known)) -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "defaults" $defaults "topic" $topics) -}}
{{- end -}}

{{/* Partitions of a topic by name. */}}
{{- define "notify.partitions" -}}
{{- range (include "notify.topics" .root | fromJson).topic -}}
{{- if eq .name $.topic }}{{ .partitions | int }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* Fails on values that contradict each other or the topics: every message names the value. */}}
{{- define "notify.checks" -}}
{{- $requests := include "notify.partitions" (dict "root" . "topic" "notify.requests.v1") -}}
{{- range $t := list "notify.users.v1" "notify.token-feedback.v1" -}}
{{- if ne (include "notify.partitions" (dict "root" $ "topic" $t)) $requests -}}
{{- fail (printf "topics: %s has %s partitions and notify.requests.v1 %s: profiles are joined co-partitioned, keep them equal (topics.overrides)" $t (include "notify.partitions" (dict "root" $ "topic" $t)) $requests) -}}
{{- end -}}
{{- end -}}
{{- range $name, $p := include "notify.deployed" . | fromJson -}}
{{- $a := $p.autoscaling -}}
{{- if gt ($a.minReplicas | int) ($a.maxReplicas | int) -}}
{{- fail (printf "processors.%s.autoscaling.minReplicas (%d) is above its maxReplicas (%d)" $name ($a.minReplicas | int) ($a.maxReplicas | int)) -}}
{{- end -}}
{{- $most := 0 -}}
{{- range $p.inputs -}}
{{- $n := include "notify.partitions" (dict "root" $ "topic" .) | int -}}
{{- if gt $n $most }}{{ $most = $n }}{{ end -}}
{{- end -}}
{{- if and $a.enabled (gt ($a.maxReplicas | int) $most) -}}
{{- fail (printf "processors.%s.autoscaling.maxReplicas (%d) is above the %d partitions of its input (%s): the extra replicas would sit idle" $name ($a.maxReplicas | int) $most (join ", " $p.inputs)) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.strimzi.users.enabled (eq .Values.strimzi.users.authentication "tls") (not .Values.kafka.tls.enabled) -}}
{{- fail "strimzi.users.authentication tls needs kafka.tls.enabled (and kafka.tls.secret with the cluster CA)" -}}
{{- end -}}
{{- if and (or .Values.strimzi.topics.enabled .Values.strimzi.users.enabled) (not .Values.strimzi.cluster) -}}
{{- fail "strimzi.cluster (the Kafka resource's name) is required with strimzi.topics or strimzi.users" -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.strimzi.users.enabled) (not .Values.kafka.sasl.passwordSecret.name) -}}
{{- fail "kafka.sasl.passwordSecret.name is required with kafka.sasl.mechanism" -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.strimzi.users.enabled) (not .Values.kafka.sasl.username) -}}
{{- fail "kafka.sasl.username is required with kafka.sasl.mechanism" -}}
{{- end -}}
{{- end -}}
