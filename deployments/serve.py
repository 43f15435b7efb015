"""Serve the deployments of ``deployments/prefect.yaml`` without a work pool: ``prefect.serve``.

Run it from anywhere (it works from the repository root, as the workers do)::

    COMETAPI_S3_BUCKET=my-bucket python deployments/serve.py
    python deployments/serve.py --deployment generate-and-upload/on-demand --limit 2

The deployments get the same names, descriptions, tags, schedules and parameters as in
``prefect.yaml`` (read from it, so the two cannot drift). ``{{ $ENV_VAR }}`` placeholders in the
parameters are filled from this process's environment, as ``prefect deploy`` does. The process
stays up and runs the flows itself; stopping it pauses the schedules.

A served deployment and a work-pool deployment with the same flow and name are the same
deployment on the server, and Prefect does not move an existing pool deployment to a served one
cleanly (its work pool stays). So the script refuses to serve over a work-pool deployment
unless ``--replace`` is given, which deletes that deployment first (``prefect deploy`` recreates
it). Deployments on the ``cometapi-fleet`` pool are left out unless named: a fleet needs a pool.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: entrypoints and example paths are relative to it."""
PREFECT_FILE = Path(__file__).with_name("prefect.yaml")
_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
DEFAULT_POOL = "cometapi-process"
"""Deployments on this pool are served by default (the others are for pools of workers)."""


def full_name(spec: Mapping[str, Any]) -> str:
    """The ``flow-name/deployment-name`` of a deployment in ``prefect.yaml``.

    Args:
        spec: One entry of the file's ``deployments`` list.

    Returns:
        E.g. ``generate-and-upload/on-demand``.
    """
    return f"{load_flow(spec['entrypoint']).name}/{spec['name']}"


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow behind an entrypoint such as ``flows/pipeline.py:generate_and_upload``.

    ``flows/`` installs as ``prefect_cometapi.flows``, so the flow is imported from the package
    (the same object a worker loads from the file).

    Args:
        entrypoint: ``flows/<module>.py:<function>``.

    Returns:
        The flow.

    Raises:
        ValueError: The entrypoint is not under ``flows/`` or is not a flow.
    """
    path, _, attribute = entrypoint.partition(":")
    parts = Path(path).with_suffix("").parts
    if len(parts) < 2 or parts[0] != "flows" or not attribute:
        raise ValueError(f"unsupported entrypoint {entrypoint!r}: expected flows/<file>.py:<flow>")
    module = importlib.import_module(".".join(("prefect_cometapi", *parts)))
    candidate = getattr(module, attribute, None)
    if not isinstance(candidate, Flow):
        raise ValueError(f"{entrypoint!r} is not a Prefect flow")
    return candidate


def load_specs(prefect_file: Path = PREFECT_FILE) -> list[dict[str, Any]]:
    """The ``deployments`` of a ``prefect.yaml`` (YAML anchors and merge keys applied).

    Args:
        prefect_file: The file.

    Returns:
        One dict per deployment, as written (placeholders not yet filled).
    """
    with prefect_file.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    return list(document.get("deployments") or [])


def _schedules(spec: Mapping[str, Any]) -> list[Schedule]:
    schedules: list[Schedule] = []
    for item in spec.get("schedules") or []:
        common = {
            "timezone": item.get("timezone"),
            "active": item.get("active", True),
            "parameters": item.get("parameters") or {},
        }
        if item.get("cron"):
            schedules.append(Cron(item["cron"], day_or=item.get("day_or", True), **common))
        elif item.get("interval"):
            schedules.append(Interval(item["interval"], **common))
        else:
            raise ValueError(f"{spec.get('name')}: only cron and interval schedules are served")
    return schedules


def _concurrency(value: Any) -> int | ConcurrencyLimitConfig | None:
    if isinstance(value, Mapping):
        return ConcurrencyLimitConfig(**value)
    return value


def build_deployment(
    spec: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> RunnerDeployment:
    """A served deployment equal to one ``prefect.yaml`` entry (minus its work pool).

    Args:
        spec: One entry of the file's ``deployments`` list.
        environ: Values for ``{{ $VAR }}`` placeholders (default: ``os.environ``).

    Returns:
        The deployment, ready for :func:`prefect.serve`.
    """
    values = os.environ if environ is None else environ
    return load_flow(spec["entrypoint"]).to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        tags=list(spec.get("tags") or []),
        version=spec.get("version"),
        parameters=_fill_env(dict(spec.get("parameters") or {}), values),
        schedules=_schedules(spec),
        concurrency_limit=_concurrency(spec.get("concurrency_limit")),
    )


def _fill_env(template: Any, environ: Mapping[str, str]) -> Any:
    """Fill ``{{ $VAR }}`` placeholders like ``prefect deploy`` does (unset: empty string)."""
    if isinstance(template, Mapping):
        return {key: _fill_env(value, environ) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill_env(value, environ) for value in template]
    if isinstance(template, str):
        return _ENV_PLACEHOLDER.sub(lambda match: environ.get(match.group(1), ""), template)
    return template


def select_specs(
    specs: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
) -> list[Mapping[str, Any]]:
    """The deployments to serve.

    Args:
        specs: Every deployment of the file.
        names: ``flow-name/deployment-name`` values; empty for every deployment on the
            ``cometapi-process`` pool.

    Returns:
        The chosen entries, in file order.

    Raises:
        ValueError: A name matches no deployment.
    """
    if not names:
        return [s for s in specs if (s.get("work_pool") or {}).get("name") == DEFAULT_POOL]
    by_name = {full_name(spec): spec for spec in specs}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no such deployment(s): {unknown}; known: {sorted(by_name)}")
    return [spec for name, spec in by_name.items() if name in names]


def build_deployments(
    names: Sequence[str] | None = None,
    prefect_file: Path = PREFECT_FILE,
    environ: Mapping[str, str] | None = None,
) -> list[RunnerDeployment]:
    """Served twins of the deployments in ``prefect.yaml``.

    Args:
        names: ``flow-name/deployment-name`` values; empty for the default set.
        prefect_file: The deployment file.
        environ: Values for ``{{ $VAR }}`` placeholders (default: ``os.environ``).

    Returns:
        The deployments.
    """
    return [build_deployment(s, environ) for s in select_specs(load_specs(prefect_file), names)]


def check_conflicts(deployments: Sequence[RunnerDeployment], replace: bool = False) -> None:
    """Refuse (or, with ``replace``, delete) work-pool deployments with the same names.

    Args:
        deployments: The deployments about to be served.
        replace: Delete a conflicting work-pool deployment instead of refusing.

    Raises:
        SystemExit: A deployment of the same name runs on a work pool and ``replace`` is false.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                existing = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if not existing.work_pool_name:
                continue  # served before: serving again updates it
            if not replace:
                raise SystemExit(
                    f"{name} already exists on the work pool {existing.work_pool_name!r}; "
                    "serve it anyway with --replace (this deletes that deployment; "
                    "`prefect deploy` recreates it)"
                )
            client.delete_deployment(existing.id)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the deployments until interrupted.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--deployment",
        action="append",
        metavar="FLOW/NAME",
        help="serve only this deployment (repeatable), e.g. generate-and-upload/on-demand",
    )
    parser.add_argument("--limit", type=int, default=None, help="maximum concurrent runs")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete work-pool deployments of the same names first (prefect deploy restores them)",
    )
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_FILE)
    args = parser.parse_args(argv)
    prefect_file = args.prefect_file.resolve()
    os.chdir(PROJECT_ROOT)  # like the workers' pull step: relative example paths resolve here
    deployments = build_deployments(args.deployment, prefect_file)
    check_conflicts(deployments, replace=args.replace)
    serve(*deployments, limit=args.limit)


if __name__ == "__main__":
    main()
