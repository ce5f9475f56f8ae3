{{- define "notify.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "notify.labels" -}}
app.kubernetes.io/part-of: notify
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one processor; call with (dict "root" $ "p" $p). */}}
{{- define "notify.selector" -}}
app.kubernetes.io/name: notify
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .p.name }}
{{- end -}}

{{/* One processor's values: the defaults, overridden by its own entry. Returns YAML. */}}
{{- define "notify.processor" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy .p) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* Consumer group of a processor: <groupPrefix>-<run>. */}}
{{- define "notify.group" -}}
{{- printf "%s-%s" .root.Values.kafka.groupPrefix .p.run -}}
{{- end -}}

{{/* The metric prefix of a processor: notify_<run with - as _>. */}}
{{- define "notify.metricPrefix" -}}
{{- printf "notify_%s" (.p.run | replace "-" "_" | replace "." "_") -}}
{{- end -}}
