"""The Ray Serve policy application: ``serve run workloads.serve_app:app`` or ``workloads/serve_config.yaml``.

``user_config`` (see :class:`ServeSettings`) names the checkpoint. A new ``checkpoint_uri`` is hot-swapped
in ``reconfigure()``: fetch, verify against ``rlops.json``, load fully, then replace the live policy in one
assignment. Requests already being evaluated finish on the old policy. When a new checkpoint fails, the
last good policy keeps serving and ``/metadata`` reports ``last_error`` (plus a log line and the
``rlops_serve_checkpoint_stale`` gauge), so a controller can roll back. ``reconfigure()`` raises only when
the replica has no policy at all (a cold start with a bad checkpoint): Serve then reports the deployment
as failed with that message instead of serving nothing.
"""

import asyncio
import logging
import os
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from rlops_core import storage
from workloads.serving import limits
from workloads.serving.api import (
    MAX_BATCH,
    ActRequest,
    ActResponse,
    BatchResponse,
    ErrorResponse,
    Metadata,
    RequestError,
    clip,
    parse_observation,
)
from workloads.serving.capture import CaptureSettings, CaptureWriter
from workloads.serving.metrics import activate_metrics, active_metrics
from workloads.serving.policy import ActionResult, Policy, PolicyLoadError, load_policy

log = logging.getLogger("ray.serve")
GAUGE_REFRESH_S = 5.0


class ServeSettings(BaseModel):
    """The deployment's ``user_config``."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_uri: str = Field(..., min_length=1, description="Checkpoint directory (s3://... or a path).")
    allowed_prefixes: list[str] = Field(
        default_factory=list, description="If set, checkpoints must lie below one of these."
    )
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    max_batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="@serve.batch size for single requests.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0.0, le=1.0, description="0: batch whatever queued while the last batch ran (no added wait)."
    )
    max_request_batch: int = Field(MAX_BATCH, ge=1, le=MAX_BATCH, description="Observations per request.")
    max_body_bytes: int = Field(
        limits.DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest request body; a larger one gets 413 before it is read or parsed.",
    )
    body_timeout_s: float = Field(
        limits.DEFAULT_BODY_TIMEOUT_S,
        gt=0.0,
        le=300.0,
        description="Time a request body may take to arrive; a slower one gets 408.",
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not JSON."},
    408: {"model": ErrorResponse, "description": "The body did not arrive within body_timeout_s."},
    413: {"model": ErrorResponse, "description": "Body over max_body_bytes, too many observations."},
    422: {"model": ErrorResponse, "description": "Wrong shape or type, outside the observation space, NaN."},
}

fastapi_app = FastAPI(
    title="rlops policy server",
    version="1",
    description="Actions from the live RLlib policy. Sampled by default; `deterministic: true` is greedy.",
)
fastapi_app.add_middleware(limits.BodyLimitMiddleware)  # size and time caps before any parsing


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@fastapi_app.exception_handler(RequestError)
async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    _server_metrics_error(request, exc.kind)
    return _error(exc)


@fastapi_app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    err = _classify(exc.errors())
    _server_metrics_error(request, err.kind)
    return _error(err)


# Starlette's own errors (no route, wrong method, a body FastAPI could not parse) in the same shape.
_HTTP_KINDS = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    err = _http_error_for(request, exc)
    _server_metrics_error(request, err.kind)
    return JSONResponse(err.body(), status_code=err.status, headers=exc.headers)


def _http_error_for(request: Request, exc: StarletteHTTPException) -> RequestError:
    path = clip(request.url.path)
    kind = _HTTP_KINDS.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 404:
        return RequestError(404, kind, f"{path}: no such route; see /openapi.json for the API")
    if exc.status_code == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "see /openapi.json")
        message = f"{clip(request.method)} {path}: method not allowed (allowed: {allowed})"
        return RequestError(405, kind, message)
    if exc.status_code == 400:
        cause = exc.__cause__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc.detail)
        return RequestError(400, kind, f"body is not valid JSON: {clip(why, 200)}")
    return RequestError(exc.status_code, kind, clip(str(exc.detail), 300))


def _classify(errors: Any) -> RequestError:
    """Turn FastAPI/pydantic validation errors into one RequestError naming the problem."""
    errors = list(errors) or [{"type": "invalid", "msg": "invalid request", "loc": ("body",)}]
    kinds = {str(e.get("type")) for e in errors}
    first = errors[0]
    loc = [clip(str(p)) for p in first.get("loc", ()) if p != "body"]
    field = loc[0] if loc else None
    if "json_invalid" in kinds:
        return RequestError(
            400, "invalid_json", f"body is not valid JSON: {clip(str(first.get('ctx', {}).get('error', '')))}"
        )
    if not loc and kinds & {"missing", "model_attributes_type", "dict_type"}:
        return RequestError(
            400, "invalid_json", "the body must be a JSON object (Content-Type: application/json)"
        )
    if kinds & {"bool_type", "bool_parsing"}:
        return RequestError(422, "type", f"{field}: expected a JSON boolean (true or false)", field)
    if "finite_number" in kinds:
        return RequestError(422, "not_finite", f"{field}: NaN or infinity is not an observation", field)
    if "too_long" in kinds:
        return RequestError(413, "too_large", f"{field}: at most {MAX_BATCH} observations per request", field)
    if field in ("state", "observation", "observations") and len(loc) > 1:
        what = "a list of observations" if field == "observations" else "a number or a list of numbers"
        return RequestError(422, "type", f"{field}: expected {what}", field)
    return RequestError(
        422, str(first.get("type", "invalid")), f"{field or 'body'}: {first.get('msg')}", field
    )


def _server_metrics_error(request: Request, kind: str) -> None:
    metrics = active_metrics()
    if metrics is not None:
        metrics.errors.inc(tags={"kind": kind})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Helpers sit above the class: @serve.ingress serialises the class (and what it references) when applied.
def _same_uri(a: str, b: str) -> bool:
    try:
        return storage.parse_uri(a) == storage.parse_uri(b)
    except storage.StorageURIError:
        return False


def _extras(result: ActionResult) -> dict[str, Any]:
    return {
        "probabilities": result.probabilities,
        "log_prob": result.log_prob,
        "action_dist_inputs": result.action_dist_inputs,
        "value": result.value,
    }


def _single_payload(result: ActionResult, count: int, extras: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": result.action, "count": count}
    if extras:
        payload.update({k: v for k, v in _extras(result).items() if v is not None})
    return payload


def _batch_payload(results: list[ActionResult], count: int, extras: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {"actions": [r.action for r in results], "count": count}
    if extras:
        for key in ("probabilities", "log_prob", "action_dist_inputs", "value"):
            payload[key] = [_extras(r)[key] for r in results]
    return payload


@serve.deployment(
    name="PolicyServer",
    max_ongoing_requests=64,
    health_check_period_s=10,
    graceful_shutdown_timeout_s=10,
    ray_actor_options={"num_cpus": 0.5},
    logging_config={"enable_access_log": False},
)
@serve.ingress(fastapi_app)
class PolicyServer:
    """One replica: the live policy, its request counter, capture writer and metrics."""

    def __init__(self) -> None:
        import torch

        from workloads.serving.metrics import ServerMetrics

        torch.set_num_threads(int(os.environ.get("RLOPS_TORCH_THREADS", "1")))
        context = serve.get_replica_context()
        self.app_name = context.app_name or "default"
        self.replica = context.replica_id.unique_id
        self.metrics = ServerMetrics()
        self._policy: Policy | None = None
        self._requested_uri = ""
        self._settings: ServeSettings | None = None
        self._swap_count = 0
        self._last_error: dict[str, str] | None = None
        self._count = 0
        self._lock = asyncio.Lock()
        self._capture = CaptureWriter(CaptureSettings(), self.app_name, self.replica)
        self._capture_totals = {"written": 0, "dropped": 0}  # of writers replaced by a settings change
        self._gauge_refresher: asyncio.Task[None] | None = None
        activate_metrics(self.metrics)
        limits.configure(limits.BodyLimits(), on_reject=self._count_rejection)

    def _count_rejection(self, kind: str) -> None:
        self.metrics.errors.inc(tags={"kind": kind})

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply a new ``user_config``; swap the policy when ``checkpoint_uri`` changed."""
        if self._gauge_refresher is None:
            self._gauge_refresher = asyncio.get_running_loop().create_task(self._refresh_gauges())
        async with self._lock:
            await self._reconfigure(config)
        self._report_stale()

    def _report_stale(self) -> None:
        self.metrics.stale.set(1 if self._policy is not None and self._last_error is not None else 0)

    async def _refresh_gauges(self) -> None:
        """Re-report gauges while they hold: Ray drops a gauge not set for two export intervals (~20 s)."""
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)
            try:
                self._report_stale()
            except Exception:  # metrics must never take the replica down
                log.exception("refreshing the stale gauge failed")

    async def _reconfigure(self, config: dict[str, Any]) -> None:
        raw_uri = str((config or {}).get("checkpoint_uri", ""))
        try:
            settings = ServeSettings.model_validate(config or {})
            capture = (
                self._capture
                if self._settings is not None and settings.capture == self._settings.capture
                else self._new_capture(settings.capture)
            )
        except (ValidationError, storage.StorageURIError) as exc:
            self._fail(raw_uri, f"invalid user_config: {exc}")
            return
        if capture is not self._capture:
            old, self._capture = self._capture, capture
            await asyncio.to_thread(old.close, 5.0)  # flush the old writer off the event loop
            self._capture_totals["written"] += old.written
            self._capture_totals["dropped"] += old.dropped
        self._settings = settings
        body_limits = limits.BodyLimits(settings.max_body_bytes, settings.body_timeout_s)
        limits.configure(body_limits, on_reject=self._count_rejection)
        self._act_batched.set_max_batch_size(settings.max_batch_size)
        self._act_batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._requested_uri = settings.checkpoint_uri
        live = self._policy
        if live is not None and _same_uri(live.checkpoint_uri, settings.checkpoint_uri):
            self._last_error = None
            self.metrics.stale.set(0)
            self.metrics.swaps.inc(tags={"outcome": "unchanged"})
            return
        log.info("loading checkpoint %s", settings.checkpoint_uri)
        try:
            policy = await asyncio.to_thread(
                load_policy, settings.checkpoint_uri, allowed_prefixes=settings.allowed_prefixes or None
            )
        except PolicyLoadError as exc:
            self._fail(settings.checkpoint_uri, str(exc))
            return
        except Exception as exc:
            self._fail(settings.checkpoint_uri, f"{type(exc).__name__}: {exc}")
            return
        self._policy = policy  # the swap: one assignment; running batches hold the old object
        if live is not None:
            self._swap_count += 1
        self._last_error = None
        self.metrics.swaps.inc(tags={"outcome": "loaded"})
        self.metrics.load_seconds.observe(policy.load_seconds)
        self.metrics.stale.set(0)
        log.info(
            "serving checkpoint %s (%s=%s), loaded in %.2fs",
            policy.checkpoint_uri,
            policy.manifest.metric_name,
            policy.manifest.metric_value,
            policy.load_seconds,
        )

    def _new_capture(self, settings: CaptureSettings) -> CaptureWriter:
        return CaptureWriter(
            settings,
            self.app_name,
            self.replica,
            on_written=lambda n: self.metrics.capture.inc(n, tags={"outcome": "written"}),
            on_dropped=lambda n, why: self.metrics.capture.inc(n, tags={"outcome": why}),
        )

    def _fail(self, uri: str, error: str) -> None:
        """Record a failed reconfigure; raise only when there is no policy to keep serving."""
        self._last_error = {"checkpoint_uri": uri, "error": error, "at": _now()}
        self.metrics.swaps.inc(tags={"outcome": "failed"})
        if self._policy is None:
            log.error("no policy to serve: checkpoint %s failed: %s", uri, error)
            raise RuntimeError(f"cannot serve: checkpoint {uri!r} failed: {error}")
        self.metrics.stale.set(1)
        log.error("checkpoint %s failed, still serving %s: %s", uri, self._policy.checkpoint_uri, error)

    def check_health(self) -> None:
        if self._policy is None:
            raise RuntimeError("no policy loaded")

    def __del__(self) -> None:
        capture = getattr(self, "_capture", None)
        if capture is not None:
            capture.close(timeout=5.0)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _act_batched(self, items: list[tuple[Any, bool, bool]]) -> list[tuple[ActionResult, str]]:
        """Evaluate single requests together: one pipeline pass per (explore, extras) group."""
        policy = self._require_policy()
        out: list[tuple[ActionResult, str] | None] = [None] * len(items)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, (_, explore, extras) in enumerate(items):
            groups.setdefault((explore, extras), []).append(i)
        for (explore, extras), idx in groups.items():
            results = policy.act([items[i][0] for i in idx], explore=explore, extras=extras)
            for i, result in zip(idx, results, strict=True):
                out[i] = (result, policy.checkpoint_uri)
        return out  # type: ignore[return-value]

    def _require_policy(self) -> Policy:
        if self._policy is None:
            raise RequestError(503, "not_ready", "no policy is loaded yet")
        return self._policy

    @fastapi_app.api_route(
        "/",
        methods=["GET", "POST"],
        response_model=ActResponse | BatchResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Actions for one observation or a batch",
    )
    async def act(self, body: ActRequest) -> JSONResponse:
        policy = self._require_policy()
        explore, extras = not body.deterministic, body.return_probs
        self._count += 1
        count = self._count  # taken at arrival: each answer has its own, however requests interleave
        if body.observations is not None:
            limit = self._settings.max_request_batch if self._settings else MAX_BATCH
            if len(body.observations) > limit:
                message = f"observations: {len(body.observations)} given, at most {limit}"
                raise RequestError(413, "too_large", message, "observations")
            space = policy.observation_space
            parsed = [
                parse_observation(o, space, f"observations[{i}]") for i, o in enumerate(body.observations)
            ]
            results = policy.act(parsed, explore=explore, extras=extras)
            payload = _batch_payload(results, count, extras)
            used_uri = policy.checkpoint_uri
            self.metrics.requests.inc(tags={"shape": "batch"})
        else:
            field = "state" if body.state is not None else "observation"
            obs = parse_observation(body.single, policy.observation_space, field)
            result, used_uri = await self._act_batched((obs, explore, extras))
            results = [result]
            payload = _single_payload(result, count, extras)
            self.metrics.requests.inc(tags={"shape": "single"})
        self.metrics.count_actions([r.action for r in results])
        if self._capture.settings.enabled:
            self._capture.offer(
                {
                    "checkpoint_uri": used_uri,
                    "input": body.model_dump(exclude_none=True),
                    "output": payload,
                }
            )
        return JSONResponse(payload, headers={"x-rlops-checkpoint": used_uri})

    @fastapi_app.get("/healthz", summary="Liveness: a policy is loaded")
    async def healthz(self) -> dict[str, Any]:
        policy = self._require_policy()
        stale = self._last_error is not None
        return {"status": "ok", "checkpoint_uri": policy.checkpoint_uri, "stale": stale}

    @fastapi_app.get("/metadata", response_model=Metadata, summary="The live checkpoint and the last failure")
    async def metadata(self) -> dict[str, Any]:
        policy = self._require_policy()
        manifest = policy.manifest
        return {
            "checkpoint_uri": policy.checkpoint_uri,
            "requested_checkpoint_uri": self._requested_uri,
            "metric": {"name": manifest.metric_name, "value": manifest.metric_value},
            "env_id": manifest.env_id,
            "env_config": manifest.env_config,
            "trial_id": manifest.trial_id,
            "experiment": manifest.experiment,
            "loaded_at": policy.loaded_at,
            "load_seconds": round(policy.load_seconds, 4),
            "swap_count": self._swap_count,
            "last_error": self._last_error,
            "observation_space": str(policy.observation_space),
            "action_space": str(policy.action_space),
            "replica": self.replica,
            "capture": self._capture_status(),
        }

    def _capture_status(self) -> dict[str, Any]:
        """The writer's status; ``written``/``dropped`` count since the replica started."""
        status = self._capture.status()
        status["current_writer"] = {"written": status["written"], "dropped": status["dropped"]}
        status["written"] += self._capture_totals["written"]
        status["dropped"] += self._capture_totals["dropped"]
        return status


app = PolicyServer.bind()
