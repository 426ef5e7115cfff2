{{/* Chart name, truncated to the 63 characters Kubernetes allows in a label. */}}
{{- define "rlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-based name prefix of every resource. */}}
{{- define "rlops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "rlops.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "rlops.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "rlops.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "rlops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "rlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rlops.operatorName" -}}
{{- printf "%s-operator" (include "rlops.fullname" .) }}
{{- end }}

{{- define "rlops.operatorServiceAccount" -}}
{{- default (include "rlops.operatorName" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "rlops.serveName" -}}
{{- default (printf "%s-serve" (include "rlops.fullname" .)) .Values.serve.name }}
{{- end }}

{{/* KubeRay names the Serve Service of a RayService <name>-serve-svc (port 8000). */}}
{{- define "rlops.serveUrl" -}}
{{- printf "http://%s-serve-svc.%s.svc:8000" (include "rlops.serveName" .) .Release.Namespace }}
{{- end }}

{{- define "rlops.rolloutName" -}}
{{- default (include "rlops.fullname" .) .Values.rollout.name }}
{{- end }}

{{- define "rlops.trainName" -}}
{{- printf "%s-train-%s" (include "rlops.fullname" .) .Values.training.runName | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "rlops.minioName" -}}
{{- printf "%s-minio" (include "rlops.fullname" .) }}
{{- end }}

{{/* The storage root without a trailing slash. */}}
{{- define "rlops.storageRoot" -}}
{{- .Values.storage.uri | trimSuffix "/" }}
{{- end }}

{{- define "rlops.channel" -}}
{{- default .Values.training.env .Values.training.channel }}
{{- end }}

{{/* URI of the channel pointer that training promotes to and the operator watches. */}}
{{- define "rlops.channelPointer" -}}
{{- printf "%s/%s/best_checkpoint.txt" (include "rlops.storageRoot" .) (include "rlops.channel" .) }}
{{- end }}

{{/* The bucket of an s3:// storage root (empty for other schemes). */}}
{{- define "rlops.bucket" -}}
{{- if hasPrefix "s3://" .Values.storage.uri }}
{{- index (splitList "/" (trimPrefix "s3://" .Values.storage.uri)) 0 }}
{{- end }}
{{- end }}

{{/* Standard AWS variables: endpoint and region as values, credentials by Secret reference only. */}}
{{- define "rlops.storageEnv" -}}
- name: AWS_REGION
  value: {{ .Values.storage.region | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.storage.region | quote }}
{{- with .Values.storage.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.credentialsSecret }}
{{- if .name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{- define "rlops.workloadsImage" -}}
{{- printf "%s:%s" .Values.images.workloads.repository .Values.images.workloads.tag }}
{{- end }}

{{- define "rlops.operatorImage" -}}
{{- printf "%s:%s" .Values.images.operator.repository .Values.images.operator.tag }}
{{- end }}

{{/* Pod-level security of Ray pods: the Ray image runs as user ray (uid 1000, group users 100). */}}
{{- define "rlops.rayPodSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Ray writes its session files, object spill and caches below /tmp and the home folder,
     so its root filesystem stays writable; everything else is locked down. */}}
{{- define "rlops.rayContainerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{- define "rlops.rayVolumes" -}}
- name: dshm
  emptyDir:
    medium: Memory
- name: ray-tmp
  emptyDir: {}
{{- end }}

{{- define "rlops.rayVolumeMounts" -}}
- name: dshm
  mountPath: /dev/shm
- name: ray-tmp
  mountPath: /tmp/ray
{{- end }}

{{- define "rlops.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Token authentication of the Ray clusters (KubeRay creates the token Secret). */}}
{{- define "rlops.rayAuth" -}}
authOptions:
  mode: {{ .Values.ray.authMode }}
{{- end }}

{{/* Cluster-level Serve settings of the RayService's Ray containers. */}}
{{- define "rlops.serveEnv" -}}
{{- if .Values.serve.fastIngress }}
- name: RAY_SERVE_ENABLE_DIRECT_INGRESS
  value: "1"
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
{{- with .Values.serve.haproxy }}
- name: RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S
  value: {{ .clientTimeoutS | quote }}
- name: RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S
  value: {{ .serverTimeoutS | quote }}
- name: RAY_SERVE_HAPROXY_MAXCONN
  value: {{ .maxconn | quote }}
{{- if .hardened }}
- name: RAY_SERVE_HAPROXY_BINARY_PATH
  value: /home/ray/rlops/workloads/serving/haproxy-hardened
- name: RLOPS_HAPROXY_HTTP_REQUEST_TIMEOUT_S
  value: {{ .httpRequestTimeoutS | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.serve.env }}
{{ toYaml . }}
{{- end }}
{{- end }}
