"""What validating one upload costs the web process: CPU seconds and peak memory, new path vs old.

    python benchmarks/bench_upload_cost.py [--repeats 5]

Cases: a 6400 × 6250 PNG (40 MP, the old cap; refused by the uploads' 16 MP cap from its header)
and a 12 MP phone JPEG (accepted). "header" is the shop's form today (SearchForm: read_header);
"decode" is what the form did before (open_image: every pixel decoded in the web process).
Each measurement runs in a fresh process; peak memory is VmHWM after resetting it
(/proc/self/clear_refs), so it counts what the validation itself allocated.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_cases(folder: Path) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    png = folder / "bomb-40mp.png"
    # Mostly flat, like the 131 KB file of the report: tiny on disk, 40 MP when decoded.
    canvas = np.full((6250, 6400, 3), 235, dtype=np.uint8)
    canvas[::97, :, :] = 40
    Image.fromarray(canvas).save(png, optimize=True)
    jpeg = folder / "phone-12mp.jpg"
    # A photo-like 4000 × 3000 JPEG: smooth gradients with noise, quality 90 (a few MB, as phones write).
    y, x = np.mgrid[0:3000, 0:4000]
    base = np.stack([(x / 16) % 256, (y / 12) % 256, ((x + y) / 28) % 256], axis=-1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(jpeg, quality=90)
    return {"png-6400x6250": png, "jpeg-12mp": jpeg}


def measure(path: str, mode: str) -> dict:
    """Run in a child process: validate once, report CPU seconds and peak-RSS growth."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import time

    import django

    django.setup()
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile

    from shop.forms import SearchForm
    from similarity.images import ImageError, open_image

    data = Path(path).read_bytes()
    # Warm up Pillow's plugins on a tiny image so their import is not counted.
    warm = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(warm, "PNG")
    SearchForm({}, {"image": SimpleUploadedFile("w.png", warm.getvalue())}).is_valid()
    upload = SimpleUploadedFile(Path(path).name, data)

    def rss(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = rss("VmRSS:")
    started = time.process_time()
    if mode == "header":
        form = SearchForm({}, {"image": upload})
        accepted = form.is_valid()
        outcome = "accepted" if accepted else "refused: " + "; ".join(form.errors.get("image", []))
    else:
        try:
            open_image(upload, max_pixels=40_000_000, max_bytes=settings.UPLOAD_MAX_BYTES)
            outcome = "accepted"
        except ImageError as error:
            outcome = f"refused: {error}"
    cpu = time.process_time() - started
    peak = rss("VmHWM:") - before
    return {"cpu_s": cpu, "peak_mb": peak / 1e6, "outcome": outcome, "bytes": len(data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    with tempfile.TemporaryDirectory() as folder:
        cases = make_cases(Path(folder))
        env = {**os.environ, "TEST_RUN_DIR": folder, "PYTHONPATH": str(REPO)}
        print(f"{'case':<16}{'path':<8}{'size':>9}{'cpu s (median)':>16}{'peak MB (median)':>18}  outcome")
        for name, path in cases.items():
            for mode in ("header", "decode"):
                runs = []
                for _ in range(args.repeats):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(path), mode],
                        cwd=REPO,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                cpu = statistics.median(r["cpu_s"] for r in runs)
                peak = statistics.median(r["peak_mb"] for r in runs)
                print(
                    f"{name:<16}{mode:<8}{runs[0]['bytes'] / 1e6:>7.2f}MB{cpu:>16.4f}{peak:>18.1f}  "
                    f"{runs[0]['outcome'][:70]}"
                )


if __name__ == "__main__":
    main()
