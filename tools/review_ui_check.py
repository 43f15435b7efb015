"""Look at the review gate in both Prefect UIs: the review gallery and the Resume form.

Starts ``prefect server start`` (UI on) like ``tools/ui_check.py``, then in a child process the
emulator and moto's S3 server and a ``batch_generate`` of two example products with review, which
pauses for a decision. In headless Chromium, in the v2 and v1 UIs, it opens the review gallery
artifact (every preview loaded, no markdown left as text) and the paused flow run, presses
**Resume** and screenshots the form (item drop-down, approve/reject, new prompt, note, approve
all, reject all). Then it answers from code (``resume_flow_run(..., run_input={"approve_all":
True})``) and waits for the run to finish.

    python tools/review_ui_check.py [--out ui-check] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_check import (  # noqa: E402 - the sibling script's helpers
    CHROMIUM_ARGS,
    REPO_ROOT,
    UI_VERSION_COOKIE,
    VIEWPORT,
    _api,
    _env,
    prefect_server,
)

FORM_WORDS = ("Decisions", "Approve All", "Reject All")


def serve_run() -> int:
    """The child: local services and a batch with review that waits for a decision."""
    from prefect_cometapi.batching.sources import EXAMPLE_ITEMS, EXAMPLE_TEMPLATE, parse_items
    from prefect_cometapi.blocks import CometAPICredentials
    from prefect_cometapi.demo.environ import allowing
    from prefect_cometapi.demo.run import DEMO_KEY, _fake_aws_env, _local_services
    from prefect_cometapi.flows import ImageOptions, S3Options, batch_generate
    from prefect_cometapi.forms.review import ReviewOptions

    items = parse_items(EXAMPLE_ITEMS.read_text(encoding="utf-8"), EXAMPLE_ITEMS.name)[:2]
    with (
        _local_services() as (base_url, endpoint_url),
        _fake_aws_env(endpoint_url),
        allowing([base_url]),
    ):
        import boto3

        boto3.client("s3").create_bucket(Bucket="review-ui")
        state = batch_generate(
            s3=S3Options(bucket="review-ui", prefix="reviewed/", presign_expires=None),
            template=str(EXAMPLE_TEMPLATE),
            items=items,
            image=ImageOptions(size="1536x864", quality="low"),
            credentials_block=CometAPICredentials(api_key=DEMO_KEY, base_url=base_url),
            review=ReviewOptions(timeout_s=900, max_rounds=2),
            return_state=True,
        )
        print(f"final state: {state.type.value} {state.message}", flush=True)
        return 0 if state.is_completed() else 1


def _paused_run(base: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _api(
            base, "POST", "/flow_runs/filter",
            {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}},
        )  # fmt: skip
        if runs:
            return dict(runs[0])
        time.sleep(1)
    raise SystemExit("no paused flow run")


def check(base: str, run: dict[str, Any], out: Path, chromium: str) -> list[str]:
    """Screenshots of the gallery and the Resume form in both UIs; the failed checks."""
    from playwright.sync_api import sync_playwright

    failures: list[str] = []
    artifacts = _api(
        base, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    gallery = next(a for a in artifacts if a.get("key", "").endswith("-review"))
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for ui in ("v2", "v1"):
                context = browser.new_context(viewport=VIEWPORT)
                context.add_cookies([{"name": UI_VERSION_COOKIE, "value": ui, "url": base}])
                prefix = "/v2" if ui == "v2" else ""
                page = context.new_page()
                page.goto(f"{base}{prefix}/artifacts/artifact/{gallery['id']}",
                          wait_until="networkidle")  # fmt: skip
                page.get_by_text("review round 1").first.wait_for(timeout=45_000)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / f"{ui}-review-gallery.png"), full_page=True)
                images = page.eval_on_selector_all(
                    "img[src^='data:']", "els => els.map(e => e.naturalWidth)"
                )
                if len(images) != 2 or min(images or [0]) <= 0:
                    failures.append(f"{ui} review gallery: previews not all loaded: {images}")
                if "![" in page.inner_text("body"):
                    failures.append(f"{ui} review gallery: markdown shown as text")
                page.goto(f"{base}{prefix}/runs/flow-run/{run['id']}", wait_until="networkidle")
                page.wait_for_timeout(2000)
                page.screenshot(path=str(out / f"{ui}-paused-run.png"), full_page=True)
                try:
                    resume = page.get_by_role("button", name="Resume")
                    if resume.count():
                        resume.first.click(timeout=30_000)
                    else:  # the v2 UI keeps Resume in the run's menu
                        page.locator("button[aria-haspopup='menu']").first.click()
                        page.get_by_role("menuitem", name="Resume").first.click(timeout=30_000)
                    page.wait_for_timeout(2500)
                    for label in ("Add item", "Add", "+"):
                        button = page.get_by_role("button", name=label)
                        if button.count():
                            button.first.click()
                            page.wait_for_timeout(1000)
                            break
                except Exception as exc:  # noqa: BLE001 - reported, the screenshot shows why
                    failures.append(f"{ui}: no Resume button: {exc}")
                page.screenshot(path=str(out / f"{ui}-resume-form.png"), full_page=True)
                text = page.inner_text("body")
                missing = [w for w in FORM_WORDS if w.lower() not in text.lower()]
                if missing:
                    failures.append(f"{ui} resume form: {missing} not shown")
                print(f"{ui}: gallery previews {images}; form words missing: {missing}")
                context.close()
        finally:
            browser.close()
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the check.

    Args:
        argv: Command line.

    Returns:
        0 when every check passed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "ui-check"), help="screenshot folder")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--serve-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_run:
        return serve_run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="review-ui-check-"))
    with prefect_server(root) as base:
        env = _env(root, f"{base}/api")
        log = (root / "run.log").open("wb")
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve-run"], env=env, cwd=REPO_ROOT,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            run = _paused_run(base)
            failures = check(base, run, out, args.chromium)
            from prefect.flow_runs import resume_flow_run
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: f"{base}/api"}):
                resume_flow_run(run["id"], run_input={"approve_all": True, "reviewer": "ui"})
            if child.wait(timeout=300) != 0:
                failures.append(f"the reviewed run did not complete; see {root / 'run.log'}")
        finally:
            if child.poll() is None:
                child.kill()
            log.close()
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"screenshots in {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
