#!/usr/bin/env python3
"""test_python_client.py — python/mapsage_client.py against the real mapsaged: submit a
config (with changes) and a study, wait for them, read curves and SQL results as lists of
rows (and as DataFrames when pandas is there), the token, the config file, and the errors
a notebook user meets: a bad config by its fields, a cancelled run, a wait that times out.

CTest sets MAPSAGE_BIN_DIR and MAPSAGE_SOURCE_DIR. Python standard library only."""
import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mapsage_testlib import SOURCE_DIR, Daemon, synthetic_config  # noqa: E402
from test_cli_study import ARMS, RUNS, STUDY  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))
import mapsage_client  # noqa: E402
from mapsage_client import Client, MapsageError  # noqa: E402

CONFIG = synthetic_config("python", epochs=2)
BLOCKER = synthetic_config("blocker", epochs=500, train_size=4096)

try:
    import pandas  # noqa: F401
    HAVE_PANDAS = True
except ImportError:
    HAVE_PANDAS = False


class PythonClient(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-test-python-")
        self.daemons = []
        # No setting of the person running the tests leaks in.
        self.environment = mock.patch.dict(os.environ, {"HOME": self.directory}, clear=False)
        self.environment.start()
        for name in ("MAPSAGE_SERVER", "MAPSAGE_TOKEN_FILE", "XDG_CONFIG_HOME"):
            os.environ.pop(name, None)

    def tearDown(self):
        self.environment.stop()
        for daemon in self.daemons:
            daemon.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def start_daemon(self, workers=1, extra_args=()):
        directory = os.path.join(self.directory, "daemon%d" % len(self.daemons))
        os.makedirs(directory)
        daemon = Daemon(workers=workers, directory=directory, extra_args=list(extra_args))
        self.daemons.append(daemon)
        return daemon

    def write(self, name, text):
        path = os.path.join(self.directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_submit_wait_curves_sql(self):
        daemon = self.start_daemon(workers=1)
        client = Client(daemon.url)
        self.assertEqual(client.health()["status"], "ok")
        path = self.write("config.json", json.dumps(CONFIG))
        run = client.submit(path, changes={"name": "from-python", "epochs": 2, "seed": 3})
        record = client.wait(run, timeout=120, poll=0.05)
        self.assertEqual(record["status"], "succeeded")
        self.assertEqual(record["config"]["name"], "from-python")
        self.assertEqual(record["config"]["seed"], 3)

        accuracy = client.curve(run, "val/accuracy", frame=False)
        self.assertEqual([row["epoch"] for row in accuracy], [1, 2])
        self.assertTrue(all(0 <= row["value"] <= 1 for row in accuracy))
        curves = client.curves(run, frame=False)
        self.assertIn("loss/total", curves)
        loss = curves["loss/total"]
        self.assertTrue(loss, "loss/total has points")
        self.assertEqual(sorted(loss[0]), ["step", "value"])
        self.assertEqual([row["step"] for row in loss], sorted(row["step"] for row in loss))
        # The same points as the API's columns.
        columns = daemon.get("/api/experiments/%d/metrics?names=loss/total" % run)[2]["loss/total"]
        self.assertEqual([row["value"] for row in loss], columns["value"])
        with self.assertRaisesRegex(KeyError, "no curve 'no/such'"):
            client.curve(run, "no/such")

        rows = client.sql("SELECT id, name, status FROM experiments WHERE id = ?1", run, frame=False)
        self.assertEqual(rows, [{"id": run, "name": "from-python", "status": "succeeded"}])
        self.assertEqual(client.sql("SELECT 1 AS a WHERE 0", frame=False), [])
        with self.assertRaisesRegex(MapsageError, "DELETE is not allowed") as refused:
            client.sql("DELETE FROM experiments")
        self.assertEqual(refused.exception.status, 403)
        self.assertEqual(len(client.sql("SELECT id FROM experiments", frame=False)), 1)

        # The default and frame=True: a DataFrame with pandas, lists (and a clear refusal) without.
        if HAVE_PANDAS:
            frame = client.sql("SELECT id, name FROM experiments", frame=True)
            self.assertEqual(list(frame.columns), ["id", "name"])
            self.assertEqual(frame["id"].tolist(), [run])
            self.assertEqual(client.curve(run, "val/accuracy")["epoch"].tolist(), [1, 2])
        else:
            with self.assertRaisesRegex(ImportError, "frame=True needs pandas"):
                client.sql("SELECT 1", frame=True)
            self.assertEqual(client.sql("SELECT 1 AS one"), [{"one": 1}])

        self.assertIn("attempt 1 | ", client.log(run))
        listed = client.experiments(status=["succeeded"], limit=5)
        self.assertEqual([e["id"] for e in listed], [run])

        again = client.rerun(run, changes={"optimizer.lr": 0.02})
        config = client.experiment(again)["config"]
        self.assertEqual(config["optimizer"]["lr"], 0.02)
        self.assertEqual([stage["lr"] for stage in config["stages"]], [0.02])
        client.wait(again, timeout=120, poll=0.05)

    def test_errors(self):
        daemon = self.start_daemon(workers=1)
        client = Client(daemon.url)
        with self.assertRaises(MapsageError) as invalid:
            client.submit(dict(CONFIG, epochs=0))
        self.assertEqual(invalid.exception.status, 400)
        self.assertTrue(invalid.exception.errors, "the bad fields are listed")
        self.assertIn("epochs", [error["path"] for error in invalid.exception.errors])
        self.assertIn("epochs:", str(invalid.exception))
        with self.assertRaisesRegex(ValueError, "index 5 is out of range: model.layers has 3 elements"):
            client.submit(CONFIG, changes={"model.layers[5].out": 3})
        with self.assertRaisesRegex(ValueError, "stages\\[0\\].epochs: stages does not exist"):
            client.submit(CONFIG, changes={"stages[0].epochs": 3})
        self.assertEqual(daemon.get("/api/experiments")[2]["experiments"], [], "nothing was sent")

        blocker = client.submit(BLOCKER)
        daemon.wait_status(blocker, ("running",))
        with self.assertRaisesRegex(TimeoutError, "experiment %d still running" % blocker):
            client.wait(blocker, timeout=0.2, poll=0.05)
        client.cancel(blocker)
        with self.assertRaisesRegex(MapsageError, "experiment %d cancelled" % blocker):
            client.wait(blocker, timeout=120, poll=0.05)
        self.assertEqual(client.wait(blocker, check=False)["status"], "cancelled")

        with self.assertRaises(MapsageError) as missing:
            client.experiment(999)
        self.assertEqual(missing.exception.status, 404)
        with self.assertRaisesRegex(MapsageError, "cannot reach http://127.0.0.1:9"):
            Client("127.0.0.1:9").health()

    def test_token_and_config_file(self):
        token = self.write("secrets/token", "s3cret-s3cret-s3cret\n")
        os.chmod(token, 0o600)
        daemon = self.start_daemon(workers=0, extra_args=["--token-file", token])
        with self.assertRaises(MapsageError) as refused:
            Client(daemon.url).submit(CONFIG)
        self.assertEqual(refused.exception.status, 401)
        self.assertIsInstance(Client(daemon.url, token_file=token).submit(CONFIG), int)
        self.assertIsInstance(Client(daemon.url, token="s3cret-s3cret-s3cret").submit(CONFIG), int)

        # The config file `mapsage` reads: server and token-file (relative to the file).
        self.write(".config/mapsage/config", "# the lab's daemon\nserver = %s\ntoken-file = ../../secrets/token\n"
                   % daemon.url)
        client = Client()
        self.assertEqual(client.server, daemon.url)
        self.assertIsInstance(client.submit(CONFIG), int)
        # The environment first, as for mapsage.
        os.environ["MAPSAGE_SERVER"] = "http://127.0.0.1:9"
        self.assertEqual(Client().server, "http://127.0.0.1:9")
        del os.environ["MAPSAGE_SERVER"]
        xdg = os.path.join(self.directory, "xdg")
        path = self.write("xdg/mapsage/config", "server = %s\nsever = typo\n" % daemon.url)
        os.environ["XDG_CONFIG_HOME"] = xdg
        with self.assertRaises(ValueError) as bad:
            Client()
        self.assertEqual(str(bad.exception), '%s:2: unknown key "sever" (keys: server, token-file)' % path)
        self.assertEqual(mapsage_client.config_file_path(), path)
        self.assertEqual(len(daemon.get("/api/experiments")[2]["experiments"]), 3)

    def test_study(self):
        daemon = self.start_daemon(workers=2)
        client = Client(daemon.url)
        study_id = client.submit_study(STUDY, changes={"name": "python-study"})
        study = client.wait_study(study_id, timeout=240, poll=0.1)
        self.assertEqual(study["status"], "succeeded")
        self.assertEqual(study["name"], "python-study")
        self.assertEqual(len({run["id"] for run in study["runs"]}), RUNS)
        self.assertEqual(sorted(arm["name"] for arm in study["arms"]), sorted(ARMS))
        rows = client.sql("SELECT count(*) AS n FROM study_runs WHERE study_id = ?1", study_id, frame=False)
        self.assertGreaterEqual(rows[0]["n"], RUNS)


if __name__ == "__main__":
    unittest.main(verbosity=2)
