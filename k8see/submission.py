"""Submissions: how an event sent with the enqueue credential becomes a run.

The enqueue credential (``k8see.redis_acl``) may only append to the intake list and read
progress keys, so it can neither admit a run nor send a chain nor read a record. ``submit``
appends one request (the run as the client decided it, whether it is a comment command, the
delivery's fingerprint and a random progress token) and returns the token. A worker of the
default pool takes requests off the list (``Dispatcher``, a Celery worker bootstep) and does
what a trusted caller does in-process (``admit_and_send``): admission (``k8see.intake``), the
``queued`` record and the chain. A request is no more trusted than any message: it names a
repository, a PR, an event; the stages derive everything else.

The token is the only way to the run's progress: the worker writes the admission, every
record update and a refused command's outcome to ``k8see:progress:<token>``
(``state.write_progress``), which ``k8see enqueue --wait`` and ``k8see status --progress``
read. Tokens are 128 random bits, printed once by ``k8see enqueue``.

Taking a request off the list and admitting it are two steps: a worker that dies between
them loses that request (the client's ``--wait`` then times out, and a re-run of the
workflow submits it again). Everything after admission is covered by the outbox.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, bootsteps

from k8see import coordination, intake, redis_connect, state
from k8see.app import settings_of
from k8see.pipeline import dispatch, send_command
from k8see.redis_acl import INTAKE_KEY
from k8see.run import Run
from k8see.settings import PlatformSettings

log = logging.getLogger(__name__)

#: How long a delivered event is remembered, so a redelivery enqueues nothing.
DEDUPE_SECONDS = 3600
#: A request larger than this is dropped unread (a run is well under 4 KiB).
MAX_REQUEST_BYTES = 64 * 1024
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
#: Triggers only the platform sends (the cleanup job's destroys, with the workers' credential).
PLATFORM_TRIGGERS = ("maintenance:",)


@dataclass(frozen=True)
class Admitted:
    """What ``admit_and_send`` did: the stored run, or the earlier run a duplicate maps to."""

    run: Run
    duplicate_of: str | None = None
    #: A command waiting for a worker to authorize it; admitted (or refused) later.
    authorizing: bool = False


def new_token() -> str:
    """A progress token: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Submitted:
    """A request on the intake list: its progress token, and how many replicas hold it."""

    token: str
    confirmed: int = 0


def submit(
    client: redis.Redis,
    *,
    run: Run,
    command: bool,
    authorizing: bool,
    fingerprint: str,
    replicas: int = 0,
    timeout_seconds: float = 2.0,
) -> Submitted:
    """Append the request for ``run`` to the intake list.

    With ``replicas`` > 0, ``WAIT`` follows the ``RPUSH`` on the same connection (one
    pipeline; ``WAIT`` counts that connection's writes), so the request is known to be on
    that many replicas, or the caller learns it is not. The enqueue user may ``WAIT``
    (``@connection``); it may not write the marker ``intake.confirm`` uses.
    """
    token = new_token()
    request = {
        "run": run.to_dict(),
        "command": command,
        "authorizing": authorizing,
        "fingerprint": fingerprint,
        "progress": token,
    }
    if replicas <= 0:
        client.rpush(INTAKE_KEY, json.dumps(request, sort_keys=True))
        return Submitted(token)
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(INTAKE_KEY, json.dumps(request, sort_keys=True))
        pipe.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", replicas, max(1, int(timeout_seconds * 1000))
        )
        _length, confirmed = pipe.execute()
    return Submitted(token, int(confirmed))


def admit_and_send(
    draft: Run,
    *,
    command: bool,
    authorizing: bool,
    fingerprint: str,
    app: Celery,
    settings: PlatformSettings,
    client: redis.Redis,
    progress: str = "",
) -> Admitted:
    """Admit ``draft`` and send what it needs (a chain, or a command to authorize).

    A retry after Redis failed half-way finishes the same run instead of reporting a
    duplicate (``k8see.intake`` has the design). ``progress``, when given, is a submission's
    token: the run's progress is copied to it from now on.
    """
    found = intake.admit(
        client,
        run=draft,
        command=command,
        fingerprint=fingerprint,
        mark_ttl_seconds=DEDUPE_SECONDS,
        run_ttl_seconds=settings.redis.record_ttl_seconds,
    )
    resend = not found.fresh
    stored = found.stored
    if found.duplicate_of is not None:
        stored = intake.stored(client, run_id=found.duplicate_of)
        if stored is None or stored.state not in (intake.ADMITTED, intake.COMMANDED):
            # A true duplicate: the earlier run was sent (or is long gone).
            generation = stored.run.generation if stored else 0
            original = Run.from_dict(
                {
                    **draft.to_dict(),
                    "generation": generation
                    or coordination.current_generation(client, repo=draft.repo, pr=draft.pr),
                }
            )
            # An unsettled command is still waiting for its authorization.
            waiting = authorizing and stored is not None and stored.state == intake.COMMAND_SENT
            if progress and stored is not None:
                _follow_earlier(client, stored, progress, settings.redis.record_ttl_seconds)
            return Admitted(run=original, duplicate_of=found.duplicate_of, authorizing=waiting)
        # The earlier enqueue stopped half-way: finish sending that same run.
        resend = True
    if stored is None:  # admit returns either a stored run or a duplicate's id
        raise RuntimeError(f"run {draft.run_id} was not stored")
    if progress:
        intake.add_progress(client, run_id=stored.run.run_id, token=progress)
    if stored.state in (intake.COMMANDED, intake.COMMAND_SENT):
        if stored.state == intake.COMMANDED:
            send_command(stored.run, app=app, client=client, resend=resend)
        return Admitted(run=stored.run, authorizing=authorizing)
    if stored.state == intake.ADMITTED:
        dispatch(stored.run, app=app, settings=settings, client=client, resend=resend)
    return Admitted(run=stored.run)


def _follow_earlier(
    client: redis.Redis, earlier: intake.Stored, token: str, ttl_seconds: int
) -> None:
    """A duplicate's submission follows the earlier run: from its next update on, and with
    the PR's record as it is now if that run (or a newer one) holds it."""
    intake.add_progress(client, run_id=earlier.run.run_id, token=token)
    record = state.get(client, repo=earlier.run.repo, pr=earlier.run.pr) or {}
    if record.get("run_id") == earlier.run.run_id:
        tokens = [*(record.get("progress_tokens") or []), token]
        state.update(
            client,
            repo=earlier.run.repo,
            pr=earlier.run.pr,
            generation=int(record.get("generation") or 0),
            changes={"progress_tokens": tokens[-intake.MAX_FOLLOWERS :]},
            ttl_seconds=ttl_seconds,
        )
    elif int(record.get("generation") or 0) > earlier.run.generation:
        state.write_progress(client, token=token, record=state.public(record))


def take(
    client: redis.Redis, *, app: Celery, settings: PlatformSettings, timeout_seconds: float
) -> bool:
    """Take one request off the intake list (waiting up to ``timeout_seconds``) and admit it.

    Returns whether a request was taken. A malformed request is logged and dropped.
    """
    popped = client.blpop([INTAKE_KEY], timeout=timeout_seconds)
    if not popped:
        return False
    raw = popped[1]
    try:
        request = _parse(raw)
    except ValueError as exc:
        log.warning("Dropped a request from the intake list: %s", exc)
        return True
    draft, token = request["run"], request["progress"]
    if draft.trigger.startswith(PLATFORM_TRIGGERS):
        # Age-based destroys are the platform's own decisions (the destroy stage believes
        # them); a submission may only report what happened on GitHub.
        message = (
            f"The trigger {draft.trigger!r} is the platform's own; a submission cannot use it."
        )
        log.warning("Refused a submission for %s#%s: %s", draft.repo, draft.pr, message)
        state.write_progress(
            client,
            token=token,
            admission={"run_id": draft.run_id, "generation": 0, "authorizing": True},
            outcome={"message": message, "reason": "refused"},
        )
        return True
    admitted = admit_and_send(
        draft,
        command=request["command"],
        authorizing=request["authorizing"],
        fingerprint=request["fingerprint"],
        app=app,
        settings=settings,
        client=client,
        progress=token,
    )
    state.write_progress(
        client,
        token=token,
        admission={
            "run_id": admitted.duplicate_of or admitted.run.run_id,
            "generation": admitted.run.generation,
            "duplicate_of": admitted.duplicate_of,
            "authorizing": admitted.authorizing,
            "repo": draft.repo,
            "pr": draft.pr,
        },
    )
    log.info(
        "Admitted %s#%s %s from the intake list as run %s.",
        draft.repo,
        draft.pr,
        draft.action.value,
        admitted.duplicate_of or admitted.run.run_id,
    )
    return True


def _parse(raw: bytes | str) -> dict[str, Any]:
    if len(raw) > MAX_REQUEST_BYTES:
        raise ValueError(f"{len(raw)} bytes, above the limit of {MAX_REQUEST_BYTES}")
    try:
        data = json.loads(raw)
        run = Run.from_dict(data["run"])
        token = str(data["progress"])
        fingerprint = str(data.get("fingerprint") or "")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a submission ({type(exc).__name__}: {exc})") from None
    if not _TOKEN.fullmatch(token):
        raise ValueError("its progress token is not 22-64 URL-safe characters")
    if len(fingerprint) > 512:
        raise ValueError("its fingerprint is longer than 512 characters")
    return {
        "run": run,
        "progress": token,
        "fingerprint": fingerprint,
        "command": bool(data.get("command")),
        "authorizing": bool(data.get("authorizing")),
    }


class Dispatcher(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep: a thread that admits submissions while the worker runs.

    Only workers that consume the ``default`` queue run it (they run validate and the
    command task, the next step of every submission). Several workers may: each request is
    taken by one (``BLPOP``), and sending a run twice is already guarded (``pipeline``).
    """

    label = "k8see intake"
    #: How long one ``BLPOP`` waits; also how long a stopping worker waits for the thread.
    POLL_SECONDS = 1.0

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        if "default" not in parent.app.amqp.queues.consume_from:
            return
        settings = settings_of(parent.app)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(parent.app, settings), name="k8see-intake", daemon=True
        )
        self._thread.start()
        # A worker that stops before all its steps started stops none of them; the
        # worker_shutdown signal (k8see.tasks) finds the dispatcher here.
        parent.k8see_dispatcher = self

    def terminate(self, parent: Any) -> None:
        self.stop(parent)

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.POLL_SECONDS * 5)
            self._thread = None

    def _loop(self, app: Celery, settings: PlatformSettings) -> None:
        client = redis_connect.connect(
            settings.redis,
            socket_timeout=settings.redis.socket_timeout_seconds + self.POLL_SECONDS,
        )
        try:
            while not self._stop.is_set():
                try:
                    take(client, app=app, settings=settings, timeout_seconds=self.POLL_SECONDS)
                except redis.RedisError as exc:
                    log.warning("The intake list is unreachable (%s); trying again.", exc)
                    self._stop.wait(self.POLL_SECONDS)
                except Exception:
                    log.exception("A submission could not be admitted.")
        finally:
            client.close()
