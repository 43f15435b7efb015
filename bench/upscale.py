"""The 4K path: 1536x864 PNG from the emulator -> 3840x2160 ready to upload, per image.

Each method runs in a fresh subprocess so its CPU time and peak memory are its own:
- ``naive``: Pillow ``Image.open``, ``resize(LANCZOS)``, ``save(PNG)`` with defaults;
- ``ours-png``: ``prefect_cometapi.upscaling`` with lossless PNG output (the default);
- ``ours-jpeg`` / ``ours-webp``: the same with lossy output, for users who pick speed.

Run: ``python bench/upscale.py [--repeat 3]``. Prints CPU seconds per image, the peak memory of
one image, the ratios against the naive baseline, and whether the lossless output's pixels equal
Pillow's own Lanczos resize of the source.

Peak memory per image: before each run the child resets the kernel's peak-RSS mark (Linux:
``/proc/self/clear_refs`` ``5`` sets ``VmHWM`` to the RSS now) and reads ``VmHWM`` after it, so
the figure is what decoding, resizing and encoding one image added on top of the process (the
source's compressed bytes and the imports are not counted; the decoded source, the 4K frame, the
encoder's buffers and the output bytes are). Where the mark cannot be reset the column says
``n/a`` and no verdict is printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile

import httpx
from PIL import Image

from prefect_cometapi.emulator import Emulator

TARGET = (3840, 2160)
GOAL_CPU = 4.0
GOAL_SIZE = 1.1
DECODED_RGBA_BYTES = TARGET[0] * TARGET[1] * 4

_CHILD = r"""
import hashlib, io, json, sys, time
from PIL import Image
method, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.upscaling import upscale
src = GeneratedImage(data=data, format="png", width=1536, height=864,
                     sha256=hashlib.sha256(data).hexdigest(), model="gpt-image-2", prompt="bench")
def naive():
    img = Image.open(io.BytesIO(data))
    out = io.BytesIO()
    img.resize((3840, 2160), Image.Resampling.LANCZOS).save(out, "PNG")
    return out.getvalue()
def ours(fmt):
    return lambda: upscale(src, size="3840x2160", mode="stretch", output_format=fmt).data
def vm(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0
def reset_peak():
    # Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the RSS now, so the peak
    # measured after it is the method's own, not the imports' high-water mark.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return vm("VmHWM") <= vm("VmRSS") + 1024 * 1024
run = {"naive": naive, "ours-png": ours("png"), "ours-jpeg": ours("jpeg"),
       "ours-webp": ours("webp")}[method]
result = run()  # warm-up: code paths and allocator pools, not charged to the figures
peak = None
cpu = 0.0
for _ in range(repeat):
    result = None
    valid = reset_peak()
    base = vm("VmRSS")
    started = time.process_time()
    result = run()
    cpu += time.process_time() - started
    if valid:
        peak = max(peak or 0, vm("VmHWM") - base)
open(path + "." + method, "wb").write(result)
print(json.dumps({"cpu_s": cpu / repeat, "peak_bytes": peak, "out_bytes": len(result)}))
"""


def _source_png() -> bytes:
    with Emulator() as emu:
        response = httpx.post(
            f"{emu.base_url}/images/generations",
            headers={"Authorization": "Bearer bench"},
            json={"model": "gpt-image-2", "prompt": "a product banner", "size": "1536x864"},
            timeout=60,
        )
        response.raise_for_status()
    # The emulator's default images carry photographic grain, so the encoders see what a real
    # generation gives them (a flat drawing would compress 100:1 and flatter every encoder).
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def _measure(method: str, path: str, repeat: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, method, path, str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure and print the 4K path's figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "source.png")
        with open(path, "wb") as fh:
            fh.write(_source_png())
        source_mb = os.path.getsize(path) / 1e6
        results = {
            m: _measure(m, path, args.repeat)
            for m in ("naive", "ours-png", "ours-jpeg", "ours-webp")
        }
        with Image.open(path) as src:
            expected = src.resize(TARGET, Image.Resampling.LANCZOS)
        with Image.open(path + ".ours-png") as ours:
            lossless = (
                ours.size == TARGET and ours.tobytes() == expected.convert(ours.mode).tobytes()
            )
    naive = results["naive"]
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    )
    print(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"1536x864 PNG ({source_mb:.2f} MB, the emulator's realistic image) "
          f"-> 3840x2160, mean of {args.repeat} per method")  # fmt: skip
    header = ("method", "CPU s", "peak MB", "out MB", "CPU vs naive", "peak / RGBA frame")
    print("{:<10} {:>7} {:>8} {:>7} {:>13} {:>18}".format(*header))
    for name, r in results.items():
        peak_mb = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 1e6:.1f}"
        frames = (
            "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / DECODED_RGBA_BYTES:.2f}x"
        )
        print(
            f"{name:<10} {r['cpu_s']:7.3f} {peak_mb:>8} {r['out_bytes'] / 1e6:7.1f} "
            f"{naive['cpu_s'] / r['cpu_s']:12.2f}x {frames:>18}"
        )
    print(f"lossless PNG pixels equal Pillow's LANCZOS resize: {lossless}")
    ratio = naive["cpu_s"] / results["ours-png"]["cpu_s"]
    verdict = "met" if ratio >= GOAL_CPU else "NOT met"
    print(f"goal >= {GOAL_CPU:g}x less CPU for lossless PNG: {ratio:.2f}x -> {verdict}")
    size = results["ours-png"]["out_bytes"] / naive["out_bytes"]
    verdict = "met" if size <= GOAL_SIZE else "NOT met"
    print(f"goal PNG file <= {GOAL_SIZE:g}x the naive PNG's bytes: {size:.2f}x -> {verdict}")
    if results["ours-png"]["peak_bytes"] is None:
        print("goal peak <= 3x the decoded RGBA frame: not measured (peak RSS mark not resettable)")
    else:
        peak = results["ours-png"]["peak_bytes"] / DECODED_RGBA_BYTES
        verdict = "met" if peak <= 3 else "NOT met"
        print(f"goal peak <= 3x the decoded RGBA frame: {peak:.2f}x -> {verdict}")


if __name__ == "__main__":
    main()
