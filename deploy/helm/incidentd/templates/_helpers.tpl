{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "incidentd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it contains it. */}}
{{- define "incidentd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "incidentd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "incidentd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "incidentd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "incidentd.labels" -}}
helm.sh/chart: {{ include "incidentd.chart" . }}
{{ include "incidentd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: incident-processor
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "incidentd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "incidentd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "incidentd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "incidentd.rulesConfigMap" -}}
{{- printf "%s-rules" (include "incidentd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
ConfigMap keys cannot contain "/": a file at rules/a/b.yaml is stored under the key "a__b.yaml"
and mounted back at a/b.yaml through the volume's items (see deployment.yaml).
*/}}
{{- define "incidentd.ruleKey" -}}
{{- trimPrefix "rules/" . | replace "/" "__" }}
{{- end }}

{{/* Fail early on settings that cannot work together. */}}
{{- define "incidentd.validate" -}}
{{- if not .Values.database.existingSecret }}
{{- fail "database.existingSecret is required: the name of a Secret holding INCIDENTD_DATABASE_URL" }}
{{- end }}
{{- if and (has "opsgenie" .Values.pagers) (not .Values.opsgenie.existingSecret) }}
{{- fail "pagers include opsgenie: set opsgenie.existingSecret to a Secret holding the API key" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if not (.Files.Glob "rules/**") }}
{{- fail "the chart has no rules/ files: copy the repository's rules/ into the chart" }}
{{- end }}
{{- end }}
