{{- define "affinity.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "affinity.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "affinity.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "affinity.modelClaim" -}}
{{- if .Values.model.existingClaim -}}
{{- .Values.model.existingClaim -}}
{{- else -}}
{{- include "affinity.fullname" . }}-models
{{- end -}}
{{- end -}}

{{- define "affinity.eventsClaim" -}}
{{- if .Values.ingest.existingClaim -}}
{{- .Values.ingest.existingClaim -}}
{{- else -}}
{{- include "affinity.fullname" . }}-events
{{- end -}}
{{- end -}}

{{- define "affinity.keysSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- include "affinity.fullname" . }}-keys
{{- end -}}
{{- end -}}

{{- define "affinity.checks" -}}
{{- if and .Values.ingest.enabled .Values.autoscaling.enabled -}}
{{- fail "autoscaling needs ingest.enabled=false: replicas do not share an event log or live state yet" -}}
{{- end -}}
{{- if and .Values.ingest.enabled (gt (int .Values.replicaCount) 1) -}}
{{- fail "replicaCount > 1 needs ingest.enabled=false: replicas do not share an event log or live state yet" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not (or .Values.auth.existingSecret .Values.auth.keys)) -}}
{{- fail "auth.enabled needs auth.existingSecret or auth.keys" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}
{{- fail "tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- end -}}
