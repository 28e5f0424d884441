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

{{/* Environment every k8see process gets: settings, the Redis URL, credentials. Called with
(dict "root" $ "role" "worker"|"beat"|"flower"): the role's Redis ACL user connects. */}}
{{- define "k8see.env" -}}
{{- $role := .role }}
{{- with .root }}
{{- include "k8see.redisEnv" (dict "root" . "role" $role) }}
- name: K8SEE_METRICS__PORT
  value: {{ .Values.metrics.port | quote }}
{{- if not (hasKey .Values.settings "K8SEE_DEPLOY__NAMESPACE_BINDINGS") }}
- name: K8SEE_DEPLOY__NAMESPACE_BINDINGS
  value: {{ include "k8see.namespaceBindings" . | quote }}
{{- end }}
{{- range $k, $v := .Values.settings }}
{{- if ne $k "K8SEE_REDIS__URL" }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* K8SEE_REDIS__URL, exactly once: the bundled Redis (the role's ACL user, its password
from the Secret), else redis.external (a Secret key, or a plain URL), else
settings.K8SEE_REDIS__URL. */}}
{{- define "k8see.redisEnv" -}}
{{- $role := .role }}
{{- with .root }}
{{- $external := .Values.redis.external }}
{{- $inSettings := hasKey .Values.settings "K8SEE_REDIS__URL" }}
{{- if and .Values.redis.sentinel.enabled (not .Values.redis.enabled) }}
{{- fail "redis.sentinel.enabled adds a replica and Sentinels to the bundled Redis (redis.enabled=true); for Sentinels of your own, set settings.K8SEE_REDIS__SENTINELS and K8SEE_REDIS__SENTINEL_MASTER_NAME" }}
{{- end }}
{{- if .Values.redis.enabled }}
{{- if or $inSettings $external.url $external.existingSecret }}
{{- fail "The bundled Redis sets K8SEE_REDIS__URL itself: to use your own Redis, set redis.enabled=false and redis.external.existingSecret (or redis.external.url)" }}
{{- end }}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "k8see.redisSecret" . }}, key: {{ $role }}-password}}
- name: K8SEE_REDIS__URL
  {{- if .Values.redis.tls.enabled }}
  value: "rediss://k8see-{{ $role }}:$(REDIS_PASSWORD)@{{ include "k8see.fullname" . }}-redis:6379/0?ssl_ca_certs={{ include "k8see.redisTlsCa" . }}"
  {{- else }}
  value: "redis://k8see-{{ $role }}:$(REDIS_PASSWORD)@{{ include "k8see.fullname" . }}-redis:6379/0"
  {{- end }}
{{- if .Values.redis.sentinel.enabled }}
{{ include "k8see.sentinelEnv" . }}
{{- end }}
{{- else if $external.existingSecret }}
- name: K8SEE_REDIS__URL
  valueFrom: {secretKeyRef: {name: {{ $external.existingSecret }}, key: {{ $external.existingSecretKey | default "redis-url" }}}}
{{- else if $external.url }}
- name: K8SEE_REDIS__URL
  value: {{ $external.url | quote }}
{{- else if $inSettings }}
- name: K8SEE_REDIS__URL
  value: {{ .Values.settings.K8SEE_REDIS__URL | quote }}
{{- else }}
{{- fail "redis.enabled=false needs your Redis URL: redis.external.existingSecret (a Secret with the URL under redis.external.existingSecretKey, default redis-url) or redis.external.url" }}
{{- end }}
{{- end }}
{{- end -}}

{{/* redis.tls: where every Redis client pod finds the CA that signed Redis's certificate
(only ca.crt of redis.tls.existingSecret is mounted there, never the key). */}}
{{- define "k8see.redisTlsCa" -}}
/etc/k8see/redis-tls/ca.crt
{{- end -}}

{{/* redis.tls: the Secret, checked; what it may not be combined with (yet). */}}
{{- define "k8see.redisTlsSecret" -}}
{{- $tls := .Values.redis.tls }}
{{- if not $tls.existingSecret }}
{{- fail "redis.tls.enabled needs redis.tls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt (what cert-manager writes; docs/operations.md, \"Redis over TLS\")" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.redis.sentinel.enabled }}
{{- fail "redis.tls does not cover redis.sentinel yet (k8see reaches Sentinels without TLS): turn one of them off (docs/operations.md, \"Redis over TLS\")" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.autoscaling.keda.enabled }}
{{- fail "redis.tls does not cover autoscaling.keda's Redis scaler yet: leave one of them off (docs/operations.md, \"Redis over TLS\")" }}
{{- end }}
{{- $tls.existingSecret }}
{{- end -}}

{{/* A Redis client pod's mount of the CA (redis.tls), for volumeMounts; empty without TLS. */}}
{{- define "k8see.redisTlsClientMount" -}}
{{- if .Values.redis.tls.enabled }}
- {name: redis-tls-ca, mountPath: /etc/k8see/redis-tls, readOnly: true}
{{- end }}
{{- end -}}

{{/* Its volume: ca.crt alone from redis.tls.existingSecret, for volumes; empty without TLS. */}}
{{- define "k8see.redisTlsClientVolume" -}}
{{- if .Values.redis.tls.enabled }}
- name: redis-tls-ca
  secret: {secretName: {{ include "k8see.redisTlsSecret" . }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end -}}

{{/* The bundled Sentinels, for every k8see process: their addresses (one DNS name per
Sentinel pod), the master's name, their password (the Redis password) and the replica
acknowledgement an enqueue waits for (docs/operations.md, "High availability"). */}}
{{- define "k8see.sentinelEnv" -}}
{{- $fullname := include "k8see.fullname" . }}
{{- $sentinel := .Values.redis.sentinel }}
{{- $addresses := list }}
{{- range $i := until (int $sentinel.replicas) }}
{{- $addresses = append $addresses (printf "%s-redis-sentinel-%d.%s-redis-sentinel-headless:26379" $fullname $i $fullname) }}
{{- end }}
- name: K8SEE_REDIS__SENTINELS
  value: {{ join "," $addresses | quote }}
- name: K8SEE_REDIS__SENTINEL_MASTER_NAME
  value: {{ $sentinel.masterName | quote }}
- name: K8SEE_REDIS__SENTINEL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "k8see.redisSecret" . }}, key: sentinel-password}}
- name: K8SEE_REDIS__MIN_REPLICA_ACKS
  value: {{ $sentinel.minReplicaAcks | quote }}
{{- end -}}

{{/* A Redis pod's DNS domain with Sentinel: <pod>.<this>. */}}
{{- define "k8see.redisHeadless" -}}
{{ include "k8see.fullname" . }}-redis-headless.{{ .Release.Namespace }}.svc
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

{{/* Scheduling, pull secrets and pod metadata, the same for every pod. Called with
(dict "root" $ "own" <the component's values> "component" <its component label>): each of
nodeSelector, tolerations, affinity, topologySpreadConstraints and priorityClassName comes
from the component when it sets the key (even empty), else from the top-level value.
A topology spread constraint without a labelSelector gets the pod's own selector labels. */}}
{{- define "k8see.podScheduling" -}}
{{- $root := .root }}
{{- $own := .own | default dict }}
{{- $spec := dict }}
{{- with $root.Values.imagePullSecrets }}
{{- $_ := set $spec "imagePullSecrets" . }}
{{- end }}
{{- range $key := list "nodeSelector" "tolerations" "affinity" "topologySpreadConstraints" "priorityClassName" }}
{{- $value := ternary (get $own $key) (get $root.Values $key) (hasKey $own $key) }}
{{- if and $value (eq $key "topologySpreadConstraints") }}
{{- $constraints := list }}
{{- range $constraint := $value }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $selector := fromYaml (include "k8see.selectorLabels" $root) }}
{{- $_ := set $selector "app.kubernetes.io/component" $.component }}
{{- $constraint = merge (dict "labelSelector" (dict "matchLabels" $selector)) $constraint }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- $value = $constraints }}
{{- end }}
{{- if $value }}
{{- $_ := set $spec $key $value }}
{{- end }}
{{- end }}
{{- if $spec }}{{ toYaml $spec }}{{ end }}
{{- end -}}

{{/* A pod's extra labels and annotations: the top-level podLabels/podAnnotations merged with
the component's own (the component wins a key). Called like k8see.podScheduling; the labels
follow the selector labels, which they may not change. */}}
{{- define "k8see.podLabels" -}}
{{- $own := .own | default dict }}
{{- $labels := merge (dict) ($own.podLabels | default dict) (.root.Values.podLabels | default dict) }}
{{- range $key, $_ := $labels }}
{{- if or (hasPrefix "app.kubernetes.io/" $key) (hasPrefix "k8see.dev/" $key) }}
{{- fail (printf "podLabels may not set %s: the chart's selectors and NetworkPolicies use the app.kubernetes.io/ and k8see.dev/ labels" $key) }}
{{- end }}
{{- end }}
{{- if $labels }}{{ toYaml $labels }}{{ end }}
{{- end -}}

{{- define "k8see.podAnnotations" -}}
{{- $own := .own | default dict }}
{{- $annotations := merge (dict) ($own.podAnnotations | default dict) (.root.Values.podAnnotations | default dict) }}
{{- if $annotations }}{{ toYaml (dict "annotations" $annotations) }}{{ end }}
{{- end -}}

{{/* A container's resources: the component's own when set, else the top-level `resources`
when set (what every container got before 0.13), else the component's default requests
below (no limits: CPU is shared, memory depends on your builds). Called with (dict "root" $
"own" <the component's resources> "default" <a key of k8see.defaultResources>). */}}
{{- define "k8see.resources" -}}
{{- $defaults := fromYaml (include "k8see.defaultResources" .) }}
{{- $chosen := .own | default .root.Values.resources | default (get $defaults .default) | default (get $defaults "worker") }}
{{- toYaml $chosen }}
{{- end -}}

{{- define "k8see.defaultResources" -}}
worker: {requests: {cpu: 100m, memory: 256Mi}}
worker-default: {requests: {cpu: 100m, memory: 256Mi}}
worker-build: {requests: {cpu: 500m, memory: 1Gi}}
worker-deploy: {requests: {cpu: 100m, memory: 256Mi}}
worker-maintenance: {requests: {cpu: 50m, memory: 192Mi}}
beat: {requests: {cpu: 20m, memory: 128Mi}}
flower: {requests: {cpu: 50m, memory: 192Mi}}
api: {requests: {cpu: 50m, memory: 128Mi}}
redis: {requests: {cpu: 100m, memory: 256Mi}}
sentinel: {requests: {cpu: 20m, memory: 32Mi}}
{{- end -}}

{{/* A probe's kubelet timings from its values (everything but `enabled` and `maxAgeSeconds`). */}}
{{- define "k8see.probeTimings" -}}
{{- toYaml (omit . "enabled" "maxAgeSeconds") }}
{{- end -}}

{{/* The liveness probe of a process that touches a heartbeat file from its main loop
(k8see.liveness): alive while the file is younger than maxAgeSeconds. Called with
(dict "probe" <values> "file" <path>). */}}
{{- define "k8see.heartbeatProbe" -}}
{{- $least := mul 2 (include "k8see.heartbeatInterval" .) | int -}}
{{- if lt (int .probe.maxAgeSeconds) $least -}}
{{- fail (printf "probes.*.liveness.maxAgeSeconds must be at least %d: twice the %s s between two heartbeats" $least (include "k8see.heartbeatInterval" .)) -}}
{{- end -}}
exec:
  command: ["sh", "-c", {{ printf "test $(( $(date +%%s) - $(stat -c %%Y %s) )) -lt %d" .file (int .probe.maxAgeSeconds) | quote }}]
{{ include "k8see.probeTimings" .probe }}
{{- end -}}

{{- define "k8see.heartbeatInterval" -}}10{{- end -}}
