#!/usr/bin/env python3
"""Soak test: `facegate watch` on a camera that never stops, RSS sampled over time.

Two cameras, both local and endless:
  mjpeg  an HTTP server streams JPEG frames (the given images, letterboxed to the frame size, each
         held for 30 frames, looped) as multipart/x-mixed-replace at the given rate;
  rtsp   the test camera of the video tests (crates/video/examples/rtsp_camera.rs) serves an
         H.264 MP4 over RTSP (RTP interleaved on the connection), looped at the file's frame rate;
         by default a generated scene (`facegate eval video --export-mp4`: people from the LFW
         development split walking past, 640x480, 30 fps), so tracks start, end and are decided
         all the time.
`facegate watch URL` reads it with the given options; the watcher's resident memory is sampled
every few seconds. Prints frames sent, decisions and RSS per sample, and the growth between the
first and the last quarter of the run. A flat RSS is the claim under test ("a stream that never
ends must run for hours at flat RSS").

usage: scripts/soak.py --seconds 600 [--camera mjpeg|rtsp] [--facegate target/release/facegate]
       [mjpeg: --fps 15 --size 640x360 --images DIR] [rtsp: --video FILE.mp4 --rtsp-camera PATH]
       -- [watch options, e.g. --reference photo.png --detector hog]
The RTSP camera is built with `cargo build --release -p facegate-video --example rtsp_camera`.
"""
import argparse, glob, http.server, io, json, os, re, subprocess, sys, tempfile, threading, time

from machine import describe


def frames(paths, size):
    from PIL import Image
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


class MjpegCamera:
    def __init__(self, a):
        size = tuple(int(x) for x in a.size.split("x"))
        paths = sorted(p for p in glob.glob(os.path.join(a.images, "*")) if re.search(r"\.(jpe?g|png)$", p, re.I))
        jpegs = frames(paths, size)
        self.stop = threading.Event()
        self.sent = 0
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=soakframe")
                self.end_headers()
                i = 0
                try:
                    while not camera.stop.is_set():
                        j = jpegs[(i // 30) % len(jpegs)]  # each image held for 30 frames: a passer-by
                        self.wfile.write(b"--soakframe\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j))
                        self.wfile.write(j + b"\r\n")
                        i += 1
                        camera.sent = i
                        time.sleep(1 / a.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.what = f"MJPEG, {len(jpegs)} images {a.size} looped at {a.fps} fps"

    def close(self):
        self.stop.set()
        self.server.shutdown()


class RtspCamera:
    def __init__(self, a, tmp):
        if not os.path.exists(a.rtsp_camera):
            sys.exit(f"no RTSP camera at {a.rtsp_camera}: cargo build --release -p facegate-video --example rtsp_camera")
        video = a.video
        if video is None:
            out = os.path.join(tmp, "scene")
            subprocess.run([a.facegate, "eval", "video", "--images", a.lfw, "--people", "30", "--frames", "900",
                            "--size", "640x480", "--export-mp4", out], check=True, capture_output=True)
            video = os.path.join(out, "scene0.mp4")
        self.proc = subprocess.Popen([a.rtsp_camera, video], stdout=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline().split()
        if first[:1] != ["url"]:
            sys.exit(f"the RTSP camera did not start: {first}")
        self.url = first[1]
        self.sent = 0

        def count():
            for line in self.proc.stdout:
                if line.startswith("units_sent "):
                    self.sent = int(line.split()[1])

        threading.Thread(target=count, daemon=True).start()
        self.what = f"RTSP (H.264, RTP interleaved), {os.path.basename(video) if a.video else 'a generated 640x480 scene of 900 frames'} looped at its frame rate"

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    shared = os.path.join(here, "..", "..", "shared", "data")
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--camera", choices=["mjpeg", "rtsp"], default="mjpeg")
    ap.add_argument("--fps", type=float, default=15, help="mjpeg: frames per second")
    ap.add_argument("--size", default="640x360", help="mjpeg: frame size")
    ap.add_argument("--every", type=float, default=5, help="seconds between RSS samples")
    ap.add_argument("--images", default=os.path.join(shared, "people"), help="mjpeg: the images it shows")
    ap.add_argument("--video", help="rtsp: the MP4 it loops (default: a generated scene)")
    ap.add_argument("--lfw", default=os.path.join(shared, "lfw-dev", "images"), help="rtsp: images for the generated scene")
    ap.add_argument("--rtsp-camera", default=os.path.join(here, "..", "target", "release", "examples", "rtsp_camera"))
    ap.add_argument("--facegate", default=os.path.join(here, "..", "target", "release", "facegate"))
    ap.add_argument("watch_args", nargs="*")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        camera = MjpegCamera(a) if a.camera == "mjpeg" else RtspCamera(a, tmp)
        run(a, camera)


def run(a, camera):
    cmd = [a.facegate, "watch", camera.url] + a.watch_args
    print(f"machine: {describe()}; {time.strftime('%Y-%m-%d')}")
    print(f"camera: {camera.what}; watch: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    decisions = [0]
    summary = [None]

    def count():
        for line in proc.stdout:
            if '"event":"decision"' in line.replace(" ", ""):
                decisions[0] += 1
            elif '"event":"summary"' in line.replace(" ", ""):
                summary[0] = json.loads(line)

    threading.Thread(target=count, daemon=True).start()
    samples = []
    start = time.time()
    while time.time() - start < a.seconds and proc.poll() is None:
        time.sleep(a.every)
        try:
            rss = next(int(l.split()[1]) for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration):
            break
        samples.append((time.time() - start, camera.sent, decisions[0], rss))
        print(f"t={samples[-1][0]:7.1f}s frames_sent={camera.sent:7d} decisions={decisions[0]:5d} rss={rss:7.1f} MiB", flush=True)
    ended = proc.poll()
    if ended is not None:
        print(f"watch ended by itself with status {ended} after {time.time() - start:.0f} s", flush=True)
    # The camera stops first, so the stream ends and watch prints its summary (frames read,
    # units dropped while it was behind).
    camera.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
    time.sleep(0.5)
    if summary[0]:
        s = summary[0]
        print(f"watch: {s['frames']} frames read in {s['seconds']:.0f} s ({s['frames_per_second']:.2f} fps), "
              f"{s['dropped_units']} units dropped, {s['decisions']} decisions, {s['tracks']} tracks; "
              f"source: {s['source_error'] or 'ended'}")
        auto = s.get("detect_every_auto")
        print(f"detection on {s.get('detection_frames')} frames; interval at the end {s.get('detect_every')}"
              + (f", auto: largest {auto['largest_used']} of max {auto['max']}, {auto['changes']} changes" if auto else ""))
    if len(samples) >= 8:
        q = len(samples) // 4
        first = sum(s[3] for s in samples[:q]) / q
        last = sum(s[3] for s in samples[-q:]) / q
        print(f"RSS first quarter {first:.1f} MiB, last quarter {last:.1f} MiB, growth {last - first:+.1f} MiB "
              f"over {samples[-1][0]:.0f} s, {samples[-1][1]} frames, {samples[-1][2]} decisions")


if __name__ == "__main__":
    main()
