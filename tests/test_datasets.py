"""test_datasets.py — the dataset registry through the real daemon and worker: every format
(IDX gzipped or not, .npy, .npz stored and deflated, CIFAR-10/100 batches, CSV) written here
at odd sizes, registered, and read back (shape, classes, names, class counts, per-channel
mean and deviation, duplicates, checksum, sample images) against numpy's own figures; every
validation error; a run on a 3-channel dataset with a learnable rule that beats chance and
records its dataset and checksum; a file changed after registration fails its run; a model
whose last layer does not match the dataset's classes is refused at submission; deleting a
dataset (API and `mapsage dataset rm`), refused for the default and while runs use it."""
import base64
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import unittest
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, Daemon, synthetic_config  # noqa: E402


def idx_bytes(array):
    """IDX of unsigned bytes: magic 0x0000080N, N big-endian sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def images_with_rule(rng, n, classes, channels, height, width):
    """Examples whose label is learnable: class k brightens a region of its own."""
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 120, (n, channels, height, width))
    for i, label in enumerate(labels):
        channel = label % channels
        row = (label // channels) % height
        images[i, channel, row, :] += 130
    return images.astype(np.uint8), labels


class Registry(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1)
        cls.dir = os.path.join(cls.daemon.directory, "data", "datasets")
        cls.rng = np.random.default_rng(7)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def register(self, body, status=201):
        code, _, answer = self.daemon.request("POST", "/api/datasets", body)
        self.assertEqual(status, code, answer)
        return answer

    def check(self, answer, files, train_x, train_y, test_x, test_y, classes, names=None, scale=255.0):
        """What the registry says against numpy's figures for the same arrays (NCHW)."""
        self.assertEqual(classes, answer["classes"])
        self.assertEqual(list(train_x.shape[1:]), answer["input"])
        self.assertEqual(len(train_y), answer["train_size"])
        self.assertEqual(len(test_y), answer["test_size"])
        digest = hashlib.sha256()
        for path in files:
            with open(path, "rb") as f:
                digest.update(f.read())
        self.assertEqual(digest.hexdigest(), answer["checksum"])
        statistics = answer["statistics"]
        self.assertEqual(np.bincount(train_y, minlength=classes).tolist(), statistics["train"]["class_counts"])
        self.assertEqual(np.bincount(test_y, minlength=classes).tolist(), statistics["test"]["class_counts"])
        values = train_x.astype(np.float64) / scale
        mean = values.mean(axis=(0, 2, 3))
        std = values.std(axis=(0, 2, 3))
        self.assertEqual(train_x.shape[1], len(statistics["channel_mean"]))
        np.testing.assert_allclose(statistics["channel_mean"], mean, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(statistics["channel_std"], std, rtol=1e-5, atol=1e-7)
        if names is not None:
            self.assertEqual(names, answer["class_names"])
        # The samples: the first training examples of each class, byte for byte.
        code, _, samples = self.daemon.get("/api/datasets/%s/samples" % answer["name"])
        self.assertEqual(200, code, samples)
        self.assertEqual(classes, len(samples["classes"]))
        checked = 0
        for entry in samples["classes"]:
            label = entry["label"]
            firsts = np.flatnonzero(train_y == label)[:len(entry["images"])]
            self.assertEqual(min(len(firsts), 8 if classes <= 20 else 4), len(entry["images"]))
            for index, text in zip(firsts, entry["images"]):
                if train_x.dtype == np.uint8:
                    self.assertEqual(train_x[index].tobytes(), base64.b64decode(text))
                checked += 1
        self.assertGreater(checked, 0)

    def test_idx_gzip_and_plain(self):
        train_x = self.rng.integers(0, 256, (37, 5, 7), dtype=np.uint8)
        train_y = self.rng.integers(0, 13, 37)
        train_y[:13] = np.arange(13)
        test_x = self.rng.integers(0, 256, (11, 5, 7), dtype=np.uint8)
        test_y = self.rng.integers(0, 13, 11)
        base = os.path.join(self.dir, "idx")
        files = [write(base + "/train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(train_x))),
                 write(base + "/train-labels-idx1-ubyte", idx_bytes(train_y)),
                 write(base + "/t10k-images-idx3-ubyte", idx_bytes(test_x)),
                 write(base + "/t10k-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(test_y)))]
        # Given in any order: images before labels, training before test, by their names.
        answer = self.register({"name": "odd-idx", "files": ["idx/t10k-labels-idx1-ubyte.gz",
                                                             "idx/train-labels-idx1-ubyte",
                                                             "idx/t10k-images-idx3-ubyte",
                                                             "idx/train-images-idx3-ubyte.gz"]})
        self.assertEqual("idx", answer["source"]["format"])
        self.check(answer, files, train_x[:, None], train_y, test_x[:, None], test_y, 13)

    def test_npy_nhwc_uint8_and_float_nchw(self):
        train_x = self.rng.integers(0, 256, (29, 9, 6, 3), dtype=np.uint8)  # NHWC
        train_y = np.arange(29) % 4
        test_x = self.rng.integers(0, 256, (8, 9, 6, 3), dtype=np.uint8)
        test_y = np.arange(8, dtype=np.int64) % 4
        base = os.path.join(self.dir, "npy")
        files = [write(base + "/x_train.npy", npy_bytes(train_x)), write(base + "/y_train.npy", npy_bytes(train_y)),
                 write(base + "/x_test.npy", npy_bytes(test_x)), write(base + "/y_test.npy", npy_bytes(test_y))]
        answer = self.register({"name": "npy-nhwc", "format": "npy", "train": ["npy/x_train.npy", "npy/y_train.npy"],
                                "test": ["npy/x_test.npy", "npy/y_test.npy"]})
        self.check(answer, files, train_x.transpose(0, 3, 1, 2), train_y, test_x.transpose(0, 3, 1, 2), test_y, 4)

        floats = self.rng.normal(0.5, 2.0, (21, 2, 4, 5)).astype(np.float32)
        labels = (np.arange(21) % 3).astype(np.int32)
        files = [write(base + "/f_train_images.npy", npy_bytes(floats)),
                 write(base + "/f_train_labels.npy", npy_bytes(labels)),
                 write(base + "/f_test_images.npy", npy_bytes(floats[:6])),
                 write(base + "/f_test_labels.npy", npy_bytes(labels[:6]))]
        answer = self.register({"name": "npy-float", "format": "npy", "layout": "nchw",
                                "train": files[:2], "test": files[2:]})
        self.check(answer, files, floats, labels, floats[:6], labels[:6], 3, scale=1.0)
        # The test examples are copies of training ones: leakage, flagged.
        self.assertEqual(6, answer["statistics"]["duplicates"]["across"])
        self.assertTrue(any(w.startswith("leakage") for w in answer["statistics"]["warnings"]))

    def test_npz_stored_and_deflated(self):
        for name, compression in (("npz-stored", zipfile.ZIP_STORED), ("npz-deflated", zipfile.ZIP_DEFLATED)):
            train_x = self.rng.integers(0, 256, (19, 3, 32, 32), dtype=np.uint8)
            train_y = np.arange(19) % 5
            test_x = self.rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
            test_y = np.arange(7) % 5
            path = os.path.join(self.dir, "npz", name + ".npz")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with zipfile.ZipFile(path, "w", compression) as archive:
                for member, array in (("x_train", train_x), ("y_train", train_y), ("x_test", test_x),
                                      ("y_test", test_y)):
                    archive.writestr(member + ".npy", npy_bytes(array))
            answer = self.register({"name": name, "files": ["npz/%s.npz" % name]})
            self.assertEqual("npz", answer["source"]["format"])
            self.check(answer, [path, path], train_x, train_y, test_x, test_y, 5)
        # What numpy itself writes (savez_compressed: zip64 local headers).
        path = os.path.join(self.dir, "npz", "numpy.npz")
        np.savez_compressed(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
        answer = self.register({"name": "npz-numpy", "files": ["npz/numpy.npz"]})
        self.check(answer, [path, path], train_x, train_y, test_x, test_y, 5)

    def cifar_batch(self, n, classes, fine):
        labels = self.rng.integers(0, classes, n)
        labels[:min(n, classes)] = np.arange(min(n, classes))
        pixels = self.rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        records = []
        for label, image in zip(labels, pixels):
            head = bytes([label // 5, label]) if fine else bytes([label])
            records.append(head + image.tobytes())
        return b"".join(records), pixels, labels

    def test_cifar10_and_cifar100(self):
        base = os.path.join(self.dir, "cifar10")
        batches = [self.cifar_batch(n, 10, False) for n in (13, 9)]
        test = self.cifar_batch(6, 10, False)
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        files = [write(base + "/data_batch_1.bin", batches[0][0]), write(base + "/data_batch_2.bin", batches[1][0]),
                 write(base + "/test_batch.bin", test[0]),
                 write(base + "/batches.meta.txt", ("\n".join(names) + "\n\n").encode())]
        answer = self.register({"name": "cifar10-small", "files": ["cifar10/test_batch.bin", "cifar10/batches.meta.txt",
                                                                   "cifar10/data_batch_2.bin",
                                                                   "cifar10/data_batch_1.bin"]})
        self.assertEqual("cifar10", answer["source"]["format"])
        train_x = np.concatenate([batches[0][1], batches[1][1]])
        train_y = np.concatenate([batches[0][2], batches[1][2]])
        self.check(answer, files, train_x, train_y, test[1], test[2], 10, names)

        base = os.path.join(self.dir, "cifar100")
        train = self.cifar_batch(130, 100, True)
        test = self.cifar_batch(17, 100, True)
        fine = ["class_%02d" % k for k in range(100)]
        files = [write(base + "/train.bin", train[0]), write(base + "/test.bin", test[0]),
                 write(base + "/fine_label_names.txt", "\n".join(fine).encode())]
        write(base + "/coarse_label_names.txt", "\n".join("super%d" % k for k in range(20)).encode())
        answer = self.register({"name": "cifar100-small", "files": ["cifar100/train.bin", "cifar100/test.bin",
                                                                    "cifar100/coarse_label_names.txt",
                                                                    "cifar100/fine_label_names.txt"]})
        self.assertEqual("cifar100", answer["source"]["format"])
        self.check(answer, files, train[1], train[2], test[1], test[2], 100, fine)
        # 100 classes of 130 examples: some classes have one, others none in the test split.
        self.assertTrue(any(w.startswith("imbalance") for w in answer["statistics"]["warnings"]))

    def test_csv(self):
        base = os.path.join(self.dir, "csv")
        train_x = self.rng.integers(0, 256, (23, 1, 4, 4), dtype=np.uint8)
        train_y = np.arange(23) % 3
        train_x[5] = train_x[2]  # an exact duplicate within the training split
        lines = ["label," + ",".join("p%d" % k for k in range(16))]
        lines += ["%d," % y + ",".join(str(v) for v in x.ravel()) for x, y in zip(train_x, train_y)]
        files = [write(base + "/train.csv", ("\r\n".join(lines) + "\r\n").encode())]
        test_x = train_x[:4].astype(np.float32) / 2  # floats: 127.5 is no byte
        test_lines = ["%d," % y + ",".join(repr(float(v)) for v in x.ravel()) for x, y in zip(test_x, train_y[:4])]
        files.append(write(base + "/test.csv.gz", gzip.compress("\n".join(test_lines).encode())))
        code, _, answer = self.daemon.request("POST", "/api/datasets", {"name": "csv-mixed",
                                                                         "files": ["csv/train.csv", "csv/test.csv.gz"]})
        self.assertEqual(400, code, answer)
        self.assertIn("test examples are 1×4×4 float32 but training ones 1×4×4 8-bit", answer["errors"][0]["message"])
        files[1] = write(base + "/test.csv", ("\n".join(test_lines[:3]).replace(".5", ".0") + "\n").encode())
        answer = self.register({"name": "csv-small", "files": ["csv/train.csv", "csv/test.csv"]})
        self.assertEqual("csv", answer["source"]["format"])
        expected_test = np.floor(test_x[:3]).astype(np.uint8)
        self.check(answer, files, train_x, train_y, expected_test, train_y[:3], 3)
        self.assertEqual(1, answer["statistics"]["duplicates"]["within_train"])

    def test_cli(self):
        """mapsage dataset add / ls / show: local paths inside the datasets directory go resolved."""
        import subprocess
        from mapsage_testlib import BIN_DIR
        base = os.path.join(self.dir, "cli")
        x = self.rng.integers(0, 256, (12, 3, 3), dtype=np.uint8)
        y = np.arange(12) % 2
        write(base + "/train-images-idx3-ubyte", idx_bytes(x))
        write(base + "/train-labels-idx1-ubyte", idx_bytes(y))
        write(base + "/t10k-images-idx3-ubyte", idx_bytes(x[:4]))
        write(base + "/t10k-labels-idx1-ubyte", idx_bytes(y[:4]))
        write(base + "/names.txt", b"even\nodd\n")
        mapsage = [os.path.join(BIN_DIR, "mapsage"), "--server", self.daemon.url]
        added = subprocess.run(mapsage + ["dataset", "add", "cli-idx", "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                          "train-labels-idx1-ubyte", "train-images-idx3-ubyte", "--names", "names.txt"],
                               cwd=base, capture_output=True, text=True)
        self.assertEqual(0, added.returncode, added.stderr)
        self.assertRegex(added.stdout, r"^[0-9a-f]{64}\n$")
        self.assertIn("registered dataset cli-idx: 12 training and 4 test examples of 1x3x3, 2 classes", added.stderr)
        self.assertIn("warning: leakage: 4 test examples are exact copies of training examples", added.stderr)
        listed = subprocess.run(mapsage + ["dataset", "ls"], capture_output=True, text=True, check=True).stdout
        row = [line.split() for line in listed.splitlines() if line.startswith("cli-idx")]
        self.assertEqual([["cli-idx", "idx", "2", "1x3x3", "12", "4", "1"]], row)
        shown = json.loads(subprocess.run(mapsage + ["dataset", "show", "cli-idx"], capture_output=True, text=True,
                                          check=True).stdout)
        self.assertEqual(["even", "odd"], shown["class_names"])
        self.assertEqual(added.stdout.strip(), shown["checksum"])
        refused = subprocess.run(mapsage + ["dataset", "add", "cli-bad", "train-images-idx3-ubyte",
                                            "t10k-images-idx3-ubyte"], cwd=base, capture_output=True, text=True)
        self.assertEqual(1, refused.returncode)
        self.assertIn("train: idx needs 2 files (images, then labels), not 1", refused.stderr)
        usage = subprocess.run(mapsage + ["dataset", "add", "only-a-name"], capture_output=True, text=True)
        self.assertEqual(2, usage.returncode)
        self.assertIn("give a NAME and the dataset's files", usage.stderr)

    def test_fashion_mnist_is_registered_by_default(self):
        code, _, listing = self.daemon.get("/api/datasets")
        self.assertEqual(200, code)
        names = [d["name"] for d in listing["datasets"]]
        self.assertIn("fashion-mnist", names)
        self.assertEqual(os.path.realpath(self.dir), listing["datasets_dir"])

    def refused(self, body, path, words, status=400):
        code, _, answer = self.daemon.request("POST", "/api/datasets", body)
        self.assertEqual(status, code, answer)
        if status == 400:
            self.assertTrue(answer["errors"], answer)
            self.assertEqual(path, answer["errors"][0]["path"], answer)
            self.assertIn(words, answer["errors"][0]["message"])
        else:
            self.assertIn(words, answer["error"])

    def test_validation_errors(self):
        base = os.path.join(self.dir, "bad")
        x = self.rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)
        y = np.arange(10) % 3
        write(base + "/train-images-idx3-ubyte", idx_bytes(x))
        write(base + "/train-labels-idx1-ubyte", idx_bytes(y))
        write(base + "/t10k-images-idx3-ubyte", idx_bytes(x[:4]))
        write(base + "/t10k-labels-idx1-ubyte", idx_bytes(y[:3]))  # mismatched counts
        files = ["bad/train-images-idx3-ubyte", "bad/train-labels-idx1-ubyte", "bad/t10k-images-idx3-ubyte",
                 "bad/t10k-labels-idx1-ubyte"]
        self.refused({"name": "bad1", "files": files}, "files", "3 labels for the 4 images")
        # A truncated file.
        write(base + "/t10k-labels-idx1-ubyte", idx_bytes(y[:4]))
        write(base + "/train-images-idx3-ubyte", idx_bytes(x)[:-5])
        self.refused({"name": "bad2", "files": files}, "files", "truncated: the header announces 160 bytes")
        write(base + "/train-images-idx3-ubyte", idx_bytes(x))
        # A label out of range: three classes named, a label 3.
        write(base + "/names.txt", b"a\nb\nc\n")
        write(base + "/train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 2, 3, 0, 1, 2, 0, 1, 2])))
        self.refused({"name": "bad3", "files": files + ["bad/names.txt"]}, "files",
                     "label 3 of example 3 is out of range: 3 classes (from the names file)")
        write(base + "/train-labels-idx1-ubyte", idx_bytes(y))
        # Ragged CSV rows; a truncated CIFAR batch.
        write(base + "/ragged_train.csv", b"0,1,2,3\n1,2,3\n")
        write(base + "/ragged_test.csv", b"0,1,2,3\n")
        self.refused({"name": "bad4", "files": ["bad/ragged_train.csv", "bad/ragged_test.csv"]}, "files",
                     "ragged rows: line 2 has 3 fields, the first line 4")
        write(base + "/data_batch_1.bin", bytes(3073 * 2 + 100))
        write(base + "/test_batch.bin", bytes(3073))
        self.refused({"name": "bad5", "files": ["bad/data_batch_1.bin", "bad/test_batch.bin"]}, "files",
                     "truncated: 6246 bytes is not a whole number of 3073-byte records")
        # npy: labels that are not integers; mismatched counts.
        write(base + "/x_train.npy", npy_bytes(x))
        write(base + "/y_train.npy", npy_bytes(y.astype(np.float32)))
        write(base + "/x_test.npy", npy_bytes(x))
        write(base + "/y_test.npy", npy_bytes(y[:9]))
        npy = ["bad/x_train.npy", "bad/y_train.npy", "bad/x_test.npy", "bad/y_test.npy"]
        self.refused({"name": "bad6", "files": npy}, "files", "labels must be integers, not f4")
        write(base + "/y_train.npy", npy_bytes(y))
        self.refused({"name": "bad7", "files": npy}, "files", "9 labels for the 10 images")
        # The request itself: outside the datasets directory, a missing file, no test
        # files, a bad name, an unknown field, a name taken.
        self.refused({"name": "bad8", "files": ["/etc/passwd", "bad/x_test.npy"]}, "files",
                     "must be inside the datasets directory")
        self.refused({"name": "bad9", "files": ["bad/missing.npy", "bad/x_test.npy"]}, "files",
                     "No such file or directory")
        self.refused({"name": "bad10", "files": ["bad/x_train.npy", "bad/y_train.npy"]}, "files", "no test files")
        self.refused({"name": "../up", "files": npy}, "name", "letters, digits")
        self.refused({"name": "bad11", "files": npy, "colour": 1}, "colour", "unknown field")
        self.refused({"name": "bad12", "format": "jpeg", "train": ["a"], "test": ["b"]}, "format", "must be one of")
        self.refused({"name": "fashion-mnist", "files": npy}, "", "registered already", status=409)
        code, _, listing = self.daemon.get("/api/datasets")
        self.assertFalse([d for d in listing["datasets"] if d["name"].startswith("bad")])
        code, _, answer = self.daemon.get("/api/datasets/nothing-here")
        self.assertEqual(404, code)


class Runs(unittest.TestCase):
    """Training on a registered dataset: 3 channels, a learnable rule."""

    def setUp(self):
        self.daemon = Daemon(workers=1)
        self.dir = os.path.join(self.daemon.directory, "data", "datasets")

    def tearDown(self):
        self.daemon.close()

    def test_three_channel_run_beats_chance_and_records_its_data(self):
        rng = np.random.default_rng(3)
        train_x, train_y = images_with_rule(rng, 1200, 6, 3, 12, 12)
        test_x, test_y = images_with_rule(rng, 300, 6, 3, 12, 12)
        path = os.path.join(self.dir, "rgb", "rgb.npz")
        os.makedirs(os.path.dirname(path))
        np.savez(path, x_train=train_x, y_train=train_y, x_test=test_x, y_test=test_y)
        code, _, answer = self.daemon.request("POST", "/api/datasets", {"name": "rgb", "files": ["rgb/rgb.npz"]})
        self.assertEqual(201, code, answer)
        self.assertEqual([3, 12, 12], answer["input"])
        self.assertEqual(6, answer["classes"])

        model = {"layers": [{"type": "conv2d", "out": 8, "kernel": 3}, {"type": "relu"},
                            {"type": "maxpool", "size": 2}, {"type": "flatten"},
                            {"type": "linear", "out": 6}]}
        # Ten logits for six classes: refused, saying why.
        wrong = {"layers": model["layers"][:-1] + [{"type": "linear", "out": 10}]}
        code, _, refused = self.daemon.request("POST", "/api/experiments",
                                               {"dataset": {"name": "rgb"}, "model": wrong, "epochs": 1})
        self.assertEqual(400, code)
        self.assertIn({"path": "model.layers[4].out",
                       "message": "the last layer must output 6 logits (one per class of rgb), not 10"},
                      refused["errors"])
        code, _, refused = self.daemon.request("POST", "/api/experiments",
                                               {"dataset": {"name": "nope"}, "model": model, "epochs": 1})
        self.assertEqual(400, code)
        self.assertEqual("dataset.name", refused["errors"][0]["path"])
        self.assertIn("neither fashion-mnist, synthetic nor a registered dataset", refused["errors"][0]["message"])

        run = self.daemon.submit({"name": "rgb", "dataset": {"name": "rgb", "val_size": 100}, "model": model,
                                  "epochs": 3, "batch_size": 32, "optimizer": {"type": "adam", "lr": 0.003}})
        done = self.daemon.wait_status(run, ["succeeded", "failed"], timeout=240)
        self.assertEqual("succeeded", done["status"], done.get("error"))
        code, _, rows = self.daemon.request("POST", "/api/sql", {
            "sql": "SELECT dataset, dataset_checksum FROM experiments WHERE id = ?1", "params": [run]})
        self.assertEqual(200, code, rows)
        self.assertEqual([["rgb", answer["checksum"]]], rows["rows"])
        code, _, metrics = self.daemon.get("/api/experiments/%d/metrics" % run)
        self.assertEqual(200, code)
        accuracy = metrics["test/accuracy"]["value"]
        self.assertTrue(accuracy)
        self.assertGreater(accuracy[-1], 0.6)  # chance is 1/6

        # A study on it: the daemon fills the dataset into the configs its runs are made from.
        code, _, plan = self.daemon.request("POST", "/api/studies?dry_run=1", {
            "name": "rgb-study", "base": {"dataset": {"name": "rgb"}, "model": model, "epochs": 1}, "seeds": 2})
        self.assertEqual(200, code, plan)
        self.assertEqual(2, plan["count"])
        self.assertEqual(answer["checksum"], plan["runs"][0]["config"]["dataset"]["checksum"])

        # A config cannot point a worker at other files, by hand or by an arm's patch.
        forged = {"name": "forged", "format": "csv", "train": ["/etc/passwd"], "test": ["/etc/passwd"],
                  "checksum": "0" * 64, "classes": 6, "input": [3, 12, 12], "train_size": 10, "test_size": 10}
        code, _, refused = self.daemon.request("POST", "/api/experiments",
                                               {"dataset": forged, "model": model, "epochs": 1})
        self.assertEqual(400, code)
        self.assertIn({"path": "dataset.name", "message": '"forged" is not a registered dataset (mapsage dataset ls, '
                                                          'GET /api/datasets)'}, refused["errors"])
        code, _, refused = self.daemon.request("POST", "/api/studies?dry_run=1", {
            "name": "patched", "base": {"dataset": {"name": "rgb"}, "model": model, "epochs": 1},
            "arms": {"other": {"dataset": {"train": ["/etc/passwd"]}}}, "seeds": 1})
        self.assertEqual(400, code, refused)
        self.assertEqual("arms.other.dataset", refused["errors"][0]["path"])
        self.assertIn("differ from the registered dataset \"rgb\"'s", refused["errors"][0]["message"])

        # The file changes under the name: the next run fails, saying so.
        np.savez(path, x_train=train_x[::-1], y_train=train_y[::-1], x_test=test_x, y_test=test_y)
        again = self.daemon.submit({"dataset": {"name": "rgb"}, "model": model, "epochs": 1})
        done = self.daemon.wait_status(again, ["succeeded", "failed"], timeout=120)
        self.assertEqual("failed", done["status"])
        self.assertIn('dataset "rgb" changed since it was registered', done["error"])

    def test_a_hundred_classes_train_with_their_names(self):
        """CIFAR-100's layout: 100 logits, 100 per-class accuracies named after the classes."""
        rng = np.random.default_rng(4)
        base = os.path.join(self.dir, "c100")
        os.makedirs(base)
        for split, n in (("train", 600), ("test", 200)):
            labels = np.arange(n) % 100
            pixels = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            with open(os.path.join(base, split + ".bin"), "wb") as f:
                f.write(b"".join(bytes([label // 5, label]) + image.tobytes() for label, image in zip(labels, pixels)))
        with open(os.path.join(base, "fine_label_names.txt"), "w") as f:
            f.write("\n".join("Class %d" % k for k in range(100)))
        code, _, answer = self.daemon.request("POST", "/api/datasets", {
            "name": "c100", "files": ["c100/train.bin", "c100/test.bin", "c100/fine_label_names.txt"]})
        self.assertEqual(201, code, answer)
        run = self.daemon.submit({"dataset": {"name": "c100"}, "epochs": 1, "batch_size": 50,
                                  "model": {"layers": [{"type": "linear", "out": 100}]}})
        done = self.daemon.wait_status(run, ["succeeded", "failed"], timeout=180)
        self.assertEqual("succeeded", done["status"], done.get("error"))
        per_class = [name for name in done["series"] if name.startswith("test/accuracy/")]
        self.assertEqual(100, len(per_class))
        self.assertIn("test/accuracy/class_42", per_class)
        self.assertEqual({"name": "c100", "train": 540, "val": 60, "test": 200, "classes": 100, "input": [3, 32, 32],
                          "checksum": answer["checksum"]}, done["worker"]["dataset"])


class FashionMnistChecksum(unittest.TestCase):
    """A Fashion-MNIST run records the checksum of the files its worker read, even when the
    registry has not read Fashion-MNIST yet (it does so lazily, the first time it is shown)."""

    def test_a_run_records_the_files_it_read_before_the_registry_has(self):
        daemon = Daemon(workers=1)
        try:
            config = {"name": "fashion-checksum", "dataset": {"name": "fashion-mnist", "val_size": 500,
                                                              "train_limit": 512},
                      "model": {"layers": [{"type": "linear", "out": 10}]}, "epochs": 1}
            experiment_id = daemon.submit(config)
            experiment = daemon.wait_status(experiment_id, ["succeeded"])
            digest = hashlib.sha256()
            for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                         "t10k-labels-idx1-ubyte.gz"):
                with open(os.path.join("/usr/share/datasets/fashion-mnist", name), "rb") as f:
                    digest.update(f.read())
            self.assertEqual("fashion-mnist", experiment["dataset"])
            self.assertEqual(digest.hexdigest(), experiment["dataset_checksum"])
            self.assertEqual(digest.hexdigest(), experiment["worker"]["dataset"]["checksum"])
            # The registry, reading the files now, comes to the same checksum.
            code, _, registered = daemon.get("/api/datasets/fashion-mnist")
            self.assertEqual(200, code, registered)
            self.assertEqual(digest.hexdigest(), registered["checksum"])
        finally:
            daemon.close()


class Delete(unittest.TestCase):
    """DELETE /api/datasets/{name} and `mapsage dataset rm`: refused for the default and
    while a queued or running run uses the dataset (naming the runs), the row gone after,
    the files kept, the name free for a new registration."""

    def mapsage(self, *arguments):
        env = dict(os.environ, MAPSAGE_SERVER=self.daemon.url)
        env.pop("MAPSAGE_TOKEN_FILE", None)
        done = subprocess.run([os.path.join(BIN_DIR, "mapsage"), *arguments], capture_output=True, text=True, env=env,
                              timeout=60)
        return done.returncode, done.stdout, done.stderr

    def test_delete_refusals_and_deleting(self):
        self.daemon = Daemon(workers=1)
        self.addCleanup(self.daemon.close)
        rng = np.random.default_rng(3)
        base = os.path.join(self.daemon.directory, "data", "datasets", "gone")
        train_x = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
        train_y = np.arange(40) % 2
        files = [write(base + "/train.csv", "".join("%d,%s\n" % (y, ",".join(map(str, x.ravel())))
                                                    for x, y in zip(train_x, train_y)).encode()),
                 write(base + "/test.csv", "".join("%d,%s\n" % (y, ",".join(map(str, x.ravel())))
                                                   for x, y in zip(train_x[:6], train_y[:6])).encode())]
        body = {"name": "gone", "files": ["gone/train.csv", "gone/test.csv"]}
        code, _, registered = self.daemon.request("POST", "/api/datasets", body)
        self.assertEqual(201, code, registered)

        code, _, answer = self.daemon.request("DELETE", "/api/datasets/fashion-mnist")
        self.assertEqual(409, code, answer)
        self.assertIn("fashion-mnist is the default dataset", answer["error"])
        code, _, answer = self.daemon.request("DELETE", "/api/datasets/never-registered")
        self.assertEqual((404, "no dataset never-registered"), (code, answer["error"]))

        # One worker busy with a long run; a run on the dataset waits in the queue.
        blocker = self.daemon.submit(synthetic_config("blocker", epochs=3000))
        self.daemon.wait_status(blocker, ["running"])
        user = self.daemon.submit({"name": "on-gone", "dataset": {"name": "gone"}, "epochs": 1,
                                   "model": {"layers": [{"type": "linear", "out": 2}]}})
        self.assertEqual("queued", self.daemon.experiment(user)["status"])
        code, _, answer = self.daemon.request("DELETE", "/api/datasets/gone")
        self.assertEqual(409, code, answer)
        self.assertIn("dataset gone is used by experiments %d (queued or running)" % user, answer["error"])
        code, _, err = self.mapsage("dataset", "rm", "gone")
        self.assertEqual(1, code)
        self.assertIn("dataset gone is used by experiments %d" % user, err)
        self.assertEqual(200, self.daemon.get("/api/datasets/gone")[0])  # refused: nothing changed

        for experiment_id in (user, blocker):
            self.daemon.request("POST", "/api/experiments/%d/cancel" % experiment_id)
            self.daemon.wait_status(experiment_id, ["cancelled"])
        self.assertEqual((0, "deleted dataset gone (its files are kept)\n", ""), self.mapsage("dataset", "rm", "gone"))
        self.assertEqual(404, self.daemon.get("/api/datasets/gone")[0])
        names = [d["name"] for d in self.daemon.get("/api/datasets")[2]["datasets"]]
        self.assertEqual(["fashion-mnist"], names)
        self.assertTrue(all(os.path.exists(path) for path in files))
        self.assertEqual("gone", self.daemon.experiment(user)["dataset"])  # a run keeps what it used
        self.assertEqual(registered["checksum"], self.daemon.experiment(user)["dataset_checksum"])
        code, out, _ = self.mapsage("show", str(user))
        self.assertEqual(0, code)
        self.assertIn("\n  dataset    gone (SHA-256 %s)\n" % registered["checksum"], out)
        code, _, err = self.mapsage("dataset", "rm", "gone")
        self.assertEqual(1, code)
        self.assertIn("no dataset gone", err)
        code, _, err = self.mapsage("dataset", "rm", "fashion-mnist")
        self.assertEqual(1, code)
        self.assertIn("fashion-mnist is the default dataset", err)
        code, _, err = self.mapsage("dataset", "rm")
        self.assertEqual(2, code)
        self.assertIn("which dataset? give its NAME", err)
        # The name is free again, and the same files give the same checksum.
        code, _, again = self.daemon.request("POST", "/api/datasets", body)
        self.assertEqual(201, code, again)
        self.assertEqual(registered["checksum"], again["checksum"])
        code, out, _ = self.mapsage("dataset", "rm", "gone", "--json")
        self.assertEqual((0, {"name": "gone", "deleted": True}), (code, json.loads(out)))


class Migration(unittest.TestCase):
    def test_an_older_database_gains_the_dataset_columns(self):
        """A database from before schema 4: experiments without dataset columns."""
        import sqlite3
        daemon = Daemon(workers=0)
        try:
            first = daemon.submit({"dataset": {"name": "synthetic"}, "model": {"layers": [{"type": "linear", "out": 10}]},
                                   "epochs": 1})
            daemon.kill(signal.SIGTERM)
            daemon.stopped = True
            connection = sqlite3.connect(daemon.db_path)
            connection.executescript("DROP TRIGGER experiments_dataset; ALTER TABLE experiments DROP COLUMN dataset; "
                                     "ALTER TABLE experiments DROP COLUMN dataset_checksum; PRAGMA user_version = 3;")
            connection.close()
            daemon.start()
            daemon.stopped = False
            code, _, rows = daemon.request("POST", "/api/sql", {"sql": "SELECT id, dataset, dataset_checksum FROM "
                                                                       "experiments ORDER BY id"})
            self.assertEqual(200, code, rows)
            self.assertEqual([[first, "synthetic", None]], rows["rows"])
            second = daemon.submit({"model": {"layers": [{"type": "linear", "out": 10}]}, "epochs": 1})
            code, _, rows = daemon.request("POST", "/api/sql", {"sql": "SELECT dataset FROM experiments WHERE id = ?1",
                                                                "params": [second]})
            self.assertEqual([["fashion-mnist"]], rows["rows"])
            self.assertEqual([[5]], daemon.request("POST", "/api/sql", {"sql": "PRAGMA user_version"})[2]["rows"])
        finally:
            daemon.close()


if __name__ == "__main__":
    unittest.main()
