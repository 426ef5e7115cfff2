"""The Ray Serve policy application: ``serve run workloads.serve_app:app`` or ``workloads/serve_config.yaml``.

``user_config`` (see :class:`ServeSettings`) names the checkpoint. A new ``checkpoint_uri`` is hot-swapped
in ``reconfigure()``: fetch, verify against ``rlops.json``, load fully, then replace the live policy in one
assignment. Requests already being evaluated finish on the old policy. When a new checkpoint fails, the
last good policy keeps serving and ``/metadata`` reports ``last_error`` (plus a log line and the
``rlops_serve_checkpoint_stale`` gauge), so a controller can roll back. ``reconfigure()`` raises only when
the replica has no policy at all (a cold start with a bad checkpoint): Serve then reports the deployment
as failed with that message instead of serving nothing.

Progressive delivery (docs/progressive.md): ``user_config.challenger`` loads a second policy slot. The
replica holds one immutable :class:`Slots` value (champion, challenger, challenger settings) replaced in one
assignment and read once per request. Requests with an ``episode_id`` are routed by episode
(``workloads/serving/routing.py``), answered with ``"policy"``, and logged off the request path with
``POST /feedback`` rewards when ``user_config.decision_log`` is set (``serving/decision_writer.py``).
"""

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
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
    FeedbackResponse,
    Metadata,
    RequestError,
    clip,
    parse_observation,
)
from workloads.serving.capture import CaptureSettings, CaptureWriter
from workloads.serving.decision_writer import DecisionLogSettings, DecisionWriter
from workloads.serving.metrics import FLUSH_INTERVAL_S, activate_metrics, active_metrics
from workloads.serving.policy import ActionResult, Policy, PolicyLoadError, load_policy
from workloads.serving.routing import CHALLENGER, CHAMPION, ChallengerSettings, route, shadow_scores
from workloads.serving.slots import FeedbackRequest, RecentEpisodes, decision_fields, plan_slots, shadow_score

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
    challenger: ChallengerSettings | None = Field(
        None, description="The second policy slot (shadow or canary); absent or null: champion only."
    )
    decision_log: DecisionLogSettings | None = Field(
        None, description="Where served decisions and feedback are logged; absent or null: not logged."
    )


@dataclass(frozen=True)
class Slots:
    """What one replica serves, replaced as a whole: a request reads it once and never sees half a change.

    ``challenger_settings`` is None whenever ``challenger`` is (a challenger that failed to load is not
    routed to).
    """

    champion: Policy | None = None
    challenger: Policy | None = None
    challenger_settings: ChallengerSettings | None = None


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
        what = "an observation" if field in ("state", "observation", "observations") else "allowed here"
        return RequestError(422, "not_finite", f"{field}: NaN or infinity is not {what}", field)
    if field == "episode_id" and "value_error" in kinds:
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        return RequestError(422, "invalid_episode_id", message, field)
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


def _uri(policy: Policy | None) -> str | None:
    return None if policy is None else policy.checkpoint_uri


def _same_slot_uri(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _same_uri(a, b)


def _load_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PolicyLoadError) else f"{type(exc).__name__}: {exc}"


def _jsonable(obs: Any) -> Any:
    return obs.tolist() if hasattr(obs, "tolist") else obs


def _evaluate_group(items: list[tuple[Any, bool, bool, Policy]]) -> list[ActionResult | Exception]:
    """One pipeline pass per (policy, explore, extras) group; a failing group gets its exception."""
    out: list[ActionResult | Exception | None] = [None] * len(items)
    groups: dict[tuple[int, bool, bool], list[int]] = {}
    for i, (_, explore, extras, policy) in enumerate(items):
        groups.setdefault((id(policy), explore, extras), []).append(i)
    for (_, explore, extras), idx in groups.items():
        policy = items[idx[0]][3]
        try:
            results: list[ActionResult | Exception] = list(
                policy.act([items[i][0] for i in idx], explore=explore, extras=extras)
            )
        except Exception as exc:
            log.warning("policy %s failed on %d observations: %r", policy.checkpoint_uri, len(idx), exc)
            results = [exc] * len(idx)
        for i, result in zip(idx, results, strict=True):
            out[i] = result
    return out  # type: ignore[return-value]


MAX_SHADOW_TASKS = 1024  # shadow scores in flight per replica; beyond it a score is skipped (and logged so)


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
    """One replica: the policy slots, its request counter, capture and decision-log writers, and metrics."""

    def __init__(self) -> None:
        import torch

        from workloads.serving.metrics import ServerMetrics

        torch.set_num_threads(int(os.environ.get("RLOPS_TORCH_THREADS", "1")))
        # Argument checks cost ~60 us per sampling call and change no sample (tests/serve/
        # test_serve_fastpath.py); observations are validated on the way in, actions checked on the way out.
        torch.distributions.Distribution.set_default_validate_args(False)
        context = serve.get_replica_context()
        self.app_name = context.app_name or "default"
        self.replica = context.replica_id.unique_id
        self.metrics = ServerMetrics()
        self._slots = Slots()  # replaced in one assignment; a request reads it once
        self._requested_uri = ""
        self._settings: ServeSettings | None = None
        self._swap_count = 0
        self._promotions = 0
        self._last_error: dict[str, str] | None = None
        self._challenger_error: dict[str, str] | None = None
        self._count = 0
        self._lock = asyncio.Lock()
        self._capture = CaptureWriter(CaptureSettings(), self.app_name, self.replica)
        self._capture_totals = {"written": 0, "dropped": 0}  # of writers replaced by a settings change
        self._decisions: DecisionWriter | None = None
        self._decision_totals = {"written": 0, "dropped": 0}
        self._recent = RecentEpisodes()
        self._feedback_counts = {"known": 0, "unknown": 0}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._gauge_refresher: asyncio.Task[None] | None = None
        self._metrics_flusher: asyncio.Task[None] | None = None
        self._singles_waiting = 0  # single requests between arrival and their answer (see _evaluate)
        self._direct_when_alone = True  # false when user_config asks the batch to wait for company
        self._evaluations = {"direct": 0, "batched": 0}  # single requests by how they were evaluated
        activate_metrics(self.metrics)
        limits.configure(limits.BodyLimits(), on_reject=self._count_rejection)

    @property
    def _policy(self) -> Policy | None:
        """The champion (the policy every request without a routed episode gets)."""
        return self._slots.champion

    def _count_rejection(self, kind: str) -> None:
        self.metrics.errors.inc(tags={"kind": kind})

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply a new ``user_config``: swap, promote or load the slots that changed."""
        if self._gauge_refresher is None:
            self._gauge_refresher = asyncio.get_running_loop().create_task(self._refresh_gauges())
        if self._metrics_flusher is None:
            self._metrics_flusher = asyncio.get_running_loop().create_task(self._flush_metrics())
        async with self._lock:
            await self._reconfigure(config)
        self._report_stale()

    def _report_stale(self) -> None:
        self.metrics.stale.set(1 if self._policy is not None and self._last_error is not None else 0)
        settings = self._slots.challenger_settings
        for mode in ("shadow", "canary"):
            weight = settings.weight if settings is not None and settings.mode == mode == "canary" else 0.0
            self.metrics.challenger_weight.set(weight, tags={"mode": mode})

    async def _refresh_gauges(self) -> None:
        """Re-report gauges while they hold: Ray drops a gauge not set for two export intervals (~20 s)."""
        while True:
            await asyncio.sleep(GAUGE_REFRESH_S)
            try:
                self._report_stale()
            except Exception:  # metrics must never take the replica down
                log.exception("refreshing the gauges failed")

    async def _flush_metrics(self) -> None:
        """Push the per-request counts (tallied as plain ints) to Ray's counters every second."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                self.metrics.flush()
            except Exception:  # metrics must never take the replica down
                log.exception("flushing the request metrics failed")

    async def _reconfigure(self, config: dict[str, Any]) -> None:
        raw_uri = str((config or {}).get("checkpoint_uri", ""))
        capture: CaptureWriter | None = None
        try:
            settings = ServeSettings.model_validate(config or {})
            capture = (
                self._capture
                if self._settings is not None and settings.capture == self._settings.capture
                else self._new_capture(settings.capture)
            )
            decisions = (
                self._decisions
                if self._settings is not None and settings.decision_log == self._settings.decision_log
                else self._new_decisions(settings.decision_log)
            )
        except (ValueError, storage.StorageURIError) as exc:  # pydantic's ValidationError is a ValueError
            if capture is not None and capture is not self._capture:
                capture.close(1.0)
            self._fail(raw_uri, f"invalid user_config: {exc}")
            return
        if capture is not self._capture:
            old, self._capture = self._capture, capture
            await asyncio.to_thread(old.close, 5.0)  # flush the old writer off the event loop
            self._capture_totals["written"] += old.written
            self._capture_totals["dropped"] += old.dropped
        if decisions is not self._decisions:
            old_decisions, self._decisions = self._decisions, decisions
            if old_decisions is not None:
                await asyncio.to_thread(old_decisions.close, 5.0)
                self._decision_totals["written"] += old_decisions.written
                self._decision_totals["dropped"] += old_decisions.dropped
        self._settings = settings
        body_limits = limits.BodyLimits(settings.max_body_bytes, settings.body_timeout_s)
        limits.configure(body_limits, on_reject=self._count_rejection)
        self._act_batched.set_max_batch_size(settings.max_batch_size)
        self._act_batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._direct_when_alone = settings.batch_wait_timeout_s == 0.0
        self._requested_uri = settings.checkpoint_uri
        await self._apply_slots(settings)

    async def _load(self, uri: str, settings: ServeSettings) -> Policy:
        log.info("loading checkpoint %s", uri)
        policy = await asyncio.to_thread(load_policy, uri, allowed_prefixes=settings.allowed_prefixes or None)
        self.metrics.load_seconds.observe(policy.load_seconds)
        return policy

    async def _apply_slots(self, settings: ServeSettings) -> None:
        """Load what the plan says to load (off the event loop), then replace the slots in one assignment."""
        live = self._slots
        wanted = settings.challenger
        plan = plan_slots(
            _uri(live.champion), _uri(live.challenger), settings.checkpoint_uri, wanted, same=_same_slot_uri
        )
        champion: Policy | None = live.champion
        champion_error: str | None = None
        if plan.champion == "from_challenger":
            champion = live.challenger  # promotion: already loaded, no reload
        elif plan.champion == "load":
            try:
                champion = await self._load(settings.checkpoint_uri, settings)
            except Exception as exc:
                champion_error = _load_error(exc)
        challenger: Policy | None = None
        if plan.challenger == "keep":
            challenger = live.challenger
        elif plan.challenger == "from_champion":
            challenger = live.champion
        elif plan.challenger == "load" and wanted is not None:
            try:
                challenger = await self._load(wanted.checkpoint_uri, settings)
            except Exception as exc:
                self._challenger_error = {
                    "checkpoint_uri": wanted.checkpoint_uri,
                    "error": _load_error(exc),
                    "at": _now(),
                }
                self.metrics.swaps.inc(tags={"outcome": "challenger_failed"})
                log.error("challenger %s failed, serving the champion only: %s", wanted.checkpoint_uri, exc)
        if challenger is not None or wanted is None:
            self._challenger_error = None
        if champion_error is not None:
            self._fail(settings.checkpoint_uri, champion_error)  # raises when there is no champion at all
        self._slots = Slots(champion, challenger, wanted if challenger is not None else None)  # the swap
        if champion_error is not None:
            return
        self._last_error = None
        self.metrics.stale.set(0)
        if plan.champion == "keep":
            self.metrics.swaps.inc(tags={"outcome": "unchanged"})
            return
        if live.champion is not None:
            self._swap_count += 1
        if plan.champion == "from_challenger":
            self._promotions += 1
        self.metrics.swaps.inc(
            tags={"outcome": "promoted" if plan.champion == "from_challenger" else "loaded"}
        )
        assert champion is not None
        log.info(
            "serving checkpoint %s (%s=%s)%s",
            champion.checkpoint_uri,
            champion.manifest.metric_name,
            champion.manifest.metric_value,
            " promoted from the challenger slot" if plan.champion == "from_challenger" else "",
        )

    def _new_capture(self, settings: CaptureSettings) -> CaptureWriter:
        return CaptureWriter(
            settings,
            self.app_name,
            self.replica,
            on_written=lambda n: self.metrics.capture.inc(n, tags={"outcome": "written"}),
            on_dropped=lambda n, why: self.metrics.capture.inc(n, tags={"outcome": why}),
        )

    def _new_decisions(self, settings: DecisionLogSettings | None) -> DecisionWriter | None:
        if settings is None:
            return None
        return DecisionWriter(
            settings,
            self.app_name,
            self.replica,
            on_written=lambda n: self.metrics.decision_log.inc(n, tags={"outcome": "written"}),
            on_dropped=lambda n, why: self.metrics.decision_log.inc(n, tags={"outcome": why}),
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
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            with contextlib.suppress(Exception):
                metrics.flush()  # the last second's counts
        for name in ("_capture", "_decisions"):
            writer = getattr(self, name, None)
            if writer is not None:
                writer.close(timeout=5.0)

    async def _evaluate(self, item: tuple[Any, bool, bool, Policy]) -> ActionResult | Exception:
        """One single request's evaluation: directly when it is alone, through ``@serve.batch`` otherwise.

        A request first yields to the event loop once, so every request already waiting to run arrives
        here too; if another single request is between arrival and answer, the batch queue gathers them
        (one pipeline pass for all), else the observation is evaluated at once without a batch future.
        With ``batch_wait_timeout_s`` above 0 every request goes through the batch (it was asked to wait).
        """
        self._singles_waiting += 1
        try:
            await asyncio.sleep(0)
            if self._singles_waiting > 1 or not self._direct_when_alone:
                self._evaluations["batched"] += 1
                return await self._act_batched(item)
            self._evaluations["direct"] += 1
            return _evaluate_group([item])[0]
        finally:
            self._singles_waiting -= 1

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _act_batched(
        self, items: list[tuple[Any, bool, bool, Policy]]
    ) -> list[ActionResult | Exception]:
        """Evaluate single requests together: one pipeline pass per (policy, explore, extras) group.

        A failing group returns its exception to its own requests only (the caller decides: a champion
        failure is a server error, a canary challenger failure falls back to the champion).
        """
        return _evaluate_group(items)

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
        slots = self._slots  # read once: this request never sees half a reconfigure
        policy = slots.champion
        if policy is None:
            raise RequestError(503, "not_ready", "no policy is loaded yet")
        explore, extras = not body.deterministic, body.return_probs
        self._count += 1
        count = self._count  # taken at arrival: each answer has its own, however requests interleave
        if body.observations is not None:
            if body.episode_id is not None:
                message = (
                    "episode_id: a request with an episode_id is one step of that episode; send one "
                    "observation ('state' or 'observation'), not 'observations'"
                )
                raise RequestError(422, "episode_batch", message, "episode_id")
            limit = self._settings.max_request_batch if self._settings else MAX_BATCH
            if len(body.observations) > limit:
                message = f"observations: {len(body.observations)} given, at most {limit}"
                raise RequestError(413, "too_large", message, "observations")
            space = policy.observation_space
            parsed = [
                parse_observation(o, space, f"observations[{i}]") for i, o in enumerate(body.observations)
            ]
            started = time.perf_counter()
            results = policy.act(parsed, explore=explore, extras=extras)
            payload = _batch_payload(results, count, extras)
            used_uri = policy.checkpoint_uri
            self.metrics.count_request("batch")
            self._count_slot(CHAMPION, started)
        else:
            field = "state" if body.state is not None else "observation"
            obs = parse_observation(body.single, policy.observation_space, field)
            result, answered_by, used_uri = await self._answer_single(body, obs, slots, explore, extras)
            results = [result]
            payload = _single_payload(result, count, extras)
            self.metrics.count_request("single")
            payload["policy"] = answered_by
        # Every answer says which slot answered (DESIGN.md's serving contract); a batch is the champion's.
        payload.setdefault("policy", CHAMPION)
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

    def _count_slot(self, slot: str, started: float) -> float:
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.metrics.count_slot(slot)
        self.metrics.slot_latency_ms.observe(latency_ms, tags={"slot": slot})
        return latency_ms

    async def _answer_single(
        self, body: ActRequest, obs: Any, slots: Slots, explore: bool, extras: bool
    ) -> tuple[ActionResult, str, str]:
        """Route, answer and log one observation; returns (result, slot that answered, checkpoint URI)."""
        champion = slots.champion
        assert champion is not None
        episode_id = body.episode_id
        settings = slots.challenger_settings
        slot = route(episode_id, settings) if slots.challenger is not None else CHAMPION
        policy = slots.challenger if slot == CHALLENGER and slots.challenger is not None else champion
        logged = episode_id is not None  # probabilities are needed for the log, returned only if asked
        started = time.perf_counter()
        result = await self._evaluate((obs, explore, extras or logged, policy))
        error: str | None = None
        answered_by = slot
        if isinstance(result, Exception) and slot == CHALLENGER:
            self.metrics.slot_errors.inc(tags={"slot": CHALLENGER})
            error, answered_by = "policy_error", CHAMPION  # the champion answers; the log keeps the failure
            result = await self._evaluate((obs, explore, extras or logged, champion))
        if isinstance(result, Exception):
            self.metrics.slot_errors.inc(tags={"slot": CHAMPION})
            raise result
        latency_ms = self._count_slot(answered_by, started)
        used = champion if answered_by == CHAMPION else policy
        if episode_id is None:
            return result, answered_by, used.checkpoint_uri
        answered_at = time.time()
        self._recent.seen(episode_id)
        record = decision_fields(
            episode_id=episode_id,
            slot=slot,  # the routed slot; ``error`` says when the champion answered in its place
            checkpoint_uri=used.checkpoint_uri,
            challenger=settings,
            action=result.action,
            probabilities=result.probabilities,
            deterministic=body.deterministic,
            step=body.step,
            observation=_jsonable(obs),
            latency_ms=latency_ms,
            error=error,
        )
        writer = self._decisions
        if shadow_scores(settings) and slots.challenger is not None:
            self._shadow(slots.challenger, obs, record, answered_at, writer)
        elif writer is not None:
            writer.decision(time=answered_at, **record)
        return result, answered_by, used.checkpoint_uri

    def _shadow(
        self,
        challenger: Policy,
        obs: Any,
        record: dict[str, Any],
        answered_at: float,
        writer: DecisionWriter | None,
    ) -> None:
        """Score the observation with the challenger off the request path, then log the decision."""
        if len(self._shadow_tasks) >= MAX_SHADOW_TASKS:
            self.metrics.shadow_scores.inc(tags={"outcome": "skipped"})
            shadow = shadow_score(
                challenger.checkpoint_uri, record["action"], None, error="overloaded: skipped"
            )
            if writer is not None:
                writer.decision(time=answered_at, **{**record, "shadow": shadow})
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow_and_log(challenger, obs, record, answered_at, writer)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_and_log(
        self,
        challenger: Policy,
        obs: Any,
        record: dict[str, Any],
        answered_at: float,
        writer: DecisionWriter | None,
    ) -> None:
        try:
            scored = await self._act_batched((obs, True, True, challenger))
            if isinstance(scored, Exception):
                raise scored
            shadow = shadow_score(
                challenger.checkpoint_uri,
                record["action"],
                scored.probabilities,
                own_action=scored.action,
                value=scored.value,
            )
            self.metrics.shadow_scores.inc(tags={"outcome": "scored"})
        except Exception as exc:  # a shadow failure never reaches the client
            self.metrics.shadow_scores.inc(tags={"outcome": "failed"})
            self.metrics.slot_errors.inc(tags={"slot": CHALLENGER})
            shadow = shadow_score(challenger.checkpoint_uri, record["action"], None, error=_load_error(exc))
        if writer is not None:
            writer.decision(time=answered_at, **{**record, "shadow": shadow})

    @fastapi_app.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackResponse,
        responses=ERROR_RESPONSES,
        summary="The reward that followed an answer, and whether the episode ended",
    )
    async def feedback(self, body: FeedbackRequest) -> JSONResponse:
        known = body.episode_id in self._recent
        key = "known" if known else "unknown"
        self._feedback_counts[key] += 1
        self.metrics.feedback.inc(tags={"episode": key})
        writer = self._decisions
        logged = writer.feedback(body.episode_id, body.reward, body.done, body.step) if writer else False
        answer = {"accepted": True, "episode_id": body.episode_id, "known_episode": known, "logged": logged}
        return JSONResponse(answer, status_code=202)

    @fastapi_app.get("/healthz", summary="Liveness: a policy is loaded")
    async def healthz(self) -> dict[str, Any]:
        policy = self._require_policy()
        stale = self._last_error is not None
        return {"status": "ok", "checkpoint_uri": policy.checkpoint_uri, "stale": stale}

    @fastapi_app.get("/metadata", response_model=Metadata, summary="The live slots and the last failures")
    async def metadata(self) -> dict[str, Any]:
        slots = self._slots
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
            "promotions": self._promotions,
            "last_error": self._last_error,
            "observation_space": str(policy.observation_space),
            "action_space": str(policy.action_space),
            "replica": self.replica,
            "capture": self._capture_status(),
            "challenger": self._challenger_status(slots),
            "decision_log": self._decision_log_status(),
            "feedback": dict(self._feedback_counts),
            "inference": {
                "path": policy.inference_path,
                "reason": policy.path_reason,
                "single_requests": dict(self._evaluations),
            },
        }

    def _challenger_status(self, slots: Slots) -> dict[str, Any] | None:
        """The configured challenger (even when it failed to load: ``loaded`` false, ``last_error``)."""
        wanted = self._settings.challenger if self._settings is not None else None
        if wanted is None:
            return None
        status: dict[str, Any] = {
            "checkpoint_uri": wanted.checkpoint_uri,
            "mode": wanted.mode,
            "weight": wanted.weight,
            "loaded": slots.challenger is not None,
            "metric": None,
            "loaded_at": None,
            "last_error": self._challenger_error,
        }
        if slots.challenger is not None:
            manifest = slots.challenger.manifest
            status["metric"] = {"name": manifest.metric_name, "value": manifest.metric_value}
            status["loaded_at"] = slots.challenger.loaded_at
            status["loaded_checkpoint_uri"] = slots.challenger.checkpoint_uri
        return status

    def _decision_log_status(self) -> dict[str, Any] | None:
        """The writer's status; ``written``/``dropped`` count since the replica started."""
        if self._decisions is None:
            return None
        status = self._decisions.status()
        status["current_writer"] = {"written": status["written"], "dropped": status["dropped"]}
        status["written"] += self._decision_totals["written"]
        status["dropped"] += self._decision_totals["dropped"]
        return status

    def _capture_status(self) -> dict[str, Any]:
        """The writer's status; ``written``/``dropped`` count since the replica started."""
        status = self._capture.status()
        status["current_writer"] = {"written": status["written"], "dropped": status["dropped"]}
        status["written"] += self._capture_totals["written"]
        status["dropped"] += self._capture_totals["dropped"]
        return status


app = PolicyServer.bind()
