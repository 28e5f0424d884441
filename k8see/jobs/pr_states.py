"""PR state lookups for one job run: ``open``, ``closed``, ``merged``, ``missing``.

The cleanup, the registry GC and the preserve expiry decide destroys on a PR's state. A
``PrStates`` first lists the pulls of each repository with several PRs to ask about
(``prefetch``: a page of 100 pulls per request, where asking one by one costs a request per
PR), then asks GitHub about each PR the lists did not answer, at most once per run. It caches
every answer in Redis for a few minutes (several beat replicas or a manual ``--dry-run`` reuse
it), answers "closed" from the close mark without asking, and stops asking after ``max_calls``
requests of either kind (the rest wait for the next run) so a cluster with hundreds of PRs
cannot exhaust the rate limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import redis

from k8see import coordination
from k8see.errors import GitHubError
from k8see.integrations.github import GitHubClient, Pull
from k8see.jobs.connections import github_client
from k8see.settings import PlatformSettings

__all__ = ["PrStates", "pr_states_of"]

log = logging.getLogger(__name__)

PR_STATE_PREFIX = "k8see:prstate"
#: A repository's pulls are listed only when at least this many of its PRs are to be asked
#: about; for fewer, one request per PR costs no more than a listing.
BULK_MIN_PRS = 2
#: Pages of closed pulls (100 each, most recently updated first) read per repository. A PR
#: closed longer ago whose environment still stands is rare; it is asked about on its own.
CLOSED_PAGES = 10


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


def pr_states_of(settings: PlatformSettings, client: redis.Redis) -> PrStates:
    """The lookups of one job run, with the platform's cache window and call budget."""
    return PrStates(
        github=github_client(settings),
        redis_client=client,
        cache_seconds=settings.cleanup.pr_state_cache_seconds,
        max_calls=settings.cleanup.max_github_calls,
        is_closed=lambda repo, pr: coordination.is_closed(client, repo=repo, pr=pr),
    )
