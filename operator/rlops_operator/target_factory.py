"""The one place that turns a PolicyRollout's ``target`` into a :class:`~.targets.Target`."""

from __future__ import annotations

from .dashboard import DashboardTarget
from .settings import OperatorSettings
from .spec import RolloutSpec
from .targets import Target, TargetError


def build_target(spec: RolloutSpec, settings: OperatorSettings) -> Target:
    """The target ``spec`` names: a RayService (Kubernetes API) or a bare Ray cluster's dashboard.

    The dashboard token (``settings.dashboard_token``) is sent only when the dashboard's host is in
    ``settings.dashboard_allowed_hosts``. The CLI passes ``settings.allowing(url)`` for the URL its user
    typed; the operator passes its settings unchanged.
    """
    t = spec.target
    if t.ray_service:
        from .rayservice import RayServiceTarget  # the kubernetes client only when it is needed

        return RayServiceTarget(t.ray_service, t.namespace or "default", t.application, t.deployment)
    if not t.dashboard_url:
        raise TargetError("InvalidTarget", "target needs rayService or dashboardUrl")
    return DashboardTarget(
        t.dashboard_url,
        t.application,
        t.deployment,
        token=settings.dashboard_token.get_secret_value(),
        allowed_hosts=settings.dashboard_allowed_hosts,
    )
