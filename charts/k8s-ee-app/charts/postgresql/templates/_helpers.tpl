{{/*
"<release>-postgresql": the Cluster's name, so CNPG's objects are app-postgresql-rw/-ro/-r and
the Secret app-postgresql-app that the app chart reads.
*/}}
{{- define "postgresql.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object: the chart's identity plus the environment's k8s-ee labels.
*/}}
{{- define "postgresql.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
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
