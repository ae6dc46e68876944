"""test_study.py — studies against a real mapsaged and real workers on the synthetic dataset:
the dry run, every kind of refusal, a study trained to its statistics (checked against
SciPy from the runs' own outcomes, read back with SQL), its curves and live stream, cancel,
a failed run, the median stopping rule, a daemon killed mid-study, and 200 runs."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

import numpy
from scipy import stats as scipy_stats

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, Daemon, SseReader  # noqa: E402

DATASET = {"name": "synthetic", "train_size": 512, "test_size": 256, "val_size": 64}
STUDENT = {"layers": [{"type": "linear", "out": 16, "name": "fc1"}, {"type": "relu"},
                      {"type": "linear", "out": 10}]}
TEACHER = {"layers": [{"type": "linear", "out": 64, "name": "fc1"}, {"type": "relu"},
                      {"type": "linear", "out": 10}]}


def study(name="s", seeds=3, epochs=3, **extra):
    """Two distilling arms of equal budget (one shared baseline) and a teacher the study
    trains: seconds on the synthetic data."""
    spec = {
        "name": name, "seeds": seeds,
        "base": {"dataset": DATASET, "model": STUDENT, "batch_size": 64,
                 "stages": [{"name": "main", "epochs": epochs}]},
        "teacher": {"config": {"dataset": DATASET, "model": TEACHER, "batch_size": 64, "epochs": 3}},
        "arms": {
            "kd": {"temperature": {"schedule": "constant", "start": 4},
                   "stages": [{"name": "main", "epochs": epochs, "task_weight": 0.7, "distill_weight": 0.3}]},
            "kd-features": {"temperature": {"schedule": "constant", "start": 2},
                            "features": [{"student": "fc1", "teacher": "fc1"}],
                            "stages": [{"name": "main", "epochs": epochs, "task_weight": 0.6,
                                        "distill_weight": 0.3, "feature_weight": 0.1}]},
        },
    }
    spec.update(extra)
    return spec


def holm(p_values):
    """Holm–Bonferroni as statsmodels' multipletests(method="holm") computes it."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


class Studies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=2)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def post(self, path, body):
        return self.daemon.request("POST", path, body)

    def get_study(self, study_id):
        status, _, body = self.daemon.get("/api/studies/%d" % study_id)
        self.assertEqual(200, status, body)
        return body

    def wait_study(self, study_id, statuses, timeout=240):
        return self.daemon.wait_study(study_id, statuses, timeout)

    def submit(self, spec):
        status, response, body = self.post("/api/studies", spec)
        self.assertEqual(201, status, body)
        self.assertEqual("/api/studies/%d" % body["id"], response.getheader("Location"))
        return body

    # --- submission ---------------------------------------------------------------------

    def test_dry_run_expands_and_stores_nothing(self):
        before = self.daemon.get("/api/experiments?limit=500")[2]["experiments"]
        status, _, plan = self.post("/api/studies?dry_run=1", study(grid={"optimizer.lr": [0.05, 0.1]}))
        self.assertEqual(200, status, plan)
        self.assertTrue(plan["dry_run"])
        # One teacher; per seed 2 arms × 2 cells and a baseline per cell shared by both arms.
        self.assertEqual(1 + 3 * (4 + 2), plan["count"])
        self.assertEqual(plan["count"], len(plan["runs"]))
        self.assertEqual(sum(run["steps"] for run in plan["runs"]), plan["steps"])
        roles = [role for run in plan["runs"] for role in run["roles"]]
        self.assertTrue(roles)
        self.assertEqual(3 * 4, sum(1 for role in roles if role["role"] == "baseline"))
        for run in plan["runs"]:
            if "teacher_run" in run:
                self.assertEqual("teacher", plan["runs"][run["teacher_run"]]["roles"][0]["role"])
        after = self.daemon.get("/api/experiments?limit=500")[2]["experiments"]
        self.assertEqual(len(before), len(after))
        self.assertEqual(400, self.post("/api/studies?dry_run=maybe", study())[0])

    def test_refusals_name_the_field(self):
        cases = [
            ("{not json", "", "invalid JSON"),
            (study(seeds=0), "seeds", "count from 1"),
            (dict(study(), arms={"kd": {"stages": [{"epochs": 0}]}}), "arms.kd.stages[0].epochs", "between 1"),
            (dict(study(), grid={"stages[5].epochs": [1]}), "grid.stages[5].epochs", "no [5]"),
            (dict(study(), teacher={"experiment": 999999}), "teacher.experiment", "no experiment 999999"),
            (dict(study(), teacher={"checkpoint": "/etc/passwd"}), "teacher.checkpoint", "data directory"),
            (dict(study(), teacher=None), "arms.kd", "no \"teacher\""),
            # A teacher that held out other validation examples has seen this study's.
            (dict(study(), teacher={"config": {"dataset": dict(DATASET, split_seed=7), "model": TEACHER,
                                               "epochs": 1}}), "arms.kd.dataset", "other data"),
        ]
        for body, path, needle in cases:
            if isinstance(body, dict):
                body = {key: value for key, value in body.items() if value is not None}
            status, _, answer = self.post("/api/studies", body)
            self.assertEqual(400, status, answer)
            self.assertEqual("invalid study", answer["error"])
            paths = [error["path"] for error in answer["errors"]]
            self.assertIn(path, paths, answer)
            message = answer["errors"][paths.index(path)]["message"]
            self.assertIn(needle, message)
        self.assertEqual(404, self.daemon.get("/api/studies/999999")[0])
        self.assertEqual(404, self.post("/api/studies/999999/cancel", None)[0])
        self.assertEqual(404, self.daemon.get("/api/studies/999999/curves")[0])

    # --- a study to its answer ----------------------------------------------------------

    def test_a_study_runs_to_statistics_that_match_scipy(self):
        created = self.submit(study("scipy-check"))
        study_id = created["id"]
        self.assertEqual(1 + 3 * 3, created["runs"])  # a teacher; two arms and their shared baseline per seed
        done = self.wait_study(study_id, ["succeeded", "failed"])
        self.assertEqual("succeeded", done["status"], done)
        self.assertEqual({"succeeded": 10}, done["counts"])
        self.assertIsNotNone(done["finished_at"])
        arms = {(arm["name"], json.dumps(arm["cell"])): arm for arm in done["arms"]}
        self.assertEqual({"teacher", "kd", "kd/baseline", "kd-features", "kd-features/baseline"},
                         {name for name, _ in arms})
        # The outcomes, read back from the database with plain SQL, as a person would.
        database = sqlite3.connect(self.daemon.db_path)
        outcome = {}
        for experiment_id, value in database.execute(
                "SELECT id, final_test_accuracy FROM experiment_summary WHERE id IN "
                "(SELECT experiment_id FROM study_runs WHERE study_id = ?)", (study_id,)):
            outcome[experiment_id] = value
        self.assertEqual(10, len(outcome))
        for (name, _), arm in arms.items():
            values = [outcome[run] for run in arm["runs"]]
            self.assertTrue(values)
            summary = arm["outcomes"]["test_accuracy"]
            self.assertEqual(len(values), summary["n"])
            self.assertAlmostEqual(numpy.mean(values), summary["mean"], places=12)
            if len(values) > 1:
                sd = numpy.std(values, ddof=1)
                self.assertAlmostEqual(sd, summary["sd"], places=12)
                half = scipy_stats.t.ppf(0.975, len(values) - 1) * sd / numpy.sqrt(len(values))
                self.assertAlmostEqual(numpy.mean(values) - half, summary["ci"][0], places=10)
                self.assertAlmostEqual(numpy.mean(values) + half, summary["ci"][1], places=10)
        comparisons = [c for c in done["comparisons"] if c["outcome"] == "test_accuracy"]
        self.assertEqual(2, len(comparisons))
        p_values = []
        for comparison in comparisons:
            self.assertTrue(comparison["matched"])
            self.assertEqual(3, comparison["n"])
            self.assertEqual(comparison["arm"] + "/baseline", comparison["baseline"])
            pairs = comparison["pairs"]
            self.assertEqual([1, 2, 3], sorted(pair["seed"] for pair in pairs))
            a = [outcome[pair["arm"]] for pair in pairs]
            b = [outcome[pair["baseline"]] for pair in pairs]
            reference = scipy_stats.ttest_rel(a, b)
            differences = numpy.subtract(a, b)
            self.assertAlmostEqual(differences.mean(), comparison["mean_diff"], places=12)
            if numpy.std(differences) > 0:
                self.assertAlmostEqual(reference.pvalue, comparison["p"], places=9)
                self.assertAlmostEqual(reference.statistic, comparison["t"], places=9)
            p_values.append(comparison["p"])
        for comparison, adjusted in zip(comparisons, holm(p_values)):
            self.assertAlmostEqual(adjusted, comparison["p_holm"], places=12)
        # Each distilling arm's gradient shares: the shares of a step sum to one, so do their means.
        for arm in done["arms"]:
            if arm["role"] != "arm":
                self.assertNotIn("gradients", arm)
                continue
            shares = arm["gradients"]["share"]
            self.assertIn("distill", shares)
            self.assertAlmostEqual(1.0, sum(shares.values()), places=6)
            self.assertTrue(-1 <= arm["gradients"]["cosine"]["distill"] <= 1)
        # The same figures in the SQL views.
        rows = database.execute("SELECT arm, n, mean_diff, p_holm, matched FROM study_comparison "
                                "WHERE study_id = ? AND outcome = 'test_accuracy' ORDER BY arm", (study_id,)).fetchall()
        self.assertEqual(sorted((c["arm"], c["n"]) for c in comparisons), [(row[0], row[1]) for row in rows])
        for row in rows:
            match = [c for c in comparisons if c["arm"] == row[0]][0]
            self.assertAlmostEqual(match["p_holm"], row[3], places=12)
            self.assertEqual(1, row[4])
        summary_rows = database.execute("SELECT arm, n, mean FROM study_arm_summary WHERE study_id = ? AND "
                                        "outcome = 'test_accuracy'", (study_id,)).fetchall()
        self.assertEqual(5, len(summary_rows))
        database.close()
        # The arms' mean curves, with their bands.
        status, _, curves = self.daemon.get("/api/studies/%d/curves?names=val/accuracy,loss/task" % study_id)
        self.assertEqual(200, status, curves)
        self.assertEqual("epoch", curves["val/accuracy"]["x"])
        series = {s["arm"]: s for s in curves["val/accuracy"]["series"]}
        self.assertIn("kd", series)
        self.assertEqual([1, 2, 3], series["kd"]["x"])
        self.assertEqual([3, 3, 3], series["kd"]["n"])
        for low, mean, high in zip(series["kd"]["low"], series["kd"]["mean"], series["kd"]["high"]):
            self.assertLessEqual(low, mean)
            self.assertLessEqual(mean, high)
        self.assertTrue(curves["loss/task"]["series"])
        # The list shows it.
        listed = self.daemon.get("/api/studies")[2]["studies"]
        self.assertIn(study_id, [s["id"] for s in listed])

    def test_reports_judge_a_run_against_its_matched_baseline(self):
        created = self.submit(study("reported", seeds=2))
        done = self.wait_study(created["id"], ["succeeded", "failed"])
        self.assertEqual("succeeded", done["status"], done.get("error"))
        comparison = [c for c in done["comparisons"] if c["arm"] == "kd" and c["outcome"] == "test_accuracy"][0]
        pair = comparison["pairs"][0]
        report = self.daemon.get("/api/experiments/%d/report" % pair["arm"])[2]
        self.assertEqual(pair["baseline"], report["baseline"]["id"])
        self.assertTrue(report["baseline"]["matched"])
        self.assertTrue(report["baseline"]["in_study"])
        # A student outside any study, three epochs longer than every baseline there is: no
        # baseline is claimed, and the run of the same student that exists is named.
        student = dict(done["spec"]["base"], name="alone", teacher={"experiment": done["runs"][0]["id"]},
                       temperature={"schedule": "constant", "start": 4}, seed=1,
                       stages=[{"name": "main", "epochs": 6, "task_weight": 0.7, "distill_weight": 0.3}])
        self.assertEqual("teacher", done["runs"][0]["role"])
        alone = self.daemon.submit(student)
        self.daemon.wait_status(alone, ["succeeded"])
        report = self.daemon.get("/api/experiments/%d/report" % alone)[2]
        self.assertIsNone(report["baseline"])
        messages = " ".join(finding["message"] for finding in report["findings"])
        self.assertIn("no matched baseline", messages)
        # Its matched baseline, submitted as the report gives it, is then the one it is judged against.
        baseline = self.daemon.submit(report["baseline_config"])
        self.daemon.wait_status(baseline, ["succeeded"])
        report = self.daemon.get("/api/experiments/%d/report" % alone)[2]
        self.assertEqual(baseline, report["baseline"]["id"])
        self.assertFalse(report["baseline"]["in_study"])

    def test_a_term_that_takes_the_gradient_is_named(self):
        spec = study("dominated", seeds=1)
        spec["arms"] = {"imitate-only": {"temperature": {"schedule": "constant", "start": 4},
                                         "stages": [{"name": "main", "epochs": 2, "task_weight": 0,
                                                     "distill_weight": 1}]}}
        done = self.wait_study(self.submit(spec)["id"], ["succeeded", "failed"])
        self.assertEqual("succeeded", done["status"], done.get("error"))
        arm = [a for a in done["arms"] if a["name"] == "imitate-only"][0]
        self.assertAlmostEqual(1.0, arm["gradients"]["share"]["distill"], places=6)
        messages = [f["message"] for f in done["findings"] if f["arm"] == "imitate-only"]
        self.assertTrue(any("takes 100% of the gradient on the student" in m for m in messages), done["findings"])

    def test_reports_judge_by_gradient_share_and_on_validation(self):
        # A teacher that learned nothing, and a student that first learns the task, then only
        # imitates it: the distillation loss falls, validation accuracy does not follow.
        bad_teacher = self.daemon.submit({"name": "bad-teacher", "dataset": DATASET, "model": TEACHER,
                                          "optimizer": {"lr": 1e-6}, "epochs": 1})
        student = self.daemon.submit({
            "name": "imitator", "dataset": DATASET, "model": STUDENT, "batch_size": 64, "grad_norm_every": 2,
            "teacher": {"experiment": bad_teacher}, "temperature": {"schedule": "constant", "start": 1},
            "stages": [{"name": "task", "epochs": 3},
                       {"name": "imitate", "epochs": 4, "task_weight": 0, "distill_weight": 1}]})
        self.daemon.wait_status(student, ["succeeded"])
        report = self.daemon.get("/api/experiments/%d/report" % student)[2]
        task, imitate = report["stages"]
        self.assertAlmostEqual(1.0, imitate["gradient_share"]["distill"], places=6)
        self.assertAlmostEqual(0.0, imitate["gradient_share"]["task"], places=6)
        self.assertIn("distill", imitate["gradient_cosine"])
        self.assertLess(imitate["terms"]["loss/distill"]["change"], -0.2)
        self.assertLess(imitate["val_accuracy"]["change"], 0.002)
        warnings = [f["message"] for f in report["findings"] if f.get("stage") == "imitate"]
        self.assertTrue(warnings)
        self.assertTrue(any("takes 100% of the gradient on the student" in w for w in warnings), warnings)
        self.assertTrue(any("without getting better at the task" in w and "validation accuracy" in w
                            for w in warnings), warnings)
        # The command line shows the same, by term.
        printed = subprocess.run([os.path.join(BIN_DIR, "mapsage"), "--server", self.daemon.url, "report",
                                  str(student)], stdout=subprocess.PIPE, check=True, timeout=60).stdout.decode()
        self.assertIn("100% of the gradient", printed)
        self.assertIn("val/accuracy", printed)
        self.assertIn("no matched baseline", printed)
        # The task-only stage has no distillation weight: neither finding is made of it.
        self.assertFalse([f for f in report["findings"] if f.get("stage") == "task" and "dominates" in f["message"]])

    def test_the_stream_follows_runs_and_ends(self):
        created = self.submit(study("streamed", seeds=2))
        stream = SseReader(self.daemon.port, "/api/studies/%d/stream" % created["id"], timeout=240)
        self.assertEqual(200, stream.status)
        self.assertEqual("text/event-stream", stream.content_type)
        first = next(stream)  # where the study stands, before anything changes
        self.assertEqual("study", first["event"])
        self.assertEqual(created["id"], first["data"]["id"])
        kinds, last_study = set(), None
        for event in stream:
            kinds.add(event["event"])
            if event["event"] == "study":
                last_study = event["data"]
            if event["event"] == "end":
                break
        stream.close()
        self.assertIn("run", kinds)
        self.assertIsNotNone(last_study)
        self.assertEqual("succeeded", last_study["status"])
        self.assertEqual({"succeeded": 7}, last_study["counts"])
        # A stream opened on an ended study says where it stands and ends at once.
        again = SseReader(self.daemon.port, "/api/studies/%d/stream" % created["id"], timeout=30)
        self.assertEqual(["study", "end"], [event["event"] for event in again])
        again.close()

    def test_cancel_stops_every_run(self):
        long = study("to-cancel", seeds=3, epochs=400)
        created = self.submit(long)
        study_id = created["id"]
        deadline = time.time() + 60
        while self.get_study(study_id)["counts"].get("running", 0) == 0 and time.time() < deadline:
            time.sleep(0.05)
        status, _, answer = self.post("/api/studies/%d/cancel" % study_id, None)
        self.assertEqual(200, status, answer)
        self.assertEqual("cancelled", answer["status"])
        self.assertGreater(answer["cancelled_runs"], 0)
        done = self.get_study(study_id)
        deadline = time.time() + 60
        while any(run["status"] in ("queued", "running", "interrupted") for run in done["runs"]):
            self.assertLess(time.time(), deadline, done["counts"])
            time.sleep(0.1)
            done = self.get_study(study_id)
        self.assertEqual("cancelled", done["status"])
        self.assertTrue(done["runs"])
        self.assertTrue(all(run["status"] == "cancelled" for run in done["runs"]), done["counts"])
        self.assertIsNotNone(done["finished_at"])
        self.assertEqual(409, self.post("/api/studies/%d/cancel" % study_id, None)[0])

    def test_a_failed_run_fails_the_study_with_statistics_over_the_rest(self):
        spec = study("one-fails", seeds=2, epochs=200)
        spec["base"]["max_attempts"] = 1
        spec["teacher"]["config"]["epochs"] = 1
        spec["arms"] = {"kd": spec["arms"]["kd"]}
        created = self.submit(spec)
        study_id = created["id"]
        victim, pid = None, None
        deadline = time.time() + 60
        while pid is None and time.time() < deadline:
            for run in self.get_study(study_id)["runs"]:
                if run["role"] == "arm" and run["status"] == "running":
                    worker = self.daemon.experiment(run["id"]).get("worker") or {}
                    if worker.get("pid"):
                        victim, pid = run["id"], worker["pid"]
                        break
            time.sleep(0.05)
        self.assertIsNotNone(pid, "no arm run started")
        os.kill(pid, signal.SIGKILL)
        done = self.wait_study(study_id, ["succeeded", "failed"], timeout=300)
        self.assertEqual("failed", done["status"])
        self.assertIn(str(victim), done["error"])
        self.assertIn("the statistics are over the rest", done["error"])
        arm = [a for a in done["arms"] if a["name"] == "kd"][0]
        self.assertEqual(1, arm["outcomes"]["test_accuracy"]["n"])

    def test_the_median_rule_stops_runs_that_trail_their_arm(self):
        spec = {
            "name": "search", "seeds": 4, "early_stopping": {"rule": "median", "min_epochs": 3},
            "base": {"dataset": DATASET, "model": STUDENT, "batch_size": 64, "epochs": 6},
            "arms": {"search": {}},
            # A learning rate that learns and one that cannot: the second trails the median.
            "grid": {"optimizer.lr": [0.1, 1e-7]},
        }
        created = self.submit(spec)
        done = self.wait_study(created["id"], ["succeeded", "failed"])
        self.assertEqual("succeeded", done["status"], done.get("error"))
        stopped = [run for run in done["runs"] if run["stopped_epoch"] is not None]
        self.assertTrue(stopped, "no run was stopped early")
        for run in stopped:
            self.assertEqual(1e-7, run["cell"]["optimizer.lr"])
            self.assertEqual("cancelled", run["status"])
            experiment = self.daemon.experiment(run["id"])
            self.assertIn("stopped early by the median rule", experiment["error"])
        slow = [a for a in done["arms"] if a["cell"] == {"optimizer.lr": 1e-7}][0]
        self.assertEqual(sorted(run["id"] for run in stopped), sorted(slow["stopped"]))
        self.assertEqual(4 - len(stopped), slow["outcomes"]["test_accuracy"]["n"])


class StudyRestart(unittest.TestCase):
    def test_a_daemon_killed_mid_study_finishes_it_without_duplicates(self):
        daemon = Daemon(workers=1)
        try:
            spec = study("restarted", seeds=2, epochs=20)
            status, _, created = daemon.request("POST", "/api/studies", spec)
            self.assertEqual(201, status, created)
            study_id = created["id"]
            deadline = time.time() + 120
            while True:
                body = daemon.get("/api/studies/%d" % study_id)[2]
                if body["counts"].get("succeeded", 0) >= 2 and body["counts"].get("running", 0) == 1:
                    break
                self.assertLess(time.time(), deadline, body["counts"])
                time.sleep(0.05)
            daemon.kill(signal.SIGKILL)
            daemon.start()
            body = daemon.wait_study(study_id, ("succeeded", "failed"))
            self.assertEqual("succeeded", body["status"], body.get("error"))
            self.assertEqual({"succeeded": 7}, body["counts"])
            database = sqlite3.connect(daemon.db_path)
            experiments = database.execute("SELECT count(*) FROM experiments").fetchone()[0]
            links = database.execute("SELECT count(*) FROM study_runs WHERE study_id = ?", (study_id,)).fetchone()[0]
            interrupted = database.execute("SELECT count(*) FROM experiments WHERE attempts > 1").fetchone()[0]
            database.close()
            self.assertEqual(7, experiments)    # nothing submitted twice
            self.assertEqual(9, links)          # the shared baseline serves two arms per seed
            self.assertGreaterEqual(interrupted, 1)  # the run the kill interrupted ran again
            # Statistics an older daemon computed are computed again at the next start.
            daemon.kill(signal.SIGTERM)
            database = sqlite3.connect(daemon.db_path)
            database.execute("UPDATE studies SET statistics = '{\"version\": 1, \"arms\": []}' WHERE id = ?",
                             (study_id,))
            database.commit()
            database.close()
            daemon.start()
            body = daemon.get("/api/studies/%d" % study_id)[2]
            self.assertTrue(body["arms"])
            self.assertEqual(5, len(body["arms"]))
        finally:
            daemon.close()


class ManyRuns(unittest.TestCase):
    def test_two_hundred_runs_expand_schedule_and_finish(self):
        daemon = Daemon(workers=2)
        try:
            spec = {"name": "two-hundred", "seeds": 100,
                    "base": {"dataset": {"name": "synthetic", "train_size": 128, "test_size": 64, "val_size": 32},
                             "model": {"layers": [{"type": "linear", "out": 10}]}, "batch_size": 32, "epochs": 1,
                             "checkpoint_every": 0},
                    "grid": {"optimizer.lr": [0.05, 0.1]}}
            status, _, plan = daemon.request("POST", "/api/studies?dry_run=1", spec)
            self.assertEqual(200, status, plan)
            self.assertEqual(200, plan["count"])
            status, _, created = daemon.request("POST", "/api/studies", spec)
            self.assertEqual(201, status, created)
            body = daemon.wait_study(created["id"], ("succeeded", "failed"), timeout=400)
            self.assertEqual("succeeded", body["status"], body.get("error"))
            self.assertEqual(200, len(body["runs"]))
            self.assertEqual({"succeeded": 200}, body["counts"])
            self.assertEqual([100, 100], [arm["outcomes"]["test_accuracy"]["n"] for arm in body["arms"]])
            self.assertEqual(2, len(body["grid"][0]["axes"][0]["values"]))
        finally:
            daemon.close()


if __name__ == "__main__":
    unittest.main()
