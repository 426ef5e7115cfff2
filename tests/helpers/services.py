"""Handles for the shared test services (the S3 server and Ray Serve's HTTP proxy)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass
class S3Server:
    """A running S3-protocol test server and the environment that points boto3 at it."""

    endpoint: str
    server: object

    def new_bucket(self, prefix: str = "rlops") -> str:
        import boto3

        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]

    def start(self) -> None:
        self.server.start()  # type: ignore[attr-defined]


@dataclass
class ServeEndpoint:
    """Ray Serve's HTTP proxy on the shared cluster."""

    url: str
    port: int
