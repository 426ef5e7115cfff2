{{/*
serveConfigV2 of the RayService, built from files/serve_config.yaml (a verbatim copy of
workloads/serve_config.yaml kept in sync by scripts/render_manifests.sh and a test), with the values
that differ on Kubernetes: the initial checkpoint, allowed prefixes, replicas and the HTTP listener.
*/}}
{{- define "rlops.serveConfig" -}}
{{- $cfg := .Files.Get "files/serve_config.yaml" | fromYaml }}
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
{{- $_ := set $uc "checkpoint_uri" $.Values.serve.checkpointUri }}
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
