"""What a doctor check returns, what the checks are told, and what they hand on to each other."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CheckResult", "DoctorContext", "DoctorOptions", "Status"]


class Status(str, enum.Enum):
    """How a check came out.

    ``problem`` makes ``prefect-cometapi doctor`` exit non-zero; ``warning`` does not;
    ``skipped`` means the check did not run (not asked for, or what it needs failed above).
    """

    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One line of the report.

    Attributes:
        name: The check (``credentials``, ``base-url``, ``s3-bucket`` ...).
        status: How it came out.
        message: One sentence: what was found (never a secret).
        fix: What to do about it (empty when there is nothing to do).
        details: Machine-readable facts for ``--json`` (never a secret).
    """

    name: str
    status: Status
    message: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``--json`` prints.

        Returns:
            ``name``, ``status``, ``message``, ``fix`` and ``details``.
        """
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "fix": self.fix,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class DoctorOptions:
    """What the user asked the doctor to check (the command-line options).

    Attributes:
        credentials: Name of a saved CometAPI Credentials block; ``None``: ``COMETAPI_KEY``.
        base_url: A ``base_url`` the flows are given (overrides the block's).
        bucket: The S3 bucket the flows deliver to; ``None``: not checked.
        s3_endpoint_url: An S3-compatible endpoint (as ``s3.endpoint_url``).
        aws_credentials_block: A prefect-aws ``AwsCredentials`` block name (as
            ``s3.aws_credentials_block``).
        write_probe: Write a probe object to the bucket and remove it.
        concurrency_limit: The ``concurrency_limit`` the flows are given.
        rate_limit: The ``rate_limit`` the flows are given.
        spend_limit: The ``spend_limit`` the flows are given.
        fleet: This worker is one of several machines sharing the work.
        result_storage: A storage block slug the flows' results go to (default: Prefect's
            ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``).
        live: Spend one cheapest generation.
        timeout_s: Seconds each network check may take.
    """

    credentials: str | None = None
    base_url: str | None = None
    bucket: str | None = None
    s3_endpoint_url: str | None = None
    aws_credentials_block: str | None = None
    write_probe: bool = False
    concurrency_limit: str | None = None
    rate_limit: str | None = None
    spend_limit: str | None = None
    fleet: bool = False
    result_storage: str | None = None
    live: bool = False
    timeout_s: float = 10.0


@dataclass
class DoctorContext:
    """What one check finds and a later one needs (filled in as the checks run).

    Attributes:
        options: The options.
        prefect_ok: The Prefect API answered.
        block: The credentials block in use (loaded or built from the environment).
        api_key: The key in use, once found well-formed (only ever sent to the API).
        base_url: The base URL in use, once the allow-list accepts it.
        models: The model ids the API listed (empty: not known).
        api_ok: The API answered the models list with this key.
    """

    options: DoctorOptions
    prefect_ok: bool = False
    block: Any = None
    api_key: str | None = field(default=None, repr=False)
    base_url: str | None = None
    models: list[str] = field(default_factory=list)
    api_ok: bool = False
