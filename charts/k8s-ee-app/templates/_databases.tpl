{{/*
The databases' object names: "<release>-<db>", as the subcharts name them.
*/}}
{{- define "k8see.db" -}}
{{- printf "%s-%s" .root.Release.Name .db }}
{{- end }}

{{/*
A secretKeyRef env entry: (dict "name" ENV "secret" SECRET "key" KEY).
*/}}
{{- define "k8see.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key | quote }}
{{- end }}

{{/*
The app container's database connection variables (docs/environments.md, "3a. Databases"). Passwords only ever come
from Secrets (secretKeyRef), so they are not in the pod spec, the ConfigMap or an argument.
*/}}
{{- define "k8see.databaseEnv" -}}
{{- $v := .Values }}
{{- if $v.mariadb.enabled }}
- name: DATABASE_TYPE
  value: mariadb
{{- else if $v.postgresql.enabled }}
- name: DATABASE_TYPE
  value: postgresql
{{- end }}
{{- if $v.postgresql.enabled }}
{{- $secret := printf "%s-app" (include "k8see.db" (dict "root" . "db" "postgresql")) }}
{{- range $name, $key := dict "DATABASE_URL" "uri" "PGHOST" "host" "PGPORT" "port" "PGDATABASE" "dbname" "PGUSER" "user" "PGPASSWORD" "password" }}
{{ include "k8see.secretEnv" (dict "name" $name "secret" $secret "key" $key) }}
{{- end }}
{{- end }}
{{- if $v.mongodb.enabled }}
{{- $secret := printf "%s-admin-%s" (include "k8see.db" (dict "root" . "db" "mongodb")) (default "app" $v.mongodb.username) }}
{{ include "k8see.secretEnv" (dict "name" "MONGODB_URL" "secret" $secret "key" "connectionString.standard") }}
{{ include "k8see.secretEnv" (dict "name" "MONGODB_URI" "secret" $secret "key" "connectionString.standard") }}
- name: MONGODB_DATABASE
  value: {{ default "app" $v.mongodb.database | quote }}
{{- end }}
{{- if $v.redis.enabled }}
{{- $host := include "k8see.db" (dict "root" . "db" "redis") }}
- name: REDIS_HOST
  value: {{ $host }}
- name: REDIS_PORT
  value: "6379"
{{- if $v.redis.auth.enabled }}
{{ include "k8see.secretEnv" (dict "name" "REDIS_PASSWORD" "secret" (printf "%s-secret" $host) "key" "password") }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379" $host | quote }}
{{- else }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379" $host | quote }}
{{- end }}
{{- end }}
{{- if $v.minio.enabled }}
{{- $host := printf "%s-hl" (include "k8see.db" (dict "root" . "db" "minio")) }}
{{- $secret := printf "%s-secret" (include "k8see.db" (dict "root" . "db" "minio")) }}
- name: MINIO_ENDPOINT
  value: {{ $host }}
- name: MINIO_PORT
  value: "9000"
{{ include "k8see.secretEnv" (dict "name" "MINIO_ACCESS_KEY" "secret" $secret "key" "accesskey") }}
{{ include "k8see.secretEnv" (dict "name" "MINIO_SECRET_KEY" "secret" $secret "key" "secretkey") }}
- name: MINIO_BUCKET
  value: {{ default "data" $v.minio.bucket | quote }}
- name: S3_ENDPOINT
  value: {{ printf "http://%s:9000" $host | quote }}
{{ include "k8see.secretEnv" (dict "name" "S3_ACCESS_KEY" "secret" $secret "key" "accesskey") }}
{{ include "k8see.secretEnv" (dict "name" "S3_SECRET_KEY" "secret" $secret "key" "secretkey") }}
- name: S3_BUCKET
  value: {{ default "data" $v.minio.bucket | quote }}
{{- end }}
{{- if $v.mariadb.enabled }}
{{- $host := include "k8see.db" (dict "root" . "db" "mariadb") }}
- name: MYSQL_HOST
  value: {{ $host }}
- name: MYSQL_PORT
  value: "3306"
- name: MYSQL_DATABASE
  value: {{ default "app" $v.mariadb.database | quote }}
- name: MYSQL_USER
  value: {{ default "app" $v.mariadb.username | quote }}
{{ include "k8see.secretEnv" (dict "name" "MYSQL_PASSWORD" "secret" (printf "%s-secret" $host) "key" "user-password") }}
{{ include "k8see.secretEnv" (dict "name" "MYSQL_URL" "secret" (printf "%s-secret" $host) "key" "connection-url") }}
{{- end }}
{{- end }}

{{/*
One wait-for-database init container: (dict "root" $ "db" DB "check" SHELL "what" TEXT
"env" LIST). The check runs every 2 s until it passes or databaseWait.timeoutSeconds ends.
*/}}
{{- define "k8see.waitContainer" -}}
{{- $w := .root.Values.databaseWait }}
{{- $timeout := int (index $w.timeoutSeconds .db) }}
- name: wait-for-{{ .db }}
  image: {{ index $w.images .db | quote }}
  imagePullPolicy: IfNotPresent
  command:
    - sh
    - -c
    - |
      waited=0
      until {{ .check }}; do
        waited=$((waited + 2))
        if [ "$waited" -ge {{ $timeout }} ]; then
          echo "{{ .what }} did not answer within {{ $timeout }} s." >&2
          exit 1
        fi
        sleep 2
      done
  env:
    - name: HOME
      value: /tmp
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml (index $w.resources .db) | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
The init containers for every enabled database (docs/environments.md, "3a. Databases").
*/}}
{{- define "k8see.databaseWaits" -}}
{{- $v := .Values }}
{{- if $v.postgresql.enabled }}
{{- $host := printf "%s-rw" (include "k8see.db" (dict "root" . "db" "postgresql")) }}
{{ include "k8see.waitContainer" (dict "root" . "db" "postgresql" "what" (printf "PostgreSQL at %s" $host) "check" (printf "pg_isready -h %s -p 5432 -U %s -t 2 >/dev/null" $host (default "app" $v.postgresql.owner))) }}
{{- end }}
{{- if $v.mongodb.enabled }}
{{- $host := printf "%s-svc" (include "k8see.db" (dict "root" . "db" "mongodb")) }}
{{ include "k8see.waitContainer" (dict "root" . "db" "mongodb" "what" (printf "MongoDB at %s" $host) "check" (printf "mongosh --quiet --host %s --eval \"db.adminCommand('ping')\" >/dev/null 2>&1" $host)) }}
{{- end }}
{{- if $v.redis.enabled }}
{{- $host := include "k8see.db" (dict "root" . "db" "redis") }}
{{- $env := list }}
{{- if $v.redis.auth.enabled }}
{{- $env = list (dict "name" "REDISCLI_AUTH" "valueFrom" (dict "secretKeyRef" (dict "name" (printf "%s-secret" $host) "key" "password"))) }}
{{- end }}
{{ include "k8see.waitContainer" (dict "root" . "db" "redis" "what" (printf "Redis at %s" $host) "check" (printf "redis-cli -h %s ping 2>/dev/null | grep -q PONG" $host) "env" $env) }}
{{- end }}
{{- if $v.minio.enabled }}
{{- $host := printf "%s-hl" (include "k8see.db" (dict "root" . "db" "minio")) }}
{{ include "k8see.waitContainer" (dict "root" . "db" "minio" "what" (printf "MinIO at %s" $host) "check" (printf "curl -sf -o /dev/null http://%s:9000/minio/health/live" $host)) }}
{{- end }}
{{- if $v.mariadb.enabled }}
{{- $host := include "k8see.db" (dict "root" . "db" "mariadb") }}
{{- $env := list (dict "name" "MYSQL_PWD" "valueFrom" (dict "secretKeyRef" (dict "name" (printf "%s-secret" $host) "key" "user-password"))) }}
{{ include "k8see.waitContainer" (dict "root" . "db" "mariadb" "what" (printf "MariaDB at %s" $host) "check" (printf "mariadb-admin ping -h %s -u %s --silent >/dev/null" $host (default "app" $v.mariadb.username)) "env" $env) }}
{{- end }}
{{- end }}
