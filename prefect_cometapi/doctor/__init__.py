"""``prefect-cometapi doctor``: checks a worker's setup before its first run.

Each check (:mod:`.checks`, :mod:`.limits`, :mod:`.storage`, :mod:`.live`) returns a
:class:`CheckResult` with a status (ok, warning, problem, skipped), one sentence and its fix;
:mod:`.report` prints them, with every secret scrubbed, and sets the exit code. What each line
means is in ``docs/doctor.md``.
"""

from prefect_cometapi.doctor.result import CheckResult, DoctorOptions, Status
from prefect_cometapi.doctor.run import (
    add_doctor_arguments,
    package_version,
    run_checks,
    run_doctor,
)

__all__ = [
    "CheckResult",
    "DoctorOptions",
    "Status",
    "add_doctor_arguments",
    "package_version",
    "run_checks",
    "run_doctor",
]
