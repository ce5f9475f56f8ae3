{{/* TOML from values. Helm reads numbers in values files as floats, so toToml would write
`lease_ms = 30000.0`, which an integer setting refuses: here whole numbers are integers. */}}

{{- define "notify.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "notify.tomlScalar" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}{{ toJson . }}
{{- else if eq $k "bool" -}}{{ . }}
{{- else if eq $k "float64" -}}{{ if eq (floor .) . }}{{ printf "%d" (int64 .) }}{{ else }}{{ . }}{{ end }}
{{- else if or (eq $k "slice") -}}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "notify.tomlScalar" $v }}{{ end }}]
{{- else -}}{{ . }}
{{- end -}}
{{- end -}}

{{/* Call with (dict "path" "processors.dedup" "table" $map "array" false). */}}
{{- define "notify.tomlTable" -}}
{{- $path := .path -}}
{{- $table := .table -}}
{{- if .array }}
[[{{ $path }}]]
{{- else }}
[{{ $path }}]
{{- end }}
{{- range $k, $v := $table }}
{{- if and (ne (kindOf $v) "map") (not (and (eq (kindOf $v) "slice") (gt (len $v) 0) (eq (kindOf (first $v)) "map"))) (ne (kindOf $v) "invalid") }}
{{ include "notify.tomlKey" $k }} = {{ include "notify.tomlScalar" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $table }}
{{- if eq (kindOf $v) "map" }}
{{ include "notify.tomlTable" (dict "path" (printf "%s.%s" $path (include "notify.tomlKey" $k)) "table" $v "array" false) }}
{{- else if and (eq (kindOf $v) "slice") (gt (len $v) 0) (eq (kindOf (first $v)) "map") }}
{{- range $item := $v }}
{{ include "notify.tomlTable" (dict "path" (printf "%s.%s" $path (include "notify.tomlKey" $k)) "table" $item "array" true) }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
