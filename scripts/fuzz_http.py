#!/usr/bin/env python3
"""Bad-input fuzzing of the HTTP layer: random bodies, truncated and bit-flipped images, garbage
multipart, huge headers, odd paths and methods, with valid and invalid keys. Pass: the server stays
up, never answers 5xx other than 503 (overload), and every error is JSON with a code.

usage: scripts/fuzz_http.py [--requests 3000] [--seed 1]
"""
import argparse, http.client, json, os, random, subprocess, tempfile, time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FG = os.path.join(ROOT, "target", "release", "facegate")
IMG = open(os.path.join(ROOT, "..", "shared", "data", "people", "obama2.jpg"), "rb").read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    tmp = tempfile.mkdtemp()
    data = os.path.join(tmp, "data")
    run = lambda args: subprocess.run([FG, "--data-dir", data] + args, check=True, capture_output=True, text=True).stdout
    run(["gallery", "create", "g", "--purpose", "fuzz", "--legal-basis", "none", "--retention-days", "1", "--search-roles", "gate,operator,admin"])
    keys = [json.loads(run(["apikey", "create", "--role", r]))["key"] for r in ("gate", "enroller", "operator", "auditor", "admin")]
    cfg = os.path.join(tmp, "s.toml")
    open(cfg, "w").write("max_body_bytes = 2000000\ninference_slots = 2\nqueue_wait_ms = 5000\nrate_per_minute = 1000000\nrequest_timeout_s = 20\n")
    srv = subprocess.Popen([FG, "--data-dir", data, "serve", "--listen", "127.0.0.1:0", "--config", cfg], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    host, port = srv.stdout.readline().strip().rsplit("/", 1)[-1].split(":")
    time.sleep(0.5)
    paths = ["/v1/detect", "/v1/verify", "/v1/galleries", "/v1/galleries/g/identify", "/v1/galleries/g/subjects",
             "/v1/galleries/g/subjects/x", "/v1/galleries/g/policy", "/v1/audit", "/v1/audit/verify", "/metrics",
             "/v1/galleries/%00/identify", "/v1/galleries/" + "a" * 5000 + "/subjects", "/../../etc/passwd", "/v1/galleries/g/subjects/%ff%fe"]
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]

    def body():
        k = rnd.randrange(6)
        if k == 0:
            return bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 3000)))
        if k == 1:
            return IMG[: rnd.randrange(0, len(IMG))]
        if k == 2:
            b = bytearray(IMG)
            for _ in range(rnd.randrange(1, 50)):
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            return bytes(b)
        if k == 3:
            return b"--x\r\nContent-Disposition: form-data; name=\"probe\"\r\n\r\n" + IMG[:5000] + b"\r\n--x"
        if k == 4:
            return json.dumps({"purpose": "x" * rnd.randrange(100000), "retention_days": -1}).encode()
        return IMG

    counts, bad = {}, []
    for i in range(a.requests):
        p = rnd.choice(paths)
        right = {"/v1/detect": "POST", "/v1/verify": "POST", "/v1/galleries/g/identify": "POST", "/v1/galleries/g/subjects": "POST",
                 "/v1/galleries/g/policy": "PUT", "/v1/audit/verify": "POST", "/v1/galleries/g/subjects/x": rnd.choice(["GET", "DELETE"])}
        # Mostly the route's own method, so the handlers (not just the router) see the garbage.
        m = right.get(p, "GET") if rnd.random() < 0.75 else rnd.choice(methods)
        h = {}
        r = rnd.random()
        if r < 0.8:
            h["Authorization"] = "Bearer " + rnd.choice(keys + ["fg_x_y", "garbage", ""])
        if rnd.random() < 0.5:
            h["Content-Type"] = rnd.choice(["image/jpeg", "multipart/form-data; boundary=x", "application/json", "text/plain", "multipart/form-data"])
        if rnd.random() < 0.3:
            h["X-Purpose"] = rnd.choice(["fuzz", "", "\u00e9" * 10])
        if rnd.random() < 0.05:
            h["X-Huge"] = "h" * rnd.choice([10_000, 100_000])
        b = body() if m in ("POST", "PUT", "PATCH") else None
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=60)
            c.request(m, p, body=b, headers=h)
            resp = c.getresponse()
            payload = resp.read()
            st = resp.status
        except Exception as e:
            st, payload = f"exception {type(e).__name__}", b""
        counts[st] = counts.get(st, 0) + 1
        if isinstance(st, int) and st >= 400 and st != 431:
            try:
                assert json.loads(payload)["error"]["code"]
            except Exception:
                bad.append((m, p[:40], st, payload[:80]))
        if isinstance(st, int) and st >= 500 and st != 503:
            bad.append((m, p[:40], st, payload[:80]))
        if srv.poll() is not None:
            bad.append(("server exited", srv.returncode))
            break
    alive = srv.poll() is None
    srv.terminate()
    srv.wait(timeout=30)
    print(f"{a.requests} requests, statuses {dict(sorted(counts.items(), key=str))}; server alive at the end: {alive}; problems: {len(bad)}")
    for x in bad[:10]:
        print("  ", x)


if __name__ == "__main__":
    main()
