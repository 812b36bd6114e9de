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

{{/* The state backend as Driftline resolves it: "sqlite" when config.state.backend is unset. */}}
{{- define "driftline.stateBackend" -}}
{{- $state := .Values.config.state | default dict }}
{{- toString (default "sqlite" $state.backend) }}
{{- end }}

{{/* Is the path `.path` the directory `.dir` or inside it? Returns "true" or "". */}}
{{- define "driftline.isUnder" -}}
{{- $dir := trimSuffix "/" (toString .dir) }}
{{- if or (eq .path $dir) (hasPrefix (printf "%s/" $dir) .path) }}true{{ end }}
{{- end }}

{{/* Is the path `.path` inside one of the volume mounts `.mounts`? Returns "true" or "". */}}
{{- define "driftline.underExtraMount" -}}
{{- $path := .path }}
{{- range $m := .mounts }}
{{- if include "driftline.isUnder" (dict "path" $path "dir" $m.mountPath) }}true{{ end }}
{{- end }}
{{- end }}

{{/* Does a model's reference lie under references.mountPath (so the pod mounts it)? "true" or "". */}}
{{- define "driftline.mountsReferences" -}}
{{- $dir := .Values.references.mountPath }}
{{- range $m := .Values.config.models }}
{{- $ref := toString (default "" $m.reference) }}
{{- if and $ref (include "driftline.isUnder" (dict "path" $ref "dir" $dir)) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Render-time checks of what helm's schema cannot see: combinations that start but lose state,
and reference paths that no pod can have. Each message names the values to change.
*/}}
{{- define "driftline.validateState" -}}
{{- $backend := include "driftline.stateBackend" . }}
{{- $stateDir := toString .Values.config.state.dir }}
{{- $refDir := .Values.references.mountPath }}
{{- $replicas := int .Values.replicaCount }}
{{- if and (ne $backend "kafka") (gt $replicas 1) }}
{{- fail (printf "replicaCount=%d with config.state.backend=%q loses state: the sqlite backend keeps each pod's state (waiting predictions, open panes, windows, offsets, outbox) in its own SQLite file on its own volume (an emptyDir, or one PVC per pod with persistence.enabled), so when Kafka moves a partition to another pod its state stays behind and the new owner starts it empty, and each pod evaluates only its share of every model. No volume fixes that here: one SQLite file is not safe to share between pods over a network filesystem. Set config.state.backend=\"kafka\" (state in changelog topics, see the chart README \"State in Kafka\") or replicaCount=1." $replicas $backend) }}
{{- end }}
{{- if include "driftline.isUnder" (dict "path" $refDir "dir" "/etc/driftline") }}
{{- fail (printf "references.mountPath=%q must not be /etc/driftline or inside it (the config ConfigMap is mounted there, read-only)" $refDir) }}
{{- end }}
{{- if or (include "driftline.isUnder" (dict "path" $refDir "dir" $stateDir)) (include "driftline.isUnder" (dict "path" $stateDir "dir" $refDir)) (include "driftline.isUnder" (dict "path" $refDir "dir" "/tmp")) }}
{{- fail (printf "references.mountPath=%q must not overlap config.state.dir=%q or /tmp (separate mounts)" $refDir $stateDir) }}
{{- end }}
{{- range $i, $m := .Values.config.models }}
{{- $ref := toString (default "" $m.reference) }}
{{- $key := printf "config.models[%d].reference (model %q)" $i (toString $m.name) }}
{{- if not $ref }}
{{- if eq $backend "kafka" }}
{{- fail (printf "%s is empty, but config.state.backend=\"kafka\" needs a reference profile for every model: a warm-up reference is built from the first events one pod sees, so pods would bin the same feature with different edges and their panes could not be merged. Build one with `driftline reference build`, put it in the ConfigMap references.existingConfigMap (or the volume references.volume) and set the reference to %s/<file>.json" $key $refDir) }}
{{- end }}
{{- else if not (hasPrefix "/" $ref) }}
{{- fail (printf "%s = %q is relative: Driftline reads it from the config file's directory /etc/driftline, which holds only config.toml; use an absolute path such as %s/%s" $key $ref $refDir (base $ref)) }}
{{- else if include "driftline.isUnder" (dict "path" $ref "dir" $refDir) }}
{{- if and (not $.Values.references.existingConfigMap) (not $.Values.references.volume) }}
{{- fail (printf "%s = %q is under references.mountPath, but nothing is mounted there: set references.existingConfigMap (a ConfigMap with the file as a key) or references.volume" $key $ref) }}
{{- end }}
{{- else if not (include "driftline.underExtraMount" (dict "path" $ref "mounts" $.Values.extraVolumeMounts)) }}
{{- $why := "no volume is mounted there and the image has no reference profiles" }}
{{- if include "driftline.isUnder" (dict "path" $ref "dir" "/etc/driftline") }}
{{- $why = "/etc/driftline holds only config.toml (the chart's ConfigMap)" }}
{{- else if include "driftline.isUnder" (dict "path" $ref "dir" "/tmp") }}
{{- $why = "/tmp is an emptyDir, empty when the pod starts" }}
{{- else if include "driftline.isUnder" (dict "path" $ref "dir" $stateDir) }}
{{- $why = "config.state.dir is Driftline's own state volume, empty when first created" }}
{{- end }}
{{- fail (printf "%s = %q cannot be read in the pod: %s. Put reference profiles under references.mountPath (%s, from references.existingConfigMap or references.volume) or under an extraVolumeMounts path" $key $ref $why $refDir) }}
{{- end }}
{{- end }}
{{- end }}
