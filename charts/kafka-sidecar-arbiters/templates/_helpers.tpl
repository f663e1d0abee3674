{{- define "arbiters.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "arbiters.configMapName" -}}
{{- .Values.configMapName | default (printf "%s-config" .Values.name) -}}
{{- end }}
