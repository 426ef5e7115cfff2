"""``python -m rlops_operator``: run the kopf operator with settings from the environment."""

from __future__ import annotations

import asyncio

import kopf

from . import handlers


def main() -> None:
    """Run kopf: cluster-wide unless RLOPS_NAMESPACES names namespaces; liveness on RLOPS_HEALTH_PORT."""
    s = handlers.SETTINGS
    kopf.configure(verbose=False)
    asyncio.run(
        kopf.operator(
            standalone=not s.peering,
            peering_name=s.peering or None,
            clusterwide=s.clusterwide,
            namespaces=list(s.namespaces),
            liveness_endpoint=f"http://0.0.0.0:{s.health_port}/healthz",
        )
    )


if __name__ == "__main__":
    main()
