"""Data capture lands sampled JSONL records in an S3 test bucket; capture failures never fail requests."""

from __future__ import annotations

import json
import os
import re

import boto3
import httpx
import pytest

pytestmark = pytest.mark.slow

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _runtime_env() -> dict:
    # Replicas are separate processes of a cluster that may predate the S3 fixture: hand them the
    # credentials explicitly (standard AWS variables); the endpoint travels in the capture settings.
    return {"env_vars": {k: os.environ[k] for k in AWS_ENV}}


@pytest.fixture(scope="module")
def capture_app(serve_apps, corridor_checkpoints, s3_server):
    """One app for both tests: they change only ``user_config.capture`` (a reconfigure, no new replica)."""

    def configure(capture: dict) -> str:
        capture = {"flush_seconds": 0.3, "endpoint_url": s3_server.endpoint, **capture}
        user_config = {"checkpoint_uri": corridor_checkpoints.final, "capture": capture}
        return serve_apps.deploy("capture", user_config, runtime_env=_runtime_env())

    yield configure
    serve_apps.remove("capture")


def test_capture_writes_jsonl_to_s3(capture_app, corridor_checkpoints, s3_bucket, wait) -> None:
    url = capture_app({"enabled": True, "root": f"{s3_bucket}/data", "sample_rate": 1.0})
    for i in range(10):
        assert httpx.post(f"{url}/", json={"state": [1 + i % 6]}, timeout=30).status_code == 200
    batch_body = {"observations": [[1], [6]], "return_probs": True}
    assert httpx.post(f"{url}/", json=batch_body, timeout=30).status_code == 200
    bucket = s3_bucket.removeprefix("s3://")
    s3 = boto3.client("s3")

    def records():
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        lines = [
            json.loads(line)
            for key in keys
            for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
        ]
        return (keys, lines) if len(lines) >= 11 else None

    keys, lines = wait(records, timeout=60)
    pattern = r"data/capture/capture/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+\.jsonl"
    assert all(re.fullmatch(pattern, k) for k in keys), keys
    assert len({r["event_id"] for r in lines}) == len(lines) == 11
    for record in lines:
        assert record["checkpoint_uri"] == corridor_checkpoints.final
        assert record["time"].endswith("+00:00") and record["input"] and record["output"]
    batch = next(r for r in lines if "observations" in r["input"])
    assert len(batch["output"]["actions"]) == 2 and len(batch["output"]["probabilities"]) == 2
    assert httpx.get(f"{url}/metadata", timeout=30).json()["capture"]["written"] == 11


def test_capture_failure_never_fails_requests(capture_app, wait) -> None:
    url = capture_app({"enabled": True, "root": "s3://no-such-bucket-rlops/data"})
    for _ in range(5):
        assert httpx.post(f"{url}/", json={"state": [1]}, timeout=30).status_code == 200

    def dropped():
        status = httpx.get(f"{url}/metadata", timeout=30).json()["capture"]
        return status if status["current_writer"]["dropped"] >= 5 else None

    status = wait(dropped)
    # written/dropped count since the replica started (earlier settings included); the current writer's own:
    assert status["current_writer"]["written"] == 0 and status["current_writer"]["dropped"] >= 5
    assert "no-such-bucket-rlops" in str(status["root"]) and status["last_error"]
