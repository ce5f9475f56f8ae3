{{- define "notify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: 49 characters at most, so that "<fullname>-deliver-email" (the
longest object name) stays within the 63 of a DNS label. */}}
{{- define "notify.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 49 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 49 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "notify.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "notify.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | replace "@" "_" | replace ":" "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: notify
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "chain"). */}}
{{- define "notify.selector" -}}
app.kubernetes.io/name: {{ include "notify.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "notify.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "notify.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "notify.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether the cluster serves an API group/version (or `crds.requireApi` is off). */}}
{{- define "notify.hasApi" -}}
{{- if or (not .root.Values.crds.requireApi) (.root.Capabilities.APIVersions.Has .api) -}}true{{- end -}}
{{- end -}}

{{/* What each processor reads (autoscaling triggers, the maxReplicas check) and in which mode
it runs; facts of the code, not settings. */}}
{{- define "notify.catalog" -}}
chain: {modes: [chain], inputs: [notify.requests.v1]}
preferences: {modes: [split], inputs: [notify.requests.v1]}
dedup: {modes: [split], inputs: [notify.stage.preferences.v1]}
templates: {modes: [split], inputs: [notify.stage.deduped.v1]}
ratelimit: {modes: [split], inputs: [notify.stage.rendered.v1]}
fanout: {modes: [split], inputs: [notify.stage.limited.v1]}
deliver-apns: {modes: [chain, split], inputs: [notify.channel.apns.v1], channel: apns}
deliver-fcm: {modes: [chain, split], inputs: [notify.channel.fcm.v1], channel: fcm}
deliver-sms: {modes: [chain, split], inputs: [notify.channel.sms.v1], channel: sms}
deliver-email: {modes: [chain, split], inputs: [notify.channel.email.v1], channel: email}
retry: {modes: [chain, split], inputs: [notify.retry.10s.v1, notify.retry.1m.v1, notify.retry.10m.v1, notify.retry.1h.v1, notify.deferred.v1]}
{{- end -}}

{{/* Why a channel is not deployed, or nothing when it has what it needs. */}}
{{- define "notify.channelMissing" -}}
{{- $c := index .root.Values.channels .channel -}}
{{- if eq .channel "apns" -}}
{{- if not $c.secret }}channels.apns.secret is not set{{ else if not (and $c.keyId $c.teamId $c.topic) }}channels.apns.keyId, teamId and topic are required{{ end -}}
{{- else if eq .channel "fcm" -}}
{{- if not $c.secret }}channels.fcm.secret is not set{{ end -}}
{{- else if eq .channel "sms" -}}
{{- if not $c.secret }}channels.sms.secret is not set{{ else if not $c.accountSid }}channels.sms.accountSid is not set{{ else if eq (ne $c.from "") (ne $c.messagingServiceSid "") }}set exactly one of channels.sms.from and channels.sms.messagingServiceSid{{ end -}}
{{- else if eq .channel "email" -}}
{{- if not $c.from }}channels.email.from is not set{{ else if eq $c.kind "sendgrid" }}{{ if not $c.secret }}channels.email.secret (the SendGrid API key) is not set{{ end }}{{ else if not $c.smtp.host }}channels.email.smtp.host is not set{{ else if and $c.smtp.username (not $c.secret) }}channels.email.secret (the SMTP password) is not set{{ end -}}
{{- end -}}
{{- end -}}

{{/* The processors this release deploys, as JSON: name -> defaults merged with its entry,
plus `name`, `inputs` and `channel`. */}}
{{- define "notify.deployed" -}}
{{- $catalog := include "notify.catalog" . | fromYaml -}}
{{- $out := dict -}}
{{- range $name, $facts := $catalog -}}
{{- if has $.Values.pipeline.mode $facts.modes -}}
{{- if or (not $facts.channel) (eq (include "notify.channelMissing" (dict "root" $ "channel" $facts.channel)) "") -}}
{{- $entry := index $.Values.processors $name | default dict -}}
{{- $p := mergeOverwrite (deepCopy $.Values.defaults) (deepCopy $entry) -}}
{{- $_ := set $p "name" $name -}}
{{- $_ := set $p "inputs" $facts.inputs -}}
{{- $_ := set $p "channel" ($facts.channel | default "") -}}
{{- $_ := set $out $name $p -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The autoscaler a processor gets: keda, hpa, or nothing (disabled, or the API is missing). */}}
{{- define "notify.autoscaler" -}}
{{- $a := .p.autoscaling -}}
{{- if $a.enabled -}}
{{- if and (eq $a.kind "keda") (include "notify.hasApi" (dict "root" .root "api" "keda.sh/v1alpha1")) -}}keda
{{- else if and (eq $a.kind "hpa") (include "notify.hasApi" (dict "root" .root "api" "custom.metrics.k8s.io/v1beta1")) -}}hpa
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Kafka user of a processor under Strimzi: <fullname>-<principal without "notify-">. */}}
{{- define "notify.kafkaUser" -}}
{{- printf "%s-%s" (include "notify.fullname" .root) (.principal | trimPrefix "notify-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The principal of files/acls.toml for a processor name (or "setup"), as JSON. */}}
{{- define "notify.principal" -}}
{{- $acls := .root.Files.Get "files/acls.toml" | fromToml -}}
{{- $found := dict -}}
{{- range $acls.principal -}}
{{- if or (eq (.processor | default "") $.name) (and (eq $.name "setup") (eq .name "notify-setup")) -}}
{{- $found = . -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "files/acls.toml has no principal for %s" .name) -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}
