"""driver.py — MapSage's benchmark suite: runs every workload of issue 7 (and the soak of
issue 6) against its peer or its limit in the same run, and prints one table.

bench/run installs what is needed, builds bench programs and mapsaged in Release, then runs
this under /usr/bin/python3. Everything listens on 127.0.0.1 only, every process it starts is
bounded in time and stopped by its own pid, and all files go to <build>/bench-run/ (the
10M-point curve database is kept in <build>/bench-data/ and reused while schema.sql is
unchanged). Standard library only. A benchmark, never part of the tests.
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------
# settings: the full run and the smoke run

FULL = dict(train_seconds=1.0, train_reps=7, epoch_examples=55000, epoch_reps=3,
            wrk_seconds=10, wrk_rounds=3, wrk_internal=True,
            sqlite_rows=1000000, ingest_seconds=10, latency_seconds=10, latency_rate=250,
            curve_experiments=100, curve_queries=30, soak_seconds=60)
QUICK = dict(train_seconds=0.1, train_reps=2, epoch_examples=2048, epoch_reps=1,
             wrk_seconds=2, wrk_rounds=1, wrk_internal=False,
             sqlite_rows=100000, ingest_seconds=2, latency_seconds=2, latency_rate=250,
             curve_experiments=10, curve_queries=10, soak_seconds=10)

CURVE_NAMES = ["agreement", "grad_norm/total", "loss/distill", "loss/feature", "loss/task",
               "loss/total", "lr", "temperature", "train/acc_running", "val/loss_running"]
CURVE_STEPS = 10000  # points per curve: the "one metric of 10k points"
EMIT_VALUES = 4      # values per metric event from bench_emit: points = steps × 4
SYNTHETIC_CONFIG = {"name": "bench-emit", "dataset": {"name": "synthetic"}, "epochs": 1,
                    "model": {"layers": [{"type": "linear", "out": 10}]}}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}",
          file=sys.stderr, flush=True)


def run(cmd, env=None, timeout=600, cwd=None):
    result = subprocess.run(cmd, env=env, timeout=timeout, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def median(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------
# mapsaged, started and stopped by pid

class Daemon:
    def __init__(self, build, work, name, db, workers, env_extra=None):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.db = db
        self.log_path = os.path.join(self.dir, "mapsaged.log")
        out_path = os.path.join(self.dir, "mapsaged.out")
        env = dict(os.environ)
        env.update(env_extra or {})
        cmd = [os.path.join(build, "mapsaged"), "--listen", "127.0.0.1:0", "--db", db,
               "--data-dir", os.path.join(self.dir, "data"), "--workers", str(workers),
               "--worker-bin", os.path.join(build, "bench", "bench_emit"),
               "--dataset-dir", self.dir]
        with open(out_path, "w") as out, open(self.log_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=self.dir)
        deadline = time.monotonic() + 60
        self.port = None
        while self.port is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mapsaged did not start: {open(self.log_path).read()[-2000:]}")
            match = re.search(r"listening on http://[^:]+:(\d+)", open(out_path).read())
            if match:
                self.port = int(match.group(1))
            else:
                time.sleep(0.05)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def request(self, method, path, body=None):
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body,
                                        headers={"Content-Type": "application/json"} if body else {})
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise

    def submit(self, config):
        status, body = self.request("POST", "/api/experiments", json.dumps(config))
        if status != 201:
            raise RuntimeError(f"submit: {status} {body[:500]}")
        return json.loads(body)["id"]

    def experiment(self, id):
        status, body = self.request("GET", f"/api/experiments/{id}")
        return json.loads(body)

    def wait_ended(self, ids, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.experiment(i)["status"] for i in ids]
            if all(s in ("succeeded", "failed", "cancelled") for s in states):
                return states
            time.sleep(0.1)
        raise RuntimeError(f"experiments {ids} did not end within {timeout} s")

    def status_value(self, key):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.connection.close()
        except Exception:
            pass


def wrk(url, seconds, threads=2, connections=32, script=None):
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
    if script:
        cmd += ["-s", script]
    out = run(cmd + [url], timeout=seconds + 60)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0, "output": out}


# ---------------------------------------------------------------------------------------
# the workloads

class Suite:
    def __init__(self, args, settings):
        self.args = args
        self.s = settings
        self.build = os.path.abspath(args.build)
        self.bin = os.path.join(self.build, "bench")
        self.work = os.path.join(self.build, "bench-run")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.rows = []      # (figure, ours, peer, ratio, target)
        self.details = {}
        self.loads = {}
        self.train_env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        # The OpenBLAS kernel set bench_train runs, decided as the worker decides at start
        # (worker/blas_kernels.h). When it is our choice, PyTorch gets it too, so that the
        # ratios measure our code and not two kernel sets.
        self.blas = {}
        probe = os.path.join(self.bin, "bench_train")
        if os.path.exists(probe):
            self.blas = json.loads(run([probe, "blas"], env=self.train_env))
            if self.blas.get("chosen_by") == "mapsage":
                self.train_env["OPENBLAS_CORETYPE"] = self.blas["core"]

    def row(self, figure, ours, peer="—", ratio="—", target="—"):
        self.rows.append((figure, ours, peer, ratio, target))

    def section(self, name, function):
        start = os.getloadavg()[0]
        log(f"{name} …")
        began = time.monotonic()
        try:
            function()
        except Exception as error:  # one failed workload must not hide the others
            log(f"{name} FAILED: {error}")
            self.row(f"{name}: FAILED ({str(error)[:150]})", "—")
        self.loads[name] = (start, os.getloadavg()[0], time.monotonic() - began)

    # -- training ---------------------------------------------------------------------

    def train_pair(self, workload, ours_workloads=None):
        """Ours (one bench_train per workload in ours_workloads, default the same one) and
        PyTorch's, alternated; returns their final JSONs, PyTorch's last."""
        ours_cmds = [[os.path.join(self.bin, "bench_train"), w] for w in (ours_workloads or [workload])]
        torch_cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_bench.py"), workload,
                     "--threads", "1"]
        if workload == "kd-epoch":
            reps = self.s["epoch_reps"]
            common = ["--examples", str(self.s["epoch_examples"])]
        else:
            reps = self.s["train_reps"]
            common = ["--seconds", str(self.s["train_seconds"])]
        results = self.alternate([cmd + common for cmd in ours_cmds] + [torch_cmd + common], reps)
        peer = results[-1]
        if not peer.get("loss_finite", True):
            raise RuntimeError("PyTorch's loss is not finite")
        self.details[workload] = {"ours": results[0], "pytorch": peer}
        for name, result in zip(ours_workloads or [], results):
            self.details[name] = {"ours": result, "pytorch": peer}
        return results

    def alternate(self, cmds, reps, envs=None):
        """Runs every side as a --serve process and asks them for repetitions in turn (the
        order reversed every other round), so that all see the same load on a shared machine;
        the others wait, idle, while one runs. Returns the final JSONs in cmds' order."""
        envs = envs or [self.train_env] * len(cmds)
        procs = [subprocess.Popen(cmd + ["--serve"], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for cmd, env in zip(cmds, envs)]
        try:
            for proc in procs:
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"{proc.args[0]} did not start")
            for round in range(reps):
                for proc in (procs if round % 2 == 0 else procs[::-1]):
                    proc.stdin.write("rep\n")
                    proc.stdin.flush()
                    if not proc.stdout.readline().startswith("{"):
                        raise RuntimeError(f"{proc.args[0]} failed a repetition")
            results = []
            for proc in procs:
                out, _ = proc.communicate("done\n", timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(proc.args)} exited {proc.returncode}")
                results.append(json.loads(out))
            return results
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def training(self):
        names = {"mlp": "student MLP 784-256-128-10 SGD step",
                 "kd": "KD step (teacher 784-1200-1200-10 fwd + student fwd/bwd + adapter 128→1200)",
                 "cnn": "CNN (conv32-pool-conv64-pool-fc128-fc10) fwd/bwd + SGD",
                 "cnn-teacher": "examples/cnn-teacher.json's CNN (the CNN's shapes, dropout 0.3) fwd/bwd + SGD"}
        targets = {"mlp": 1.3, "kd": 1.2, "cnn": 2.0, "cnn-teacher": 2.0}
        for workload in ("mlp", "kd", "cnn", "cnn-teacher"):
            ours, peer = self.train_pair(workload)
            self.row(f"sgemm at the {workload.upper()} step's {len(ours['gemms'])} shapes, GFLOP/s "
                     f"(FLOP-weighted; {ours['step_gflop'] * 1e3:.0f} MFLOP/step)",
                     f"{ours['gemm_gflops']:.1f}", "—", "—", "the GEMM-bound limit's rate")
            self.row(f"{names[workload]}, samples/s", f"{ours['samples_per_s']:,.0f}",
                     f"PyTorch {peer['samples_per_s']:,.0f}",
                     f"{ours['samples_per_s'] / peer['samples_per_s']:.2f}×", f"≥ {targets[workload]}×")
            self.row(f"  the same vs its GEMM-bound limit (step FLOPs ÷ sgemm rate)",
                     f"{ours['samples_per_s']:,.0f}", f"limit {ours['limit_samples_per_s']:,.0f}",
                     f"{ours['samples_per_s'] / ours['limit_samples_per_s']:.0%}",
                     f"PyTorch: {peer['samples_per_s'] / ours['limit_samples_per_s']:.0%}")
            if workload == "cnn":
                self.cnn_rows(ours, peer)
            if workload == "cnn-teacher":
                self.row("  the same per CPU-second", f"{ours['samples_per_cpu_s']:,.0f}",
                         f"PyTorch {peer.get('samples_per_cpu_s', 0):,.0f}",
                         f"{ours['samples_per_cpu_s'] / peer['samples_per_cpu_s']:.2f}×"
                         if peer.get("samples_per_cpu_s") else "—", "≥ 2.0×")
        mlp, kd, cnn = (self.details[w]["ours"] for w in ("mlp", "kd", "cnn"))
        self.row("worker memory per model (slabs: params, grads, optimizer, activations, workspace)",
                 f"MLP {mlp['student_bytes'] / 2**20:.1f} MB; teacher {kd['teacher_bytes'] / 2**20:.1f} MB "
                 f"+ adapter {kd['adapter_bytes'] / 2**20:.1f} MB; CNN {cnn['student_bytes'] / 2**20:.1f} MB")

    def cnn_rows(self, ours, peer):
        """The CNN against one core's FMA peak, and on 2 threads: ours on 1 and 2 OpenBLAS
        threads and PyTorch on 2 (torch.set_num_threads(2), OpenBLAS held to 1 as
        docs/design.md says is its best), alternated in one more run."""
        flops = (ours["step_gflop"] + ours["other_gflop"]) * 1e9 / ours["batch"]
        peak = ours["fma_peak_gflops"]
        # Per CPU-second (process CPU time, both sides): what the step costs when it has the
        # core, the figure to set against a peak measured when the core was ours.
        ours_cpu, peer_cpu = ours["samples_per_cpu_s"], peer.get("samples_per_cpu_s", 0)
        self.row("  the same per CPU-second (process CPU time: descheduled time left out)", f"{ours_cpu:,.0f}",
                 f"PyTorch {peer_cpu:,.0f}", f"{ours_cpu / peer_cpu:.2f}×" if peer_cpu else "—", "≥ 2.0×")
        if peak > 0:
            self.row(f"  per CPU-second in GFLOP/s ({flops / 1e6:.1f} MFLOP/example) vs one core's FMA peak "
                     f"({ours['kernels']} FMA, measured)", f"{ours_cpu * flops * 1e-9:.1f}",
                     f"peak {peak:.1f}", f"{ours_cpu * flops * 1e-9 / peak:.0%}",
                     f"≥ 60% (PyTorch: {peer_cpu * flops * 1e-9 / peak:.0%})")
        bench = os.path.join(self.bin, "bench_train")
        common = ["--seconds", str(self.s["train_seconds"])]
        torch_cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "torch_bench.py"), "cnn", "--threads", "2"]
        one, two, torch2 = self.alternate([[bench, "cnn", "--threads", "1"] + common,
                                           [bench, "cnn", "--threads", "2"] + common, torch_cmd + common],
                                          self.s["train_reps"])
        self.details["cnn-2-threads"] = {"ours_1": one, "ours": two, "pytorch": torch2}
        self.row("CNN fwd/bwd + SGD on 2 threads, samples/s", f"{two['samples_per_s']:,.0f}",
                 f"PyTorch (2 threads) {torch2['samples_per_s']:,.0f}",
                 f"{two['samples_per_s'] / torch2['samples_per_s']:.2f}×", "≥ 2.0×")
        self.row("  ours on 2 threads vs 1 thread (same run)", f"{two['samples_per_s']:,.0f}",
                 f"1 thread {one['samples_per_s']:,.0f}", f"{two['samples_per_s'] / one['samples_per_s']:.2f}×",
                 "≥ 1.7×")

    def kd_epoch(self):
        plain, cached, peer = self.train_pair("kd-epoch", ["kd-epoch", "kd-epoch-cache"])
        n = plain["examples"]
        self.row(f"KD epoch, {n:,} examples, samples/s, with the worker's teacher cache (teacher.h; built once "
                 f"before the epochs in {cached['cache_seconds']:.1f} s, {cached['cache_bytes'] / 2**20:.0f} MB)",
                 f"{cached['samples_per_s']:,.0f} ({cached['epoch_seconds']:.1f} s)",
                 f"PyTorch {peer['samples_per_s']:,.0f} ({peer['epoch_seconds']:.1f} s)",
                 f"{cached['samples_per_s'] / peer['samples_per_s']:.2f}×", "≥ 3×")
        self.row(f"  the same epoch without the cache (the teacher runs on every batch)",
                 f"{plain['samples_per_s']:,.0f} ({plain['epoch_seconds']:.1f} s)",
                 f"PyTorch {peer['samples_per_s']:,.0f}",
                 f"{plain['samples_per_s'] / peer['samples_per_s']:.2f}×", "—")

    # -- HTTP ---------------------------------------------------------------------------

    def start_minimal(self, internal):
        cmd = [os.path.join(self.bin, "minimal_server"), "--port", "0", "--seconds", "600"]
        if internal:
            cmd.append("--internal")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        return proc, int(line.split()[1])

    def stop_minimal(self, proc):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def http(self):
        seconds = self.s["wrk_seconds"]
        db = os.path.join(self.work, "http.db")
        daemon = Daemon(self.build, self.work, "http", db, 1, {"BENCH_EMIT_STEPS": "2000", "BENCH_EMIT_SECONDS": "0"})
        try:
            config = json.load(open(os.path.join(ROOT, "examples", "baseline-mlp.json")))
            config["dataset"] = {"name": "synthetic"}
            id = daemon.submit(config)
            daemon.wait_ended([id], 60)
            status, body = daemon.request("GET", f"/api/experiments/{id}")
            if status != 200:
                raise RuntimeError(f"GET /api/experiments/{id}: {status}")
            minimal, minimal_port = self.start_minimal(False)
            ours_runs, minimal_runs = [], []
            try:
                for _ in range(self.s["wrk_rounds"]):
                    m = wrk(f"http://127.0.0.1:{minimal_port}/api/experiments/1", seconds)
                    o = wrk(f"http://127.0.0.1:{daemon.port}/api/experiments/{id}", seconds)
                    for result in (m, o):
                        if result["non2xx"] or result["socket_errors"]:
                            raise RuntimeError(f"wrk saw errors: {result['output'][-500:]}")
                    minimal_runs.append(m["rps"])
                    ours_runs.append(o["rps"])
            finally:
                self.stop_minimal(minimal)
            internal = None
            if self.s["wrk_internal"]:
                proc, port = self.start_minimal(True)
                try:
                    internal = wrk(f"http://127.0.0.1:{port}/api/experiments/1", seconds)["rps"]
                finally:
                    self.stop_minimal(proc)
        finally:
            daemon.stop()
        ours, peer = median(ours_runs), median(minimal_runs)
        self.details["http"] = {"mapsaged": ours_runs, "minimal_uv": minimal_runs, "minimal_internal": internal,
                                "response_bytes": len(body)}
        self.row(f"GET /api/experiments/{{id}} ({len(body):,} B of JSON), wrk -t2 -c32 -d{seconds}s, requests/s"
                 f" (median of {len(ours_runs)})",
                 f"{ours:,.0f}", f"minimal MHD server {peer:,.0f}", f"{ours / peer:.0%}", "≥ 50%")
        if internal:
            self.row("  (minimal MHD server on its own internal select thread instead of epoll on libuv)",
                     f"{internal:,.0f}", "—", "—")

    # -- SQLite and ingestion -------------------------------------------------------------

    def sqlite_raw(self, rowid=False):
        cmd = [os.path.join(self.bin, "bench_sqlite"), "--db", os.path.join(self.work, "raw.db"),
               "--rows", str(self.s["sqlite_rows"]), "--tx", "10000", "--values", str(EMIT_VALUES)]
        return json.loads(run(cmd + (["--rowid"] if rowid else [])))

    def ingestion(self):
        seconds = self.s["ingest_seconds"]
        raw = self.sqlite_raw()
        unindexed = self.sqlite_raw(rowid=True)
        db = os.path.join(self.work, "ingest.db")
        daemon = Daemon(self.build, self.work, "ingest", db, 1,
                        {"BENCH_EMIT_SECONDS": str(seconds), "BENCH_EMIT_VALUES": str(EMIT_VALUES)})
        samples = []
        try:
            id = daemon.submit(SYNTHETIC_CONFIG)
            reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            deadline = time.monotonic() + seconds + 120
            while time.monotonic() < deadline:
                row = reader.execute("SELECT max(step) FROM metrics WHERE experiment_id = ? AND name = 'loss/total'",
                                     (id,)).fetchone()
                samples.append((time.monotonic(), (row[0] or 0) * EMIT_VALUES))
                if daemon.experiment(id)["status"] != "running" and len(samples) > 2:
                    break
                time.sleep(0.1)
            daemon.wait_ended([id], 60)
            experiment = daemon.experiment(id)
            stored = reader.execute("SELECT count(*) FROM metrics WHERE experiment_id = ?", (id,)).fetchone()[0]
            reader.close()
        finally:
            daemon.stop()
        emitted = experiment["summary"]["points"]
        final = samples[-1][1]
        first = next(i for i, s in enumerate(samples) if s[1] > 0)
        last = next(i for i, s in enumerate(samples) if s[1] == final)
        if last <= first:
            raise RuntimeError("too few samples of the row count")
        rate = (samples[last][1] - samples[first][1]) / (samples[last][0] - samples[first][0])
        self.details["ingestion"] = {"raw": raw, "unindexed": unindexed, "emitted": emitted, "stored": stored,
                                     "samples": samples, "points_per_s": rate}
        self.row(f"SQLite raw keyed INSERT, WAL, sync=NORMAL, 10k-row transactions, rows/s",
                 f"{raw['rows_per_s']:,.0f}", f"unindexed {unindexed['rows_per_s']:,.0f}", "—",
                 "the keyed-insert limit")
        self.row(f"ingestion end to end (1 emitter → mapsaged → committed rows), points/s over "
                 f"{samples[last][0] - samples[first][0]:.1f} s; {stored:,} of {emitted:,} stored",
                 f"{rate:,.0f}", f"raw SQLite {raw['rows_per_s']:,.0f}", f"{rate / raw['rows_per_s']:.0%}",
                 "≥ 250,000/s")
        if stored != emitted:
            raise RuntimeError(f"ingestion lost points: {emitted} emitted, {stored} stored")

    # -- live streams ----------------------------------------------------------------------

    def streams(self, name, seconds, rate, wrk_api=False):
        """8 emitters (rate steps/s each, 0 = flat out) and 64 SSE clients (8 per run) on one
        daemon; optionally wrk on the API meanwhile. Returns what it measured and counted."""
        db = os.path.join(self.work, f"{name}.db")
        go = os.path.join(self.work, f"{name}.go")
        t0 = time.monotonic()
        daemon = Daemon(self.build, self.work, name, db, 8,
                        {"BENCH_EMIT_SECONDS": str(seconds), "BENCH_EMIT_RATE": str(rate),
                         "BENCH_EMIT_VALUES": str(EMIT_VALUES), "BENCH_EMIT_STAMP": "1",
                         "BENCH_EMIT_GO": go, "BENCH_T0": repr(t0)})
        result = {}
        try:
            ids = [daemon.submit(dict(SYNTHETIC_CONFIG, name=f"{name}-{i}")) for i in range(8)]
            sse = subprocess.Popen([os.path.join(self.bin, "bench_sse"), "--port", str(daemon.port),
                                    "--clients", "64", "--ids", ",".join(map(str, ids)), "--go", go,
                                    "--timeout", str(seconds + 120), "--t0", repr(t0)],
                                   stdout=subprocess.PIPE, text=True)
            load = None
            rss = []
            if wrk_api:
                deadline = time.monotonic() + 60
                while not os.path.exists(go) and time.monotonic() < deadline:
                    time.sleep(0.01)
                script = os.path.join(self.work, "api.lua")
                with open(script, "w") as f:
                    f.write("local paths = {}\n"
                            f"for _, id in ipairs({{{','.join(map(str, ids))}}}) do\n"
                            "  paths[#paths + 1] = '/api/experiments/' .. id\n"
                            "end\n"
                            "paths[#paths + 1] = '/api/experiments?limit=20'\n"
                            "paths[#paths + 1] = '/api/health'\n"
                            "local n = 0\n"
                            "request = function()\n"
                            "  n = n + 1\n"
                            "  return wrk.format('GET', paths[n % #paths + 1])\n"
                            "end\n")
                load = subprocess.Popen(["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", script,
                                         f"http://127.0.0.1:{daemon.port}/"], stdout=subprocess.PIPE, text=True)
                while load.poll() is None:
                    rss.append(daemon.status_value("VmRSS"))
                    time.sleep(1)
            out, _ = sse.communicate(timeout=seconds + 180)
            clients = json.loads(out)
            if load:
                text, _ = load.communicate(timeout=120)
                result["wrk_output"] = text
                result["wrk_rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
                non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
                result["wrk_non2xx"] = int(non2xx.group(1)) if non2xx else 0
                timeouts = re.search(r"timeout (\d+)", text)
                result["wrk_timeouts"] = int(timeouts.group(1)) if timeouts else 0
            daemon.wait_ended(ids, 120)
            result["peak_rss"] = daemon.status_value("VmHWM")
            result["rss_samples"] = rss
            experiments = {i: daemon.experiment(i) for i in ids}
            reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            stored = {i: reader.execute("SELECT count(*) FROM metrics WHERE experiment_id = ?", (i,)).fetchone()[0]
                      for i in ids}
            reader.close()
        finally:
            daemon.stop()
        steps = {i: experiments[i]["summary"]["steps"] for i in ids}
        failed = [i for i in ids if experiments[i]["status"] != "succeeded"]
        missing_db = sum(steps[i] - stored[i] // EMIT_VALUES for i in ids)
        missing_clients = sum(max(0, steps[c["id"]] - (c["events"] - c["repeats"])) for c in clients["per_client"])
        emitted = sum(steps.values())
        emit_seconds = max(experiments[i]["summary"]["seconds"] for i in ids)
        result.update(clients=clients, steps=steps, stored=stored, emitted=emitted, failed=failed,
                      missing_db=missing_db, missing_clients=missing_clients, emit_seconds=emit_seconds,
                      events_per_s=emitted / emit_seconds if emit_seconds else 0)
        self.details[name] = result
        return result

    def latency(self):
        seconds, rate = self.s["latency_seconds"], self.s["latency_rate"]
        r = self.streams("latency", seconds, rate)
        c = r["clients"]
        self.row(f"live latency, emit → SSE client, 8 emitters × {rate} steps/s, 64 clients: p50 / p99 (max)",
                 f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f} ms ({c['max_ms']:.1f})", "—", "—", "p99 ≤ 20 ms")
        self.row(f"  events: {r['emitted']:,} emitted ({r['events_per_s']:,.0f}/s), delivered to clients/s; "
                 f"missing: {r['missing_db']} in the database, {r['missing_clients']} at clients",
                 f"{c['events_per_s']:,.0f}/s", "—", "—", "0 missing")

    # -- curve query -----------------------------------------------------------------------

    def curve_db(self):
        experiments = self.s["curve_experiments"]
        points = experiments * len(CURVE_NAMES) * CURVE_STEPS
        schema = open(os.path.join(ROOT, "schema.sql"), "rb").read()
        key = hashlib.sha256(schema + str(points).encode()).hexdigest()[:12]
        directory = os.path.join(self.build, "bench-data")
        path = os.path.join(directory, f"curve-{points}-{key}.db")
        if os.path.exists(path):
            return path, points, False
        os.makedirs(directory, exist_ok=True)
        for old in os.listdir(directory):
            if old.startswith("curve-"):
                os.remove(os.path.join(directory, old))
        names = ", ".join(f"('{n}')" for n in CURVE_NAMES)
        script = f"""
.read {os.path.join(ROOT, 'schema.sql')}
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE e(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM e WHERE i < {experiments})
INSERT INTO experiments (id, name, status, config, started_at, finished_at, attempts, epoch, step, stage)
  SELECT i, 'curve-' || i, 'succeeded', '{json.dumps(SYNTHETIC_CONFIG)}',
         strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 1, 24, {CURVE_STEPS}, 0 FROM e;
WITH names(n) AS (VALUES {names})
INSERT INTO series (experiment_id, name) SELECT id, n FROM experiments, names;
INSERT INTO metrics (experiment_id, name, step, epoch, stage, value)
  SELECT s.experiment_id, s.name, g.value, 1 + (g.value - 1) / 430, 0, 1.0 / g.value
  FROM series s, generate_series(1, {CURVE_STEPS}) g;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
"""
        partial = path + ".partial"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(partial + suffix):
                os.remove(partial + suffix)
        subprocess.run(["sqlite3", partial], input=script, text=True, check=True, timeout=600,
                       capture_output=True)
        os.rename(partial, path)
        return path, points, True

    def curve(self):
        began = time.monotonic()
        path, points, made = self.curve_db()
        made_seconds = time.monotonic() - began
        daemon = Daemon(self.build, self.work, "curve", path, 0)
        try:
            id = max(1, self.s["curve_experiments"] // 2)
            query = f"/api/experiments/{id}/metrics?names=loss/total"
            status, body = daemon.request("GET", query)
            curve = json.loads(body)["loss/total"]
            if status != 200 or len(curve["step"]) != CURVE_STEPS:
                raise RuntimeError(f"{query}: {status}, {len(curve.get('step', []))} points")
            for _ in range(2):
                daemon.request("GET", query)
            times = []
            for _ in range(self.s["curve_queries"]):
                start = time.perf_counter()
                daemon.request("GET", query)
                times.append((time.perf_counter() - start) * 1e3)
        finally:
            daemon.stop()
        self.details["curve"] = {"points": points, "ms": times, "bytes": len(body), "generated": made,
                                 "generate_seconds": made_seconds}
        self.row(f"curve query: loss/total, {CURVE_STEPS:,} points of a {points / 1e6:g}M-point database "
                 f"({len(body) / 1e3:.0f} kB), warm, median of {len(times)}",
                 f"{median(times):.2f} ms", "—", "—", "≤ 5 ms")

    # -- soak ------------------------------------------------------------------------------

    def soak(self):
        seconds = self.s["soak_seconds"]
        r = self.streams("soak", seconds, 0, wrk_api=True)
        c = r["clients"]
        dropped = r["missing_db"] + r["missing_clients"]
        self.row(f"soak {seconds} s: 8 emitters flat out + 64 SSE clients + wrk -t1 -c16 on the API: "
                 f"API requests/s (wrk timeouts {r['wrk_timeouts']:,}, non-2xx {r['wrk_non2xx']:,})",
                 f"{r['wrk_rps']:,.0f}", "—", "—", "—")
        self.row(f"  soak: metric events emitted and stored/s ({r['emitted']:,} steps = "
                 f"{r['emitted'] * EMIT_VALUES:,} points in {r['emit_seconds']:.1f} s); deliveries to clients/s "
                 f"(over the {c['window_s']:.1f} s between the first and last arrival)",
                 f"{r['events_per_s']:,.0f}/s; {c['events_per_s']:,.0f}/s", "—", "—")
        self.row(f"  soak: dropped events (not in the database + not at a client; failed runs "
                 f"{len(r['failed'])}, clients ended {c['ended']}/64)",
                 f"{dropped:,} ({r['missing_db']:,} + {r['missing_clients']:,})", "—", "—", "0")
        self.row("  soak: mapsaged peak RSS (VmHWM)", f"{r['peak_rss'] / 2**20:.1f} MB", "—", "—", "≤ 50 MB")
        if "p99_ms" in c:
            self.row("  soak: emit → client latency under saturation, p50 / p99",
                     f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f} ms", "—", "—", "(information)")

    # -- the table -----------------------------------------------------------------------

    def header(self):
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        details = self.details.get("mlp", {})
        lines = [
            f"MapSage benchmarks, {'--quick smoke run' if self.args.quick else 'full run'}, "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
            f"machine: {cpu}, {os.cpu_count()} cores, {platform.platform()}",
            f"OpenBLAS: {details.get('ours', {}).get('openblas', '?')}; kernel set: ours "
            f"{self.blas.get('core', '?')} (chosen by {self.blas.get('chosen_by', '?')}: {self.blas.get('reason', '?')}), "
            f"PyTorch's {details.get('pytorch', {}).get('openblas_core', '?')}; "
            f"MapSage kernels {self.blas.get('kernels', '?')}, linear layers' products on "
            f"{self.blas.get('dense', '?')} (the GEMM-bound limits below are OpenBLAS's on the step's shapes); "
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
            f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')} (as found); "
            f"OPENBLAS_NUM_THREADS=1 both sides",
            f"PyTorch {details.get('pytorch', {}).get('torch', '?')} under /usr/bin/python3, "
            f"torch.set_num_threads(1), loads {', '.join(details.get('pytorch', {}).get('blas_loaded', ['?'])[-1:])}",
            "build: CMake Release, CMAKE_C_FLAGS_RELEASE=\"-O2 -DNDEBUG\" (plus the project's -Wall -Wextra), "
            + run(["gcc", "--version"]).splitlines()[0],
            "load average (1 min) at start → end of each part: " + "; ".join(
                f"{k} {a:.1f}→{b:.1f} ({t:.0f} s)" for k, (a, b, t) in self.loads.items()),
        ]
        return lines

    def table(self):
        head = ("figure", "ours", "peer or limit (same run)", "ratio", "target")
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
        for row in self.rows:
            lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
        return lines


def main():
    parser = argparse.ArgumentParser(description="MapSage's benchmark suite (see bench/README.md)")
    parser.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every workload, under a minute")
    parser.add_argument("--only", default="", help="comma-separated parts: training,kd-epoch,http,ingestion,"
                                                   "latency,curve,soak")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    suite = Suite(args, settings)
    parts = [("training", suite.training), ("kd-epoch", suite.kd_epoch), ("http", suite.http),
             ("ingestion", suite.ingestion), ("latency", suite.latency), ("curve", suite.curve),
             ("soak", suite.soak)]
    only = set(filter(None, args.only.split(",")))
    began = time.monotonic()
    for name, function in parts:
        if not only or name in only:
            suite.section(name, function)
    lines = suite.header() + [f"total {time.monotonic() - began:.0f} s", ""] + suite.table()
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(suite.work, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(suite.work, "results.json"), "w") as f:
        json.dump({"rows": suite.rows, "details": suite.details, "loads": suite.loads}, f, indent=1, default=str)
    log(f"details: {os.path.join(suite.work, 'results.json')}")


if __name__ == "__main__":
    main()
