"""The serveConfigV2 edit keeps the user's YAML (ruamel round trip) and never changes two places at once.

Issue 9 §4 (comments, order, quoting and anchors survive) and issue 10 class 13 (an anchor shared by
two deployments: changing one must not change the other).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from rlops_operator import serveconfig
from rlops_operator.rayservice import RayServiceTarget
from rlops_operator.targets import Lineage

from tests.operator.kube import EmulatedCluster, rayservice_path

NEW = "s3://bucket/ck/new"

SHARED_USER_CONFIG = """\
# serve config with one user_config shared by two deployments
applications:
- name: corridor            # the policy app
  import_path: workloads.serve_app:app
  deployments:
  - name: PolicyServer
    user_config: &shared     # both deployments start from the same checkpoint
      checkpoint_uri: "s3://bucket/ck/old"
      capture: {enabled: true, sample_rate: 0.1}
  - name: Shadow
    user_config: *shared
- name: other
  import_path: somewhere:app
  deployments:
  - name: PolicyServer
    user_config: *shared
"""


def user_config(text: str, app: str, dep: str) -> Any:
    data = yaml.safe_load(text)
    application = next(a for a in data["applications"] if a["name"] == app)
    return next(d for d in application["deployments"] if d["name"] == dep)["user_config"]


def test_shared_user_config_anchor_changes_only_the_target() -> None:
    new = serveconfig.with_checkpoint(SHARED_USER_CONFIG, "corridor", "PolicyServer", NEW)
    assert user_config(new, "corridor", "PolicyServer") == {
        "checkpoint_uri": NEW,
        "capture": {"enabled": True, "sample_rate": 0.1},
    }
    old = {"checkpoint_uri": "s3://bucket/ck/old", "capture": {"enabled": True, "sample_rate": 0.1}}
    assert user_config(new, "corridor", "Shadow") == old
    assert user_config(new, "other", "PolicyServer") == old
    # the other two still share one node: the alias is broken for the edited deployment only
    assert "*shared" in new and new.count("&shared") == 1
    assert "# the policy app" in new and "# both deployments start" in new


def test_editing_the_alias_side_leaves_the_anchor_side() -> None:
    new = serveconfig.with_checkpoint(SHARED_USER_CONFIG, "corridor", "Shadow", NEW)
    assert user_config(new, "corridor", "Shadow")["checkpoint_uri"] == NEW
    assert user_config(new, "corridor", "PolicyServer")["checkpoint_uri"] == "s3://bucket/ck/old"
    assert user_config(new, "other", "PolicyServer")["checkpoint_uri"] == "s3://bucket/ck/old"


def test_shared_deployment_and_deployments_list() -> None:
    text = """\
applications:
- name: corridor
  deployments: &deps
  - &dep
    name: PolicyServer
    user_config: {checkpoint_uri: s3://x/old}
- name: canary
  deployments: *deps
- name: third
  deployments:
  - *dep
"""
    new = serveconfig.with_checkpoint(text, "corridor", "PolicyServer", NEW)
    assert user_config(new, "corridor", "PolicyServer")["checkpoint_uri"] == NEW
    assert user_config(new, "canary", "PolicyServer")["checkpoint_uri"] == "s3://x/old"
    assert user_config(new, "third", "PolicyServer")["checkpoint_uri"] == "s3://x/old"


def test_merge_key_base_is_not_changed() -> None:
    text = """\
base: &base
  checkpoint_uri: s3://x/old
  batch: 8
applications:
- name: corridor
  deployments:
  - name: PolicyServer
    user_config:
      <<: *base
  - name: Shadow
    user_config:
      <<: *base
"""
    new = serveconfig.with_checkpoint(text, "corridor", "PolicyServer", NEW)
    assert user_config(new, "corridor", "PolicyServer") == {"checkpoint_uri": NEW, "batch": 8}
    assert user_config(new, "corridor", "Shadow") == {"checkpoint_uri": "s3://x/old", "batch": 8}
    assert yaml.safe_load(new)["base"] == {"checkpoint_uri": "s3://x/old", "batch": 8}


def test_comments_order_quotes_and_indentation_survive() -> None:
    text = """\
# top comment
proxy_location: EveryNode   # where proxies run
http_options:
    host: "0.0.0.0"
    port: 8000
applications:
    -   name: corridor
        route_prefix: '/'
        deployments:
            -   name: PolicyServer
                user_config:
                    checkpoint_uri: s3://x/old   # live
                    note: 'keep me'
"""
    # a URI of the same length, so that the comment after it keeps its column too
    new = serveconfig.with_checkpoint(text, "corridor", "PolicyServer", "s3://x/new")
    assert new == text.replace("s3://x/old", "s3://x/new")


def test_the_same_edit_twice_is_stable() -> None:
    once = serveconfig.with_checkpoint(SHARED_USER_CONFIG, "corridor", "PolicyServer", NEW)
    assert serveconfig.with_checkpoint(once, "corridor", "PolicyServer", NEW) == once


def test_json_serve_config_stays_loadable() -> None:
    text = '{"applications": [{"name": "corridor", "import_path": "x:app"}]}'
    new = serveconfig.with_checkpoint(text, "corridor", "PolicyServer", NEW)
    assert yaml.safe_load(new)["applications"][0]["deployments"] == [
        {"name": "PolicyServer", "user_config": {"checkpoint_uri": NEW}}
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "applications:\n- name: a\n  deployments:\n  - name: D\n    user_config: *missing\n",
            "not valid YAML",
        ),
        ("a: 1\na: 2\n", "not valid YAML"),
        ("applications:\n- {import_path: x}\n", "without 'name'"),
    ],
)
def test_bad_yaml_is_a_clear_error(text: str, match: str) -> None:
    with pytest.raises(serveconfig.ServeConfigError, match=match):
        serveconfig.with_checkpoint(text, "corridor", "PolicyServer", NEW)


def test_rayservice_patch_keeps_the_anchor_partner(kube: EmulatedCluster, tmp_path: Any) -> None:
    """Through the RayService target and the emulated API: the patched serveConfigV2 text is the edit."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "anchors", "namespace": "default"},
        "spec": {"serveConfigV2": SHARED_USER_CONFIG},
    }
    kube.request("POST", rayservice_path("default"), body)
    RayServiceTarget("anchors", "default", "corridor", "PolicyServer", api=api).apply(NEW, Lineage(NEW))
    text = kube.get(rayservice_path("default", "anchors"))["spec"]["serveConfigV2"]
    assert user_config(text, "corridor", "PolicyServer")["checkpoint_uri"] == NEW
    assert user_config(text, "corridor", "Shadow")["checkpoint_uri"] == "s3://bucket/ck/old"
    assert user_config(text, "other", "PolicyServer")["checkpoint_uri"] == "s3://bucket/ck/old"
    assert "# both deployments start from the same checkpoint" in text
