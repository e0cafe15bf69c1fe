#!/usr/bin/env python3
"""The JPEG 2000 decoder's memory, measured: what the estimate behind MAX_JPEG2000_DECODE_BYTES
(crates/vision/src/decode/jpeg2000.rs) was fitted to, and what the budget admits and refuses.

  cargo build --release -p facegate-vision --example decode_peak
  scripts/jpeg2000_memory.py [--decoder target/release/examples/decode_peak] [--quick]

Writes OpenJPEG encodings through Pillow (0.5–11 MP; 1, 3 and 4 components; lossless, lossy,
three layers, 512-pixel tiles, 16 to 64-pixel code-blocks; 4x4-pixel code-blocks) and the
hand-built bombs of scripts/hostile_inputs.py (one bit-plane at 36–39.7 MP, 2x2-pixel precincts)
into a temporary directory (~0.7 GB; `--quick`: the 0.5 and 2 MP sizes only), decodes each in a
process of its own that does nothing else, and prints its peak RSS and time, decoded or refused.
Needs `pip install pillow numpy`.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_inputs  # noqa: E402
import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = {1: "L", 3: "RGB", 4: "RGBA"}
SETTINGS = {
    "lossless": {},
    "lossy": {"irreversible": True, "quality_mode": "rates", "quality_layers": [20]},
    "tiled": {"tile_size": (512, 512)},
    "cb32-3layers": {"codeblock_size": (32, 32), "quality_mode": "rates", "quality_layers": [40, 20, 10]},
    "cb16": {"codeblock_size": (16, 16)},
}


def photo(w, h, c, rng):
    """A smooth gradient with noise: enough entropy that the coder writes every bit-plane."""
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    a = 128 + 100 * np.sin(6 * x + 3 * y + np.arange(c, dtype=np.float32)[None, None, :])
    a = (a + rng.normal(0, 20, (h, w, c)).astype(np.float32)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(a if c > 1 else a[:, :, 0], MODES[c])


def one_bit_plane(path, side, comps):
    """hostile_inputs.jp2_pass_bomb with one bit-plane: cheap to decode, full-size buffers."""
    hostile_inputs.jp2_pass_bomb(path, side, side, comps=comps, passes=1)
    b = bytearray(path.read_bytes())
    qcd = b.find(b"\xff\x5c")
    b[qcd + 5] = 0  # guard bits 2 + exponent 0 - 1: one bit-plane
    path.write_bytes(bytes(b))


def inputs(d, quick):
    rng = np.random.default_rng(2)
    sizes = [(800, 600), (2000, 1500)] if quick else [(800, 600), (2000, 1500), (3000, 2000), (3840, 2160), (4000, 2750)]
    for w, h in sizes:
        for c in MODES:
            for name, kw in SETTINGS.items():
                p = d / f"{w}x{h}_{c}c_{name}.jp2"
                photo(w, h, c, rng).save(p, **kw)
                yield p, f"OpenJPEG {name}"
    for (w, h, c) in [(1000, 1000, 4), (2000, 2000, 3)] + ([] if quick else [(3650, 2740, 3)]):
        p = d / f"{w}x{h}_{c}c_cb4.jp2"
        photo(w, h, c, rng).save(p, codeblock_size=(4, 4))
        yield p, "OpenJPEG 4x4-pixel code-blocks"
    for side, comps in [(6000, 1), (6000, 4), (6300, 4)]:
        p = d / f"one_bit_plane_{side}_{comps}c.j2k"
        one_bit_plane(p, side, comps)
        yield p, "hand-built, one bit-plane"
    layers = bytearray((ROOT / "crates/vision/tests/fixtures/jp2_layer_bomb.j2k").read_bytes())
    cod = layers.find(b"\xff\x52")
    layers[cod + 7] = 1
    p = d / "precincts_2x2_1000_1layer.j2k"
    p.write_bytes(bytes(layers))
    yield p, "hand-built, 2x2-pixel precincts"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decoder", default=str(ROOT / "target/release/examples/decode_peak"))
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if not Path(a.decoder).exists():
        sys.exit(f"{a.decoder} missing: cargo build --release -p facegate-vision --example decode_peak")
    print(f"machine: {machine.cpu_model()}, {os.cpu_count()} cores; one decode per process; "
          f"peak RSS from /usr/bin/time")
    print(f"{'file':<40} {'kind':<32} {'MP':>5} {'comp':>4} {'file MB':>8} {'peak MiB':>9} {'s':>6}  outcome")
    with tempfile.TemporaryDirectory() as d:
        for path, kind in inputs(Path(d), a.quick):
            started = time.monotonic()
            r = subprocess.run(["/usr/bin/time", "-f", "%M", a.decoder, str(path)], capture_output=True, text=True)
            secs = time.monotonic() - started
            peak_kib = int(r.stderr.strip().splitlines()[-1])
            line = r.stdout.strip().split("\t")
            outcome = line[1] if len(line) > 1 else "?"
            if outcome == "refused":
                m = re.search(r"(about \d+ MiB of memory|up to \d+ [a-z -]+) \(limit", line[2])
                outcome += ": " + (m.group(1) if m else line[2][:60])
            siz = path.read_bytes()
            at = siz.find(b"\xff\x4f\xff\x51") + 2
            w, h = (int.from_bytes(siz[at + o:at + o + 4], "big") for o in (6, 10))
            comps = int.from_bytes(siz[at + 38:at + 40], "big")
            print(f"{path.name:<40} {kind:<32} {w * h / 1e6:>5.1f} {comps:>4} {len(siz) / 1e6:>8.2f} "
                  f"{peak_kib / 1024:>9.0f} {secs:>6.2f}  {outcome}")


if __name__ == "__main__":
    main()
