"""Corrupt an Aperio SVS's TIFF structure byte by byte and see who crashes: raw OpenSlide or the plugin.

Issue 17 asked that a slide whose header bytes are damaged fail with a named error, never take the
process down. Each mutant (a copy of the SVS with bytes zeroed, randomised or bit-flipped inside an
IFD, a tag's value array, or the first tile's data) is opened twice, each time in a child process:

* ``raw``: ``openslide.OpenSlide`` + ``read_region`` of the centre and ``get_thumbnail`` — what a
  plain OpenSlide tool does;
* ``ours``: ``napari_cellularity.io.open_slide`` + ``read_region`` + ``thumbnail`` — the plugin's path
  (tifffile structure check before OpenSlide sees the file).

A child killed by a signal (SIGSEGV, SIGABRT, ...) is a native crash. The plugin's bar: 0 native
crashes, and every refusal is one line naming the file. Run by hand; numbers go in issue notes::

    python benchmarks/fuzz_slide_headers.py --n 200 --json runs/fuzz_slide_headers.json

(the slide defaults to ``../shared/data/wsi/CMU-1-Small-Region.svs``; mutants live in a temporary
folder and are deleted.)
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

DEFAULT_SLIDE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
CHILD_TIMEOUT_S = 60

RAW = ("import sys, openslide\n"
       "s = openslide.OpenSlide(sys.argv[1])\n"
       "w, h = s.dimensions\n"
       "s.read_region((w // 2, h // 2), 0, (256, 256))\n"
       "s.get_thumbnail((256, 256))\n")
OURS = ("import sys\n"
        "from napari_cellularity.io import SlideError, open_slide\n"
        "try:\n"
        "    s = open_slide(sys.argv[1])\n"
        "    w, h = s.info.level_dimensions[0]\n"
        "    s.read_region((h // 2, w // 2), (256, 256))\n"
        "    s.thumbnail(256)\n"
        "except SlideError as exc:\n"
        "    msg = str(exc)\n"
        "    print('REFUSED', msg.splitlines()[0] if msg else '', '| named' if sys.argv[1] in msg else '| unnamed')\n"
        "    sys.exit(3)\n")


def targets(path: Path) -> list[tuple[str, int, int]]:
    """(what, offset, length) byte ranges of the TIFF structure worth damaging."""
    import tifffile

    out: list[tuple[str, int, int]] = []
    with tifffile.TiffFile(path) as tif:
        for i, page in enumerate(tif.pages):
            n_tags = len(page.tags)
            out.append((f"ifd{i}", page.offset, 2 + 12 * n_tags + 4))
            for tag in page.tags.values():
                if tag.valuebytecount > 4:
                    out.append((f"ifd{i}:{tag.name}", tag.valueoffset, tag.valuebytecount))
            if page.dataoffsets:
                out.append((f"data{i}", int(page.dataoffsets[0]), int(min(page.databytecounts[0], 4096))))
    return out


def mutate(data: bytearray, rng: np.random.Generator, spans: list[tuple[str, int, int]]) -> str:
    what, off, length = spans[rng.integers(len(spans))]
    start = off + int(rng.integers(max(1, length)))
    run = int(rng.integers(1, 33))
    end = min(len(data), start + run)
    mode = ("zero", "random", "bitflip")[rng.integers(3)]
    if mode == "zero":
        data[start:end] = bytes(end - start)
    elif mode == "random":
        data[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    else:
        for k in range(start, end):
            data[k] ^= 1 << int(rng.integers(8))
    return f"{mode} {what} +{start - off} x{end - start}"


def run_child(code: str, path: Path) -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "hang"
    if proc.returncode < 0:
        return f"crash:{signal.Signals(-proc.returncode).name}"
    if proc.returncode == 0:
        return "ok"
    if proc.returncode == 3:
        return "refused-named" if "| named" in proc.stdout else "refused-unnamed"
    return "python-error"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.slide.is_file():
        print(f"{args.slide}: slide not found (pass --slide)", file=sys.stderr)
        return 2
    original = bytearray(args.slide.read_bytes())
    spans = targets(args.slide)
    rng = np.random.default_rng(args.seed)
    rows, raw_n, ours_n = [], Counter(), Counter()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="nc-fuzz-svs-") as tmp:
        for i in range(args.n):
            data = bytearray(original)
            what = mutate(data, rng, spans)
            mutant = Path(tmp) / f"mutant_{i:04d}.svs"
            mutant.write_bytes(data)
            raw, ours = run_child(RAW, mutant), run_child(OURS, mutant)
            raw_n[raw] += 1
            ours_n[ours] += 1
            rows.append({"i": i, "mutation": what, "raw": raw, "ours": ours})
            if ours.startswith(("crash", "hang")) or raw.startswith("crash"):
                print(f"{i:4d} {what:40s} raw={raw:20s} ours={ours}", flush=True)
            mutant.unlink()
    result = {"slide": str(args.slide), "n": args.n, "seed": args.seed, "elapsed_s": round(time.time() - t0, 1),
              "raw": dict(raw_n), "ours": dict(ours_n), "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    crashes = sum(v for k, v in ours_n.items() if k.startswith(("crash", "hang")))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
