{{/* Base name of every object: the release name. */}}
{{- define "lagoon.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{/* Labels on every object. */}}
{{- define "lagoon.labels" -}}
app.kubernetes.io/name: lagoon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels (add app.kubernetes.io/component per workload). */}}
{{- define "lagoon.selector" -}}
app.kubernetes.io/name: lagoon
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lagoon.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "lagoon.name" .) -}}
{{- end }}

{{- define "lagoon.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end }}

{{- define "lagoon.keysSecret" -}}
{{- .Values.keys.existingSecret | default (printf "%s-keys" (include "lagoon.name" .)) -}}
{{- end }}
