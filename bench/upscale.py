"""The 4K path on three kinds of content: our lossless PNG upscale vs naive Pillow, per image.

Kinds (every source is a PNG, upscaled 2.5x: 1536x864 -> 3840x2160 where the source has that
size):

- ``drawing``: the emulator's flat drawing (``render_generation(..., light=True)``), 1536x864;
- ``grain``: the emulator's default image, the drawing under film grain, 1536x864;
- ``photo``: scikit-image's bundled photographs ``astronaut`` (512x512), ``coffee`` (600x400)
  and ``chelsea`` (451x300) at their own size, so no resampling smooths them first;
- ``noisy``: ``coffee`` resized to 1536x864 plus Gaussian noise (sigma 10, seeded), and
  ``astronaut`` plus the same noise at its own size.

Methods, each in a fresh subprocess so its CPU time and peak memory are its own:

- ``naive``: ``Image.open``, ``resize((w, h), LANCZOS)``, ``save(buf, "PNG")`` with defaults;
- ``ours``: :func:`prefect_cometapi.upscaling.upscale` with PNG output (the default probe);
- ``floor``: ``Image.open`` and the resize alone, no encoding: no encoder can make the 4K
  path cheaper than this, so ``naive / floor`` bounds the CPU ratio any encoder can reach.

Run: ``python bench/upscale.py [--repeat 2]`` (needs the ``bench`` extra for the photographs:
``pip install -e '.[bench]'``; without scikit-image the photo and noisy rows are skipped).
Prints per image and per kind: CPU seconds of each method (mean of ``--repeat`` runs after one
warm-up), ours vs naive, the file-size ratio, whether our PNG decodes to exactly the pixels of
Pillow's Lanczos resize, the plan the probe picked, and the peak memory of one image over the
decoded RGBA frame of the output.

Peak memory per image: before each run the child resets the kernel's peak-RSS mark (Linux:
``/proc/self/clear_refs`` ``5`` sets ``VmHWM`` to the RSS now) and reads ``VmHWM`` after it, so
the figure is what decoding, resizing and encoding one image added on top of the process. Where
the mark cannot be reset the column says ``n/a``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile

from PIL import Image

from prefect_cometapi.emulator.drawing import render_generation
from prefect_cometapi.upscaling.png import choose_png_plan

FACTOR = 2.5
GOAL_CPU = 4.0
GOAL_SIZE = 1.1
GOAL_PEAK = 3.0
NOISE_SIGMA = 10.0

_CHILD = r"""
import hashlib, io, json, sys, time
from PIL import Image
method, path = sys.argv[1], sys.argv[2]
width, height, repeat = (int(v) for v in sys.argv[3:6])
data = open(path, "rb").read()
from prefect_cometapi.models import GeneratedImage
from prefect_cometapi.upscaling import upscale
with Image.open(io.BytesIO(data)) as probe:
    sw, sh = probe.size
src = GeneratedImage(data=data, format="png", width=sw, height=sh,
                     sha256=hashlib.sha256(data).hexdigest(), model="gpt-image-2", prompt="bench")
def naive():
    img = Image.open(io.BytesIO(data))
    out = io.BytesIO()
    img.resize((width, height), Image.Resampling.LANCZOS).save(out, "PNG")
    return out.getvalue()
def floor():
    img = Image.open(io.BytesIO(data))
    img.resize((width, height), Image.Resampling.LANCZOS)
    return b""
def ours():
    return upscale(src, size=f"{width}x{height}", mode="stretch", output_format="png").data
def vm(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0
def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return vm("VmHWM") <= vm("VmRSS") + 1024 * 1024
run = {"naive": naive, "ours": ours, "floor": floor}[method]
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


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _sources() -> list[tuple[str, str, bytes]]:
    """``(kind, name, png bytes)`` of every source image."""
    prompt = "a product banner"
    out = [
        ("drawing", "emulator flat", render_generation(prompt, 0, 1, 1536, 864, light=True)),
        ("grain", "emulator default", render_generation(prompt, 0, 1, 1536, 864)),
    ]
    try:
        import numpy as np
        import skimage.data
    except ImportError:
        print("scikit-image is not installed (pip install -e '.[bench]'): photo and noisy skipped")
        return out
    names = ("astronaut", "coffee", "chelsea")
    photos = {n: Image.fromarray(getattr(skimage.data, n)()) for n in names}
    for name, img in photos.items():
        out.append(("photo", name, _png(img)))
    rng = np.random.default_rng(20261202)

    def noisy(img: Image.Image) -> bytes:
        pixels = np.asarray(img, dtype=np.float32)
        grain = rng.normal(0.0, NOISE_SIGMA, pixels.shape)
        return _png(Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8)))

    coffee = photos["coffee"].resize((1536, 864), Image.Resampling.LANCZOS)
    out.append(("noisy", "coffee 1536x864 + noise", noisy(coffee)))
    out.append(("noisy", "astronaut + noise", noisy(photos["astronaut"])))
    return out


def _measure(method: str, path: str, target: tuple[int, int], repeat: int) -> dict:
    args = [sys.executable, "-c", _CHILD, method, path, str(target[0]), str(target[1]), str(repeat)]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _case(tmp: str, index: int, data: bytes, repeat: int) -> dict:
    path = os.path.join(tmp, f"source{index}.png")
    with open(path, "wb") as fh:
        fh.write(data)
    with Image.open(path) as src:
        target = (int(src.width * FACTOR + 0.5), int(src.height * FACTOR + 0.5))
        expected = src.resize(target, Image.Resampling.LANCZOS)
    results = {m: _measure(m, path, target, repeat) for m in ("naive", "ours", "floor")}
    with Image.open(path + ".ours") as ours:
        equal = ours.size == target and ours.tobytes() == expected.convert(ours.mode).tobytes()
    plan, _ = choose_png_plan(expected)
    frame = target[0] * target[1] * 4
    naive, mine, floor = results["naive"], results["ours"], results["floor"]
    return {
        "target": target,
        "naive_s": naive["cpu_s"],
        "ours_s": mine["cpu_s"],
        "floor_s": floor["cpu_s"],
        "cpu_ratio": naive["cpu_s"] / mine["cpu_s"],
        "bound": naive["cpu_s"] / floor["cpu_s"],
        "size_ratio": mine["out_bytes"] / naive["out_bytes"],
        "naive_mb": naive["out_bytes"] / 1e6,
        "equal": equal,
        "plan": plan.name,
        "peak": None if mine["peak_bytes"] is None else mine["peak_bytes"] / frame,
        "naive_peak": None if naive["peak_bytes"] is None else naive["peak_bytes"] / frame,
    }


def _fmt_peak(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def main() -> None:
    """Measure and print the 4K path's figures per kind of content."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.machine()}; load avg {load}")  # fmt: skip
    print(f"upscale x{FACTOR} to PNG, mean of {args.repeat} runs per method after a warm-up")
    header = ("kind", "image", "out", "naive s", "ours s", "floor s", "CPU x", "bound x",
              "file x", "naive MB", "pixels", "peak/frame", "plan")  # fmt: skip
    row = "{:<8} {:<24} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>8} {:>6} {:>10} {}"
    print(row.format(*header))
    by_kind: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, name, data) in enumerate(_sources()):
            r = _case(tmp, i, data, args.repeat)
            by_kind.setdefault(kind, []).append(r)
            print(row.format(
                kind, name, "{}x{}".format(*r["target"]), f"{r['naive_s']:.3f}",
                f"{r['ours_s']:.3f}", f"{r['floor_s']:.3f}", f"{r['cpu_ratio']:.2f}",
                f"{r['bound']:.2f}", f"{r['size_ratio']:.3f}", f"{r['naive_mb']:.2f}",
                "equal" if r["equal"] else "DIFFER", _fmt_peak(r["peak"]), r["plan"],
            ))  # fmt: skip
    print()
    print(f"per kind (worst image): goals CPU >= {GOAL_CPU:g}x less than naive, file <= "
          f"{GOAL_SIZE:g}x naive, pixels equal, peak <= {GOAL_PEAK:g}x the RGBA frame")  # fmt: skip
    for kind, rows in by_kind.items():
        cpu = min(r["cpu_ratio"] for r in rows)
        bound = min(r["bound"] for r in rows)
        size = max(r["size_ratio"] for r in rows)
        equal = all(r["equal"] for r in rows)
        peaks = [r["peak"] for r in rows if r["peak"] is not None]
        peak = max(peaks) if peaks else None
        verdicts = [
            f"CPU {cpu:.2f}x ({'met' if cpu >= GOAL_CPU else 'NOT met'}; "
            f"the resize alone bounds it at {bound:.2f}x)",
            f"file {size:.3f}x ({'met' if size <= GOAL_SIZE else 'NOT met'})",
            f"pixels {'equal' if equal else 'DIFFER'}",
            f"peak {_fmt_peak(peak)}"
            + ("" if peak is None else f" ({'met' if peak <= GOAL_PEAK else 'NOT met'})"),
        ]
        print(f"  {kind:<8} " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
