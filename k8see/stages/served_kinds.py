"""Before helm runs: does this cluster serve every kind the release renders?

helm applies a release all at once; one kind the API server does not know (an operator's CRD
that is not installed) fails the deploy with "no matches for kind", a message the PR author
cannot act on. The deploy renders the chart offline with the run's values, asks API discovery
for each kind's group version, and refuses with a ``PolicyError`` that names the operator
and the option that asked for it (``operators``), before anything is written to the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from k8see import names, operators
from k8see.errors import HelmError, PolicyError, Where
from k8see.integrations import discovery, helm
from k8see.stages.context import StageContext

__all__ = ["check_served"]


def check_served(
    api: ApiClient,
    ctx: StageContext,
    *,
    chart: str | Path,
    namespace: str,
    values: dict[str, Any],
    config_file: str,
) -> None:
    """Refuse the deploy when the release needs a kind this cluster does not serve.

    A chart that does not render is left to ``helm upgrade``, whose error the deploy stage
    already turns into one for the PR author.

    Raises:
        PolicyError: naming each missing kind, its operator and the option that needs it.
    """
    try:
        rendered = helm.template(
            release=names.RELEASE_NAME, chart=chart, namespace=namespace, values=values
        )
    except HelmError as exc:
        ctx.log.info("the app chart does not render offline (%s); helm will say why", exc)
        return
    wanted = {(str(m.get("apiVersion")), str(m.get("kind"))) for m in rendered if m.get("kind")}
    missing = discovery.unserved(api, wanted)
    if not missing:
        return
    known = [o for o in (operators.for_kind(gv, kind) for gv, kind in missing) if o]
    unknown = [f"{kind} ({gv})" for gv, kind in missing if not operators.for_kind(gv, kind)]
    parts = [
        f"{o.option} needs {o.operator}'s {o.kind} ({o.api_version}), which this cluster "
        "does not serve"
        for o in known
    ]
    if unknown:
        parts.append(
            f"the app chart renders {', '.join(unknown)}, which this cluster does not serve"
        )
    message = "; ".join(parts)
    if known:
        hint = (
            f"Ask your platform team to install {', '.join(sorted({o.operator for o in known}))}, "
            f"or {' and '.join(o.off for o in known)} in {config_file}."
        )
    else:
        hint = "Ask your platform team: the app chart (deploy.chart_path) needs it."
    raise PolicyError(
        message + ".",
        hint=hint,
        where=Where(file=config_file, field=known[0].option) if known else None,
    )
