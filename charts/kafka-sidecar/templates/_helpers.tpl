{{/* Labels Helm adds to the metadata of every object (never to selectors or the pod template). */}}
{{- define "kafka-sidecar.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The application's labels: the selector's name and the component. */}}
{{- define "kafka-sidecar.appLabels" -}}
app.kubernetes.io/name: {{ .Values.app.name }}
app.kubernetes.io/component: {{ .Values.app.component }}
{{- with .Values.app.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kafka-sidecar.configMapName" -}}
{{- .Values.sidecar.configMapName | default (printf "%s-kafka-sidecar-config" .Values.app.name) -}}
{{- end }}

{{- define "kafka-sidecar.image" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (.Values.sidecar.image.tag | default .Chart.AppVersion) -}}
{{- end }}
