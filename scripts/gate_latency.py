#!/usr/bin/env python3
"""How long a traveller waits at an e-gate: time from the camera's first frame to the server's
answer, for the two ways of sending a gate session (`POST /v1/gate/session`).

The "camera" takes --frames frames at --fps (one photo of a person, letterboxed to --size and
drifting a pixel a frame, so the tracker follows one face); the reference is another photo of the
same person. Each round, per mode:
- form: the gate waits until the camera has taken every frame, then sends them as one multipart
  form (the only way before camera streams were read as they arrive);
- stream: the gate forwards each frame as the camera takes it, as a chunked
  multipart/x-mixed-replace stream, and reads the answer whenever it comes.
The clock starts when the first frame is taken. Rounds alternate the modes. The server runs on
this machine with the given settings (default: its defaults, so gate_decide_early 0.9).
--every sends the session's detection interval (`every`, with `fps`), each value in turn in every
round: e.g. `--every 1 4 auto` compares detecting on every frame, every 4th, and as often as the
server keeps up, in one run.

usage: scripts/gate_latency.py [--rounds 5] [--frames 60] [--fps 30] [--every N|auto ...]
                               [--modes form stream] [--config 'key = value' ...]
"""
import argparse, io, json, os, random, socket, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PEOPLE = os.path.join(ROOT, "..", "shared", "data", "people")


def jpeg(im):
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90)
    return b.getvalue()


def camera_frames(path, size, n):
    im = Image.open(path).convert("RGB")
    im.thumbnail((size[0] * 3 // 4, size[1] * 3 // 4))
    out = []
    for i in range(n):
        canvas = Image.new("RGB", size, (60, 60, 60))
        canvas.paste(im, ((size[0] - im.width) // 2 - n // 2 + i, (size[1] - im.height) // 2))
        out.append(jpeg(canvas))
    return out


def read_answer(sock):
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed without an answer")
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
    status = int(head[9:12])
    length = next(int(l.split(b":")[1]) for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body[:length])


def settings(every, fps):
    """The session's `every` and `fps`, as (name, value) pairs; none for the server's own."""
    return [] if every is None else [("every", every), ("fps", f"{fps:g}")]


def form_session(addr, key, reference, frames, fps, every):
    boundary = "fg%016x" % random.getrandbits(64)
    t0 = time.perf_counter()
    # The camera takes its frames; the form can only go once it has all of them.
    time.sleep(len(frames) / fps)
    body = b""
    for name, data in [("reference", reference)] + [(f"frame{i:03}", f) for i, f in enumerate(frames)]:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    for name, value in settings(every, fps):
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    s = socket.create_connection(addr)
    s.sendall((f"POST /v1/gate/session HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
    status, v = read_answer(s)
    s.close()
    return time.perf_counter() - t0, status, v


def stream_session(addr, key, reference, frames, fps, every):
    s = socket.create_connection(addr)
    query = "&".join(f"{k}={v}" for k, v in settings(every, fps))
    s.sendall((f"POST /v1/gate/session{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
               "Content-Type: multipart/x-mixed-replace; boundary=camframe\r\nTransfer-Encoding: chunked\r\n\r\n").encode())
    answered = threading.Event()

    def part(data):
        chunk = b"--camframe\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n"
        s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")

    part(reference)
    t0 = time.perf_counter()

    def camera():
        try:
            for i, f in enumerate(frames):
                if answered.is_set():
                    return
                time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
                part(f)
            end = b"--camframe--\r\n"
            s.sendall(f"{len(end):x}\r\n".encode() + end + b"\r\n0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed

    sender = threading.Thread(target=camera)
    sender.start()
    status, v = read_answer(s)
    took = time.perf_counter() - t0
    answered.set()
    sender.join()
    s.close()
    return took, status, v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--every", nargs="+", default=[None], help="detection intervals to compare: N or auto")
    ap.add_argument("--modes", nargs="+", default=["form", "stream"], choices=["form", "stream"])
    ap.add_argument("--config", action="append", default=[], help="a server setting, e.g. 'gate_decide_early = 0'")
    ap.add_argument("--facegate", default=os.path.join(ROOT, "target", "release", "facegate"))
    a = ap.parse_args()
    size = tuple(int(x) for x in a.size.split("x"))
    reference = open(os.path.join(PEOPLE, "obama.jpg"), "rb").read()
    frames = camera_frames(os.path.join(PEOPLE, "obama2.jpg"), size, a.frames)
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "data")
        key = json.loads(subprocess.run([a.facegate, "--data-dir", data, "apikey", "create", "--role", "gate"],
                                        check=True, capture_output=True, text=True).stdout)["key"]
        cfg = os.path.join(d, "server.toml")
        open(cfg, "w").write("\n".join(a.config) + "\n")
        srv = subprocess.Popen([a.facegate, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--config", cfg],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = srv.stdout.readline().strip().removeprefix("listening on ")
            host, port = base.removeprefix("http://").split(":")
            for _ in range(200):
                try:
                    if urllib.request.urlopen(base + "/readyz").status == 200:
                        break
                except OSError:
                    time.sleep(0.05)
            print(f"machine: {describe()}; {time.strftime('%Y-%m-%d')}")
            print(f"server settings: {a.config or 'defaults'}; camera: {a.frames} frames of {a.size} at {a.fps} fps "
                  f"({a.frames / a.fps:.1f} s); clock from the first frame taken to the answer read")
            kinds = [(m, e) for e in a.every for m in a.modes]
            results = {k: [] for k in kinds}
            for r in range(a.rounds):
                for mode, every in (kinds if r % 2 == 0 else kinds[::-1]):
                    run = form_session if mode == "form" else stream_session
                    took, status, v = run((host, int(port)), key, reference, frames, a.fps, every)
                    if status != 200:
                        sys.exit(f"{mode} every {every}: {status} {v}")
                    results[(mode, every)].append((took, v))
                    print(f"round {r} {mode:6} every {every or 'server':6}: {took * 1000:7.0f} ms  match={v['match']} "
                          f"early={v['early']} frames={v['frames']} processed={v['frames_processed']} "
                          f"detections={v['detection_frames']} seen={v['frames_seen']} "
                          f"interval last={v['detect_every']['last']} largest={v['detect_every']['largest_used']}",
                          flush=True)
            for (mode, every), rs in results.items():
                t = sorted(x[0] * 1000 for x in rs)
                matched = sum(1 for x in rs if x[1]["match"])
                print(f"{mode:6} every {every or 'server':6}: median {statistics.median(t):.0f} ms "
                      f"(min {t[0]:.0f}, max {t[-1]:.0f}) over {len(t)} sessions, {matched} matched, "
                      f"detections median {statistics.median(x[1]['detection_frames'] for x in rs):.0f}")
        finally:
            srv.terminate()
            srv.wait(timeout=10)


if __name__ == "__main__":
    main()
