{{/*
Kafka TLS and SASL (values: kafka.securityProtocol, kafka.sasl, kafka.tls). The SASL password
and the TLS files come from existing Secrets, mounted read-only under the secrets directory and
read through the INCIDENTD_KAFKA_*_FILE settings; nothing secret is an environment variable.
*/}}
{{- define "incidentd.kafka.sasl" -}}
{{- hasPrefix "SASL_" .Values.kafka.securityProtocol | ternary "true" "" }}
{{- end }}

{{- define "incidentd.kafka.tls" -}}
{{- hasSuffix "SSL" .Values.kafka.securityProtocol | ternary "true" "" }}
{{- end }}

{{- define "incidentd.kafka.validate" -}}
{{- $k := .Values.kafka }}
{{- if and (include "incidentd.kafka.sasl" .) (not $k.sasl.existingSecret) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.existingSecret to a Secret holding the SASL password" $k.securityProtocol) }}
{{- end }}
{{- if and (include "incidentd.kafka.sasl" .) (not $k.sasl.username) (not $k.sasl.usernameKey) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.sasl.username (or kafka.sasl.usernameKey)" $k.securityProtocol) }}
{{- end }}
{{- if and (not (include "incidentd.kafka.tls" .)) (or $k.tls.ca.existingSecret $k.tls.clientCertificate.existingSecret) }}
{{- fail (printf "kafka.tls secrets are set but kafka.securityProtocol is %s: use SSL or SASL_SSL" $k.securityProtocol) }}
{{- end }}
{{- end }}

{{- define "incidentd.kafka.env" -}}
{{- $k := .Values.kafka }}
{{- $dir := "/var/run/secrets/incidentd/kafka" }}
- name: INCIDENTD_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if include "incidentd.kafka.sasl" . }}
- name: INCIDENTD_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: INCIDENTD_KAFKA_SASL_USERNAME
  {{- if $k.sasl.usernameKey }}
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.existingSecret }}
      key: {{ $k.sasl.usernameKey }}
  {{- else }}
  value: {{ $k.sasl.username | quote }}
  {{- end }}
- name: INCIDENTD_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/sasl/%s" $dir $k.sasl.key | quote }}
{{- end }}
{{- if include "incidentd.kafka.tls" . }}
{{- with $k.tls.ca.existingSecret }}
- name: INCIDENTD_KAFKA_SSL_CA_FILE
  value: {{ printf "%s/tls/%s" $dir $k.tls.ca.key | quote }}
{{- end }}
{{- with $k.tls.clientCertificate }}
{{- if .existingSecret }}
- name: INCIDENTD_KAFKA_SSL_CERT_FILE
  value: {{ printf "%s/tls/%s" $dir .certKey | quote }}
- name: INCIDENTD_KAFKA_SSL_KEY_FILE
  value: {{ printf "%s/tls/%s" $dir .keyKey | quote }}
{{- if .passwordKey }}
- name: INCIDENTD_KAFKA_SSL_KEY_PASSWORD_FILE
  value: {{ printf "%s/tls/%s" $dir .passwordKey | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: INCIDENTD_KAFKA_SSL_CHECK_HOSTNAME
  value: {{ $k.tls.checkHostname | quote }}
{{- end }}
{{- end }}

{{- define "incidentd.kafka.volumeMounts" -}}
{{- if include "incidentd.kafka.sasl" . }}
- name: kafka-sasl
  mountPath: /var/run/secrets/incidentd/kafka/sasl
  readOnly: true
{{- end }}
{{- if and (include "incidentd.kafka.tls" .) (or .Values.kafka.tls.ca.existingSecret .Values.kafka.tls.clientCertificate.existingSecret) }}
- name: kafka-tls
  mountPath: /var/run/secrets/incidentd/kafka/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "incidentd.kafka.volumes" -}}
{{- $k := .Values.kafka }}
{{- if include "incidentd.kafka.sasl" . }}
- name: kafka-sasl
  secret:
    secretName: {{ $k.sasl.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $k.sasl.key }}
        path: {{ $k.sasl.key }}
{{- end }}
{{- if and (include "incidentd.kafka.tls" .) (or $k.tls.ca.existingSecret $k.tls.clientCertificate.existingSecret) }}
# The CA and the client certificate often live in different Secrets (Strimzi: the cluster CA's
# and the KafkaUser's): one projected volume holds both.
- name: kafka-tls
  projected:
    defaultMode: 0440
    sources:
      {{- with $k.tls.ca }}
      {{- if .existingSecret }}
      - secret:
          name: {{ .existingSecret }}
          items:
            - key: {{ .key }}
              path: {{ .key }}
      {{- end }}
      {{- end }}
      {{- with $k.tls.clientCertificate }}
      {{- if .existingSecret }}
      - secret:
          name: {{ .existingSecret }}
          items:
            - key: {{ .certKey }}
              path: {{ .certKey }}
            - key: {{ .keyKey }}
              path: {{ .keyKey }}
            {{- if .passwordKey }}
            - key: {{ .passwordKey }}
              path: {{ .passwordKey }}
            {{- end }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}
