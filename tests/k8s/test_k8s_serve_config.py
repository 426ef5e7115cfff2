"""The RayService's serveConfigV2, checked by the code that will read it: Ray Serve's own deploy schema
and the Serve app's user_config model (extra keys forbidden), for the chart and the plain manifest."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.k8s.conftest import Rendered, plain_manifest_docs


def serve_configs(rendered: dict[str, Rendered]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"chart[{s.name}]", doc) for s in rendered.values() for doc in s.of_kind("RayService")]
    out += [(f"manifests/{name}", doc) for name, doc in plain_manifest_docs() if doc["kind"] == "RayService"]
    return [(source, yaml.safe_load(doc["spec"]["serveConfigV2"])) for source, doc in out]


def test_serve_config_is_a_valid_ray_serve_deploy_config(rendered: dict[str, Rendered]) -> None:
    schema = pytest.importorskip("ray.serve.schema")
    configs = serve_configs(rendered)
    assert len(configs) >= 3
    for source, config in configs:
        parsed = schema.ServeDeploySchema.model_validate(config)
        (app,) = [a for a in parsed.applications if a.name == "corridor"]
        assert app.import_path == "workloads.serve_app:app", source
        (dep,) = [d for d in app.deployments if d.name == "PolicyServer"]
        assert dep.autoscaling_config["min_replicas"] >= 1 and dep.ray_actor_options.num_cpus > 0, source


def test_user_config_is_accepted_by_the_serve_app(rendered: dict[str, Rendered]) -> None:
    serve_app = pytest.importorskip("workloads.serve_app")
    for source, config in serve_configs(rendered):
        (app,) = [a for a in config["applications"] if a["name"] == "corridor"]
        (dep,) = [d for d in app["deployments"] if d["name"] == "PolicyServer"]
        settings = serve_app.ServeSettings.model_validate(dep["user_config"])
        assert settings.checkpoint_uri.startswith("s3://rlops/experiments/"), source
        assert settings.allowed_prefixes == ["s3://rlops/experiments/"], source


def test_the_serve_app_model_rejects_a_misspelt_key(rendered: dict[str, Rendered]) -> None:
    serve_app = pytest.importorskip("workloads.serve_app")
    (_, config), *_ = serve_configs(rendered)
    user_config = dict(config["applications"][0]["deployments"][0]["user_config"], checkpoint_url="s3://x/y")
    with pytest.raises(ValueError, match="checkpoint_url"):
        serve_app.ServeSettings.model_validate(user_config)
