#!/usr/bin/env python3
"""Live capture against the real-time targets: `facegate watch` end to end on generated H.264
streams, per stage, at the two sizes the targets name.

  e-gate: 640x480, 30 fps, one core  (taskset to CPU 0, --threads 1)
  CCTV:   1280x720, 30 fps, two cores (taskset to CPUs 0-1, --threads 2)

Each stream is a generated scene (`facegate eval video --export-mp4`: people from the LFW
development split walking, approaching, crossing and occluding each other; faces 130-210 px)
written as an H.264 MP4 by openh264. `watch` reads the file as fast as it can, so its frames per
second is throughput: real time is >= 30. Detection on every frame and on every 2nd / 3rd / 4th frame
(the tracker steps on those frames), with the default MMOD detector, with MMOD limited to faces of
100-400 px (a camera set up for its geometry: an e-gate, or a watchlist camera placed so faces are
at least 100 px) and with HOG.

No peer runs this pipeline (decode + detect + track + quality + embed the best frames, one decision
per passer-by); the still-image stages are compared with dlib/face_recognition by
scripts/bench_face_recognition.py.

usage: scripts/bench_live.py [--frames 600] [--facegate target/release/facegate]
       [--images ../shared/data/lfw-dev/images] [--reference ../shared/data/people/lin-manuel-miranda.png]
       [--streams e-gate,cctv] [--every 1,2,3,4] [--detectors mmod,mmod-100-400,hog]
"""
import argparse, json, os, subprocess, sys, tempfile, time

from machine import describe

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--facegate", default=os.path.join(HERE, "..", "target", "release", "facegate"))
    ap.add_argument("--images", default=os.path.join(SHARED, "data", "lfw-dev", "images"))
    ap.add_argument("--reference", default=os.path.join(SHARED, "data", "people", "lin-manuel-miranda.png"))
    ap.add_argument("--every", default="1,2,3,4")
    ap.add_argument("--streams", default="e-gate,cctv", help="which of the two streams to run")
    ap.add_argument("--detectors", default="mmod,mmod-100-400,hog",
                    help="mmod (the pack's detector, every face size it finds), mmod-100-400 (faces of 100-400 px "
                         "only, as a camera set up for its geometry is), hog")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {describe()}; {time.strftime('%Y-%m-%d')}")
    print("method: facegate watch FILE --reference IMAGE, pinned with taskset; frames per second over the whole file "
          "(decode included), stage times from watch's summary (ms per frame); real time = 30 fps")
    configs = [("e-gate", (640, 480), "0", 1), ("CCTV", (1280, 720), "0-1" if cores > 1 else "0", 2)]
    wanted = [s.strip().lower() for s in a.streams.split(",")]
    configs = [c for c in configs if c[0].lower() in wanted]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (w, h), cpus, threads in configs:
            out = os.path.join(tmp, f"{w}x{h}")
            run([a.facegate, "eval", "video", "--images", a.images, "--people", "30", "--frames", str(a.frames),
                 "--size", f"{w}x{h}", "--export-mp4", out])
            video = os.path.join(out, "scene0.mp4")
            for detector in a.detectors.split(","):
                for every in a.every.split(","):
                    cmd = ["taskset", "-c", cpus, a.facegate, "watch", video, "--reference", a.reference,
                           "--every", every, "--threads", str(threads)]
                    if detector == "hog":
                        cmd += ["--detector", "hog"]
                    if detector == "mmod-100-400":
                        cmd += ["--min-face", "100", "--max-face", "400"]
                    lines = [json.loads(l) for l in run(cmd).splitlines() if l.strip()]
                    s = lines[-1]
                    st = s["stage_ms_per_frame"]
                    rows.append((name, f"{w}x{h}", threads, detector, int(every), s["frames"], s["frames_per_second"], st,
                                 s["decisions"]))
                    print(json.dumps({"stream": name, "size": f"{w}x{h}", "threads": threads, "detector": detector,
                                      "detect_every": int(every), "frames": s["frames"],
                                      "frames_per_second": round(s["frames_per_second"], 1),
                                      "stage_ms_per_frame": {k: round(v, 2) for k, v in st.items()},
                                      "decisions": s["decisions"]}), flush=True)
    print()
    print("| stream | threads | detector | detect every | fps | x real time | decode | detect | track+appearance | collect | decide | ms/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, size, threads, detector, every, frames, fps, st, decisions in rows:
        total = sum(st.values())
        print(f"| {name} {size} | {threads} | {detector} | {every} | {fps:.1f} | {fps / 30:.2f} | {st['decode']:.2f} | "
              f"{st['detect']:.2f} | {st['track'] + st['appearance']:.2f} | {st['collect']:.2f} | {st['decide']:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
