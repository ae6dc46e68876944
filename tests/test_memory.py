"""test_memory.py — a run's memory at submission and in its worker (docs/config.md, "Memory"):
the daemon refuses a config whose estimate exceeds --max-worker-memory, with the estimate in
the error; a study names the arm that does not fit; the flag refuses a bad size; a worker
under a small --memory-limit fails saying so instead of crashing or hanging."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, Daemon, synthetic_config  # noqa: E402

DATASET = {"name": "synthetic", "train_size": 512, "test_size": 256, "val_size": 64}
STUDENT = {"layers": [{"type": "linear", "out": 16, "name": "fc1"}, {"type": "relu"}, {"type": "linear", "out": 10}]}


def study():
    """A study with a teacher it trains and two distilling arms (test_study.py's shape)."""
    return {"name": "s", "seeds": 2,
            "base": {"dataset": DATASET, "model": STUDENT, "batch_size": 64, "stages": [{"name": "main", "epochs": 2}]},
            "teacher": {"config": {"dataset": DATASET, "model": STUDENT, "batch_size": 64, "epochs": 2}},
            "arms": {"kd": {"temperature": {"schedule": "constant", "start": 4},
                            "stages": [{"name": "main", "epochs": 2, "task_weight": 0.7, "distill_weight": 0.3}]},
                     "kd2": {"temperature": {"schedule": "constant", "start": 2},
                             "stages": [{"name": "main", "epochs": 2, "task_weight": 0.5, "distill_weight": 0.5}]}}}


def sanitized():
    try:
        with open(os.path.join(BIN_DIR, "CMakeCache.txt")) as f:
            return "MAPSAGE_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


class MemoryAtSubmission(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=0, extra_args=["--max-worker-memory", "512M"])

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def refused(self, path, body):
        status, _, answer = self.daemon.request("POST", path, body)
        self.assertEqual(400, status, answer)
        return answer["errors"]

    def test_huge_batch_is_refused_with_the_estimate(self):
        # 4096 × (2 × 16384 + 10) floats of activations, twice, and a 64M-parameter
        # layer: several GiB, over 512 MiB.
        config = synthetic_config(model={"layers": [{"type": "linear", "out": 16384}, {"type": "relu"},
                                                    {"type": "linear", "out": 10}]}, batch_size=4096)
        errors = self.refused("/api/experiments", config)
        self.assertEqual(1, len(errors), errors)
        self.assertEqual("batch_size", errors[0]["path"])
        message = errors[0]["message"]
        self.assertIn("this run needs about", message)
        self.assertIn("GiB", message)
        self.assertIn("activations", message)
        self.assertIn("for batch 4096", message)
        self.assertIn("--max-worker-memory 0.5 GiB", message)

    def test_wide_model_points_at_the_layers(self):
        config = synthetic_config(model={"layers": [{"type": "linear", "out": 65536}, {"type": "relu"},
                                                    {"type": "linear", "out": 10}]}, batch_size=1)
        errors = self.refused("/api/experiments", config)
        self.assertEqual("model.layers", errors[0]["path"], errors)
        self.assertIn("student", errors[0]["message"])

    def test_a_small_run_is_accepted(self):
        self.daemon.submit(synthetic_config())

    def test_a_study_names_the_arm_that_does_not_fit(self):
        spec = study()
        spec["arms"]["kd"]["batch_size"] = 4096
        spec["arms"]["kd"]["model"] = {"layers": [{"type": "linear", "out": 16384, "name": "fc1"}, {"type": "relu"},
                                                  {"type": "linear", "out": 10}]}
        errors = self.refused("/api/studies?dry_run=1", spec)
        self.assertEqual(1, len(errors), errors)
        self.assertEqual("arms.kd.batch_size", errors[0]["path"], errors)
        self.assertIn("--max-worker-memory", errors[0]["message"])
        # The same study without the oversized arm passes.
        status, _, _ = self.daemon.request("POST", "/api/studies?dry_run=1", study())
        self.assertEqual(200, status)


class MemoryFlag(unittest.TestCase):
    def test_bad_sizes_are_refused(self):
        for value in ["lots", "4X", "-1G", "0", "1.5", "0x10"]:
            run = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--max-worker-memory", value, "--workers", "0",
                                  "--listen", "127.0.0.1:0", "--db", "/nonexistent/x.db"],
                                 capture_output=True, timeout=30)
            self.assertNotEqual(0, run.returncode, value)
            self.assertIn(b"--max-worker-memory", run.stderr, value)

    def test_environment_and_help(self):
        run = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--help"], capture_output=True, timeout=30)
        self.assertIn(b"--max-worker-memory SIZE", run.stdout)
        self.assertIn(b"MAPSAGE_MAX_WORKER_MEMORY", run.stdout)
        run = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--workers", "0", "--listen", "127.0.0.1:0",
                              "--db", "/nonexistent/x.db"], capture_output=True, timeout=30,
                             env=dict(os.environ, MAPSAGE_MAX_WORKER_MEMORY="a lot"))
        self.assertIn(b"--max-worker-memory", run.stderr)


def unsanitized_worker(test):
    """A worker that applies --memory-limit: this build's, or under AddressSanitizer (whose
    shadow counts against RLIMIT_DATA, so a sanitized worker ignores the limit) the Release
    one scripts/test builds beside it (MAPSAGE_RELEASE_BIN_DIR)."""
    if not sanitized():
        return os.path.join(BIN_DIR, "mapsage-worker")
    worker = os.path.join(os.environ.get("MAPSAGE_RELEASE_BIN_DIR", ""), "mapsage-worker")
    if not os.access(worker, os.X_OK):
        test.fail("this build is sanitized: the worker's limit is tested on the Release mapsage-worker, which "
                  "scripts/test builds in build-release (missing: %s)" % worker)
    return worker


class WorkerLimit(unittest.TestCase):
    def test_a_tiny_limit_fails_with_a_memory_error(self):
        config = synthetic_config(train_size=60000)
        run = subprocess.run([unsanitized_worker(self), "--experiment", "1", "--threads", "2",
                              "--memory-limit", "64M"], input=json.dumps(config).encode(),
                             capture_output=True, timeout=60)
        self.assertEqual(1, run.returncode, run.stderr)  # an exit, not a signal (negative)
        finished = json.loads(run.stdout.decode().strip().splitlines()[-1])
        self.assertEqual("failed", finished["status"])
        self.assertIn("out of memory", finished["error"])
        self.assertIn("--memory-limit", finished["error"])
        self.assertIn("64 MiB", finished["error"])

    def test_a_bad_limit_is_refused(self):
        run = subprocess.run([os.path.join(BIN_DIR, "mapsage-worker"), "--experiment", "1", "--memory-limit", "lots"],
                             capture_output=True, timeout=30)
        self.assertEqual(2, run.returncode)
        self.assertIn(b"--memory-limit", run.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
