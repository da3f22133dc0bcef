{{/* The chart name, overridable. */}}
{{- define "apitoken-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name (and the Service's DNS label): the release name, suffixed with the chart's. */}}
{{- define "apitoken-service.fullname" -}}
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

{{- define "apitoken-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apitoken-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "apitoken-service.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "apitoken-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "apitoken-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "apitoken-service.issuer" -}}
{{- default (printf "http://%s.%s.svc.cluster.local:%v" (include "apitoken-service.fullname" .) .Release.Namespace .Values.port) .Values.issuer }}
{{- end }}

{{- define "apitoken-service.claimName" -}}
{{- default (printf "%s-data" (include "apitoken-service.fullname" .)) .Values.database.sqlite.persistence.existingClaim }}
{{- end }}

{{/* The environment of both the migrate step and the server: they must agree on all of it. */}}
{{- define "apitoken-service.env" -}}
- name: APITOKEN_SERVICE_ISSUER
  value: {{ include "apitoken-service.issuer" . | quote }}
{{- if eq .Values.database.type "sqlite" }}
- name: APITOKEN_SERVICE_DATABASE_URL
  value: "sqlite:////data/apitoken-service.db"
{{- else }}
- name: APITOKEN_SERVICE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.postgresql.urlSecret.name is required with database.type=postgresql" .Values.database.postgresql.urlSecret.name }}
      key: {{ .Values.database.postgresql.urlSecret.key }}
{{- end }}
- name: APITOKEN_SERVICE_KEY_ENCRYPTION_KEY_FILE
  value: /etc/apitoken-service/kek/{{ .Values.keyEncryptionKey.key }}
{{- range $key, $value := .Values.settings }}
{{- if not (kindIs "invalid" $value) }}
- name: APITOKEN_SERVICE_{{ snakecase $key | upper }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "apitoken-service.mounts" -}}
- name: kek
  mountPath: /etc/apitoken-service/kek
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if eq .Values.database.type "sqlite" }}
- name: data
  mountPath: /data
{{- end }}
{{- end }}
