#!/usr/bin/env python3
"""Soak test: `facegate watch` on an MJPEG camera that never stops, RSS sampled over time.

A local HTTP server streams JPEG frames (the given images, resized to the frame size, looped
without end) as multipart/x-mixed-replace at the given rate; `facegate watch http://...` reads it
with the given options; the watcher's resident memory is sampled every few seconds. Prints
frames decided, RSS per sample, and the growth between the first and the last quarter of the run.
A flat RSS is the claim under test ("a stream that never ends must run for hours at flat RSS").

usage: scripts/mjpeg_soak.py --seconds 600 [--fps 15] [--size 640x360] [--facegate target/release/facegate]
       [--images DIR] -- [watch options, e.g. --reference photo.png --detector hog]
"""
import argparse, glob, http.server, io, os, re, subprocess, sys, threading, time

from PIL import Image


def frames(paths, size):
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        im.thumbnail(size)
        canvas = Image.new("RGB", size, (40, 40, 40))
        canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
        b = io.BytesIO()
        canvas.save(b, "JPEG", quality=90)
        out.append(b.getvalue())
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--fps", type=float, default=15)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--every", type=float, default=5, help="seconds between RSS samples")
    ap.add_argument("--images", default=os.path.join(here, "..", "..", "shared", "data", "people"))
    ap.add_argument("--facegate", default=os.path.join(here, "..", "target", "release", "facegate"))
    ap.add_argument("watch_args", nargs="*")
    a = ap.parse_args()
    size = tuple(int(x) for x in a.size.split("x"))
    paths = sorted(p for p in glob.glob(os.path.join(a.images, "*")) if re.search(r"\.(jpe?g|png)$", p, re.I))
    jpegs = frames(paths, size)
    stop = threading.Event()
    sent = [0]

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=soakframe")
            self.end_headers()
            i = 0
            try:
                while not stop.is_set():
                    j = jpegs[(i // 30) % len(jpegs)]  # each image held for 30 frames: a passer-by
                    self.wfile.write(b"--soakframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j))
                    self.wfile.write(j + b"\r\n")
                    i += 1
                    sent[0] = i
                    time.sleep(1 / a.fps)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    cmd = [a.facegate, "watch", url] + a.watch_args
    print(f"camera: {len(jpegs)} images {a.size} looped at {a.fps} fps; watch: {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    decisions = [0]

    def count():
        for line in proc.stdout:
            if '"event":"decision"' in line.replace(" ", ""):
                decisions[0] += 1

    threading.Thread(target=count, daemon=True).start()
    samples = []
    start = time.time()
    while time.time() - start < a.seconds and proc.poll() is None:
        time.sleep(a.every)
        try:
            rss = next(int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            break
        samples.append((time.time() - start, sent[0], decisions[0], rss))
        print(f"t={samples[-1][0]:7.1f}s frames_sent={sent[0]:7d} decisions={decisions[0]:5d} rss={rss:7.1f} MiB", flush=True)
    stop.set()
    proc.terminate()
    proc.wait(timeout=10)
    server.shutdown()
    if len(samples) >= 8:
        q = len(samples) // 4
        first = sum(s[3] for s in samples[:q]) / q
        last = sum(s[3] for s in samples[-q:]) / q
        print(f"RSS first quarter {first:.1f} MiB, last quarter {last:.1f} MiB, growth {last - first:+.1f} MiB "
              f"over {samples[-1][0]:.0f} s, {samples[-1][1]} frames, {samples[-1][2]} decisions")


if __name__ == "__main__":
    main()
