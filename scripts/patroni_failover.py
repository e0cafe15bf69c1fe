#!/usr/bin/env python3
"""Failover drill for facegate on PostgreSQL under Patroni and etcd (#17).

Runs docs/postgres.md's Patroni configuration for real on this machine: one etcd member, two
PostgreSQL 15 hosts managed by Patroni (synchronous replication, TLS with hostssl rules, scram
passwords), two facegate "nodes" (two data directories, one master key) enrolling and erasing
through the multi-host URL with target_session_attrs=read-write and verified TLS. Then the
primary's host is lost (Patroni and PostgreSQL of that host killed with SIGKILL, as a power
cut would), Patroni promotes the standby once the leader key expires, the nodes carry on by
themselves, and the lost host is started again and rejoins as a standby (pg_rewind).

Checked afterwards, from both nodes and a node started afterwards: every acknowledged enrolment
present, every acknowledged erasure absent, the subject count within what the unacknowledged
attempts allow, the audit chain verifies. Printed: the writes' unavailability window, Patroni's
promotion time, the counts.

Needs (Debian): postgresql-15, patroni, etcd-server, openssl; run as root (PostgreSQL and Patroni
run as the postgres user). Not part of CI: a drill takes about two minutes, most of it the
leader key's TTL.

    scripts/patroni_failover.py --facegate target/release/facegate
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

ETCD = ("127.0.0.1", 23790, 23800)
HOSTS = {"db1": (55441, 8009), "db2": (55442, 8010)}
SUPERUSER_PW = "drill-superuser"
REPLICATOR_PW = "drill-replicator"
FACEGATE_PW = "drill-facegate"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd


def certificates(work):
    """A CA and a server certificate for 127.0.0.1, as a deployment's database CA would issue."""
    d = os.path.join(work, "tls")
    os.makedirs(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh(["openssl", "req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
        "-days", "2", "-subj", "/CN=facegate drill database CA"])
    sh(["openssl", "req", *ec, "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr",
        "-subj", "/CN=localhost"])
    ext = f"{d}/ext"
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    sh(["openssl", "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey",
        f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/server.pem", "-days", "2",
        "-extfile", ext])
    shutil.chown(f"{d}/server.key", "postgres")
    shutil.chown(f"{d}/server.pem", "postgres")
    os.chmod(f"{d}/server.key", 0o600)
    return d


def patroni_config(work, name, tls, bin_dir):
    """docs/postgres.md's configuration with this machine's addresses."""
    pg_port, rest_port = HOSTS[name]
    return f"""scope: facegate
name: {name}
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
etcd3:
  hosts: {ETCD[0]}:{ETCD[1]}
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 0
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        synchronous_commit: "on"
        wal_level: replica
        max_wal_senders: 10
  initdb: [{{encoding: UTF8}}, data-checksums]
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {work}/{name}/data
  bin_dir: {bin_dir}
  pgpass: {work}/{name}/pgpass
  parameters:
    ssl: "on"
    ssl_cert_file: {tls}/server.pem
    ssl_key_file: {tls}/server.key
    unix_socket_directories: {work}/{name}
  authentication:
    superuser: {{username: postgres, password: {SUPERUSER_PW}}}
    replication: {{username: replicator, password: {REPLICATOR_PW}}}
    rewind: {{username: postgres, password: {SUPERUSER_PW}}}
  pg_hba:
    - hostssl replication replicator 127.0.0.1/32 scram-sha-256
    - hostssl all all 127.0.0.1/32 scram-sha-256
"""


class Drill:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.procs = {}
        self.lock = threading.Lock()
        self.events = []  # (time, node, op, subject, ok)
        self.stop = threading.Event()

    def spawn(self, name, cmd, log):
        self.procs[name] = subprocess.Popen(
            cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)

    def cluster(self):
        for _, rest in HOSTS.values():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest}/cluster", timeout=2) as r:
                    return json.load(r)
            except OSError:
                continue
        return {"members": []}

    def roles(self):
        return {m["name"]: (m["role"], m.get("state")) for m in self.cluster().get("members", [])}

    def wait_for(self, what, test, limit=120):
        t = time.time()
        while time.time() - t < limit:
            r = self.roles()
            if test(r):
                return time.time() - t
            time.sleep(0.5)
        raise SystemExit(f"timed out waiting for {what}: {self.roles()}")

    def facegate(self, node, args, check=True):
        cmd = [self.a.facegate, "--data-dir", f"{self.work}/{node}", "--master-key",
               f"{self.work}/master.key", "--store", self.url] + args
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"{' '.join(args)}: {r.stderr}")
        return r

    def load(self, node, seed):
        rng = random.Random(seed)
        mine = []
        k = 0
        while not self.stop.is_set():
            k += 1
            if k % 4 == 0 and mine:
                s = mine.pop(rng.randrange(len(mine)))
                r = self.facegate(node, ["--role", "admin", "delete", "--gallery", "rt",
                                         "--subject", s, "--reason", "drill"], check=False)
                with self.lock:
                    self.events.append((time.time(), node, "delete", s, r.returncode == 0))
                continue
            s = f"{node.upper()}-{k:05d}"
            path = f"{self.work}/{node}.jsonl"
            with open(path, "w") as f:
                v = [rng.uniform(-0.1, 0.1) for _ in range(128)]
                f.write(json.dumps({"subject": s, "embedding": v}) + "\n")
            r = self.facegate(node, ["--role", "enroller", "enrol", "--gallery", "rt",
                                     "--embeddings", path], check=False)
            ok = r.returncode == 0 and s in r.stdout
            with self.lock:
                self.events.append((time.time(), node, "enrol", s, ok))
            if ok:
                mine.append(s)
            else:
                time.sleep(0.2)

    def run(self):
        a = self.a
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        shutil.chown(self.work, "postgres")
        bin_dir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        tls = certificates(self.work)
        print(f"etcd {sh(['etcd', '--version']).stdout.splitlines()[0]}; "
              f"{sh(['patroni', '--version']).stdout.strip()}; "
              f"PostgreSQL {sh([bin_dir + '/postgres', '--version']).stdout.split()[2]}")
        host, client, peer = ETCD
        self.spawn("etcd", ["etcd", "--name", "e1", "--data-dir", f"{self.work}/etcd",
                            "--listen-client-urls", f"http://{host}:{client}",
                            "--advertise-client-urls", f"http://{host}:{client}",
                            "--listen-peer-urls", f"http://{host}:{peer}",
                            "--initial-advertise-peer-urls", f"http://{host}:{peer}",
                            "--initial-cluster", f"e1=http://{host}:{peer}"],
                   f"{self.work}/etcd.log")
        time.sleep(2)
        for name in HOSTS:
            d = f"{self.work}/{name}"
            os.makedirs(d)
            shutil.chown(d, "postgres")
            os.chmod(d, 0o700)
            with open(f"{d}/patroni.yml", "w") as f:
                f.write(patroni_config(self.work, name, tls, bin_dir))
        self.start_patroni("db1")
        self.wait_for("db1 to lead", lambda r: r.get("db1", ("",))[0] == "leader")
        self.start_patroni("db2")
        t = self.wait_for("a synchronous standby",
                          lambda r: sorted(x[0] for x in r.values()) == ["leader", "sync_standby"])
        print(f"cluster up: {self.roles()} (standby synchronous after {t:.1f} s)")
        leader = next(n for n, r in self.roles().items() if r[0] == "leader")
        psql = [f"{bin_dir}/psql", "-v", "ON_ERROR_STOP=1",
                f"host=127.0.0.1 port={HOSTS[leader][0]} user=postgres dbname=postgres "
                f"sslmode=verify-full sslrootcert={tls}/ca.pem"]
        env = dict(os.environ, PGPASSWORD=SUPERUSER_PW)
        for sql in [f"CREATE ROLE facegate LOGIN PASSWORD '{FACEGATE_PW}'",
                    "CREATE DATABASE facegate OWNER facegate",
                    "CREATE DATABASE facegate_keys OWNER facegate"]:
            sh(psql + ["-c", sql], env=env)
        hosts = ",".join(f"127.0.0.1:{p}" for p, _ in HOSTS.values())
        self.url = (f"postgres://facegate:{FACEGATE_PW}@{hosts}/facegate?"
                    f"target_session_attrs=read-write&sslmode=require&sslrootcert={tls}/ca.pem")
        self.facegate("n1", ["--role", "admin", "gallery", "create", "rt", "--purpose", "drill",
                             "--legal-basis", "test", "--retention-days", "30"])
        loaders = [threading.Thread(target=self.load, args=(n, i)) for i, n in
                   enumerate(["n1", "n2"])]
        for t in loaders:
            t.start()
        time.sleep(a.before)
        leader = next(n for n, r in self.roles().items() if r[0] == "leader")
        pid = int(open(f"{self.work}/{leader}/data/postmaster.pid").readline())
        kill_t = time.time()
        # The host is lost: its Patroni and its PostgreSQL die at once, nothing shuts down.
        os.killpg(self.procs[leader].pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-f", f"{self.work}/{leader}/data"])
        print(f"killed host {leader} (Patroni and PostgreSQL, SIGKILL)")
        other = next(n for n in HOSTS if n != leader)
        self.wait_for(f"{other} to be promoted", lambda r: r.get(other, ("",))[0] == "leader")
        promoted = time.time() - kill_t
        print(f"{other} leads {promoted:.1f} s after the kill")
        time.sleep(a.after)
        self.start_patroni(leader)
        rejoin = self.wait_for(f"{leader} to rejoin",
                               lambda r: r.get(leader, ("",))[0] in ("sync_standby", "replica")
                               and r.get(leader)[1] in ("running", "streaming"))
        print(f"{leader} rejoined as {self.roles()[leader][0]} {rejoin:.1f} s after its restart")
        time.sleep(3)
        self.stop.set()
        for t in loaders:
            t.join()
        return self.check(kill_t, promoted)

    def start_patroni(self, name):
        self.spawn(name, as_postgres(["patroni", f"{self.work}/{name}/patroni.yml"]),
                   f"{self.work}/{name}.log")

    def check(self, kill_t, promoted):
        ev = sorted(self.events)
        acked_enrol = {s for _, _, op, s, ok in ev if op == "enrol" and ok}
        acked_delete = {s for _, _, op, s, ok in ev if op == "delete" and ok}
        failed = [(op, s) for _, _, op, s, ok in ev if not ok]
        problems = []
        for node in ["n1", "n2", "n3"]:
            for s in sorted(acked_enrol):
                r = self.facegate(node, ["subject", "--gallery", "rt", "--subject", s],
                                  check=False)
                want = 2 if s in acked_delete else 0
                if r.returncode != want:
                    problems.append(f"{node}: {s} acknowledged "
                                    f"{'erased' if want else 'enrolled'} but exit {r.returncode}")
            info = json.loads(self.facegate(node, ["gallery", "show", "rt"]).stdout)
            lo = len(acked_enrol) - len(acked_delete) - sum(op == "delete" for op, _ in failed)
            hi = len(acked_enrol) - len(acked_delete) + sum(op == "enrol" for op, _ in failed)
            if not lo <= info["subjects"] <= hi:
                problems.append(f"{node}: {info['subjects']} subjects, expected {lo}..{hi}")
            v = json.loads(self.facegate(node, ["audit", "verify"], check=False).stdout or "{}")
            if v.get("ok") is not True:
                problems.append(f"{node}: audit verify: {v}")
        acks = [t for t, _, _, _, ok in ev if ok]
        gaps = [(b - a, a) for a, b in zip(acks, acks[1:]) if b > kill_t - 5]
        window, at = max(gaps) if gaps else (float("nan"), 0)
        print(json.dumps({
            "acknowledged_enrolments": len(acked_enrol),
            "acknowledged_erasures": len(acked_delete),
            "failed_attempts": len(failed),
            "promotion_s_after_kill": round(promoted, 2),
            "writes_unavailable_s": round(window, 2),
            "window_started_s_after_kill": round(at - kill_t, 2),
            "problems": problems,
        }, indent=1))
        return 1 if problems else 0

    def cleanup(self):
        for name, p in self.procs.items():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["pkill", "-9", "-f", f"{self.work}/db"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facegate", default="target/release/facegate")
    ap.add_argument("--work", default="/tmp/facegate-patroni")
    ap.add_argument("--before", type=float, default=15, help="seconds of load before the kill")
    ap.add_argument("--after", type=float, default=15,
                    help="seconds of load after the promotion before the lost host returns")
    a = ap.parse_args()
    a.facegate = os.path.abspath(a.facegate)
    d = Drill(a)
    try:
        sys.exit(d.run())
    finally:
        d.stop.set()
        d.cleanup()


if __name__ == "__main__":
    main()
