#!/usr/bin/env python3
"""test_cli_study.py — `mapsage study …` driven as a user drives it: the real mapsaged (on a
free port, with a temporary database and the real mapsage-worker), the real client, real
HTTP. A small synthetic study: a teacher the study trains, two distilling arms (two
temperatures) that share one matched baseline, two seeds: seven tiny runs.

CTest sets MAPSAGE_BIN_DIR and MAPSAGE_SOURCE_DIR, as for test_cli.py. Python standard
library only.
"""
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mapsage_testlib import BIN_DIR, MLP, Daemon, synthetic_config  # noqa: E402

MAPSAGE = os.path.join(BIN_DIR, "mapsage")

DATA = {"name": "synthetic", "train_size": 1024}
TEACHER_MODEL = {"layers": [{"type": "linear", "out": 48, "name": "fc1"}, {"type": "relu"},
                            {"type": "linear", "out": 10, "name": "out"}]}
KD_STAGES = [{"epochs": 2, "task_weight": 0.5, "distill_weight": 0.5}]
STUDY = {"name": "cli-study", "description": "two temperatures against their matched baseline",
         "base": {"dataset": DATA, "model": MLP, "batch_size": 64, "stages": [{"epochs": 2}]},
         "teacher": {"config": {"dataset": DATA, "model": TEACHER_MODEL, "batch_size": 64, "epochs": 2}},
         "arms": {"kd-t2": {"temperature": {"start": 2}, "stages": KD_STAGES},
                  "kd-t4": {"temperature": {"start": 4}, "stages": KD_STAGES}},
         "seeds": 2}
# The teacher, each arm per seed, and per seed one baseline the two arms share.
RUNS = 1 + 2 * 2 + 2
ARMS = ["teacher", "kd-t2", "kd-t2/baseline", "kd-t4", "kd-t4/baseline"]

# Occupies a worker for a long while (it is cancelled long before it would end).
BLOCKER = synthetic_config("blocker", epochs=500, train_size=4096)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(text):
    """A table's lines as lists of cells (cells are separated by three or more spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in text.splitlines() if line.strip()]


class Watcher:
    """`mapsage study watch ID` in the background, its output read line by line."""

    def __init__(self, server, study_id):
        self.process = subprocess.Popen([MAPSAGE, "study", "watch", str(study_id)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=dict(os.environ, MAPSAGE_SERVER=server))
        self.out = b""

    def wait_for_line(self, pattern, timeout=30):
        """Reads stdout until a line matches `pattern`; fails at the deadline."""
        deadline = time.time() + timeout
        while True:
            for line in self.out.decode(errors="replace").splitlines():
                if re.search(pattern, line):
                    return line
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError("no line like %r from study watch within %ds: %r" % (pattern, timeout, self.out))
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("study watch ended without a line like %r: %r" % (pattern, self.out))
                self.out += chunk

    def finish(self, timeout=120):
        """Waits for the exit; returns (exit code, all of stdout, stderr)."""
        try:
            rest, err = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.communicate()
        return self.process.returncode, (self.out + rest).decode(), err.decode()


class StudyCliTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-test-cli-study-")
        self.daemons = []
        self.watchers = []
        self.study_path = self.write("study.json", json.dumps(STUDY))

    def tearDown(self):
        for watcher in self.watchers:
            if watcher.process.poll() is None:
                watcher.process.kill()
                watcher.process.communicate()
        for daemon in self.daemons:
            daemon.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------

    def write(self, name, text):
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_daemon(self, workers=1):
        directory = os.path.join(self.directory, "daemon%d" % len(self.daemons))
        os.makedirs(directory)
        daemon = Daemon(workers=workers, directory=directory)
        self.daemons.append(daemon)
        return daemon

    def mapsage(self, *arguments, server=None, stdin=None, timeout=60):
        """Runs mapsage; returns (exit code, stdout, stderr)."""
        env = dict(os.environ)
        env.pop("MAPSAGE_TOKEN_FILE", None)
        env["MAPSAGE_SERVER"] = server or (self.daemons[0].url if self.daemons else "http://127.0.0.1:9")
        done = subprocess.run([MAPSAGE, *arguments], input=stdin, capture_output=True, text=True, env=env,
                              timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def check(self, expected_code, result, what):
        code, out, err = result
        self.assertEqual(code, expected_code, "%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (what, code, expected_code, out, err))
        return out, err

    def watch(self, study_id):
        watcher = Watcher(self.daemons[0].url, study_id)
        self.watchers.append(watcher)
        return watcher

    def submit_study(self, *arguments, stdin=None):
        out, err = self.check(0, self.mapsage("study", "submit", *arguments, stdin=stdin), "study submit")
        self.assertRegex(out, r"^\d+\n$", "study submit prints just the id on stdout")
        self.assertRegex(err, r"^submitted study %s \((queued|running)\): %d runs\n$" % (out.strip(), RUNS))
        return int(out)

    def study(self, study_id):
        status, _, body = self.daemons[0].get("/api/studies/%d" % study_id)
        self.assertEqual(status, 200, body)
        return body

    def wait_study(self, study_id, condition, what, timeout=60):
        deadline = time.time() + timeout
        while True:
            study = self.study(study_id)
            if condition(study):
                return study
            if time.time() > deadline:
                raise AssertionError("study %d: %s not within %ds; it is %s" % (study_id, what, timeout, study["status"]))
            time.sleep(0.05)

    # --- tests ------------------------------------------------------------------------

    def test_dry_run_submit_watch_show_ls(self):
        daemon = self.start_daemon(workers=1)

        # The dry run: one line per run, then the count and the steps; nothing is created.
        out, _ = self.check(0, self.mapsage("study", "submit", self.study_path, "--dry-run"), "study submit --dry-run")
        _, _, expected = daemon.request("POST", "/api/studies?dry_run=1", STUDY)
        lines = out.splitlines()
        rows = table("\n".join(lines[:-1]))
        self.assertEqual(rows[0], ["INDEX", "NAME", "ROLE", "ARM", "SEED", "STEPS"])
        self.assertEqual(len(rows) - 1, RUNS)
        self.assertEqual(lines[-1], "%d runs, %d optimizer steps in all (2 arms, 2 seeds)" % (RUNS, expected["steps"]))
        for row, run in zip(rows[1:], expected["runs"]):
            self.assertEqual(row[0], str(run["index"]))
            self.assertEqual(row[1], run["name"])
            self.assertEqual(row[4:], [str(run["seed"]), str(run["steps"])])
        baselines = [row for row in rows[1:] if row[2] == "baseline"]
        self.assertEqual([row[3] for row in baselines], ["kd-t2/baseline,kd-t4/baseline"] * 2,
                         "a shared baseline lists each arm it serves")
        self.assertEqual(daemon.get("/api/studies")[2]["studies"], [], "a dry run creates nothing")

        out, _ = self.check(0, self.mapsage("study", "submit", "-", "--dry-run", "--json", "--set", "seeds=3",
                                            stdin=json.dumps(STUDY)), "study submit --dry-run --json --set")
        answer = json.loads(out)
        self.assertTrue(answer["dry_run"])
        self.assertEqual(answer["count"], 1 + 3 * 3, "--set seeds=3: a third seed of both arms and the baseline")
        self.assertEqual(len(answer["runs"]), answer["count"])

        # The study waits behind a long experiment until the watcher has read its record, so
        # the watcher sees every run end.
        blocker = daemon.submit(BLOCKER)
        daemon.wait_status(blocker, ["running"])
        study_id = self.submit_study(self.study_path)
        watcher = self.watch(study_id)
        watcher.wait_for_line(r"^study %d \(cli-study\): queued, %d runs$" % (study_id, RUNS))
        self.check(0, self.mapsage("cancel", str(blocker)), "cancel the blocker")
        code, out, err = watcher.finish()
        self.assertEqual(code, 0, "study watch of a study that succeeds\nstdout: %s\nstderr: %s" % (out, err))
        self.assertNotIn("\r", out, "no live line when stdout is not a terminal")
        record = self.study(study_id)
        run_ids = sorted({run["id"] for run in record["runs"]})
        self.assertEqual(len(run_ids), RUNS)
        for run_id in run_ids:
            succeeded = [line for line in out.splitlines() if line.startswith("run %d " % run_id)
                         and ": succeeded, test accuracy " in line]
            self.assertEqual(len(succeeded), 1, "one line for run %d's end:\n%s" % (run_id, out))
            running = [line for line in out.splitlines() if re.match(r"run %d .*: running$" % run_id, line)]
            self.assertLessEqual(len(running), 1, "a change is printed once:\n" + out)
        self.assertIn("study %d (cli-study): running" % study_id, out)
        self.assertIn("progress: %d/%d runs ended (%d succeeded)" % (RUNS, RUNS, RUNS), out)
        self.assertRegex(out.splitlines()[-1], r"^study %d succeeded in [\d.]+\w*: %d runs, %d succeeded$"
                         % (study_id, RUNS, RUNS))
        self.assertEqual(record["status"], "succeeded")

        # Watching a study that has ended says how it ended, at once.
        out, _ = self.check(0, self.mapsage("study", "watch", str(study_id), timeout=15), "watch of an ended study")
        self.assertEqual(len(out.splitlines()), 2, out)
        self.assertRegex(out.splitlines()[-1], r"^study %d succeeded " % study_id)

        # show: the header, every arm, the accuracy comparisons (not the loss by default).
        out, _ = self.check(0, self.mapsage("study", "show", str(study_id)), "study show")
        self.assertTrue(out.startswith("study %d: cli-study\n" % study_id), out)
        self.assertRegex(out, r"(?m)^  status +succeeded$")
        self.assertRegex(out, r"(?m)^  runs +%d: %d succeeded$" % (RUNS, RUNS))
        arms_at = out.index("\nARM ")
        arm_rows = table(out[arms_at:out.index("\n\n", arms_at)])
        self.assertEqual(arm_rows[0], ["ARM", "ROLE", "CELL", "N", "TEST-ACC %", "BEST-VAL-ACC %"])
        self.assertEqual([row[0] for row in arm_rows[1:]], ARMS)
        for row, arm in zip(arm_rows[1:], record["arms"]):
            test = arm["outcomes"]["test_accuracy"]
            self.assertEqual(row[3], str(test["n"]))
            if test["ci"][0] is None:
                self.assertEqual(row[4], "%.2f" % (test["mean"] * 100))
            else:
                self.assertEqual(row[4], "%.2f ± %.2f" % (test["mean"] * 100, (test["ci"][1] - test["ci"][0]) * 50))
        self.assertEqual([row[3] for row in arm_rows[1:]], ["1", "2", "2", "2", "2"])

        comparisons_at = out.index("\nARM vs BASELINE")
        comparison_rows = table(out[comparisons_at:])
        self.assertEqual(comparison_rows[0], ["ARM vs BASELINE", "CELL", "OUTCOME", "N", "Δ MEAN [95% CI]", "P",
                                              "P-HOLM"])
        expected_rows = [c for c in record["comparisons"] if c["outcome"] in ("test_accuracy", "best_val_accuracy")]
        self.assertEqual(len(comparison_rows) - 1, 4)
        for row, comparison in zip(comparison_rows[1:], expected_rows):
            self.assertEqual(row[0], "%s vs %s/baseline" % (comparison["arm"], comparison["arm"]))
            self.assertEqual(row[2:4], [comparison["outcome"], "2"])
            self.assertEqual(row[4], "%+.2f [%+.2f, %+.2f] pp" % (comparison["mean_diff"] * 100, comparison["ci"][0] * 100,
                                                                  comparison["ci"][1] * 100))
            self.assertEqual(row[5], "-" if comparison["p"] is None else
                             "<0.001" if comparison["p"] < 0.001 else "%.3f" % comparison["p"])
        self.assertNotIn("test_loss", out)
        self.assertNotIn("unmatched", out, "an arm and its baseline train the same steps")

        out, _ = self.check(0, self.mapsage("study", "show", str(study_id), "--all"), "study show --all")
        self.assertEqual(len(re.findall(r"(?m)^kd-t\d vs kd-t\d/baseline .* test_loss ", out)), 2, out)

        out, _ = self.check(0, self.mapsage("study", "show", str(study_id), "--json"), "study show --json")
        answer = json.loads(out)
        self.assertLessEqual({"id", "name", "status", "counts", "spec", "runs", "arms", "comparisons", "grid"},
                             set(answer))
        self.assertEqual(answer["spec"]["name"], "cli-study")

        # ls: the study with its runs ended out of the total.
        second = self.submit_study(self.study_path, "--set", "name=second")
        out, _ = self.check(0, self.mapsage("study", "ls"), "study ls")
        rows = table(out)
        self.assertEqual(rows[0], ["ID", "NAME", "STATUS", "RUNS", "AGE"])
        self.assertEqual([row[0] for row in rows[1:]], [str(second), str(study_id)], "newest first")
        self.assertEqual(rows[2][1:4], ["cli-study", "succeeded", "%d/%d" % (RUNS, RUNS)])
        self.assertRegex(rows[2][4], r"^\d+[smhd]$")
        out, err = self.check(0, self.mapsage("study", "ls", "--limit", "1"), "study ls --limit 1")
        self.assertEqual([row[0] for row in table(out)[1:]], [str(second)])
        self.assertIn("the newest 1 shown", err)
        out, _ = self.check(0, self.mapsage("study", "ls", "--json"), "study ls --json")
        answer = json.loads(out)
        self.assertIsNone(answer["next_before"])
        self.assertEqual([study["id"] for study in answer["studies"]], [second, study_id])
        self.assertEqual(answer["studies"][1]["counts"], {"succeeded": RUNS})

    def test_invalid_study_lists_each_path(self):
        self.start_daemon(workers=0)
        bad = json.loads(json.dumps(STUDY))
        bad["seeds"] = 0
        out, err = self.check(1, self.mapsage("study", "submit", "-", stdin=json.dumps(bad)), "a study with bad seeds")
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("mapsage: invalid study:\n"), err)
        self.assertRegex(err, r"(?m)^  seeds: must be ")

        out, err = self.check(1, self.mapsage("study", "submit", self.study_path, "--set", "arms.kd-t4.stages[0].epochs=0",
                                              "--dry-run"), "an arm with a bad stage")
        self.assertEqual(out, "")
        self.assertRegex(err, r"(?m)^  arms\.kd-t4\.stages\[0\]\.epochs: ")
        _, err = self.check(1, self.mapsage("study", "submit", "-", stdin="{\"base\": "), "text that is not JSON")
        self.assertIn("mapsage: invalid study:", err)
        self.assertEqual(self.daemons[0].get("/api/studies")[2]["studies"], [], "nothing was stored")

        _, err = self.check(2, self.mapsage("study", "submit", self.study_path, "--set", "arms.kd-t4.model.layers[9]=1"),
                            "--set past the end of a list")
        self.assertIn("arms.kd-t4.model.layers", err)
        _, err = self.check(1, self.mapsage("study", "show", "999"), "show of an unknown study")
        self.assertIn("mapsage: no study 999", err)
        _, err = self.check(1, self.mapsage("study", "watch", "999"), "watch of an unknown study")
        self.assertIn("mapsage: no study 999", err)
        _, err = self.check(1, self.mapsage("study", "cancel", "999"), "cancel of an unknown study")
        self.assertIn("mapsage: no study 999", err)

    def test_cancel_running_study_and_ended_one(self):
        daemon = self.start_daemon(workers=1)
        slow = json.loads(json.dumps(STUDY))
        # A teacher that trains for long on the students' own data (its split must be theirs).
        slow["teacher"]["config"].update(epochs=500, dataset=dict(DATA))
        study_id = self.submit_study("-", stdin=json.dumps(slow))
        self.wait_study(study_id, lambda s: s["status"] == "running" and s["counts"].get("running") == 1,
                        "its teacher running")
        watcher = self.watch(study_id)
        watcher.wait_for_line(r"^study %d \(cli-study\): running, %d runs$" % (study_id, RUNS))

        out, _ = self.check(0, self.mapsage("study", "cancel", str(study_id)), "cancel of a running study")
        self.assertEqual(out, "study %d: cancelled; %d runs cancelled or asked to stop\n" % (study_id, RUNS))
        code, out, err = watcher.finish()
        self.assertEqual(code, 1, "watch of a cancelled study\nstdout: %s\nstderr: %s" % (out, err))
        self.assertRegex(out, r"(?m)^run \d+ cli-study/teacher \(seed 1\): cancelled: the study was cancelled$")
        self.assertRegex(out.splitlines()[-1], r"^study %d cancelled in [\d.]+\w*: %d runs, %d cancelled$"
                         % (study_id, RUNS, RUNS))
        self.assertIn("mapsage: study %d cancelled" % study_id, err)
        study = self.study(study_id)
        self.assertEqual(study["status"], "cancelled")
        self.assertEqual(study["counts"], {"cancelled": RUNS})

        _, err = self.check(1, self.mapsage("study", "cancel", str(study_id)), "cancel of an ended study")
        self.assertIn("mapsage: study %d has already ended" % study_id, err)
        self.check(1, self.mapsage("study", "watch", str(study_id)), "watch of a cancelled study")

    def test_usage_and_unreachable(self):
        out, _ = self.check(0, self.mapsage("--help"), "--help")
        self.assertRegex(out, r"(?m)^   study COMMAND ")
        out, _ = self.check(0, self.mapsage("study", "--help"), "study --help")
        self.assertTrue(out.startswith("usage: mapsage study COMMAND"), out)
        for command in ("submit", "ls", "show", "watch", "cancel"):
            self.assertRegex(out, r"(?m)^   study %s" % command)
            for arguments in (("study", command, "--help"), ("help", "study", command)):
                out_sub, _ = self.check(0, self.mapsage(*arguments), " ".join(arguments))
                self.assertTrue(out_sub.startswith("usage: mapsage study " + command), out_sub)
                self.assertIn("Example", out_sub)
        _, err = self.check(2, self.mapsage("study"), "study without a command")
        self.assertIn("which study command?", err)
        self.check(2, self.mapsage("study", "frobnicate"), "an unknown study command")
        self.check(2, self.mapsage("study submit", self.study_path), "a subcommand's entry is not a command")
        self.check(2, self.mapsage("study", "submit"), "study submit without a file")
        self.check(2, self.mapsage("study", "submit", os.path.join(self.directory, "missing.json")), "a missing file")
        self.check(2, self.mapsage("study", "show"), "study show without an id")
        self.check(2, self.mapsage("study", "show", "seven"), "an id that is not a number")
        self.check(2, self.mapsage("study", "ls", "--limit", "0"), "--limit 0")
        self.check(2, self.mapsage("study", "watch", "1", "--all"), "watch has no --all")
        self.check(2, self.mapsage("study", "cancel", "1", "2"), "two ids")

        url = "http://127.0.0.1:%d" % free_port()
        for arguments in (["ls"], ["show", "1"], ["watch", "1"], ["cancel", "1"], ["submit", self.study_path],
                          ["submit", self.study_path, "--dry-run"]):
            _, err = self.check(3, self.mapsage("study", *arguments, server=url), "study %s with no server"
                                % " ".join(arguments))
            self.assertIn("cannot reach the server at " + url, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
