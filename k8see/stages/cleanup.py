"""Cleanup: which environments should go, and which records point at nothing.

The reference ran a CronJob every 6 hours that asked GitHub about every namespace, one by one
(docs/operations.md "Scheduled jobs"). Here the decision is a pure function, ``plan()``, over three
inputs the maintenance task gathers: the k8see-managed namespaces, the environment records, and a
PR-state lookup. The lookup (``PrStates``) first lists the pulls of each repository with several PRs
to ask about (``prefetch``: a page of 100 pulls per request, where asking one by one costs a request
per PR), then asks GitHub about each PR the lists did not answer, at most once per run. It caches
every answer in Redis for a few minutes (several beat replicas or a manual ``--dry-run`` reuse it),
answers "closed" from the close mark without asking, and stops asking after ``max_calls`` requests
of either kind (the rest wait for the next run) so a cluster with hundreds of PRs cannot exhaust the
rate limit.

A namespace is destroyed when its PR is closed or merged, when the PR (or its repository) no
longer exists ("orphaned"), or when it has not been deployed for ``ttl_hours`` ("stale", decided
without asking GitHub). Preserved namespaces are kept until their preserve ends; namespaces
lacking the ownership label, the repository annotation or the PR label are reported and never
touched (the reference's ``skipped_safety``). The task, not this module, enqueues the destroys,
through the same destroy chain a close event uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from kubernetes import client as k8s

from k8see import names
from k8see.errors import GitHubError
from k8see.integrations import kube
from k8see.integrations.github import GitHubClient, Pull
from k8see.integrations.registry import OciRegistry, parse_ref
from k8see.run import Status

__all__ = [
    "DESTROY_REASONS",
    "Environment",
    "PrStates",
    "Verdict",
    "collect_images",
    "list_environments",
    "parse_time",
    "plan",
    "questions",
    "vanished_records",
]

log = logging.getLogger(__name__)

#: Reasons that lead to a destroy; every other verdict keeps the namespace.
DESTROY_REASONS = frozenset({"closed", "merged", "orphaned", "stale"})
#: Statuses whose record promises a namespace exists.
LIVE_STATUSES = frozenset({Status.READY.value, Status.PRESERVED.value})
PR_STATE_PREFIX = "k8see:prstate"
#: A repository's pulls are listed only when at least this many of its PRs are to be asked
#: about; for fewer, one request per PR costs no more than a listing.
BULK_MIN_PRS = 2
#: Pages of closed pulls (100 each, most recently updated first) read per repository. A PR
#: closed longer ago whose environment still stands is rare; it is asked about on its own.
CLOSED_PAGES = 10


def parse_time(value: object) -> float | None:
    """Unix time of an ISO-8601 ``...Z`` string (as k8see and the reference write it)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Environment:
    """One namespace labelled ``k8s-ee/type=ephemeral``, as the cleanup sees it.

    Attributes:
        namespace: Its name.
        managed_by: The ``app.kubernetes.io/managed-by`` label.
        repo: The ``k8s-ee/repository`` annotation, ``""`` when missing.
        pr: The ``k8s-ee/pr-number`` label, 0 when missing or not a number.
        preserve_until: Unix time the preserve ends, or None when not preserved.
        last_deployed: Unix time of the last deploy (``last-updated``, else ``created-at``).
        phase: ``Active`` or ``Terminating``.
    """

    namespace: str
    managed_by: str
    repo: str
    pr: int
    preserve_until: float | None
    last_deployed: float | None
    phase: str = "Active"

    @property
    def owned(self) -> bool:
        return self.managed_by in kube.OWNERS


def list_environments(*, api: Any) -> list[Environment]:
    """Every ephemeral namespace in the cluster (one list call)."""
    found = kube.call(
        k8s.CoreV1Api(api).list_namespace,
        label_selector=f"{names.LABEL_TYPE}=ephemeral",
        what="list ephemeral namespaces",
    )
    out = []
    for ns in found.items or []:
        labels = dict(ns.metadata.labels or {})
        annotations = dict(ns.metadata.annotations or {})
        pr_text = labels.get(names.LABEL_PR, "")
        until = None
        if labels.get(names.LABEL_PRESERVE) == "true":
            # A preserve without a readable deadline counts as held forever: never guess.
            until = parse_time(annotations.get(names.ANN_PRESERVE_UNTIL)) or float("inf")
        out.append(
            Environment(
                namespace=str(ns.metadata.name),
                managed_by=labels.get(names.LABEL_MANAGED_BY, ""),
                repo=annotations.get(names.ANN_REPOSITORY, ""),
                pr=int(pr_text) if pr_text.isdigit() else 0,
                preserve_until=until,
                last_deployed=parse_time(annotations.get(names.ANN_LAST_UPDATED))
                or parse_time(annotations.get(names.ANN_CREATED_AT)),
                phase=str(getattr(ns.status, "phase", "") or "Active"),
            )
        )
    return sorted(out, key=lambda e: e.namespace)


class PrStates:
    """PR state lookups for one maintenance run: ``open``, ``closed``, ``merged``, ``missing``.

    ``error`` means GitHub could not tell (the namespace is kept). ``prefetch`` answers many PRs
    from a few list requests; each PR it does not answer is asked about at most once per run.
    Answers are cached in Redis for ``cache_seconds`` so a second run (another replica, a dry
    run) within that window asks nothing. After ``max_calls`` GitHub requests (list pages and
    single PRs alike) the answer is ``deferred`` and the PR is looked at next run.

    Args:
        github: The worker's GitHub client, or None (every uncached answer is ``error``).
        redis_client: Where answers are cached.
        cache_seconds: How long an answer stays valid.
        max_calls: The most GitHub requests this run may make.
        is_closed: Returns True when k8see's own close mark says the PR was closed.
    """

    def __init__(
        self,
        *,
        github: GitHubClient | None,
        redis_client: redis.Redis,
        cache_seconds: int,
        max_calls: int,
        is_closed: Callable[[str, int], bool] = lambda repo, pr: False,
    ) -> None:
        self.github = github
        self.redis = redis_client
        self.cache_seconds = cache_seconds
        self.max_calls = max_calls
        self.is_closed = is_closed
        self.calls = 0
        self._seen: dict[tuple[str, int], str] = {}

    def __call__(self, repo: str, pr: int) -> str:
        key = (repo.lower(), pr)
        if key not in self._seen:
            self._seen[key] = self._lookup(repo, pr)
        return self._seen[key]

    def prefetch(self, pairs: Iterable[tuple[str, int]]) -> None:
        """Answer the PRs of ``pairs`` from list requests, before they are asked about one by one.

        For each repository with at least ``BULK_MIN_PRS`` PRs neither cached nor close-marked,
        its open pulls are listed newest first, stopping below the oldest PR wanted (pull
        numbers grow with creation); then its closed pulls, most recently updated first, until
        every PR still unanswered is found or ``CLOSED_PAGES`` pages were read. A repository's
        listing stops after as many requests as it has PRs to ask about: past that, asking one
        by one would have been cheaper. A PR found in neither list (it never existed, or closed
        long ago), and every PR left when a listing stops or fails, is asked about on its own.

        Args:
            pairs: ``(repo, pr)`` pairs, in the order they will be asked about: repositories
                are listed in that order while ``max_calls`` lasts.
        """
        if self.github is None:
            return
        keys = [(repo, pr) for repo, pr in pairs if (repo.lower(), pr) not in self._seen]
        cached = self.redis.mget([_cache_key(repo, pr) for repo, pr in keys]) if keys else []
        wanted: dict[str, tuple[str, set[int]]] = {}  # repo.lower() → (a spelling, its PRs)
        for (repo, pr), answer in zip(keys, cached, strict=True):
            if answer is not None:
                self._seen[(repo.lower(), pr)] = _text(answer)
            elif not self.is_closed(repo, pr):
                wanted.setdefault(repo.lower(), (repo, set()))[1].add(pr)
        for repo, prs in wanted.values():
            if len(prs) >= BULK_MIN_PRS:
                self._list(self.github, repo, prs)

    def _list(self, github: GitHubClient, repo: str, prs: set[int]) -> None:
        """Answer ``prs`` from ``repo``'s open, then closed pulls, a page per request."""
        left = set(prs)
        spent = 0  # this repository's list requests: never more than it has PRs to ask about
        for state, sort in (("open", "created"), ("closed", "updated")):
            if not left or spent >= len(prs) or self.calls >= self.max_calls:
                return
            try:
                for read, page in enumerate(
                    github.list_pulls(repo, state=state, sort=sort, direction="desc"), start=1
                ):
                    self.calls += 1
                    spent += 1
                    self._remember(repo, [p for p in page if p.number in left])
                    left -= {p.number for p in page}
                    if not left or spent >= len(prs) or self.calls >= self.max_calls:
                        return
                    if state == "open" and page and page[-1].number < min(left):
                        break  # the open pulls still unread are older than every PR left
                    if state == "closed" and read >= CLOSED_PAGES:
                        return
            except GitHubError as exc:
                self.calls += 1  # the failed request counts, as a failed single lookup does
                log.warning(
                    "Listing the %s pulls of %s failed (%s); its PRs are asked about one by one.",
                    state,
                    repo,
                    exc.message,
                )
                return

    def _remember(self, repo: str, pulls: Iterable[Pull]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for pull in pulls:
                answer = _answer(pull)
                self._seen[(repo.lower(), pull.number)] = answer
                if self.cache_seconds > 0:  # 0: never reused by a later run
                    pipe.set(_cache_key(repo, pull.number), answer, ex=self.cache_seconds)
            pipe.execute()

    def _lookup(self, repo: str, pr: int) -> str:
        cached = self.redis.get(_cache_key(repo, pr))
        if cached is not None:
            return _text(cached)
        if self.is_closed(repo, pr):
            return "closed"
        if self.github is None:
            return "error"
        if self.calls >= self.max_calls:
            return "deferred"
        self.calls += 1
        try:
            answer = _answer(self.github.get_pull(repo, pr))
        except GitHubError as exc:
            if exc.status != 404:
                return "error"
            answer = "missing"  # the PR or its repository is gone (or out of the token's reach)
        if self.cache_seconds > 0:
            self.redis.set(_cache_key(repo, pr), answer, ex=self.cache_seconds)
        return answer


def _cache_key(repo: str, pr: int) -> str:
    return f"{PR_STATE_PREFIX}:{repo.lower()}:{pr}"


def _text(cached: object) -> str:
    return cached.decode() if isinstance(cached, bytes) else str(cached)


def _answer(pull: Pull) -> str:
    return "merged" if pull.merged else ("open" if pull.state == "open" else "closed")


@dataclass(frozen=True)
class Verdict:
    """What the cleanup decided for one namespace."""

    namespace: str
    repo: str
    pr: int
    reason: str
    """closed, merged, orphaned or stale (destroyed); open, young, preserved, safety,
    terminating, deferred or error (kept)."""

    @property
    def destroy(self) -> bool:
        return self.reason in DESTROY_REASONS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "destroy": self.destroy}


def plan(
    *,
    environments: Iterable[Environment],
    records: dict[tuple[str, int], dict[str, Any]],
    pr_state: Callable[[str, int], str],
    now: float,
    ttl_hours: float,
) -> list[Verdict]:
    """Decide each namespace's fate; GitHub is asked only when nothing else decides.

    Args:
        environments: From ``list_environments``.
        records: Environment records keyed by ``(repo.lower(), pr)``.
        pr_state: A ``PrStates`` (or any function with its answers).
        now: The current Unix time.
        ttl_hours: An environment not deployed for this long is destroyed even if its PR is
            open.
    """
    verdicts = []
    for env in environments:
        verdicts.append(
            Verdict(
                env.namespace, env.repo, env.pr, _reason(env, records, pr_state, now, ttl_hours)
            )
        )
    return verdicts


def questions(
    *,
    environments: Iterable[Environment],
    records: dict[tuple[str, int], dict[str, Any]],
    now: float,
    ttl_hours: float,
) -> list[tuple[str, int]]:
    """The ``(repo, pr)`` pairs ``plan`` will ask its ``pr_state`` about, in that order.

    Takes ``plan``'s arguments; for ``PrStates.prefetch``.
    """
    return [
        (env.repo, env.pr) for env in environments if _settled(env, records, now, ttl_hours) is None
    ]


def _reason(
    env: Environment,
    records: dict[tuple[str, int], dict[str, Any]],
    pr_state: Callable[[str, int], str],
    now: float,
    ttl_hours: float,
) -> str:
    settled = _settled(env, records, now, ttl_hours)
    if settled is not None:
        return settled
    state = pr_state(env.repo, env.pr)
    if state in ("closed", "merged"):
        return state
    if state == "missing":
        return "orphaned"
    if state == "open":
        return "open"
    return state  # deferred or error: keep it, look again next run


def _settled(
    env: Environment, records: dict[tuple[str, int], dict[str, Any]], now: float, ttl_hours: float
) -> str | None:
    """The reason decided without asking GitHub, or None when the PR's state decides."""
    if not env.owned or not env.repo or "/" not in env.repo or env.pr <= 0:
        return "safety"
    if env.phase == "Terminating":
        return "terminating"
    if env.preserve_until is not None and env.preserve_until > now:
        return "preserved"
    record = records.get((env.repo.lower(), env.pr)) or {}
    last = max(
        (t for t in (env.last_deployed, parse_time(record.get("updated_at"))) if t is not None),
        default=None,
    )
    if last is not None and now - last > ttl_hours * 3600:
        return "stale"
    return None


def vanished_records(
    *, records: Iterable[dict[str, Any]], namespaces: set[str]
) -> list[dict[str, Any]]:
    """Records that say an environment is up whose namespace no longer exists."""
    out = []
    for record in records:
        ns = record.get("namespace")
        live = record.get("status") in LIVE_STATUSES
        if live and isinstance(ns, str) and ns and ns not in namespaces:
            out.append(record)
    return out


@dataclass
class ImageGarbage:
    """Tags to delete in one image repository, and why."""

    repository: str
    tags: list[str] = field(default_factory=list)


def collect_images(
    *,
    registry: OciRegistry,
    records: Iterable[dict[str, Any]],
    pr_state: Callable[[str, int], str],
) -> list[ImageGarbage]:
    """``pr-N`` and ``sha-*`` tags whose PR is gone, per image repository k8see pushed to.

    A repository is known from the records' ``image``. ``pr-N`` goes when PR N is closed,
    merged or missing and its record is not live; a ``sha-*`` tag goes when no live record of
    that repository points at that commit (it is only a cache for redeploying a commit).
    """
    by_repository: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        image = record.get("image")
        if not isinstance(image, str) or not image:
            continue
        ref = parse_ref(image)
        if ref.host != registry.host:
            continue
        by_repository.setdefault(ref.repository, []).append(record)
    out = []
    for repository, recs in sorted(by_repository.items()):
        live_shas = {r.get("sha") for r in recs if _live(r)}
        live_prs = {int(r.get("pr") or 0) for r in recs if _live(r)}
        owner = str(recs[0].get("repo") or "")
        garbage = ImageGarbage(repository)
        for tag in registry.list_tags(repository):
            if tag.startswith("pr-") and tag[3:].isdigit():
                number = int(tag[3:])
                if number in live_prs:
                    continue
                if pr_state(owner, number) in ("closed", "merged", "missing"):
                    garbage.tags.append(tag)
            elif tag.startswith("sha-") and tag[4:] not in live_shas:
                garbage.tags.append(tag)
        if garbage.tags:
            out.append(garbage)
    return out


def _live(record: dict[str, Any]) -> bool:
    return record.get("status") not in (Status.DESTROYED.value,)


def report_json(report: dict[str, Any]) -> str:
    """The report as one JSON line (``k8see cleanup --json``, the task's result)."""
    return json.dumps(report, sort_keys=True, default=str)
