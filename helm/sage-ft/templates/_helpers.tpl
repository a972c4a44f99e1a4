{{/* Names and labels shared by every resource of the chart. */}}

{{- define "sage-ft.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sage-ft.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>" */}}
{{- define "sage-ft.component" -}}
{{- printf "%s-%s" (include "sage-ft.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sage-ft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sage-ft.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sage-ft.labels" -}}
{{ include "sage-ft.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set */}}
{{- define "sage-ft.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "sage-ft.secretName" -}}
{{- default (include "sage-ft.component" (dict "root" . "component" "secrets")) .Values.global.existingSecret -}}
{{- end -}}

{{- define "sage-ft.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s:6379" (include "sage-ft.component" (dict "root" . "component" "redis")) -}}
{{- else -}}
{{- required "external.redisHost is required when redis.enabled is false" .Values.external.redisHost -}}
{{- end -}}
{{- end -}}

{{- define "sage-ft.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "sage-ft.component" (dict "root" . "component" "minio")) -}}
{{- else -}}
{{- required "external.s3Endpoint is required when minio.enabled is false" .Values.external.s3Endpoint -}}
{{- end -}}
{{- end -}}

{{/* Settings every sage-ft service reads; secrets come from the Secret, never from values in plain env. */}}
{{- define "sage-ft.env" -}}
- name: REDIS_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ include "sage-ft.secretName" . }}, key: REDIS_PASSWORD}}
- name: SAGE_REDIS_URL
  value: "redis://:$(REDIS_PASSWORD)@{{ include "sage-ft.redisHost" . }}/0"
- name: SAGE_STORAGE_BACKEND
  value: s3
- name: SAGE_STORAGE_S3_ENDPOINT
  value: {{ include "sage-ft.s3Endpoint" . | quote }}
- name: SAGE_STORAGE_S3_SECURE
  value: {{ ternary "false" (toString .Values.external.s3Secure) .Values.minio.enabled | quote }}
- name: SAGE_STORAGE_S3_BUCKET
  value: {{ .Values.external.s3Bucket | quote }}
- name: SAGE_STORAGE_S3_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ include "sage-ft.secretName" . }}, key: S3_ACCESS_KEY}}
- name: SAGE_STORAGE_S3_SECRET_KEY
  valueFrom: {secretKeyRef: {name: {{ include "sage-ft.secretName" . }}, key: S3_SECRET_KEY}}
- name: SAGE_HOME
  value: /data/sage
{{- end -}}

{{- define "sage-ft.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "sage-ft.securityContext" -}}
{{ toYaml .Values.securityContext }}
{{- end -}}

{{/* nodeSelector, tolerations and affinity of one component */}}
{{- define "sage-ft.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Where the gateway and workers send python grader calls: the graders deployment, when it runs. */}}
{{- define "sage-ft.graderEnv" -}}
{{- if .Values.graders.enabled }}
- name: SAGE_GRADER_PYTHON_SANDBOX
  value: serving
- name: SAGE_GRADER_PYTHON_SANDBOX_URL
  value: "http://{{ include "sage-ft.component" (dict "root" . "component" "graders") }}:{{ .Values.graders.service.port }}"
{{- end }}
{{- end -}}
