{{/* Names and labels shared by every template. */}}

{{- define "driftline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "driftline.fullname" -}}
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

{{- define "driftline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "driftline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "driftline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "driftline.labels" -}}
helm.sh/chart: {{ include "driftline.chart" . }}
{{ include "driftline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: driftline
{{- end }}

{{- define "driftline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "driftline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "driftline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rendered config.toml. Helm hands values over as JSON numbers (float64), so whole numbers
are written as TOML integers: the config loader accepts an integer where a float is expected,
but not the reverse. TOML has no null: null values are left out.
*/}}
{{- define "driftline.configToml" -}}
{{- include "driftline.validateSecrets" (dict "path" "config" "value" .Values.config) }}
{{- include "driftline.tomlTable" (dict "prefix" "" "table" .Values.config) }}
{{- end }}

{{/* A TOML key: bare when it can be, quoted otherwise. */}}
{{- define "driftline.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* An inline TOML value: string, number, boolean or array of those. */}}
{{- define "driftline.tomlValue" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ ternary "true" "false" $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if and (eq (float64 (int64 $v)) (float64 $v)) (lt (float64 $v) 1e15) (gt (float64 $v) -1e15) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "driftline.tomlValue" $e }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) }}
{{- end }}
{{- end }}

{{/* Is the value a non-empty list of tables (an array of tables)? Returns "true" or "". */}}
{{- define "driftline.isTableArray" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}{{ if kindIs "map" (first .) }}true{{ end }}{{ end }}
{{- end }}

{{/*
A TOML table body: its scalar keys first, then sub-tables, then arrays of tables, each in
sorted key order so the output (and the checksum annotation) is stable.
*/}}
{{- define "driftline.tomlTable" -}}
{{- $prefix := .prefix }}
{{- $table := .table }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- if and (not (kindIs "invalid" $v)) (not (kindIs "map" $v)) (not (include "driftline.isTableArray" $v)) }}
{{ include "driftline.tomlKey" $k }} = {{ include "driftline.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- $path := ternary (include "driftline.tomlKey" $k) (printf "%s.%s" $prefix (include "driftline.tomlKey" $k)) (eq $prefix "") }}
{{- if kindIs "map" $v }}

[{{ $path }}]
{{- include "driftline.tomlTable" (dict "prefix" $path "table" $v) }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := get $table $k }}
{{- $path := ternary (include "driftline.tomlKey" $k) (printf "%s.%s" $prefix (include "driftline.tomlKey" $k)) (eq $prefix "") }}
{{- if include "driftline.isTableArray" $v }}
{{- range $e := $v }}

[[{{ $path }}]]
{{- include "driftline.tomlTable" (dict "prefix" $path "table" $e) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Fail the render when a secret-looking key holds a value without a "${VAR}" reference (e.g.
"Bearer ${TRIGGER_TOKEN}" is fine, a literal token is not). Secrets belong in a Secret, mapped
to environment variables in secrets.env; a ConfigMap is readable by anyone who can read the
namespace's configuration.
*/}}
{{- define "driftline.validateSecrets" -}}
{{- $path := .path }}
{{- if kindIs "map" .value }}
{{- range $k, $v := .value }}
{{- $p := printf "%s.%s" $path $k }}
{{- if and (kindIs "string" $v) (ne $v "") (regexMatch "(?i)(password|secret|token|webhook_url|api_key|hmac|credential|authorization)" $k) (not (regexMatch "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" $v)) }}
{{- fail (printf "%s holds a literal secret; write \"${ENV_VAR}\" and map ENV_VAR to a key of secrets.existingSecret in secrets.env" $p) }}
{{- end }}
{{- include "driftline.validateSecrets" (dict "path" $p "value" $v) }}
{{- end }}
{{- else if kindIs "slice" .value }}
{{- range $i, $v := .value }}
{{- include "driftline.validateSecrets" (dict "path" (printf "%s[%d]" $path $i) "value" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The workload kind: a StatefulSet keeps one PVC per pod for the state directory. */}}
{{- define "driftline.workloadKind" -}}
{{- ternary "StatefulSet" "Deployment" .Values.persistence.enabled }}
{{- end }}
