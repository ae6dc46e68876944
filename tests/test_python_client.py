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
import urllib.request
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

    def test_organise_list_datasets_and_downloads(self):
        """tag/untag, note, rename, archive/unarchive and delete as the API's PATCH and
        DELETE routes do them; the list's filters; a dataset registered and listed; the
        checkpoint and the safetensors export byte for byte as the API sends them."""
        daemon = self.start_daemon(workers=1)
        client = Client(daemon.url)
        runs = {}
        for name, lr in [("slow", 0.001), ("fast", 0.1)]:
            runs[name] = client.submit(CONFIG, changes={"name": name, "optimizer.lr": lr})
        for run in runs.values():
            client.wait(run, timeout=120, poll=0.05)
        slow, fast = runs["slow"], runs["fast"]

        self.assertEqual(["py", "sweep"], client.tag(slow, "sweep", "py"))
        self.assertEqual(["py", "sweep"], client.tag(slow, "py"))  # already there: once
        self.assertEqual(["sweep"], client.tag(fast, "sweep"))
        self.assertEqual(["sweep"], client.untag(slow, "py", "absent"))
        self.assertEqual("first try", client.note(slow, "first try")["note"])
        self.assertEqual("slow-renamed", client.rename(slow, "slow-renamed")["name"])
        self.assertEqual(("first try", "slow-renamed", ["sweep"]),
                         tuple(daemon.experiment(slow)[k] for k in ("note", "name", "tags")))
        with self.assertRaises(MapsageError) as caught:
            client.tag(slow, "has space")
        self.assertEqual(400, caught.exception.status)
        self.assertIn("add_tags: element 0 must be a tag", str(caught.exception))

        # The list's filters, as the API takes them.
        ids = lambda **options: [e["id"] for e in client.experiments(**options)]  # noqa: E731
        self.assertEqual([fast, slow], ids(tag="sweep"))
        self.assertEqual([fast, slow], ids(tag=["nothing", "sweep"]))
        self.assertEqual([slow, fast], ids(sort="optimizer.lr"))
        self.assertEqual([fast, slow], ids(sort="optimizer.lr", order="desc"))
        self.assertEqual([fast], ids(where="optimizer.lr>0.01"))
        self.assertEqual([slow], ids(where=["optimizer.lr<0.01", "stages[0].epochs=2"]))
        self.assertEqual([fast], ids(sort="id", limit=1, offset=1))
        listed = client.experiments(columns=["optimizer.lr", "summary.final_test_accuracy"], sort="id")
        self.assertEqual([0.001, 0.1], [e["columns"]["optimizer.lr"] for e in listed])
        with self.assertRaises(MapsageError) as caught:
            client.experiments(where="optimizer.lrr>1")
        self.assertIn("where: optimizer.lrr: no experiment's config has this field", str(caught.exception))
        with self.assertRaises(ValueError):
            client.experiments(archived="yes")

        # Archive: out of the default list, kept, back again.
        self.assertIsNotNone(client.archive(slow)["archived_at"])
        self.assertEqual([fast], ids())
        self.assertEqual([slow], ids(archived=True))
        self.assertEqual([fast, slow], ids(archived="all"))
        self.assertIsNone(client.unarchive(slow)["archived_at"])
        self.assertEqual([fast, slow], ids())

        # Downloads: the same bytes as the API's, to memory and to a file.
        record = client.experiment(fast)
        epochs = sorted(c["epoch"] for c in record["checkpoints"])
        self.assertEqual([1, 2], epochs)
        def api_bytes(path):  # the API's answer as it is sent, independently of the client
            with urllib.request.urlopen(daemon.url + path, timeout=60) as response:
                return response.read()
        exported = api_bytes("/api/experiments/%d/export?format=safetensors" % fast)
        self.assertGreater(len(exported), 8)
        self.assertEqual(exported, client.export(fast))
        output = os.path.join(self.directory, "fast.safetensors")
        self.assertEqual(output, client.export(fast, output, epoch=1))
        with open(output, "rb") as f:
            first = f.read()
        self.assertEqual(api_bytes("/api/experiments/%d/export?format=safetensors&epoch=1" % fast), first)
        self.assertNotEqual(exported, first)  # epoch 1's weights, not the latest
        header = json.loads(first[8:8 + int.from_bytes(first[:8], "little")])
        self.assertIn("__metadata__", header)
        stored = {c["epoch"]: c for c in record["checkpoints"]}
        with open(stored[2]["path"], "rb") as f:
            self.assertEqual(f.read(), client.checkpoint(fast, 2))
        with self.assertRaises(MapsageError) as caught:
            client.checkpoint(fast, 9)
        self.assertEqual(404, caught.exception.status)
        self.assertIn("(it has: 1, 2)", str(caught.exception))

        # Delete: the rows go; again is a 404.
        self.assertTrue(client.delete(slow)["deleted"])
        self.assertEqual([fast], ids(archived="all"))
        with self.assertRaises(MapsageError) as caught:
            client.delete(slow)
        self.assertEqual(404, caught.exception.status)

        # A dataset registered from files in the daemon's datasets directory, then listed.
        rows = ["%d,%s" % (i % 3, ",".join(str((i * 7 + k) % 256) for k in range(4))) for i in range(13)]
        datasets = os.path.join(daemon.directory, "data", "datasets", "tiny")
        os.makedirs(datasets, exist_ok=True)
        with open(os.path.join(datasets, "train.csv"), "w") as f:
            f.write("\n".join(rows[:10]) + "\n")
        with open(os.path.join(datasets, "test.csv"), "w") as f:
            f.write("\n".join(rows[10:]) + "\n")
        added = client.add_dataset("tiny", files=["tiny/train.csv", "tiny/test.csv"])
        self.assertEqual(("tiny", "csv", 3, 10, 3), (added["name"], added["source"]["format"], added["classes"],
                                                   added["train_size"], added["test_size"]))
        self.assertRegex(added["checksum"], r"^[0-9a-f]{64}$")
        listed = {d["name"]: d for d in client.datasets()}
        self.assertIn("tiny", listed)
        self.assertEqual(added["checksum"], listed["tiny"]["checksum"])
        self.assertEqual([4, 3, 3], client.dataset("tiny")["statistics"]["train"]["class_counts"])
        with self.assertRaises(MapsageError) as caught:
            client.add_dataset("tiny", files=["tiny/train.csv", "tiny/test.csv"])
        self.assertEqual(409, caught.exception.status)
        with open(os.path.join(datasets, "bad.csv"), "w") as f:
            f.write("0,1,2,3,4\n1,1,2\n")
        with self.assertRaises(MapsageError) as caught:
            client.add_dataset("bad", files=["tiny/bad.csv", "tiny/test.csv"])
        self.assertEqual(400, caught.exception.status)
        self.assertTrue(caught.exception.errors, "the reason comes as errors")
        self.assertEqual({"name": "tiny", "deleted": True}, client.delete_dataset("tiny"))
        self.assertNotIn("tiny", [d["name"] for d in client.datasets()])
        with self.assertRaises(MapsageError) as caught:
            client.delete_dataset("fashion-mnist")
        self.assertEqual(409, caught.exception.status)

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
