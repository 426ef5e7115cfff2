{{/*
serveConfigV2 of the RayService, built from files/serve_config.yaml (a verbatim copy of
workloads/serve_config.yaml kept in sync by scripts/render_manifests.sh and a test), with the values
that differ on Kubernetes: the initial checkpoint, allowed prefixes, replicas (autoscaling_config from
serve.autoscaling, or a fixed num_replicas: Serve refuses both) and the HTTP listener.
*/}}
{{- define "rlops.serveConfig" -}}
{{- $cfg := .Files.Get "files/serve_config.yaml" | fromYaml }}
{{- $checkpoint := include "rlops.liveCheckpoint" . | default .Values.serve.checkpointUri }}
{{- if not $cfg.applications }}
{{- fail "files/serve_config.yaml has no applications" }}
{{- end }}
{{- $found := false }}
{{- range $app := $cfg.applications }}
{{- if eq $app.name $.Values.serve.application }}
{{- range $dep := $app.deployments }}
{{- if eq $dep.name $.Values.serve.deployment }}
{{- $found = true }}
{{- $uc := $dep.user_config | default dict }}
{{- $_ := set $uc "checkpoint_uri" $checkpoint }}
{{- $prefixes := $.Values.serve.allowedPrefixes | default (list (printf "%s/" (include "rlops.storageRoot" $))) }}
{{- $_ := set $uc "allowed_prefixes" $prefixes }}
{{- $_ := set $dep "user_config" $uc }}
{{- $as := $.Values.serve.autoscaling }}
{{- if $as.enabled }}
{{- $_ := unset $dep "num_replicas" }}
{{- $_ := set $dep "autoscaling_config" (include "rlops.autoscalingConfig" $ | fromYaml) }}
{{- else }}
{{- $_ := unset $dep "autoscaling_config" }}
{{- $_ := set $dep "num_replicas" (int $.Values.serve.numReplicas) }}
{{- end }}
{{- $opts := $dep.ray_actor_options | default dict }}
{{- $_ := set $opts "num_cpus" $.Values.serve.replicaCpus }}
{{- $_ := set $dep "ray_actor_options" $opts }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- fail (printf "files/serve_config.yaml has no application %q with deployment %q" .Values.serve.application .Values.serve.deployment) }}
{{- end }}
{{- $http := $cfg.http_options | default dict }}
{{- $_ := set $http "host" "0.0.0.0" }}
{{- $_ := set $http "port" 8000 }}
{{- $_ := set $cfg "http_options" $http }}
{{- $_ := set $cfg "proxy_location" "EveryNode" }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The checkpoint the live RayService serves, if it exists: after the first promotion the operator owns
user_config.checkpoint_uri, and a `helm upgrade` must not roll it back to serve.checkpointUri.
(`lookup` is empty under `helm template` and dry runs, so rendering stays deterministic there.)
*/}}
{{- define "rlops.liveCheckpoint" -}}
{{- $live := lookup "ray.io/v1" "RayService" .Release.Namespace (include "rlops.serveName" .) }}
{{- if and $live $live.spec $live.spec.serveConfigV2 }}
{{- $cfg := $live.spec.serveConfigV2 | fromYaml }}
{{- range $app := $cfg.applications | default list }}
{{- if eq $app.name $.Values.serve.application }}
{{- range $dep := $app.deployments | default list }}
{{- if and (eq $dep.name $.Values.serve.deployment) $dep.user_config }}
{{- $dep.user_config.checkpoint_uri | default "" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The policy deployment's Serve autoscaling_config from serve.autoscaling, checked where a JSON schema
cannot (relations between values, and that max replicas fit the serving cluster at its largest).
*/}}
{{- define "rlops.autoscalingConfig" -}}
{{- $as := .Values.serve.autoscaling }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail (printf "serve.autoscaling.minReplicas (%d) is above maxReplicas (%d): raise maxReplicas or lower minReplicas" (int $as.minReplicas) (int $as.maxReplicas)) }}
{{- end }}
{{- if le (float64 $as.lookBackPeriodSeconds) (float64 $as.metricsIntervalSeconds) }}
{{- fail (printf "serve.autoscaling.lookBackPeriodSeconds (%v) must exceed metricsIntervalSeconds (%v): the autoscaler averages several load reports" $as.lookBackPeriodSeconds $as.metricsIntervalSeconds) }}
{{- end }}
{{- $need := mulf (float64 $as.maxReplicas) (float64 .Values.serve.replicaCpus) }}
{{- $have := float64 .Values.serve.head.numCpus }}
{{- $workers := .Values.serve.workers }}
{{- if gt (int $workers.maxReplicas) 0 }}
{{- $res := $workers.resources | default dict }}
{{- $cpu := ($res.limits | default dict).cpu | default ($res.requests | default dict).cpu }}
{{- $have = addf $have (mulf (float64 $workers.maxReplicas) (include "rlops.cpuQuantity" $cpu | float64)) }}
{{- end }}
{{- if gt $need $have }}
{{- fail (printf "serve.autoscaling.maxReplicas (%d) x serve.replicaCpus (%v) = %v CPUs, but the serving cluster has at most %v (serve.head.numCpus + serve.workers.maxReplicas x the worker CPU limit): lower maxReplicas or replicaCpus, or allow more workers" (int $as.maxReplicas) .Values.serve.replicaCpus $need $have) }}
{{- end }}
min_replicas: {{ int $as.minReplicas }}
max_replicas: {{ int $as.maxReplicas }}
target_ongoing_requests: {{ $as.targetOngoingRequests }}
upscale_delay_s: {{ $as.upscaleDelaySeconds | default 0 }}
downscale_delay_s: {{ $as.downscaleDelaySeconds | default 0 }}
metrics_interval_s: {{ $as.metricsIntervalSeconds | default 10 }}
look_back_period_s: {{ $as.lookBackPeriodSeconds | default 30 }}
{{- end }}

{{/*
A Kubernetes CPU quantity ("2", "500m", 1.5) as a number of CPUs; empty or absent gives 0.
*/}}
{{- define "rlops.cpuQuantity" -}}
{{- $q := toString (. | default "0") }}
{{- if hasSuffix "m" $q }}
{{- divf (trimSuffix "m" $q | float64) 1000.0 }}
{{- else }}
{{- $q | float64 }}
{{- end }}
{{- end }}
