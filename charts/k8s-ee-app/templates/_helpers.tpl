{{/*
The chart name, used for app.kubernetes.io/name.
*/}}
{{- define "k8see.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The environment's base name, "{projectId}-pr-{N}" (the namespace and the host label).
*/}}
{{- define "k8see.environment" -}}
{{- if not .Values.projectId }}
{{- fail "projectId is required (the k8s-ee.yaml projectId)" }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$" .Values.projectId) }}
{{- fail (printf "projectId %q must be 1-20 lowercase letters, digits or hyphens" .Values.projectId) }}
{{- end }}
{{- if lt (int .Values.prNumber) 1 }}
{{- fail "prNumber must be a positive integer" }}
{{- end }}
{{- /* Past a fail only under `helm lint`, which logs fails and renders on: placeholders keep
its name checks meaningful for the chart's own (required-value) defaults. */}}
{{- printf "%s-pr-%d" (default "unset" .Values.projectId) (max 1 (int .Values.prNumber)) }}
{{- end }}

{{/*
Object names: "{projectId}-pr-{N}-{nameOverride|app}", cut to 63 characters.
*/}}
{{- define "k8see.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" (include "k8see.environment" .) (default "app" .Values.nameOverride) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "k8see.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A free string made safe as a label value (the reference's branch sanitising).
*/}}
{{- define "k8see.labelValue" -}}
{{- $v := regexReplaceAll "[^a-zA-Z0-9._-]" (toString .) "-" }}
{{- $v = regexReplaceAll "-+" $v "-" }}
{{- $v = regexReplaceAll "^[^a-zA-Z0-9]+" $v "" }}
{{- $v = trunc 63 $v }}
{{- $v = regexReplaceAll "[^a-zA-Z0-9]+$" $v "" }}
{{- default "unknown" $v }}
{{- end }}

{{/*
The image version shown to the app (APP_VERSION) and in app.kubernetes.io/version.
*/}}
{{- define "k8see.appVersion" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
Selector labels: stable for the release's lifetime, never helm.sh/chart or the commit.
*/}}
{{- define "k8see.selectorLabels" -}}
app.kubernetes.io/name: {{ include "k8see.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
k8s-ee/project-id: {{ .Values.projectId | quote }}
k8s-ee/pr-number: {{ .Values.prNumber | int | toString | quote }}
{{- end }}

{{/*
Common labels (docs/environments.md, "1. The namespace"): the selector labels plus chart, version, commit and branch.
*/}}
{{- define "k8see.labels" -}}
helm.sh/chart: {{ include "k8see.chart" . }}
{{ include "k8see.selectorLabels" . }}
app.kubernetes.io/version: {{ include "k8see.labelValue" (include "k8see.appVersion" .) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commitSha }}
k8s-ee/commit-sha: {{ include "k8see.labelValue" . | quote }}
{{- end }}
{{- with .Values.branchName }}
k8s-ee/branch: {{ include "k8see.labelValue" . | quote }}
{{- end }}
{{- end }}

{{/*
The preview host, "{projectId}-pr-{N}.{previewDomain}".
*/}}
{{- define "k8see.host" -}}
{{- if not .Values.previewDomain }}
{{- fail "previewDomain is required: the base domain of preview hosts, e.g. preview.example.com (k8see passes K8SEE_DEPLOY__DOMAIN)" }}
{{- end }}
{{- printf "%s.%s" (include "k8see.environment" .) (default "preview.invalid" .Values.previewDomain) }}
{{- end }}

{{/*
The preview URL: given by k8see, else derived from the host.
*/}}
{{- define "k8see.previewUrl" -}}
{{- if .Values.previewUrl }}
{{- .Values.previewUrl }}
{{- else }}
{{- printf "https://%s" (include "k8see.host" .) }}
{{- end }}
{{- end }}

{{/*
The image reference: pinned by digest when one is given, else by tag.
*/}}
{{- define "k8see.image" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is required" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default "latest" .Values.image.tag) }}
{{- end }}
{{- end }}
