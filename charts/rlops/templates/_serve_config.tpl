{{/*
serveConfigV2 of the RayService, built from files/serve_config.yaml (a verbatim copy of
workloads/serve_config.yaml kept in sync by scripts/render_manifests.sh and a test), with the values
that differ on Kubernetes: the initial checkpoint, allowed prefixes, replicas and the HTTP listener.
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
{{- $_ := set $dep "num_replicas" (int $.Values.serve.numReplicas) }}
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
