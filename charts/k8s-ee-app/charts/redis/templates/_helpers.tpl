{{/*
"<release>-redis": the Deployment, Service and (with "-secret") Secret names.
*/}}
{{- define "redis.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the release's lifetime.
*/}}
{{- define "redis.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object: the selector labels plus chart and the environment's k8s-ee labels.
*/}}
{{- define "redis.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
{{ include "redis.selectorLabels" . }}
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

{{/*
The probe: TCP with auth (redis-cli would need the password), redis-cli ping without.
*/}}
{{- define "redis.probe" -}}
{{- if .Values.auth.enabled }}
tcpSocket:
  port: redis
{{- else }}
exec:
  command: ["redis-cli", "ping"]
{{- end }}
{{- end }}
