"""test_distillation.py — distillation through the real daemon: a teacher experiment, a
student that waits for it and learns from its final checkpoint (KD and features, after a
task-only stage), with the teacher's reference figures, the stage starts and the checkpoints
in what the API shows; then a daemon killed with SIGKILL in the middle of a student's run,
restarted on the same database: the run resumes from its last checkpoint, its curves have
every step once, and its final weights are byte for byte those of a run never interrupted.

Synthetic data, one worker (so every run has the same OpenBLAS thread count)."""
import json
import os
import signal
import sqlite3
import struct
import sys
import time
import unittest
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import Daemon  # noqa: E402

SEED = 5  # teacher and students alike: the synthetic images are generated from the seed

TEACHER = {"name": "teacher", "seed": SEED, "dataset": {"name": "synthetic"},
           "model": {"layers": [{"type": "linear", "out": 48, "name": "fc1"}, {"type": "relu"},
                                {"type": "linear", "out": 32, "name": "fc2"}, {"type": "relu"},
                                {"type": "linear", "out": 10, "name": "logits"}]},
           "batch_size": 64, "epochs": 2}
STEPS_PER_EPOCH = 28  # 2048 generated, 256 held out: 1792 in batches of 64


def student(teacher_id, name, **extra):
    config = {"name": name, "seed": SEED, "dataset": {"name": "synthetic"},
              "teacher": {"experiment": teacher_id},
              "model": {"layers": [{"type": "linear", "out": 16, "name": "fc1"}, {"type": "relu"},
                                   {"type": "linear", "out": 10, "name": "logits"}]},
              "batch_size": 64, "temperature": {"schedule": "linear", "start": 5, "end": 2},
              "features": [{"student": "fc1", "teacher": "fc2", "normalize": True}],
              "stages": [{"name": "task", "epochs": 1},
                         {"name": "kd", "epochs": 2, "task_weight": 0.5, "distill_weight": 0.4,
                          "feature_weight": 0.1}]}
    config.update(extra)
    return config


def read_tensors(path):
    """The tensors of a checkpoint as raw little-endian bytes (docs/checkpoints.md's layout)."""
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[:8] == b"\x89MSCKPT\n", path
    version, flags, json_length, file_length = struct.unpack_from("<IIQQ", buf, 8)
    assert (version, flags, file_length) == (1, 0, len(buf)), path
    assert zlib.crc32(buf[:-4]) == struct.unpack_from("<I", buf, len(buf) - 4)[0], path
    doc = json.loads(buf[32:32 + json_length].decode())
    data_offset = (32 + json_length + 63) // 64 * 64
    return doc["meta"], {t["name"]: buf[data_offset + t["offset"]:data_offset + t["offset"] + t["length"]]
                         for t in doc["tensors"]}


def steps_of(events):
    return [e["data"]["step"] for e in events if e["event"] == "metric"]


class Distillation(unittest.TestCase):
    def test_student_waits_for_its_teacher_and_learns_from_it(self):
        d = Daemon(workers=1)
        try:
            teacher_id = d.submit(TEACHER)
            student_id = d.submit(student(teacher_id, "kd-student"))
            teacher = d.wait_status(teacher_id, ["succeeded", "failed"])
            self.assertEqual("succeeded", teacher["status"], teacher["error"])
            d.wait_status(student_id, ["succeeded", "failed"])
            stream = d.stream(student_id)
            events = list(stream)
            stream.close()
            experiment = d.experiment(student_id)
            self.assertEqual("succeeded", experiment["status"], experiment["error"])
            # It waited: it started after its teacher had finished.
            self.assertGreaterEqual(experiment["started_at"], teacher["finished_at"])
            self.assertEqual(teacher_id, experiment["teacher"])

            # The teacher's reference, once, before everything else of the run.
            teacher_evals = [e for e in events if e["event"] == "eval" and e["data"]["split"] == "teacher"]
            self.assertEqual(1, len(teacher_evals))
            self.assertEqual("0.4", teacher_evals[0]["id"])
            reference = teacher_evals[0]["data"]["values"]
            self.assertAlmostEqual(teacher["summary"]["final_test_accuracy"], reference["test/accuracy"], places=6)
            worker = experiment["worker"]
            self.assertAlmostEqual(reference["test/accuracy"], worker["teacher"]["accuracy"], places=6)
            self.assertEqual(teacher_id, worker["teacher"]["experiment"])
            self.assertEqual(784 * 48 + 48 + 48 * 32 + 32 + 32 * 10 + 10, worker["teacher"]["params"])
            self.assertEqual(784 * 16 + 16 + 16 * 10 + 10, worker["params"]["total"])
            self.assertEqual(16 * 32 + 32, worker["params"]["distill"]["adapter/fc1"])

            # Stage starts at their steps, in stream order after that step's evaluations.
            stages = [e for e in events if e["event"] == "stage"]
            self.assertEqual(["0.5", "%d.5" % STEPS_PER_EPOCH], [e["id"] for e in stages])
            self.assertEqual(["task", "kd"], [e["data"]["name"] for e in stages])
            ids = [e["id"] for e in events if e.get("id")]
            self.assertLess(ids.index("%d.3" % STEPS_PER_EPOCH), ids.index("%d.5" % STEPS_PER_EPOCH))
            self.assertEqual(list(range(1, 3 * STEPS_PER_EPOCH + 1)), steps_of(events))

            # Task only in stage 0; KD and features with their weighted shares in stage 1.
            for e in events:
                if e["event"] != "metric":
                    continue
                values, kd = e["data"]["values"], e["data"]["step"] > STEPS_PER_EPOCH
                self.assertEqual(kd, "loss/distill" in values, e["data"]["step"])
                self.assertEqual(kd, "loss/feature" in values, e["data"]["step"])
                self.assertIn("temperature", values)
                if kd:
                    total = values["weighted/task"] + values["weighted/distill"] + values["weighted/feature"]
                    self.assertAlmostEqual(values["loss/total"], total, places=6)
                    self.assertAlmostEqual(values["weighted/distill"], 0.4 * values["loss/distill"], places=6)
            tests = [e["data"]["values"] for e in events if e["event"] == "eval" and e["data"]["split"] == "test"]
            self.assertEqual(3, len(tests))
            self.assertTrue(0.0 <= tests[-1]["agreement"] <= 1.0)
            self.assertIn("accuracy/class9", tests[-1])
            self.assertGreater(tests[-1]["accuracy"], 0.8)

            # What the experiment's page shows: where each stage began, every checkpoint.
            self.assertEqual([{"stage": 0, "name": "task", "epoch": 1, "step": 0},
                              {"stage": 1, "name": "kd", "epoch": 2, "step": STEPS_PER_EPOCH}],
                             experiment["stages"])
            checkpoints = experiment["checkpoints"]
            self.assertEqual([1, 2, 3], [c["epoch"] for c in checkpoints])
            self.assertEqual([STEPS_PER_EPOCH * e for e in (1, 2, 3)], [c["step"] for c in checkpoints])
            for c in checkpoints:
                self.assertEqual(c["bytes"], os.path.getsize(c["path"]))
            self.assertIn("teacher/test/accuracy", experiment["series"])
            self.assertIn("loss/feature", experiment["series"])
        finally:
            d.close()

    def test_a_killed_daemon_resumes_the_run_from_its_checkpoint(self):
        d = Daemon(workers=1)
        try:
            teacher_id = d.submit(TEACHER)
            # Long enough epochs (124 steps) to kill the daemon in the second one.
            config = dict(student(teacher_id, "resumed"), dataset={"name": "synthetic", "train_size": 8192},
                          stages=[{"name": "task", "epochs": 1},
                                  {"name": "kd", "epochs": 3, "task_weight": 0.5, "distill_weight": 0.4,
                                   "feature_weight": 0.1}])
            steps_per_epoch = (8192 - 256 + 63) // 64
            student_id = d.submit(config)
            stream = d.stream(student_id)
            for event in stream:
                if event["event"] == "metric" and event["data"]["epoch"] >= 2:
                    break
            stream.close()
            # The first checkpoint was recorded before the first step of epoch 2 was sent.
            with sqlite3.connect(d.db_path) as db:
                recorded = db.execute("SELECT count(*) FROM checkpoints WHERE experiment_id = ?",
                                      (student_id,)).fetchone()[0]
            self.assertGreaterEqual(recorded, 1)
            d.kill(signal.SIGKILL)  # no chance to clean up; the worker dies at its next write

            d.start()
            experiment = d.wait_status(student_id, ["succeeded", "failed"])
            self.assertEqual("succeeded", experiment["status"], experiment["error"])
            self.assertEqual(2, experiment["attempts"])
            log = d.get("/api/experiments/%d/log" % student_id)[2]
            self.assertIn("resuming from", log)
            stream = d.stream(student_id)
            events = list(stream)
            stream.close()
            self.assertEqual(list(range(1, 4 * steps_per_epoch + 1)), steps_of(events), "no gap, no duplicate")
            self.assertEqual(1, sum(1 for e in events if e["event"] == "eval" and e["data"]["split"] == "teacher"))
            self.assertEqual(["task", "kd"], [e["data"]["name"] for e in events if e["event"] == "stage"])
            evals = [(e["data"]["epoch"], e["data"]["split"]) for e in events
                     if e["event"] == "eval" and e["data"]["split"] != "teacher"]
            self.assertEqual([(epoch, split) for epoch in (1, 2, 3, 4) for split in ("train", "val", "test")], evals)

            # The same config and seed, never interrupted: the same bytes.
            straight_id = d.submit(dict(config, name="straight"))
            straight = d.wait_status(straight_id, ["succeeded", "failed"])
            self.assertEqual("succeeded", straight["status"], straight["error"])
            self.assertEqual(1, straight["attempts"])
            resumed_meta, resumed = read_tensors(experiment["checkpoints"][-1]["path"])
            straight_meta, uninterrupted = read_tensors(straight["checkpoints"][-1]["path"])
            self.assertEqual((4, 4 * steps_per_epoch), (resumed_meta["epoch"], resumed_meta["step"]))
            self.assertEqual(set(uninterrupted), set(resumed))
            for name in uninterrupted:
                self.assertTrue(uninterrupted[name] == resumed[name], "tensor %s differs" % name)
            self.assertEqual(straight["summary"]["final_test_accuracy"], experiment["summary"]["final_test_accuracy"])
            curves = [d.get("/api/experiments/%d/metrics?names=loss/total" % i)[2]["loss/total"]["value"]
                      for i in (student_id, straight_id)]
            self.assertEqual(curves[0], curves[1])
        finally:
            d.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
