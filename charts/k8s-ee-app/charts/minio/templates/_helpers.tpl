{{/*
"<release>-minio": the Tenant name; the operator names its headless Service "<release>-minio-hl".
*/}}
{{- define "minio.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the release's lifetime.
*/}}
{{- define "minio.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object: the selector labels plus chart and the environment's k8s-ee labels.
*/}}
{{- define "minio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "minio.selectorLabels" . }}
app.kubernetes.io/component: database
# The reference's label, for its troubleshooting commands (kubectl get pods -l app=<db>).
app: {{ .Chart.Name }}
app.kubernetes.io/part-of: k8s-ee-app
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.global.projectId }}
k8s-ee/project-id: {{ . | quote }}
{{- end }}
{{- with .Values.global.prNumber }}
k8s-ee/pr-number: {{ . | int | toString | quote }}
{{- end }}
{{- end }}
