{{/*
"<release>-mongodb": the MongoDBCommunity's name, so the operator's Service is
app-mongodb-svc and the user's Secret app-mongodb-admin-<username>.
*/}}
{{- define "mongodb.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object: the chart's identity plus the environment's k8s-ee labels.
*/}}
{{- define "mongodb.labels" -}}
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
