"""Session-wide test setup: real servers on 127.0.0.1, started once.

Fixture modules (tests/fixtures_*.py) hold the servers: the CometAPI emulator, moto's S3 server
and a Prefect test server. Everything talks over loopback only.
"""

import os
import tempfile

# Before Prefect is imported anywhere: a private home, results persisted under it, and no key or
# AWS account from the developer's environment leaking into tests.
_HOME = tempfile.mkdtemp(prefix="prefect-cometapi-tests-")
os.environ["PREFECT_HOME"] = _HOME
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(_HOME, "storage")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ.pop("COMETAPI_KEY", None)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
# The tests' own inputs (tmp_path files, the loopback file server) are allowed the way a worker's
# owner would allow them; the hostile-parameter tests narrow these again.
os.environ["PREFECT_COMETAPI_INPUT_ROOTS"] = tempfile.gettempdir()
os.environ["PREFECT_COMETAPI_ALLOWED_INPUT_HOSTS"] = "127.0.0.1"

pytest_plugins = [
    "fixtures_emulator",
    "fixtures_s3",
    "fixtures_prefect",
    "fixtures_deploy",
    "fixtures_flows",
]
