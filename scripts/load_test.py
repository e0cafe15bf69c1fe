#!/usr/bin/env python3
"""Load test of `facegate serve` from a second process on loopback, with the issue's mix:
verify 70% (two images), identify 25% (against a 10^5-template gallery), enrol 5%.

1. Builds a data directory: gallery `lt` with --gallery-size random templates (bulk enrolment) plus
   the benchmark face, API keys for a gate and an enroller.
2. Predicts the pipeline's throughput on the same cores from `facegate bench` (per-image cost of
   decode + full-pyramid detection + landmarks + chip + descriptor, one thread) and the mix
   (1.7 images per request on average).
3. Saturation: closed loop with 2x slots concurrent clients for --seconds: throughput, p50/p99, errors.
4. 80% of that throughput, open loop (Poisson arrivals): p50/p99.
5. With --soak SECONDS: the same 80% load for that long, server RSS sampled every 10 s.

usage: scripts/load_test.py [--seconds 60] [--gallery-size 100000] [--soak 600]
"""
import argparse, http.client, json, os, random, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FG = os.path.join(ROOT, "target", "release", "facegate")
IMG = os.path.join(ROOT, "..", "shared", "golden", "images", "bench_640x480.png")


def run(args, **kw):
    return subprocess.run([FG] + args, check=True, capture_output=True, text=True, **kw).stdout


def multipart(fields):
    boundary = "----facegate%016x" % random.getrandbits(64)
    out = b""
    for name, (value, is_file) in fields.items():
        out += f"--{boundary}\r\n".encode()
        if is_file:
            out += f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        else:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, host, port, keys, image):
        self.conn = http.client.HTTPConnection(host, port, timeout=120)
        self.keys, self.image = keys, image

    def request(self, kind):
        if kind == "verify":
            body, ct = multipart({"probe": (self.image, True), "reference": (self.image, True)})
            path, key, extra = "/v1/verify", self.keys["gate"], {}
        elif kind == "identify":
            body, ct = self.image, "image/png"
            path, key, extra = "/v1/galleries/lt/identify", self.keys["gate"], {"X-Purpose": "load test"}
        else:
            body, ct = multipart({"reference": ("LT%016x" % random.getrandbits(64), False), "image": (self.image, True)})
            path, key, extra = "/v1/galleries/lt/subjects", self.keys["enroller"], {}
        headers = {"Authorization": "Bearer " + key, "Content-Type": ct, **extra}
        t = time.perf_counter()
        self.conn.request("POST", path, body=body, headers=headers)
        r = self.conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - t


def pick():
    x = random.random()
    return "verify" if x < 0.70 else "identify" if x < 0.95 else "enrol"


def closed_loop(host, port, keys, image, clients, seconds):
    lat, errors, stop = [], [0], time.time() + seconds
    lock = threading.Lock()

    def worker():
        c = Client(host, port, keys, image)
        while time.time() < stop:
            st, dt = c.request(pick())
            with lock:
                if st in (200, 201):
                    lat.append(dt)
                else:
                    errors[0] += 1
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.time()
    [t.start() for t in ts]
    [t.join() for t in ts]
    return lat, errors[0], time.time() - t0


def open_loop(host, port, keys, image, rate, seconds, pool=8, on_tick=None):
    lat, errors = [], [0]
    lock = threading.Lock()
    sem = threading.Semaphore(pool)
    t0 = time.time()
    nxt = t0
    clients = [Client(host, port, keys, image) for _ in range(pool)]
    free = list(clients)
    threads = []

    def one(c, kind):
        try:
            st, dt = c.request(kind)
        except Exception:
            st, dt = 0, 0
        with lock:
            if st in (200, 201):
                lat.append(dt)
            else:
                errors[0] += 1
            free.append(c)
        sem.release()
    last_tick = t0
    while time.time() - t0 < seconds:
        nxt += random.expovariate(rate)
        time.sleep(max(0, nxt - time.time()))
        sem.acquire()
        with lock:
            c = free.pop()
        th = threading.Thread(target=one, args=(c, pick()))
        th.start()
        threads.append(th)
        if on_tick and time.time() - last_tick >= 10:
            on_tick(time.time() - t0)
            last_tick = time.time()
    [t.join() for t in threads]
    return lat, errors[0], time.time() - t0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100 * len(v)))] * 1e3 if v else float("nan")


def cpu_s(pid):
    """User + system CPU seconds of a process (from /proc; clock ticks)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--gallery-size", type=int, default=100_000)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--soak", type=int, default=0)
    a = ap.parse_args()
    image = open(IMG, "rb").read()
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    base = ["--data-dir", data]
    run(base + ["gallery", "create", "lt", "--purpose", "load test", "--legal-basis", "none (synthetic)", "--retention-days", "30"])
    rnd = random.Random(7)
    emb = os.path.join(tmp, "emb.jsonl")
    with open(emb, "w") as f:
        for i in range(a.gallery_size):
            f.write(json.dumps({"subject": f"R{i:08d}", "embedding": [rnd.uniform(-0.12, 0.12) for _ in range(128)]}) + "\n")
    run(base + ["--role", "enroller", "enrol", "--gallery", "lt", "--embeddings", emb, "--bulk"])
    keys = {r: json.loads(run(base + ["apikey", "create", "--role", r]))["key"] for r in ("gate", "enroller")}
    bench = json.loads(run(["bench", IMG, "--threads", "1", "--json", "--iters", "10"]))
    ms = bench["ms"]
    per_image = ms["decode"] + ms["detect_full_pyramid"] + ms["landmarks_5"] + ms["chip"] + ms["descriptor_single"]
    images_per_request = 0.70 * 2 + 0.25 + 0.05
    predicted = a.slots / (per_image * images_per_request / 1e3)
    cfg = os.path.join(tmp, "server.toml")
    open(cfg, "w").write(f"inference_slots = {a.slots}\nthreads = 1\nqueue_wait_ms = 60000\nrate_per_minute = 1000000\npreload = [\"lt\"]\n")
    srv = subprocess.Popen([FG] + base + ["serve", "--listen", "127.0.0.1:0", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = srv.stdout.readline().strip().rsplit("/", 1)[-1]
    host, port = addr.split(":")
    port = int(port)
    for _ in range(600):
        c = http.client.HTTPConnection(host, port)
        c.request("GET", "/readyz")
        if c.getresponse().status == 200:
            break
        time.sleep(0.1)
    print(f"machine: {bench['machine']['cpu']}, {bench['machine']['cores']} cores, {bench['machine'].get('vector', '?')}; server: {a.slots} inference slots, 1 thread per network; gallery {a.gallery_size + 0} templates")
    print(f"pipeline (facegate bench, 640x480, full pyramid, 1 thread): {per_image:.1f} ms/image -> predicted {predicted:.2f} req/s for the mix ({images_per_request} images/request)")
    closed_loop(host, port, keys, image, 2 * a.slots, 5)  # warm-up
    srv_cpu0, cli_cpu0 = cpu_s(srv.pid), sum(os.times()[:2])
    lat, err, dt = closed_loop(host, port, keys, image, 2 * a.slots, a.seconds)
    srv_cpu, cli_cpu = cpu_s(srv.pid) - srv_cpu0, sum(os.times()[:2]) - cli_cpu0
    peak = len(lat) / dt
    print(f"saturation ({2 * a.slots} clients, {a.seconds} s): {peak:.2f} req/s = {100 * peak / predicted:.1f}% of predicted; p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms, errors {err}")
    # Server overhead in CPU terms: what the server spent per request against what the pipeline
    # alone needs for the same mix; and how much of the two cores the load generator itself took.
    pipeline_cpu = per_image * images_per_request / 1e3
    served = len(lat) + err
    print(f"CPU: server {srv_cpu:.1f} s for {served} requests = {1e3 * srv_cpu / max(served, 1):.0f} ms/request against "
          f"{1e3 * pipeline_cpu:.0f} ms of pipeline work (server overhead {100 * (srv_cpu / max(served, 1) / pipeline_cpu - 1):+.1f}%); "
          f"load generator {cli_cpu:.1f} s ({100 * cli_cpu / (a.slots * dt):.1f}% of {a.slots} cores)")
    lat, err, dt = open_loop(host, port, keys, image, 0.8 * peak, a.seconds)
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(f"80% of peak ({0.8 * peak:.2f} req/s offered, open loop): {len(lat) / dt:.2f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms, p99/p50 {p99 / p50:.2f}, errors {err}")
    if a.soak:
        samples = [(0, rss_mb(srv.pid))]
        lat, err, dt = open_loop(host, port, keys, image, 0.8 * peak, a.soak, on_tick=lambda t: samples.append((t, rss_mb(srv.pid))))
        samples.append((dt, rss_mb(srv.pid)))
        print(f"soak {a.soak} s at {0.8 * peak:.2f} req/s: {len(lat)} requests, errors {err}, p50 {pct(lat, 50):.0f} ms, p99 {pct(lat, 99):.0f} ms; "
              f"server RSS {samples[0][1]:.0f} MB -> {samples[len(samples) // 2][1]:.0f} MB (middle) -> {samples[-1][1]:.0f} MB (end)")
    srv.terminate()
    srv.wait(timeout=60)


if __name__ == "__main__":
    main()
