{{/* The Sentinels' addresses for KEDA, which runs in its own namespace: one name per
Sentinel pod, with the release's namespace. */}}
{{- define "k8see.kedaSentinels" -}}
{{- $fullname := include "k8see.fullname" . }}
{{- $addresses := list }}
{{- range $i := until (int .Values.redis.sentinel.replicas) }}
{{- $addresses = append $addresses (printf "%s-redis-sentinel-%d.%s-redis-sentinel-headless.%s.svc:26379" $fullname $i $fullname $.Release.Namespace) }}
{{- end }}
{{- join "," $addresses }}
{{- end -}}

{{/* With autoscaling.keda: KEDA's operator pods, a NetworkPolicy peer that may reach Redis
and the Sentinels (its redis scaler reads the queue lengths). Empty otherwise. */}}
{{- define "k8see.kedaOperatorPeer" -}}
{{- $keda := .Values.autoscaling.keda }}
{{- if $keda.enabled -}}
- namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: {{ $keda.operator.namespace }}}}
  podSelector:
    matchLabels: {{- toYaml $keda.operator.podLabels | nindent 6 }}
{{- end }}
{{- end -}}
