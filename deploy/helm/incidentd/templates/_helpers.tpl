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
{{- /* values.schema.json refuses these too; this is for renders that skip the schema. */}}
{{- range $pager, $wiring := include "incidentd.pagerBlocks" . | fromYaml }}
{{- if and (has $pager $.Values.pagers) (not (get $.Values $pager).existingSecret) }}
{{- fail (printf "pagers include %s: set %s.existingSecret to a Secret holding %s" $pager $pager $wiring.holds) }}
{{- end }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and (include "incidentd.remediation.rbacEnabled" .) (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "remediation.rbac.create: set serviceAccount.create or serviceAccount.name; the chart does not grant remediation rights to the namespace's default ServiceAccount" }}
{{- end }}
{{- if not (.Files.Glob "rules/**") }}
{{- fail "the chart has no rules/ files: copy the repository's rules/ into the chart" }}
{{- end }}
{{- include "incidentd.validateGrace" . }}
{{- end }}

{{/*
Every pager block of values.yaml, by pager name: the setting its Secret's file feeds (secret),
what the Secret holds (for messages), its other values by the setting each feeds (settings),
and its optional keys of more files in the same Secret, by the setting each feeds (files).
*/}}
{{- define "incidentd.pagerBlocks" -}}
opsgenie:
  secret: INCIDENTD_OPSGENIE_API_KEY_FILE
  holds: the API key
  settings: {apiUrl: INCIDENTD_OPSGENIE_API_URL}
  files: {webhookSecretKey: INCIDENTD_OPSGENIE_WEBHOOK_SECRET_FILE}
jsm:
  secret: INCIDENTD_JSM_API_KEY_FILE
  holds: the API key
  settings: {apiUrl: INCIDENTD_JSM_API_URL}
pagerduty:
  secret: INCIDENTD_PAGERDUTY_ROUTING_KEY_FILE
  holds: the routing key
  settings: {apiUrl: INCIDENTD_PAGERDUTY_API_URL}
  files: {webhookSecretKey: INCIDENTD_PAGERDUTY_WEBHOOK_SECRET_FILE}
slack:
  secret: INCIDENTD_SLACK_WEBHOOK_URL_FILE
  holds: the incoming webhook URL
  settings: {}
  files: {signingSecretKey: INCIDENTD_SLACK_SIGNING_SECRET_FILE}
jira:
  secret: INCIDENTD_JIRA_API_TOKEN_FILE
  holds: the API token
  settings: {url: INCIDENTD_JIRA_URL, email: INCIDENTD_JIRA_EMAIL, project: INCIDENTD_JIRA_PROJECT, issueType: INCIDENTD_JIRA_ISSUE_TYPE}
statuspage:
  secret: INCIDENTD_STATUSPAGE_API_KEY_FILE
  holds: the API key
  settings: {url: INCIDENTD_STATUSPAGE_URL, pageId: INCIDENTD_STATUSPAGE_PAGE_ID}
{{- end }}

{{/*
Remediation RBAC. The Kubernetes permissions each remediation action needs (rules/remediation.yaml,
service/remediate/actions). "namespaced" actions act on a deployment (or its pods) in an
allowlisted namespace; "cluster" actions act on nodes, whose pods may be in any namespace.
*/}}
{{- define "incidentd.remediation.permissions" -}}
namespaced:
  rollback:
    - {group: apps, resource: deployments, verbs: [get, patch]}
    - {group: apps, resource: replicasets, verbs: [list]}
  scale:
    - {group: apps, resource: deployments/scale, verbs: [get, patch]}
    - {group: apps, resource: deployments, verbs: [get]}
  restart:
    - {group: apps, resource: deployments, verbs: [get, patch]}
  delete_pods:
    - {group: apps, resource: deployments, verbs: [get]}
    - {group: apps, resource: replicasets, verbs: [list]}
    - {group: "", resource: pods, verbs: [list, delete]}
cluster:
  drain_node:
    - {group: "", resource: nodes, verbs: [get, patch]}
    - {group: "", resource: pods, verbs: [list]}
    - {group: "", resource: pods/eviction, verbs: [create]}
{{- end }}

{{/*
What remediation RBAC to render, from the chart's copy of rules/remediation.yaml, as YAML:
  namespaces: {NAMESPACE: [PolicyRule...]}   a Role + RoleBinding in each
  cluster: [PolicyRule...]                   a ClusterRole + ClusterRoleBinding (drain_node)
  enabled: true when any of them renders
Verbs are the union over the actions the policies use, one rule per (apiGroup, resource).
Deployments (and their scale subresource) are limited to the allowlisted names unless the list
has a glob; verbs that ignore resourceNames (list, watch, create, deletecollection) never are.
*/}}
{{- define "incidentd.remediation.plan" -}}
{{- $plan := dict "enabled" false "namespaces" dict "cluster" list }}
{{- if .Values.remediation.rbac.create }}
{{- $file := .Files.Get "rules/remediation.yaml" | fromYaml | default dict }}
{{- if hasKey $file "Error" }}
{{- fail (printf "rules/remediation.yaml is not valid YAML: %v" $file.Error) }}
{{- end }}
{{- $permissions := include "incidentd.remediation.permissions" . | fromYaml }}
{{- $allowlist := $file.allowlist | default dict }}
{{- /* "group|resource" -> verbs, for namespaced and cluster actions */}}
{{- $namespaced := dict }}
{{- $cluster := dict }}
{{- range $file.policies | default list }}
{{- $action := .action | toString }}
{{- $scope := "" }}
{{- $needs := list }}
{{- if hasKey $permissions.namespaced $action }}
{{- $scope = $namespaced }}
{{- $needs = get $permissions.namespaced $action }}
{{- else if hasKey $permissions.cluster $action }}
{{- $scope = $cluster }}
{{- $needs = get $permissions.cluster $action }}
{{- else }}
{{- fail (printf "rules/remediation.yaml: policy %v uses action %q, for which the chart has no RBAC (see incidentd.remediation.permissions in _helpers.tpl)" .name $action) }}
{{- end }}
{{- range $needs }}
{{- $key := printf "%s|%s" .group .resource }}
{{- $_ := set $scope $key (concat (get $scope $key | default list) .verbs | uniq) }}
{{- end }}
{{- end }}
{{- $unnamed := list "list" "watch" "create" "deletecollection" }}
{{- $byName := list "apps|deployments" "apps|deployments/scale" }}
{{- if $namespaced }}
{{- range $namespace, $workloads := $allowlist.namespaces | default dict }}
{{- $names := list }}
{{- $globbed := false }}
{{- range $workloads | default list }}
{{- $names = append $names (toString .) }}
{{- if regexMatch "[*?]" (toString .) }}
{{- $globbed = true }}
{{- end }}
{{- end }}
{{- $rules := list }}
{{- range $key := keys $namespaced | sortAlpha }}
{{- $group := index (splitList "|" $key) 0 }}
{{- $resource := index (splitList "|" $key) 1 }}
{{- $verbs := get $namespaced $key | sortAlpha }}
{{- if and (has $key $byName) (not $globbed) $names }}
{{- $named := list }}
{{- $any := list }}
{{- range $verbs }}
{{- if has . $unnamed }}
{{- $any = append $any . }}
{{- else }}
{{- $named = append $named . }}
{{- end }}
{{- end }}
{{- if $named }}
{{- $rules = append $rules (dict "apiGroups" (list $group) "resources" (list $resource) "resourceNames" ($names | uniq | sortAlpha) "verbs" $named) }}
{{- end }}
{{- if $any }}
{{- $rules = append $rules (dict "apiGroups" (list $group) "resources" (list $resource) "verbs" $any) }}
{{- end }}
{{- else }}
{{- $rules = append $rules (dict "apiGroups" (list $group) "resources" (list $resource) "verbs" $verbs) }}
{{- end }}
{{- end }}
{{- $_ := set $plan.namespaces (toString $namespace) $rules }}
{{- $_ := set $plan "enabled" true }}
{{- end }}
{{- end }}
{{- if and $cluster ($allowlist.nodes | default list) }}
{{- $rules := list }}
{{- range $key := keys $cluster | sortAlpha }}
{{- $parts := splitList "|" $key }}
{{- $rules = append $rules (dict "apiGroups" (list (index $parts 0)) "resources" (list (index $parts 1)) "verbs" (get $cluster $key | sortAlpha)) }}
{{- end }}
{{- $_ := set $plan "cluster" $rules }}
{{- $_ := set $plan "enabled" true }}
{{- end }}
{{- end }}
{{- toYaml $plan }}
{{- end }}

{{/* "true" when the chart renders remediation RBAC (the pod then needs its token), else "". */}}
{{- define "incidentd.remediation.rbacEnabled" -}}
{{- if (include "incidentd.remediation.plan" . | fromYaml).enabled }}true{{ end }}
{{- end }}

{{- define "incidentd.remediation.rbacName" -}}
{{- printf "%s-remediation" (include "incidentd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Cluster-scoped objects carry the release namespace: releases of one name in two namespaces. */}}
{{- define "incidentd.remediation.clusterRbacName" -}}
{{- printf "%s-%s-remediation" .Release.Namespace (include "incidentd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "incidentd.automountToken" -}}
{{- $triage := and .Values.triage.rbac.create .Values.triage.rbac.namespaces }}
{{- if or .Values.serviceAccount.automountToken (include "incidentd.remediation.rbacEnabled" .) $triage }}true{{ else }}false{{ end }}
{{- end }}

{{/*
A pod's stop, at the longest: a webhook in flight waits for Kafka (INCIDENTD_KAFKA_PUBLISH_TIMEOUT_SECONDS),
then the service drains (INCIDENTD_SHUTDOWN_TIMEOUT_SECONDS), then the Kafka client gets a second
to stop. A grace period shorter than that kills the pod mid-drain: its page leases are held until
they expire, and another replica waits them out. The defaults are the service's (a test holds them).
*/}}
{{- define "incidentd.validateGrace" -}}
{{- $env := dict }}
{{- range .Values.extraEnv }}
{{- if hasKey . "value" }}
{{- $_ := set $env .name (toString .value) }}
{{- end }}
{{- end }}
{{- $publish := get $env "INCIDENTD_KAFKA_PUBLISH_TIMEOUT_SECONDS" | default "5" | float64 }}
{{- $shutdown := get $env "INCIDENTD_SHUTDOWN_TIMEOUT_SECONDS" | default "20" | float64 }}
{{- $stop := addf $publish $shutdown 1 }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) $stop }}
{{- fail (printf "terminationGracePeriodSeconds is %v, shorter than a stop may take: %v s (INCIDENTD_KAFKA_PUBLISH_TIMEOUT_SECONDS %v + INCIDENTD_SHUTDOWN_TIMEOUT_SECONDS %v + 1 for the Kafka client); Kubernetes would kill the pod mid-drain, its leases held until they expire" .Values.terminationGracePeriodSeconds $stop $publish $shutdown) }}
{{- end }}
{{- end }}
