"""test_export.py — models out and teachers in, through the real daemon, worker and CLI:
a CNN with a grow block trained on a registered 3-channel dataset; its checkpoints
downloaded byte for byte; its safetensors export loaded into PyTorch by the very code of
docs/export.md, giving MapSage's logits (tests/logits_cli.c) within 1e-5 on a batch;
`mapsage export`; then a teacher trained by PyTorch, written as safetensors, loaded by a
MapSage student whose first evaluation of it matches PyTorch's accuracy on the same data,
and every way such a teacher is refused."""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, SOURCE_DIR, Daemon  # noqa: E402
from test_datasets import images_with_rule  # noqa: E402

# The PyTorch side exactly as docs/export.md gives it to users.
with open(os.path.join(SOURCE_DIR, "docs", "export.md")) as f:
    DOCS_CODE = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
DOCS = {}
exec(compile(DOCS_CODE, "docs/export.md", "exec"), DOCS)  # noqa: S102

CLASSES = 6
STUDENT = {"layers": [{"type": "conv2d", "out": 6, "kernel": 3, "name": "conv"}, {"type": "relu"},
                      {"type": "maxpool", "size": 2}, {"type": "conv2d", "out": 5, "kernel": 3, "padding": 0},
                      {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out": 16, "name": "fc"},
                      {"type": "relu"}, {"type": "dropout", "p": 0.2}, {"type": "linear", "out": CLASSES}]}


def write_safetensors(path, tensors, metadata=None):
    """A safetensors file of float32 tensors (what safetensors.torch.save_file writes)."""
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        data = tensor.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


class Export(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1)
        cls.data_dir = os.path.join(cls.daemon.directory, "data")
        rng = np.random.default_rng(11)
        cls.train_x, cls.train_y = images_with_rule(rng, 900, CLASSES, 3, 12, 12)
        cls.test_x, cls.test_y = images_with_rule(rng, 240, CLASSES, 3, 12, 12)
        path = os.path.join(cls.data_dir, "datasets", "rgb", "rgb.npz")
        os.makedirs(os.path.dirname(path))
        np.savez(path, x_train=cls.train_x, y_train=cls.train_y, x_test=cls.test_x, y_test=cls.test_y)
        code, _, cls.dataset = cls.daemon.request("POST", "/api/datasets", {"name": "rgb", "files": ["rgb/rgb.npz"]})
        assert code == 201, cls.dataset

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def standardised(self, images):
        """Inputs as the worker feeds them with val_size 0: the registry's statistics."""
        mean = np.array(self.dataset["statistics"]["channel_mean"]).reshape(1, 3, 1, 1)
        std = np.array(self.dataset["statistics"]["channel_std"]).reshape(1, 3, 1, 1)
        return torch.from_numpy(((images / 255.0 - mean) / std).astype(np.float32))

    def test_exported_model_gives_mapsage_logits_in_pytorch(self):
        run = self.daemon.submit({"name": "cnn", "dataset": {"name": "rgb"}, "model": STUDENT, "epochs": 2,
                                  "batch_size": 32, "checkpoint_every": 1, "optimizer": {"type": "adam", "lr": 0.003},
                                  "grow": [{"epoch": 2, "after": "fc", "hidden": 8}]})
        done = self.daemon.wait_status(run, ["succeeded", "failed"], timeout=240)
        self.assertEqual("succeeded", done["status"], done.get("error"))
        checkpoints = {c["epoch"]: c["path"] for c in done["checkpoints"]}
        self.assertEqual({1, 2}, set(checkpoints))

        # The checkpoints, byte for byte.
        for epoch, path in checkpoints.items():
            code, response, body = self.daemon.request("GET", "/api/experiments/%d/checkpoints/%d" % (run, epoch))
            self.assertEqual(200, code)
            self.assertIn("experiment-%d-epoch-%04d.ckpt" % (run, epoch), response.getheader("Content-Disposition"))
        connection_body = self.raw("/api/experiments/%d/checkpoints/2" % run)
        with open(checkpoints[2], "rb") as f:
            self.assertEqual(f.read(), connection_body)
        code, _, answer = self.daemon.get("/api/experiments/%d/checkpoints/7" % run)
        self.assertEqual(404, code)
        self.assertIn("has no checkpoint of epoch 7 (it has: 1, 2)", answer["error"])
        code, _, answer = self.daemon.get("/api/experiments/%d/export?format=onnx" % run)
        self.assertEqual(400, code)
        self.assertIn("format", answer["error"])
        code, _, answer = self.daemon.get("/api/experiments/99999/export")
        self.assertEqual(404, code)

        # The export into PyTorch, by the docs' own code.
        exported = self.raw("/api/experiments/%d/export?format=safetensors" % run)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.safetensors")
            with open(path, "wb") as f:
                f.write(exported)
            tensors, metadata = DOCS["read_safetensors"](path)
            self.assertEqual({"conv.weight": [6, 3, 3, 3], "conv.bias": [6], "conv2d1.weight": [5, 6, 3, 3],
                              "conv2d1.bias": [5], "fc.weight": [16, 80], "fc.bias": [16],
                              "linear1.weight": [CLASSES, 16], "linear1.bias": [CLASSES],
                              "grow1.linear1.weight": [8, 16], "grow1.linear1.bias": [8],
                              "grow1.linear2.weight": [16, 8], "grow1.linear2.bias": [16]},
                             {name: list(t.shape) for name, t in tensors.items()})
            self.assertEqual("2", metadata["epoch"])
            self.assertEqual("rgb", json.loads(metadata["config"])["dataset"]["name"])
            # The grow block joined at epoch 2 and trained: its second linear is no longer 0.
            self.assertGreater(float(tensors["grow1.linear2.weight"].abs().sum()), 0.0)
            model, config = DOCS["load_mapsage"](path)

            batch = torch.randn(16, 3, 12, 12)
            inputs = os.path.join(directory, "inputs.f32")
            batch.numpy().astype(np.float32).tofile(inputs)
            out = subprocess.run([os.path.join(BIN_DIR, "logits_cli"), checkpoints[2], inputs, "16"],
                                 capture_output=True, check=True).stdout
            mapsage = np.frombuffer(out, dtype=np.float32).reshape(16, CLASSES)
            with torch.no_grad():
                torch_logits = model(batch).numpy()
            self.assertGreater(np.abs(mapsage).max(), 0.01)
            np.testing.assert_allclose(torch_logits, mapsage, rtol=0, atol=1e-5)

            # The epoch asked for, and `mapsage export` giving the API's bytes.
            first = self.raw("/api/experiments/%d/export?epoch=1" % run)
            self.assertNotEqual(first, exported)
            output = os.path.join(directory, "cli.safetensors")
            subprocess.run([os.path.join(BIN_DIR, "mapsage"), "--server", self.daemon.url, "export", str(run),
                            "--epoch", "1", "-o", output], check=True, capture_output=True)
            with open(output, "rb") as f:
                self.assertEqual(first, f.read())
            output = os.path.join(directory, "cli.ckpt")
            subprocess.run([os.path.join(BIN_DIR, "mapsage"), "--server", self.daemon.url, "export", str(run),
                            "--format", "checkpoint", "-o", output], check=True, capture_output=True)
            with open(output, "rb") as f, open(checkpoints[2], "rb") as g:
                self.assertEqual(g.read(), f.read())
            failed = subprocess.run([os.path.join(BIN_DIR, "mapsage"), "--server", self.daemon.url, "export",
                                     str(run), "--epoch", "9", "-o", output], capture_output=True, text=True)
            self.assertEqual(1, failed.returncode)
            self.assertIn("no checkpoint of epoch 9", failed.stderr)

    def raw(self, path):
        import http.client
        connection = http.client.HTTPConnection("127.0.0.1", self.daemon.port, timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        self.assertEqual(200, response.status, data[:300])
        self.assertEqual("application/octet-stream", response.getheader("Content-Type"))
        return data

    def test_pytorch_teacher_matches_its_accuracy_in_mapsage(self):
        teacher_layers = [{"type": "conv2d", "out": 8, "kernel": 3, "name": "conv"}, {"type": "relu"},
                          {"type": "maxpool", "size": 2}, {"type": "flatten"},
                          {"type": "linear", "out": CLASSES, "name": "fc"}]
        torch.manual_seed(0)
        teacher = DOCS["MapSageNet"]({"dataset": {"input": [3, 12, 12]}, "model": {"layers": teacher_layers}})
        x, y = self.standardised(self.train_x), torch.from_numpy(self.train_y.astype(np.int64))
        optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
        for _ in range(2):
            for start in range(0, len(y), 64):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(teacher(x[start:start + 64]), y[start:start + 64])
                loss.backward()
                optimizer.step()
        teacher.eval()
        with torch.no_grad():
            predictions = teacher(self.standardised(self.test_x)).argmax(1).numpy()
        torch_accuracy = float((predictions == self.test_y).mean())
        self.assertGreater(torch_accuracy, 0.3)  # it learned something (chance: 1/6)

        os.makedirs(os.path.join(self.data_dir, "teachers"), exist_ok=True)
        write_safetensors(os.path.join(self.data_dir, "teachers", "torch.safetensors"), teacher.state_dict())
        student = {"name": "student", "dataset": {"name": "rgb", "val_size": 0},
                   "model": {"layers": [{"type": "linear", "out": 16}, {"type": "relu"},
                                        {"type": "linear", "out": CLASSES}]},
                   "teacher": {"safetensors": "teachers/torch.safetensors", "model": {"layers": teacher_layers}},
                   "stages": [{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}], "batch_size": 64}
        run = self.daemon.submit(student)
        done = self.daemon.wait_status(run, ["succeeded", "failed"], timeout=240)
        self.assertEqual("succeeded", done["status"], done.get("error"))
        code, _, rows = self.daemon.request("POST", "/api/sql", {
            "sql": "SELECT value FROM evals WHERE experiment_id = ?1 AND split = 'teacher' AND name = "
                   "'test/accuracy' AND step = 0", "params": [run]})
        self.assertEqual(200, code, rows)
        self.assertEqual(1, len(rows["rows"]))
        # The same examples classified alike: at most one borderline example may flip on
        # float rounding between the two implementations.
        self.assertLessEqual(abs(rows["rows"][0][0] - torch_accuracy), 1.0 / len(self.test_y) + 1e-9)

        # Refusals: the shapes, the names, the place, the layers themselves.
        state = teacher.state_dict()
        wrong = dict(state, **{"fc.weight": torch.zeros(CLASSES, 100)})
        write_safetensors(os.path.join(self.data_dir, "teachers", "wrong.safetensors"), wrong)
        self.assertRunFails(student, "teachers/wrong.safetensors",
                            'tensor "fc.weight" has shape [6, 100], teacher.model\'s layers need [6, 288]')
        missing = {name: t for name, t in state.items() if name != "conv.bias"}
        write_safetensors(os.path.join(self.data_dir, "teachers", "missing.safetensors"), missing)
        self.assertRunFails(student, "teachers/missing.safetensors", 'no tensor "conv.bias"')
        extra = dict(state, **{"head.weight": torch.zeros(2, 2)})
        write_safetensors(os.path.join(self.data_dir, "teachers", "extra.safetensors"), extra)
        self.assertRunFails(student, "teachers/extra.safetensors", 'tensor "head.weight" belongs to no layer')
        with open(os.path.join(self.data_dir, "teachers", "short.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", 4000) + b"{}")
        self.assertRunFails(student, "teachers/short.safetensors", "its header length 4000 exceeds the file")

        bad = json.loads(json.dumps(student))
        bad["teacher"]["safetensors"] = "/etc/hostname"
        code, _, answer = self.daemon.request("POST", "/api/experiments", bad)
        self.assertEqual(400, code)
        self.assertIn("must be inside the daemon's data directory",
                      {e["path"]: e["message"] for e in answer["errors"]}["teacher.safetensors"])
        bad["teacher"]["model"]["layers"][-1]["out"] = 10
        code, _, answer = self.daemon.request("POST", "/api/experiments", bad)
        self.assertEqual(400, code)
        self.assertEqual("the last layer must output 6 logits (one per class of rgb), not 10",
                         {e["path"]: e["message"] for e in answer["errors"]}["teacher.model.layers[4].out"])
        del bad["teacher"]["model"]
        code, _, answer = self.daemon.request("POST", "/api/experiments", bad)
        self.assertIn("teacher.model", [e["path"] for e in answer["errors"]])

    def assertRunFails(self, student, path, words):
        config = json.loads(json.dumps(student))
        config["teacher"]["safetensors"] = path
        run = self.daemon.submit(config)
        done = self.daemon.wait_status(run, ["succeeded", "failed"], timeout=120)
        self.assertEqual("failed", done["status"])
        self.assertIn(words, done["error"])


if __name__ == "__main__":
    unittest.main()
