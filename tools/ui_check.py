"""Look at what a user sees in the Prefect UI: the gallery, the tables and the run forms.

Starts ``prefect server start`` (UI on) on 127.0.0.1 with a private ``PREFECT_HOME``, runs the
offline demo against it (``prefect-cometapi demo --limit 2``: the emulator, moto's S3 server, a
real batch), deploys ``generate-and-upload/on-demand`` from ``deployments/prefect.yaml``, then
opens in headless Chromium, in both of Prefect's UIs (v2, the default, and v1):

- the gallery artifact of the demo's flow run, asserting that every image in it has loaded
  (``naturalWidth > 0``) and that no markdown is left unrendered (``![``);
- the results, details and objects tables (each must fit the page without being cut off: the
  UI wraps no cell and cuts a wider table off), and the flow run's page;
- the deployment's custom-run form, asserting that no ``None`` switch is left;
- the CometAPI Credentials block form, asserting that the API key is a password input (v2;
  the v1 UI's schema form has no password input at all: every string field that is not a
  date, a date-time, JSON or an enum is a one-row textarea, whatever its ``format``, so there
  it is reported, not failed);
- the artifacts of a hostile run (a flow that publishes, with the package's own
  ``reports.artifacts.publish``, a summary whose item ids, prompt, S3 URIs and error carry
  markdown image, link, HTML, autolink and bare-URL payloads), failing if the browser requests
  any URL that is not the Prefect server's or a ``data:`` preview, or the page holds a link to
  one (``--hostile-only`` runs just this part).

Screenshots go to ``--out`` (default ``ui-check/``, ignored by git). Needs Chromium
(``apt-get install chromium``) and Playwright in the environment (``pip install playwright``);
neither is a dependency of the package. Exit status 0 when every check passed.

    python tools/ui_check.py [--out ui-check] [--chromium /usr/bin/chromium] [--hostile-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_TIMEOUT_S = 300.0
UI_VERSION_COOKIE = "prefect_ui_version"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TABLE_CUT_JS = """() => {
  const table = document.querySelector('table');
  if (!table) return null;
  let cut = false;
  for (let e = table; e && e !== document.body; e = e.parentElement) {
    if (e.scrollWidth > e.clientWidth + 1) cut = true;
  }
  return {cut: cut, width: table.scrollWidth};
}"""
"""Whether the page's first table is wider than a box around it (cut off or scrolled)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def _env(root: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(
        PREFECT_HOME=str(root / ("server" if api_url is None else "client")),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        NO_PROXY="127.0.0.1,localhost",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **extra,
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


@contextmanager
def prefect_server(root: Path) -> Iterator[str]:
    """``prefect server start`` with the UI on a free port; yields its base URL."""
    port = _free_port()
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=_env(root, None, PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Prefect server did not start; see {root / 'server.log'}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> str:
    done = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def _api(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base}/api{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def prepare(base: str, root: Path) -> dict[str, Any]:
    """Run the demo against the server and deploy the on-demand deployment.

    Returns:
        ``flow_run_id``, ``artifacts`` (key -> id) and ``deployment_id``.
    """
    api_url = f"{base}/api"
    env = _env(root, api_url)
    demo = _run(
        [_bin("prefect-cometapi"), "demo", "--limit", "2", "--output-dir", str(root / "out")],
        env,
        cwd=root,
    )
    found = re.search(rf"/runs/flow-run/({_UUID})", demo)
    if not found:
        raise SystemExit(f"no flow run id in the demo's output:\n{demo}")
    flow_run_id = found.group(1)
    artifacts = _api(
        base, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    )
    _run([_bin("prefect"), "block", "register", "-m", "prefect_cometapi"], env)
    _run([_bin("prefect"), "work-pool", "create", "cometapi-process", "--type", "process"], env)
    deploy_env = {**env, "COMETAPI_S3_BUCKET": "ui-check-bucket"}
    _run(
        [
            _bin("prefect"),
            "deploy",
            "--prefect-file",
            "deployments/prefect.yaml",
            "--name",
            "generate-and-upload/on-demand",
            "--no-prompt",
        ],
        deploy_env,
    )
    deployment = _api(base, "GET", "/deployments/name/generate-and-upload/on-demand")
    return {
        "flow_run_id": flow_run_id,
        "artifacts": {a["key"]: a["id"] for a in artifacts if a.get("key")},
        "deployment_id": deployment["id"],
    }


HOSTILE_FLOW = """
from prefect import flow
from prefect.runtime import flow_run
from prefect_cometapi.reports.artifacts import publish
from prefect_cometapi.reports.outcomes import DeliveredImage, ItemOutcome, RunSummary

T = "![t](http://attacker.example/track.png)"
PAYLOADS = [T, "[click](javascript:alert(1))", "<img src=http://attacker.example/h.png>",
            "<http://attacker.example/a>", "see https://attacker.example/x www.attacker.example",
            "[a][r]\\n\\n[r]: http://attacker.example/ref", "x@attacker.example"]

@flow(name="hostile-ui-check")
def hostile() -> str:
    outcomes = []
    for n, text in enumerate(PAYLOADS):
        key = f"https:/attacker.example/{n}/{text}.png"
        image = DeliveredImage(uri=f"s3://b/{key}", bucket="b", key=key, sha256="0" * 64,
                               size="1x1", format="png", bytes=1,
                               url="http://attacker.example/presigned?X-Amz-Security-Token=t")
        outcomes.append(ItemOutcome(item_id=text, index=n, status="delivered",
                                    prompt_excerpt=text, size="1x1", quality="low",
                                    images=[image], cost_usd=0.001))
    outcomes.append(ItemOutcome(item_id=T, index=len(outcomes), status="failed",
                                prompt_excerpt=T, size="1x1", quality="low",
                                error_code=T, error=" ".join(PAYLOADS)))
    publish(RunSummary.from_outcomes("hostile-ui-check", outcomes), "hostile-ui-check", T)
    return str(flow_run.id)

print("HOSTILE-RUN", hostile())
"""
"""A flow run whose artifacts carry every known markdown payload, published by our own code."""
UI_OWN_REQUESTS = ("https://sr-client-cfg.amplitude.com/",)
"""What Prefect's v2 UI itself fetches on every page (its analytics config), not an artifact."""
_OUTSIDE_LINKS_JS = """(base) => Array.from(document.querySelectorAll('a[href], img[src], '
  + 'iframe[src], source[src], video[src], audio[src], link[href], script[src]'))
  .map(e => e.href || e.src || '')
  .filter(u => u && !u.startsWith(base) && !u.startsWith('data:') && !u.startsWith('blob:'))"""


def hostile_run(base: str, root: Path) -> dict[str, str]:
    """Run :data:`HOSTILE_FLOW` against the server; its artifacts ``key -> id``."""
    out = _run([sys.executable, "-c", HOSTILE_FLOW], _env(root, f"{base}/api"), cwd=root)
    found = re.search(rf"HOSTILE-RUN ({_UUID})", out)
    if not found:
        raise SystemExit(f"the hostile run did not report its id:\n{out[-3000:]}")
    body = {"artifacts": {"flow_run_id": {"any_": [found.group(1)]}}}
    return {a["key"]: a["id"] for a in _api(base, "POST", "/artifacts/filter", body) if a["key"]}


def check_hostile(base: str, artifacts: dict[str, str], out: Path, chromium: str) -> list[str]:
    """Open the hostile run's artifacts in both UIs; every URL the page loads must be ours."""
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for ui in ("v2", "v1"):
                context = browser.new_context(viewport=VIEWPORT)
                context.add_cookies([{"name": UI_VERSION_COOKIE, "value": ui, "url": base}])
                loaded: list[str] = []
                context.on("request", lambda request, seen=loaded: seen.append(request.url))
                page = context.new_page()
                for key, artifact_id in sorted(artifacts.items()):
                    loaded.clear()
                    prefix = "/v2" if ui == "v2" else ""
                    page.goto(f"{base}{prefix}/artifacts/artifact/{artifact_id}")
                    page.wait_for_load_state("networkidle")
                    page.wait_for_timeout(2500)
                    name = f"{ui}-hostile-{key.rsplit('-', 1)[1]}"
                    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                    foreign = [
                        u
                        for u in loaded
                        if not u.startswith((base, "data:", "blob:", *UI_OWN_REQUESTS))
                    ]
                    linked = page.evaluate(_OUTSIDE_LINKS_JS, base)
                    print(f"{name}: {len(loaded)} requests, foreign {foreign}, links {linked}")
                    if foreign:
                        failures.append(f"{name}: the page loaded URLs not ours: {foreign}")
                    if any("attacker" in u or u.startswith("javascript:") for u in linked):
                        failures.append(f"{name}: a link or image to {linked}")
                context.close()
        finally:
            browser.close()
    return failures


def check_ui(base: str, found: dict[str, Any], out: Path, chromium: str) -> list[str]:
    """Open the pages in headless Chromium, save screenshots and return the failed checks."""
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    gallery_id = next(v for k, v in found["artifacts"].items() if k.endswith("-gallery"))
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for ui in ("v2", "v1"):
                context = browser.new_context(viewport=VIEWPORT)
                context.add_cookies([{"name": UI_VERSION_COOKIE, "value": ui, "url": base}])
                prefix = "/v2" if ui == "v2" else ""
                page = context.new_page()

                def shot(
                    path: str, name: str, wait_for: str, page: Any = page, prefix: str = prefix
                ) -> Any:
                    page.goto(f"{base}{prefix}{path}", wait_until="networkidle")
                    try:
                        page.get_by_text(wait_for).first.wait_for(timeout=45_000)
                    except Exception:  # noqa: BLE001 - reported, and the screenshot shows why
                        failures.append(f"{name}: {wait_for!r} never appeared")
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                    return page

                # The gallery: every image loaded, no markdown left as text.
                shot(f"/artifacts/artifact/{gallery_id}", f"{ui}-gallery", "Total cost")
                images = page.eval_on_selector_all(
                    "img[src^='data:']",
                    "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, alt: e.alt}))",
                )
                text = page.inner_text("body")
                if len(images) != 2 or any(image["w"] <= 0 for image in images):
                    failures.append(f"{ui} gallery: images not all loaded: {images}")
                if "![" in text:
                    failures.append(f"{ui} gallery: markdown shown as text")
                print(f"{ui} gallery: {len(images)} images, natural sizes {images}")
                for key, artifact_id in found["artifacts"].items():
                    if key.endswith(("-results", "-details", "-objects")):
                        kind = key.rsplit("-", 1)[1]
                        shot(f"/artifacts/artifact/{artifact_id}", f"{ui}-{kind}", "drift-kettle")
                        cut = page.evaluate(_TABLE_CUT_JS)
                        print(f"{ui} {kind} table: {cut}")
                        if cut is None or cut["cut"]:
                            failures.append(f"{ui} {kind} table does not fit: {cut}")
                shot(f"/runs/flow-run/{found['flow_run_id']}", f"{ui}-flow-run", "batch-generate")
                # The custom-run form: no None switches.
                run_form = f"/deployments/deployment/{found['deployment_id']}/run"
                shot(run_form, f"{ui}-run-form", "credentials_block")
                form_text = page.inner_text("body")
                if 'type "None"' in form_text or "type 'None'" in form_text:
                    failures.append(f"{ui} run form: a None switch is shown")
                # The credentials block form: the key is a password input.
                shot("/blocks/catalog/cometapi-credentials/create", f"{ui}-block-form", "API Key")
                passwords = page.locator("input[type=password]").count()
                print(f"{ui} block form: {passwords} password input(s)")
                if passwords < 1 and ui == "v2":
                    failures.append(f"{ui} block form: no password input for the API key")
                elif passwords < 1:
                    # The v1 UI draws this field as a textarea although its schema says
                    # format password; the key is still stored as a secret and shown masked.
                    print(f"NOTE: {ui} block form: the API key is a textarea in this UI")
                context.close()
        finally:
            browser.close()
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the whole check.

    Args:
        argv: Command-line arguments.

    Returns:
        0 when every check passed.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "ui-check"), help="screenshot folder")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    parser.add_argument(
        "--hostile-only", action="store_true", help="only the hostile run's artifacts"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cometapi-ui-check-"))
    try:
        with prefect_server(root) as base:
            print(f"Prefect server and UI: {base}")
            failures = []
            if not args.hostile_only:
                found = prepare(base, root)
                print(f"flow run {found['flow_run_id']}, deployment {found['deployment_id']}")
                failures += check_ui(base, found, out, args.chromium)
            failures += check_hostile(base, hostile_run(base, root), out, args.chromium)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"screenshots in {out}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
