"""The operator's settings as the chart renders them: the dashboard host allow-list (issue 10 §3).

Real helm binary, no cluster. The operator reads ``RLOPS_DASHBOARD_ALLOWED_HOSTS`` through
``rlops_operator.settings``; the chart must pass the value through unchanged, default to empty
(the token goes to no dashboard) and refuse entries that are not a host or host:port.
"""

from __future__ import annotations

from typing import Any

from rlops_operator.settings import OperatorSettings

from tests.k8s.charts import CHART, load_docs, render, run_helm


def operator_env(*args: str) -> dict[str, str]:
    """The env of the operator container in the rendered chart."""
    docs: list[dict[str, Any]] = load_docs(render(*args))
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}


def test_allow_list_is_empty_by_default_and_sends_the_token_nowhere() -> None:
    env = operator_env()
    assert env["RLOPS_DASHBOARD_ALLOWED_HOSTS"] == ""
    settings = OperatorSettings.from_env(env)
    assert settings.dashboard_allowed_hosts == ()


def test_allow_list_reaches_the_operator_settings() -> None:
    env = operator_env("--set", "operator.dashboardAllowedHosts={ray-head.serving.svc:8265,ray.example}")
    assert env["RLOPS_DASHBOARD_ALLOWED_HOSTS"] == "ray-head.serving.svc:8265,ray.example"
    settings = OperatorSettings.from_env(env)
    assert settings.dashboard_allowed_hosts == ("ray-head.serving.svc:8265", "ray.example")


def test_a_url_instead_of_a_host_is_refused_by_the_values_schema() -> None:
    out = run_helm(
        "template",
        "x",
        str(CHART),
        "--set",
        "operator.dashboardAllowedHosts={http://evil:8265/}",
        check=False,
    )
    assert out.returncode != 0
    assert "dashboardAllowedHosts" in out.stderr
