{{- define "k8see.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "k8see.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name | trunc 63 }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 }}
{{- end -}}

{{- define "k8see.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 }}
{{ include "k8see.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "k8see.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "k8see.redisSecret" -}}
{{ .Values.redis.existingSecret | default (printf "%s-redis" (include "k8see.fullname" .)) }}
{{- end -}}

{{/* Environment every k8see process gets: settings, Redis URL with the password, credentials. */}}
{{- define "k8see.env" -}}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "k8see.redisSecret" . }}, key: redis-password}}
- name: K8SEE_REDIS__URL
  value: "redis://:$(REDIS_PASSWORD)@{{ include "k8see.fullname" . }}-redis:6379/0"
- name: K8SEE_METRICS__PORT
  value: {{ .Values.metrics.port | quote }}
{{- if not (hasKey .Values.settings "K8SEE_DEPLOY__NAMESPACE_BINDINGS") }}
- name: K8SEE_DEPLOY__NAMESPACE_BINDINGS
  value: {{ include "k8see.namespaceBindings" . | quote }}
{{- end }}
{{- range $k, $v := .Values.settings }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end -}}

{{/* The RoleBindings the deploy stage writes into every PR namespace (JSON, read by
deploy.namespace_bindings): ClusterRole name -> the pool's ServiceAccount (clusterrole.yaml). */}}
{{- define "k8see.namespaceBindings" -}}
{{- $fullname := include "k8see.fullname" . -}}
{{- $bindings := dict -}}
{{- range $pool, $role := dict "deploy" "pr-namespace" "maintenance" "pr-namespace-maintenance" -}}
{{- $account := dict "name" (printf "%s-%s" $fullname $pool) "namespace" $.Release.Namespace -}}
{{- $_ := set $bindings (printf "%s-%s" $fullname $role) $account -}}
{{- end -}}
{{ toJson $bindings }}
{{- end -}}

{{- define "k8see.securityContext" -}}
allowPrivilegeEscalation: false
capabilities: {drop: [ALL]}
{{- end -}}
