"""test_api.py — the daemon end to end: the real mapsaged, real mapsage-worker processes,
real HTTP and a real SQLite file. Submit → queue → worker → live stream → SQL, cancel,
crashes, a daemon killed mid-run, and every kind of bad request."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, Daemon, synthetic_config  # noqa: E402

LONG = dict(epochs=400, train_size=4096)  # runs for many seconds: something to cancel or kill


class EndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def prometheus(self):
        """GET /metrics, checked line by line: {'name{labels}': value}."""
        status, response, text = self.daemon.request("GET", "/metrics")
        self.assertEqual(200, status)
        self.assertTrue(response.getheader("Content-Type").startswith("text/plain; version=0.0.4"))
        samples, typed = {}, set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                name, kind = line.split()[2:4]
                self.assertIn(kind, ("counter", "gauge"))
                typed.add(name)
                continue
            if line.startswith("#"):
                continue
            match = re.fullmatch(r'([a-z_]+)(\{[a-z_]+="[^"]*"\})? (\S+)', line)
            self.assertIsNotNone(match, line)
            self.assertIn(match.group(1), typed, "every sample has its TYPE line first")
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return samples

    def test_prometheus_metrics_count_what_happened(self):
        before = self.prometheus()
        d = self.daemon
        experiment_id = d.submit(synthetic_config("counted"))
        d.wait_status(experiment_id, ["succeeded"])
        self.assertEqual(404, d.request("GET", "/api/experiments/999999")[0])
        after = self.prometheus()
        self.assertGreaterEqual(after['mapsage_experiments{status="succeeded"}'], 1)
        self.assertEqual(before["mapsage_workers_started_total"] + 1, after["mapsage_workers_started_total"])
        self.assertGreater(after["mapsage_worker_events_total"], before["mapsage_worker_events_total"] + 10)
        self.assertGreater(after["mapsage_db_rows_written_total"], before["mapsage_db_rows_written_total"] + 40)
        self.assertGreater(after["mapsage_db_flushes_total"], before["mapsage_db_flushes_total"])
        self.assertGreater(after['mapsage_http_responses_total{code="2xx"}'],
                           before['mapsage_http_responses_total{code="2xx"}'])
        self.assertGreaterEqual(after['mapsage_http_responses_total{code="4xx"}'],
                                before['mapsage_http_responses_total{code="4xx"}'] + 1)
        self.assertEqual(1, after['mapsage_build_info{version="%s"}' % d.get("/api/health")[2]["version"]])
        self.assertGreater(after["process_resident_memory_bytes"], 1 << 20)
        self.assertEqual(0, after["mapsage_streams_dropped_total"])

    def test_submit_stream_and_sql_agree(self):
        d = self.daemon
        status, response, body = d.request("POST", "/api/experiments", synthetic_config("e2e", epochs=3))
        self.assertEqual(201, status, body)
        self.assertEqual({"id", "status"}, set(body))
        experiment_id = body["id"]
        self.assertEqual("/api/experiments/%d" % experiment_id, response.getheader("Location"))

        stream = d.stream(experiment_id)
        self.assertEqual(200, stream.status)
        self.assertEqual("text/event-stream", stream.content_type)
        events = list(stream)
        stream.close()
        self.assertEqual("status", events[0]["event"])
        self.assertEqual("end", events[-1]["event"])
        self.assertEqual("succeeded", events[-1]["data"]["status"])

        metrics = [e for e in events if e["event"] == "metric"]
        steps = [e["data"]["step"] for e in metrics]
        self.assertEqual(list(range(1, len(steps) + 1)), steps, "every step once, in order")
        self.assertEqual([str(s) for s in steps], [e["id"] for e in metrics])
        for e in metrics:
            self.assertTrue({"loss/total", "loss/task", "lr", "examples_per_s"} <= set(e["data"]["values"]))
        evals = [e for e in events if e["event"] == "eval"]
        self.assertEqual(3 * 3, len(evals), "train, val and test after each of 3 epochs")
        self.assertEqual(["train", "val", "test"] * 3, [e["data"]["split"] for e in evals])
        final_test = [e for e in evals if e["data"]["split"] == "test"][-1]["data"]["values"]["accuracy"]
        self.assertGreater(final_test, 0.9)

        # The curves API and the database file hold the very numbers the stream sent.
        _, _, curves = d.get("/api/experiments/%d/metrics" % experiment_id)
        self.assertEqual(steps, curves["loss/total"]["step"])
        streamed = [e["data"]["values"]["loss/total"] for e in metrics]
        self.assertEqual(streamed, curves["loss/total"]["value"])
        self.assertEqual([1, 2, 3], curves["test/accuracy"]["epoch"])
        with sqlite3.connect("file:%s?mode=ro" % d.db_path, uri=True) as db:
            self.assertEqual("wal", db.execute("PRAGMA journal_mode").fetchone()[0])
            rows = db.execute("SELECT step, value FROM metrics WHERE experiment_id = ? AND name = 'loss/total' "
                              "ORDER BY step", (experiment_id,)).fetchall()
            self.assertEqual(list(zip(steps, streamed)), [(s, float("%.9g" % v)) for s, v in rows])
            summary = db.execute("SELECT status, final_test_accuracy, epochs, stage_plan FROM experiment_summary "
                                 "WHERE id = ?", (experiment_id,)).fetchone()
            self.assertEqual(("succeeded", 3, "train:3"), (summary[0], summary[2], summary[3]))
            self.assertAlmostEqual(final_test, summary[1], places=6)

        experiment = d.experiment(experiment_id)
        self.assertEqual("succeeded", experiment["status"])
        self.assertEqual(1, experiment["attempts"])
        self.assertEqual(3, experiment["progress"]["epoch"])
        self.assertAlmostEqual(final_test, experiment["summary"]["final_test_accuracy"], places=6)
        self.assertEqual("synthetic", experiment["worker"]["dataset"]["name"])
        # The OpenBLAS kernel set and why (worker/blas_kernels.h), and the kernels.h set.
        blas = experiment["worker"]["blas"]
        self.assertTrue(blas["core"])
        self.assertIn(blas["chosen_by"], ("openblas", "environment", "mapsage"))
        self.assertTrue(blas["reason"])
        self.assertEqual("passed", blas["self_check"])
        self.assertIn(experiment["worker"]["kernels"]["set"], ("portable", "avx2", "avx512"))
        self.assertIn(experiment["worker"]["kernels"]["dense"], ("openblas", "kernels"))
        self.assertEqual(2048, experiment["config"]["dataset"]["train_size"], "defaults are stored")
        self.assertLessEqual({"loss/total", "lr", "test/accuracy", "val/loss"}, set(experiment["series"]))
        self.assertIsNone(experiment["teacher"])

        # Resuming from any event id continues exactly after it.
        resumed = list(d.stream(experiment_id, last_event_id="10"))
        first = [e for e in resumed if e["id"]][0]
        self.assertEqual("11", first["id"])
        eval_id = [e for e in evals if e["data"]["split"] == "val"][0]["id"]  # "<step>.2"
        resumed = [e for e in d.stream(experiment_id, last_event_id=eval_id) if e["id"]]
        self.assertEqual(eval_id.split(".")[0] + ".3", resumed[0]["id"])
        self.assertEqual(len([e for e in events if e["id"]]) - 1 - [e["id"] for e in events if e["id"]].index(eval_id),
                         len(resumed))

    def test_report_per_stage(self):
        d = self.daemon
        config = synthetic_config("reported", stages=[{"name": "warm", "epochs": 2},
                                                      {"name": "main", "epochs": 2, "task_weight": 0.5}])
        config.pop("epochs")
        experiment_id = d.submit(config)
        experiment = d.wait_status(experiment_id, ["succeeded"])
        status, _, report = d.get("/api/experiments/%d/report" % experiment_id)
        self.assertEqual(200, status)
        self.assertEqual(["warm", "main"], [stage["name"] for stage in report["stages"]])
        warm, main = report["stages"]
        self.assertEqual(1, warm["first_step"])
        self.assertEqual(warm["last_step"] + 1, main["first_step"])
        self.assertEqual(0.5, main["weights"]["task"])
        self.assertAlmostEqual(1.0, main["share"]["task"], places=5)  # the only term
        task = warm["terms"]["loss/task"]
        self.assertLess(task["end"], task["start"])
        self.assertAlmostEqual((task["end"] - task["start"]) / task["start"], task["change"], places=6)
        self.assertAlmostEqual(experiment["summary"]["final_test_accuracy"], report["final"]["test_accuracy"], places=6)
        self.assertIsNone(report["baseline"])  # it has no teacher: it is a baseline itself
        self.assertEqual(404, d.get("/api/experiments/999999/report")[0])

    def test_live_stream_sees_a_running_experiment(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("live", epochs=30))
        stream = d.stream(experiment_id)
        seen_running = False
        steps = []
        for event in stream:
            if event["event"] == "status" and event["data"]["status"] == "running":
                seen_running = True
            if event["event"] == "metric":
                steps.append(event["data"]["step"])
        stream.close()
        self.assertTrue(seen_running)
        self.assertEqual(list(range(1, len(steps) + 1)), steps)
        self.assertEqual("succeeded", d.experiment(experiment_id)["status"])

    def test_global_stream_follows_every_experiment(self):
        d = self.daemon
        events = d.events()
        self.assertEqual(200, events.status)
        experiment_id = d.submit(synthetic_config("watched-globally", epochs=2))
        seen = []
        for event in events:
            self.assertEqual("experiment", event["event"])
            if event["data"]["id"] != experiment_id:
                continue
            seen.append((event["data"]["status"], event["data"]["progress"]["epoch"]))
            if event["data"]["status"] == "succeeded":
                break
        events.close()
        self.assertEqual("queued", seen[0][0])
        self.assertIn(("running", 1), seen)
        self.assertIn(("running", 2), seen)
        self.assertEqual(("succeeded", 2), seen[-1])

    def test_cancel_running_and_queued(self):
        d = self.daemon
        running = d.submit(synthetic_config("to-cancel", **LONG))
        queued = d.submit(synthetic_config("queued-behind"))
        d.wait_status(running, ["running"])
        stream = d.stream(running)
        for event in stream:  # wait for training to be under way
            if event["event"] == "metric":
                break
        self.assertEqual("queued", d.experiment(queued)["status"])
        status, _, body = d.request("POST", "/api/experiments/%d/cancel" % queued)
        self.assertEqual((200, "cancelled"), (status, body["status"]))
        status, _, body = d.request("POST", "/api/experiments/%d/cancel" % running)
        self.assertEqual(202, status, body)
        self.assertTrue(body["cancel_requested"])
        rest = list(stream)
        self.assertEqual({"status": "cancelled", "error": "cancelled"}, rest[-1]["data"])
        experiment = d.wait_status(running, ["cancelled"], timeout=10)
        self.assertEqual("cancelled", experiment["error"])
        status, _, body = d.request("POST", "/api/experiments/%d/cancel" % running)
        self.assertEqual(409, status)
        self.assertIn("already ended (cancelled)", body["error"])
        self.assertEqual(404, d.request("POST", "/api/experiments/999999/cancel")[0])

    def wait_worker_pid(self, experiment_id, attempt):
        deadline = time.time() + 30
        while time.time() < deadline:
            experiment = self.daemon.experiment(experiment_id)
            worker = experiment.get("worker") or {}
            if experiment["status"] == "running" and experiment["attempts"] == attempt and worker.get("pid"):
                # The worker report is from this attempt once its pid is alive and is ours.
                try:
                    os.kill(worker["pid"], 0)
                    return worker["pid"]
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        raise AssertionError("attempt %d of experiment %d never ran" % (attempt, experiment_id))

    def test_a_crashed_worker_is_retried_then_fails(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("to-kill", **LONG))  # max_attempts defaults to 2
        os.kill(self.wait_worker_pid(experiment_id, 1), signal.SIGKILL)
        second = self.wait_worker_pid(experiment_id, 2)
        log = d.get("/api/experiments/%d/log" % experiment_id)[2]
        self.assertIn("attempt 1: the worker was killed by signal 9", log)
        self.assertIn("trying again (2 of max_attempts 2)", log)
        os.kill(second, signal.SIGKILL)
        experiment = d.wait_status(experiment_id, ["failed"], timeout=10)
        self.assertIn("the worker was killed by signal 9 (Killed)", experiment["error"])
        self.assertIn("log tail:", experiment["error"])
        self.assertEqual(2, experiment["attempts"])
        status, _, log = d.get("/api/experiments/%d/log" % experiment_id)
        self.assertEqual(200, status)
        self.assertIn("attempt 1 |", log)
        self.assertIn("attempt 2 |", log)

        once = d.submit(synthetic_config("no-retry", max_attempts=1, **LONG))
        os.kill(self.wait_worker_pid(once, 1), signal.SIGKILL)
        experiment = d.wait_status(once, ["failed"], timeout=10)
        self.assertEqual(1, experiment["attempts"])

    def test_a_locked_database_delays_writes_and_loses_nothing(self):
        d = self.daemon
        # Short enough to end while the lock is held: its outcome must wait too.
        experiment_id = d.submit(synthetic_config("while-locked", epochs=8))
        stream = d.stream(experiment_id)
        for event in stream:
            if event["event"] == "metric":
                break
        blocker = sqlite3.connect(d.db_path, timeout=5, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock, as a careless reader might
        time.sleep(3)
        self.assertEqual("ok", d.get("/api/health")[2]["status"], "the daemon answers meanwhile")
        with sqlite3.connect("file:%s?mode=ro" % d.db_path, uri=True) as db:
            status, = db.execute("SELECT status FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
        self.assertEqual("running", status, "nothing could be written while locked")
        blocker.execute("ROLLBACK")
        blocker.close()
        steps = [e["data"]["step"] for e in stream if e["event"] == "metric"]
        stream.close()
        experiment = d.wait_status(experiment_id, ["succeeded"])
        with sqlite3.connect("file:%s?mode=ro" % d.db_path, uri=True) as db:
            stored = [row[0] for row in db.execute(
                "SELECT step FROM metrics WHERE experiment_id = ? AND name = 'loss/total' ORDER BY step",
                (experiment_id,))]
            self.assertEqual("ok", db.execute("PRAGMA integrity_check").fetchone()[0])
        self.assertEqual(list(range(1, experiment["progress"]["step"] + 1)), stored, "every step was written")
        self.assertEqual(stored[-len(steps):], steps)
        self.assertIn("the database refused the batch", d.log())

    def test_priority_then_age(self):
        d = self.daemon
        blocker = d.submit(synthetic_config("blocker", **LONG))
        d.wait_status(blocker, ["running"])
        low = d.submit(synthetic_config("low"))
        high = d.submit(synthetic_config("high", priority=10))
        d.request("POST", "/api/experiments/%d/cancel" % blocker)
        d.wait_status(low, ["succeeded"])
        self.assertLess(d.experiment(high)["started_at"], d.experiment(low)["started_at"])

    def test_list_filters_and_pages(self):
        d = self.daemon
        ids = [d.submit(synthetic_config("page-%d" % i, epochs=1)) for i in range(3)]
        for experiment_id in ids:
            d.wait_status(experiment_id, ["succeeded"])
        status, _, body = d.get("/api/experiments?name=page-&limit=2")
        self.assertEqual(200, status)
        self.assertEqual([ids[2], ids[1]], [e["id"] for e in body["experiments"]])
        _, _, rest = d.get("/api/experiments?name=page-&limit=2&before=%d" % body["next_before"])
        self.assertEqual([ids[0]], [e["id"] for e in rest["experiments"]])
        self.assertIsNone(rest["next_before"])
        _, _, body = d.get("/api/experiments?status=cancelled,failed&name=page-")
        self.assertEqual([], body["experiments"])

    def test_teacher_references_are_checked(self):
        d = self.daemon
        student = synthetic_config("student", stages=[{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}])
        student.pop("epochs")
        cases = [
            ({"experiment": 999999}, "teacher.experiment", "there is no experiment 999999"),
            ({"checkpoint": "/etc/passwd"}, "teacher.checkpoint", "must be inside the daemon's data directory"),
            ({"checkpoint": "../../../../../../../../etc/passwd"}, "teacher.checkpoint", "must be inside the daemon's data directory"),
            ({"checkpoint": "missing.ckpt"}, "teacher.checkpoint", "No such file or directory"),
        ]
        for teacher, path, words in cases:
            status, _, answer = d.request("POST", "/api/experiments", dict(student, teacher=teacher))
            self.assertEqual(400, status, teacher)
            self.assertEqual(path, answer["errors"][0]["path"])
            self.assertIn(words, answer["errors"][0]["message"])

        # A teacher that cannot succeed any more is refused; the layers named must exist.
        failed = d.submit(synthetic_config("doomed", **LONG))
        d.wait_status(failed, ["running"])
        d.request("POST", "/api/experiments/%d/cancel" % failed)
        d.wait_status(failed, ["cancelled"])
        status, _, answer = d.request("POST", "/api/experiments", dict(student, teacher={"experiment": failed}))
        self.assertEqual(400, status)
        self.assertIn("was cancelled", answer["errors"][0]["message"])
        done = d.submit(synthetic_config("teacher-ok", epochs=1))
        d.wait_status(done, ["succeeded"])
        bad_pair = dict(student, teacher={"experiment": done}, features=[{"student": "fc1", "teacher": "conv9"}])
        status, _, answer = d.request("POST", "/api/experiments", bad_pair)
        self.assertEqual(400, status)
        self.assertEqual("features[0].teacher", answer["errors"][0]["path"])
        self.assertIn("the teacher has no layer named \"conv9\"", answer["errors"][0]["message"])

    def test_students_wait_for_their_teacher_and_fail_with_it(self):
        d = self.daemon
        teacher = d.submit(synthetic_config("slow-teacher", **LONG))
        d.wait_status(teacher, ["running"])
        config = synthetic_config("waiting-student", priority=50, teacher={"experiment": teacher},
                                  stages=[{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}])
        config.pop("epochs")
        student = d.submit(config)
        other = d.submit(synthetic_config("runs-meanwhile", epochs=1))
        d.wait_status(other, ["queued"])  # the one worker is busy with the teacher
        self.assertEqual("queued", d.experiment(student)["status"])
        self.assertEqual(teacher, d.experiment(student)["teacher"])
        d.request("POST", "/api/experiments/%d/cancel" % teacher)
        experiment = d.wait_status(student, ["failed"], timeout=30)
        self.assertIn("its teacher, experiment %d, was cancelled" % teacher, experiment["error"])
        d.wait_status(other, ["succeeded"])  # the student's priority did not block the rest

    def test_bad_requests_get_clear_errors(self):
        d = self.daemon
        cases = [
            ("POST", "/api/experiments", "{\"name\": ", 400, "invalid config"),
            ("POST", "/api/experiments", "", 400, "invalid config"),
            ("GET", "/api/nothing", None, 404, "no such route"),
            ("DELETE", "/api/experiments", None, 405, "not allowed"),
            ("GET", "/api/experiments/0", None, 404, "no such route"),
            ("GET", "/api/experiments/abc", None, 404, "no such route"),
            ("GET", "/api/experiments/999999", None, 404, "no experiment 999999"),
            ("GET", "/api/experiments/999999/metrics", None, 404, "no experiment"),
            ("GET", "/api/experiments?limit=0", None, 400, "limit: must be an integer between 1 and 500"),
            ("GET", "/api/experiments?status=done", None, 400, "status: \"done\" is not a status"),
        ]
        for method, path, body, expected, words in cases:
            status, _, answer = d.request(method, path, body)
            self.assertEqual(expected, status, (method, path, answer))
            self.assertIn(words, answer["error"], (method, path))

        status, _, answer = d.request("POST", "/api/experiments", "{\"name\": ")
        self.assertEqual("", answer["errors"][0]["path"])
        self.assertIn("line 1", answer["errors"][0]["message"])

        bad = synthetic_config(epochs="3", lr=0.1)
        bad["stages_typo"] = []
        bad["dataset"]["val_size"] = -1
        status, _, answer = d.request("POST", "/api/experiments", bad)
        self.assertEqual(400, status)
        paths = {e["path"]: e["message"] for e in answer["errors"]}
        self.assertEqual({"epochs", "lr", "stages_typo", "dataset.val_size"}, set(paths))
        self.assertIn("must be an integer, not a string", paths["epochs"])
        self.assertIn("unknown field", paths["lr"])

        status, response, answer = d.request("POST", "/api/experiments", "x" * (1024 * 1024 + 1))
        self.assertEqual(413, status)
        self.assertIn("larger than 1048576 bytes", answer["error"])

        experiment_id = d.submit(synthetic_config("for-bad-cursors", epochs=1))
        for cursor in ["abc", "-1", "5.9", "5.", "1e3"]:
            status, _, answer = d.request("GET", "/api/experiments/%d/stream" % experiment_id,
                                          headers={"Last-Event-ID": cursor})
            self.assertEqual(400, status, cursor)
            self.assertIn("Last-Event-ID", answer["error"])
        status, _, answer = d.get("/api/experiments/%d/metrics?since_step=x" % experiment_id)
        self.assertEqual(400, status)
        self.assertIn("since_step", answer["error"])
        # The daemon is still well.
        self.assertEqual("ok", d.get("/api/health")[2]["status"])


class RemoteWorker(unittest.TestCase):
    """A worker on another machine posts the same protocol lines over HTTP."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=0)  # nothing runs here: every run is remote

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def post(self, experiment_id, events, secret=None, daemon=None):
        body = "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events) + "\n"
        headers = {"Content-Type": "application/x-ndjson"}
        if secret is not None:
            headers["X-MapSage-Run-Secret"] = secret
        return (daemon or self.daemon).request("POST", "/api/experiments/%d/events" % experiment_id, body, headers)

    def claim(self, experiment_id, daemon=None):
        """The first post: the run is ours; returns its secret."""
        status, _, body = self.post(experiment_id, [{"event": "started", "host": "gpu-7"}], daemon=daemon)
        self.assertEqual(200, status, body)
        return body.get("secret")  # test_a_remote_run_from_claim_to_result checks it is there

    def test_a_remote_run_from_claim_to_result(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote"))
        self.assertEqual("queued", d.experiment(experiment_id)["status"])
        stream = d.stream(experiment_id)
        self.assertEqual("queued", next(stream)["data"]["status"])
        status, _, body = self.post(experiment_id, [
            {"event": "started", "host": "gpu-7", "pid": 4242},
            {"event": "stage", "step": 0, "epoch": 1, "stage": 0, "name": "main"},
            {"event": "metric", "step": 1, "epoch": 1, "stage": 0, "values": {"loss/total": 2.5, "lr": 0.1}},
            {"event": "metric", "step": 2, "epoch": 1, "stage": 0, "values": {"loss/total": 2.0, "lr": 0.1}},
            {"event": "log", "level": "info", "message": "hello from gpu-7"}])
        self.assertEqual(200, status, body)
        secret = body.pop("secret")
        self.assertRegex(secret, "^[0-9a-f]{64}$", "the claim is answered with the run's secret")
        self.assertEqual({"accepted": 5, "status": "running"}, body)
        experiment = d.experiment(experiment_id)
        self.assertEqual("running", experiment["status"])
        self.assertEqual(1, experiment["attempts"])
        self.assertEqual("gpu-7", experiment["worker"]["host"])
        status, _, body = self.post(experiment_id, [
            {"event": "metric", "step": 3, "epoch": 1, "stage": 0, "values": {"loss/total": 1.5, "lr": 0.1}},
            {"event": "eval", "step": 3, "epoch": 1, "stage": 0, "split": "test", "values": {"accuracy": 0.75}},
            {"event": "finished", "status": "succeeded", "summary": {"final_test_accuracy": 0.75}}], secret)
        self.assertEqual({"accepted": 3, "status": "succeeded"}, body)
        events = list(stream)
        stream.close()
        self.assertEqual([1, 2, 3], [e["data"]["step"] for e in events if e["event"] == "metric"])
        self.assertEqual("succeeded", events[-1]["data"]["status"])
        experiment = d.experiment(experiment_id)
        self.assertEqual(0.75, experiment["summary"]["final_test_accuracy"])
        self.assertEqual([2.5, 2.0, 1.5], d.get("/api/experiments/%d/metrics" % experiment_id)[2]["loss/total"]["value"])
        self.assertIn("hello from gpu-7", d.get("/api/experiments/%d/log" % experiment_id)[2])
        status, _, body = self.post(experiment_id, [{"event": "metric", "step": 4, "epoch": 1, "stage": 0,
                                                     "values": {"loss/total": 1.0}}], secret)
        self.assertEqual(409, status)
        self.assertIn("has ended (succeeded)", body["error"])

    def experiment_directory(self, experiment_id, daemon=None):
        """Where a run's checkpoints must be: the data directory is the shared storage."""
        return os.path.join((daemon or self.daemon).directory, "data", "experiments", str(experiment_id))

    def remote_worker(self, experiment_id):
        return subprocess.Popen([os.path.join(BIN_DIR, "mapsage-worker"), "--server", self.daemon.url.rstrip("/"),
                                 "--experiment", str(experiment_id),
                                 "--checkpoint-dir", self.experiment_directory(experiment_id)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_mapsage_worker_with_server_runs_a_remote_experiment(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-real", epochs=3))
        worker = self.remote_worker(experiment_id)
        out, err = worker.communicate(timeout=120)
        self.assertEqual(0, worker.returncode, err)
        self.assertEqual("", out, "events go to the daemon, not to stdout")
        self.assertNotIn("refused", err)
        self.assertTrue(os.path.exists(os.path.join(self.experiment_directory(experiment_id), "epoch-0003.ckpt")))
        experiment = d.experiment(experiment_id)
        self.assertEqual("succeeded", experiment["status"], experiment["error"])
        self.assertEqual(3, experiment["progress"]["epoch"])
        self.assertGreater(experiment["summary"]["final_test_accuracy"], 0.9)
        curves = d.get("/api/experiments/%d/metrics" % experiment_id)[2]
        steps = curves["loss/total"]["step"]
        self.assertEqual(list(range(1, len(steps) + 1)), steps, "every step, once")
        self.assertEqual(experiment["summary"]["steps"], len(steps))
        self.assertEqual([1, 2, 3], curves["test/accuracy"]["epoch"])
        self.assertEqual(3, len(experiment["checkpoints"]))

    def test_a_cancel_stops_a_remote_mapsage_worker(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-stopped", **LONG))
        worker = self.remote_worker(experiment_id)
        d.wait_status(experiment_id, ["running"])
        stream = d.stream(experiment_id)
        for event in stream:
            if event["event"] == "metric":
                break
        stream.close()
        self.assertEqual(200, d.request("POST", "/api/experiments/%d/cancel" % experiment_id)[0])
        _, err = worker.communicate(timeout=60)
        self.assertEqual(3, worker.returncode, err)
        self.assertIn("the daemon takes no more events", err)
        self.assertEqual("cancelled", d.experiment(experiment_id)["status"])
        self.assertEqual(2, subprocess.run([os.path.join(BIN_DIR, "mapsage-worker"), "--server", "ftp://x",
                                            "--experiment", "1"], capture_output=True).returncode)

    def test_a_silent_remote_run_is_interrupted_then_claimed_again_with_a_new_secret(self):
        d = Daemon(workers=0, extra_args=["--remote-timeout", "1"])
        try:
            experiment_id = d.submit(synthetic_config("remote-silent"))
            old = self.claim(experiment_id, daemon=d)
            experiment = d.wait_status(experiment_id, ["interrupted"], timeout=10)
            self.assertIn("no events from its remote worker for 1 s", experiment["error"])
            # The lost node comes back: its attempt is over, and its secret claims nothing.
            log = {"event": "log", "level": "info", "message": "still here"}
            status, _, body = self.post(experiment_id, [log], old, daemon=d)
            self.assertEqual(409, status, body)
            self.assertIn("the attempt this X-MapSage-Run-Secret was given for has ended", body["error"])
            self.assertEqual("interrupted", d.experiment(experiment_id)["status"])
            status, _, body = self.post(experiment_id, [{"event": "started", "host": "new-node"}], daemon=d)
            new = body.pop("secret")
            self.assertEqual({"accepted": 1, "status": "running"}, body)
            self.assertNotEqual(old, new)
            self.assertEqual(2, d.experiment(experiment_id)["attempts"])
            status, _, body = self.post(experiment_id, [log], old, daemon=d)
            self.assertEqual(403, status, body)
            self.assertIn("is not this attempt's", body["error"])
            self.assertEqual(200, self.post(experiment_id, [log], new, daemon=d)[0])
        finally:
            d.close()

    def test_a_claimed_run_takes_posts_only_with_its_secret(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-claimed"))
        secret = self.claim(experiment_id)
        metric = {"event": "metric", "step": 1, "epoch": 1, "stage": 0, "values": {"loss/total": 2.5}}
        forged = {"event": "finished", "status": "failed", "error": "forged"}
        status, _, body = self.post(experiment_id, [metric, forged])
        self.assertEqual(403, status, body)
        self.assertIn("must carry the X-MapSage-Run-Secret", body["error"])
        status, _, body = self.post(experiment_id, [forged], "0" * 64)
        self.assertEqual(403, status, body)
        self.assertIn("is not this attempt's", body["error"])
        experiment = d.experiment(experiment_id)
        self.assertEqual("running", experiment["status"], "a forged finished ends nothing")
        self.assertEqual({}, d.get("/api/experiments/%d/metrics" % experiment_id)[2], "nothing was stored")
        status, _, body = self.post(experiment_id, [metric, {"event": "finished", "status": "succeeded"}], secret)
        self.assertEqual({"accepted": 2, "status": "succeeded"}, body)

    def test_checkpoints_must_be_regular_files_in_the_experiments_directory(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-checkpoints", epochs=2))
        other = d.submit(synthetic_config("remote-other"))
        secret = self.claim(experiment_id)
        directory = self.experiment_directory(experiment_id)
        os.makedirs(directory, exist_ok=True)  # the claim made it (the shared storage's)
        good = os.path.join(directory, "epoch-0001.ckpt")
        with open(good, "wb") as f:
            f.write(b"checkpoint")
        os.symlink("/etc/passwd", os.path.join(directory, "link.ckpt"))
        os.mkfifo(os.path.join(directory, "fifo.ckpt"))  # a worker told to read it would hang
        os.makedirs(self.experiment_directory(other), exist_ok=True)
        elsewhere = os.path.join(self.experiment_directory(other), "epoch-0001.ckpt")
        with open(elsewhere, "wb") as f:
            f.write(b"not yours")

        def checkpoint(path, epoch=1):
            return {"event": "checkpoint", "step": 10, "epoch": epoch, "path": path, "bytes": 10}
        cases = [
            (checkpoint("/etc/passwd"), "is not inside"),
            (checkpoint(os.path.join(directory, "link.ckpt")), "is not inside"),
            (checkpoint(os.path.join(directory, "fifo.ckpt")), "is not a regular file"),
            (checkpoint(os.path.join(directory, "..", str(other), "epoch-0001.ckpt")), "is not inside"),
            (checkpoint(os.path.join(directory, "missing.ckpt")), "No such file or directory"),
            (checkpoint(good, epoch=1000000), "the config plans epochs 0 to 2"),
        ]
        status, _, body = self.post(experiment_id, [c for c, _ in cases] + [checkpoint(good)], secret)
        self.assertEqual(200, status, body)
        self.assertEqual(1, body["accepted"], body)
        self.assertEqual(list(range(1, len(cases) + 1)), [r["line"] for r in body["refused"]])
        for (_, words), refusal in zip(cases, body["refused"]):
            self.assertIn(words, refusal["message"])
        checkpoints = d.experiment(experiment_id)["checkpoints"]
        self.assertEqual([os.path.realpath(good)], [c["path"] for c in checkpoints], "only the good one is stored")
        self.assertEqual(1, checkpoints[0]["epoch"])
        self.assertIn("checkpoint refused, not recorded", d.get("/api/experiments/%d/log" % experiment_id)[2])
        self.assertEqual(200, self.post(experiment_id, [{"event": "finished", "status": "succeeded"}], secret)[0])

    def test_a_student_cannot_name_its_experiment_teachers_checkpoint(self):
        d = self.daemon
        teacher = d.submit(synthetic_config("remote-teacher"))
        os.makedirs(os.path.join(d.directory, "data"), exist_ok=True)
        fifo = os.path.join(d.directory, "data", "teacher.fifo")
        os.mkfifo(fifo)
        student = synthetic_config("remote-student", stages=[{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}])
        student.pop("epochs")
        for checkpoint, words in [("/etc/passwd", "must be inside the daemon's data directory"),
                                  (fifo, "not a regular file")]:
            status, _, answer = d.request("POST", "/api/experiments",
                                          dict(student, teacher={"experiment": teacher, "checkpoint": checkpoint}))
            self.assertEqual(400, status, answer)
            self.assertEqual("teacher.checkpoint", answer["errors"][0]["path"])
            self.assertIn(words, answer["errors"][0]["message"])

    def test_bad_lines_are_named_and_nothing_is_applied(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-bad"))
        status, _, body = self.post(experiment_id, [
            {"event": "metric", "step": 1, "epoch": 1, "stage": 0, "values": {"loss/total": 2.5}},
            "this is not json",
            {"event": "metric", "step": "two", "epoch": 1, "stage": 0, "values": {}}])
        self.assertEqual(400, status)
        self.assertEqual("invalid events: none was applied", body["error"])
        self.assertEqual([2, 3], [e["line"] for e in body["errors"]])
        self.assertIn("step", body["errors"][1]["message"])
        experiment = d.experiment(experiment_id)
        self.assertEqual("queued", experiment["status"], "a refused post claims nothing")
        self.assertEqual({}, d.get("/api/experiments/%d/metrics" % experiment_id)[2])
        self.assertEqual(404, self.post(999999, [{"event": "log", "level": "info", "message": "x"}])[0])

    def test_a_cancelled_remote_run_refuses_its_worker(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("remote-cancel"))
        self.assertEqual(200, self.post(experiment_id, [{"event": "started", "host": "gpu-8"}])[0])
        status, _, body = d.request("POST", "/api/experiments/%d/cancel" % experiment_id)
        self.assertEqual(200, status, body)
        self.assertEqual("cancelled", d.experiment(experiment_id)["status"])
        status, _, body = self.post(experiment_id, [{"event": "metric", "step": 1, "epoch": 1, "stage": 0,
                                                     "values": {"loss/total": 2.5}}])
        self.assertEqual(409, status)
        self.assertIn("has ended (cancelled)", body["error"])


class Restart(unittest.TestCase):
    def test_daemon_killed_mid_run_requeues_and_completes(self):
        d = Daemon(workers=1)
        try:
            experiment_id = d.submit(synthetic_config("survivor", epochs=60))
            stream = d.stream(experiment_id)
            for event in stream:
                if event["event"] == "metric" and event["data"]["step"] >= 50:
                    break
            stream.close()
            d.kill(signal.SIGKILL)  # no chance to clean up
            with sqlite3.connect(d.db_path) as db:
                status, committed = db.execute(
                    "SELECT status, (SELECT count(*) FROM metrics WHERE experiment_id = ?1 AND name = 'loss/total') "
                    "FROM experiments WHERE id = ?1", (experiment_id,)).fetchone()
            self.assertEqual("running", status)
            self.assertGreater(committed, 0, "metrics committed before the kill are kept")

            d.start()
            self.assertIn("queued again", d.log())
            experiment = d.wait_status(experiment_id, ["succeeded"])
            self.assertEqual(2, experiment["attempts"])
            steps = [e["data"]["step"] for e in d.stream(experiment_id) if e["event"] == "metric"]
            self.assertEqual(list(range(1, len(steps) + 1)), steps, "no gap, no duplicate after the restart")
            self.assertEqual(60, experiment["progress"]["epoch"])
        finally:
            d.close()

    def test_sigterm_checkpoints_marks_interrupted_and_resumes_there(self):
        d = Daemon(workers=1)
        try:
            experiment_id = d.submit(synthetic_config("stopped", **LONG))
            stream = d.stream(experiment_id)
            for event in stream:
                if event["event"] == "metric" and event["data"]["step"] >= 40:
                    break
            stream.close()
            started = time.time()
            d.kill(signal.SIGTERM)
            self.assertLess(time.time() - started, 10)
            self.assertEqual(0, d.process.returncode)
            with sqlite3.connect(d.db_path) as db:
                status, = db.execute("SELECT status FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
                last_step, = db.execute("SELECT max(step) FROM metrics WHERE experiment_id = ?",
                                        (experiment_id,)).fetchone()
                path, step = db.execute("SELECT path, step FROM checkpoints WHERE experiment_id = ? "
                                        "ORDER BY epoch DESC LIMIT 1", (experiment_id,)).fetchone()
            self.assertEqual("interrupted", status)
            self.assertEqual(last_step, step, "the workers checkpointed where they stopped")
            self.assertTrue(os.path.exists(path))

            d.start()
            deadline = time.time() + 60
            experiment = d.experiment(experiment_id)
            while time.time() < deadline and not (experiment["worker"] or {}).get("resumed_from"):
                time.sleep(0.1)
                experiment = d.experiment(experiment_id)
            self.assertEqual(path, experiment["worker"]["resumed_from"])
        finally:
            d.close()

    def test_checkpoints_replaced_since_they_were_recorded_are_not_handed_to_workers(self):
        """A checkpoint is checked again when a worker is to read it: a link out (or a FIFO)
        put in its place since is never given as --resume, nor as a student's teacher."""
        d = Daemon(workers=0)
        try:
            def post(experiment_id, events, secret=None):
                body = "".join(json.dumps(e) + "\n" for e in events)
                headers = {"X-MapSage-Run-Secret": secret} if secret else {}
                status, _, answer = d.request("POST", "/api/experiments/%d/events" % experiment_id, body, headers)
                self.assertEqual(200, status, answer)
                self.assertEqual(len(events), answer["accepted"], answer)
                return answer.get("secret")

            def checkpoint(experiment_id, epoch):
                directory = os.path.join(d.directory, "data", "experiments", str(experiment_id))
                os.makedirs(directory, exist_ok=True)
                path = os.path.join(directory, "epoch-%04d.ckpt" % epoch)
                with open(path, "wb") as f:
                    f.write(b"checkpoint")
                return {"event": "checkpoint", "step": 10, "epoch": epoch, "path": path, "bytes": 10}, path

            resumed = d.submit(synthetic_config("resumed-from-a-link"))
            secret = post(resumed, [{"event": "started", "host": "gpu-9"}])
            event, resumed_path = checkpoint(resumed, 1)
            post(resumed, [event], secret)

            teacher = d.submit(synthetic_config("teacher-of-a-link"))
            secret = post(teacher, [{"event": "started", "host": "gpu-9"}])
            event, teacher_path = checkpoint(teacher, 2)
            post(teacher, [event, {"event": "finished", "status": "succeeded"}], secret)
            student = synthetic_config("student-of-a-link",
                                       stages=[{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}])
            student.pop("epochs")
            student_id = d.submit(dict(student, teacher={"experiment": teacher}))

            d.kill(signal.SIGTERM)  # the remote run becomes interrupted
            for path in (resumed_path, teacher_path):
                os.unlink(path)
                os.symlink("/etc/passwd", path)
            d.workers = 1
            d.start()
            experiment = d.wait_status(resumed, ["succeeded", "failed"])
            self.assertEqual("succeeded", experiment["status"], experiment["error"])
            self.assertIsNone((experiment["worker"] or {}).get("resumed_from"))
            self.assertIn("the latest checkpoint cannot be resumed from (%s is not inside" % resumed_path,
                          d.get("/api/experiments/%d/log" % resumed)[2])
            experiment = d.wait_status(student_id, ["succeeded", "failed"])
            self.assertEqual("failed", experiment["status"])
            self.assertIn("its teacher's checkpoint cannot be given to a worker: %s is not inside" % teacher_path,
                          experiment["error"])
        finally:
            d.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
