{{- define "restreamer.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "restreamer.labels" -}}
app.kubernetes.io/name: restreamer-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "restreamer.selector" -}}
app.kubernetes.io/name: restreamer-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
