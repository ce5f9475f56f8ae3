{{/* Kafka credentials of one identity as container env entries; call with (dict "root" $
"user" <KafkaUser name, under strimzi.users>). */}}
{{- define "notify.kafkaEnv" -}}
{{- $v := .root.Values -}}
{{- if and $v.strimzi.users.enabled .user }}
{{- if eq $v.strimzi.users.authentication "scram-sha-512" }}
- name: NOTIFY_KAFKA__PROPERTIES__SASL_USERNAME
  value: {{ .user | quote }}
- name: NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .user | quote }}, key: password}
{{- else }}
- name: NOTIFY_KAFKA__PROPERTIES__SSL_CERTIFICATE_LOCATION
  value: /etc/notify/kafka-user/user.crt
- name: NOTIFY_KAFKA__PROPERTIES__SSL_KEY_LOCATION
  value: /etc/notify/kafka-user/user.key
{{- end }}
{{- else if $v.kafka.sasl.mechanism }}
- name: NOTIFY_KAFKA__PROPERTIES__SASL_USERNAME
  value: {{ $v.kafka.sasl.username | quote }}
- name: NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $v.kafka.sasl.passwordSecret.name | quote }}, key: {{ $v.kafka.sasl.passwordSecret.key | quote }}}
{{- end }}
{{- end -}}

{{/* Volumes every notify container mounts: config, Kafka TLS, registry and CQL secrets. */}}
{{- define "notify.commonVolumes" -}}
- name: config
  configMap: {name: {{ .config | quote }}}
- name: tmp
  emptyDir: {sizeLimit: 64Mi}
{{- $v := .root.Values }}
{{- if $v.kafka.tls.secret }}
- name: kafka-tls
  secret: {secretName: {{ $v.kafka.tls.secret | quote }}}
{{- end }}
{{- if and $v.strimzi.users.enabled .user (eq $v.strimzi.users.authentication "tls") }}
- name: kafka-user
  secret: {secretName: {{ .user | quote }}}
{{- end }}
{{- if $v.registry.passwordSecret.name }}
- name: registry-secret
  secret: {secretName: {{ $v.registry.passwordSecret.name | quote }}}
{{- end }}
{{- if $v.registry.caSecret.name }}
- name: registry-ca
  secret: {secretName: {{ $v.registry.caSecret.name | quote }}}
{{- end }}
{{- if $v.cql.passwordSecret.name }}
- name: cql-secret
  secret: {secretName: {{ $v.cql.passwordSecret.name | quote }}}
{{- end }}
{{- end -}}

{{- define "notify.commonMounts" -}}
- name: config
  mountPath: /etc/notify/notify.toml
  subPath: notify.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- $v := .root.Values }}
{{- if $v.kafka.tls.secret }}
- name: kafka-tls
  mountPath: /etc/notify/kafka-tls
  readOnly: true
{{- end }}
{{- if and $v.strimzi.users.enabled .user (eq $v.strimzi.users.authentication "tls") }}
- name: kafka-user
  mountPath: /etc/notify/kafka-user
  readOnly: true
{{- end }}
{{- if $v.registry.passwordSecret.name }}
- name: registry-secret
  mountPath: /etc/notify/secrets/registry
  readOnly: true
{{- end }}
{{- if $v.registry.caSecret.name }}
- name: registry-ca
  mountPath: /etc/notify/secrets/registry-ca
  readOnly: true
{{- end }}
{{- if $v.cql.passwordSecret.name }}
- name: cql-secret
  mountPath: /etc/notify/secrets/cql
  readOnly: true
{{- end }}
{{- end -}}

{{/* The KafkaUser of a processor ("" without strimzi.users). */}}
{{- define "notify.userOf" -}}
{{- if .root.Values.strimzi.users.enabled -}}
{{- $principal := include "notify.principal" (dict "root" .root "name" .name) | fromJson -}}
{{- include "notify.kafkaUser" (dict "root" .root "principal" $principal.name) -}}
{{- end -}}
{{- end -}}
