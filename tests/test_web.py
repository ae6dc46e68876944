"""test_web.py — the dashboard: how mapsaged serves it (types, ETags, 404s, paths that try
to leave the root, --web-dir), then the dashboard itself in real headless Chromium
(tests/web/dashboard.test.mjs, tests/web/organise.test.mjs for tags, notes, archive, delete,
the list's sort and filters, compare and the chart tools, and tests/web/studies.test.mjs for
the study views, tests/web/downloads.test.mjs for the experiment page's checkpoint
downloads and dataset line, each against a daemon of its own; driven by playwright-core from npm).

The browser part needs node, `npm ci` (playwright-core) and Debian's chromium, which
scripts/install-deps installs; screenshots land in $MAPSAGE_BIN_DIR/artifacts/."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, SOURCE_DIR, Daemon  # noqa: E402

CHROMIUM = os.environ.get("MAPSAGE_CHROMIUM", "/usr/bin/chromium")


class Serving(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=0)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def test_index_and_types(self):
        for path, expected_type, needle in [
                ("/", "text/html; charset=utf-8", "<main id=\"view\">"),
                ("/index.html", "text/html; charset=utf-8", "js/app.js"),
                ("/js/app.js", "text/javascript; charset=utf-8", "export"),
                ("/css/app.css", "text/css; charset=utf-8", "prefers-color-scheme"),
                ("/vendor/uPlot.esm.js", "text/javascript; charset=utf-8", "export { uPlot as default }"),
                ("/vendor/uPlot.min.css", "text/css; charset=utf-8", ".uplot"),
                ("/examples/index.json", "application/json", "baseline-mlp.json"),
                ("/examples/baseline-mlp.json", "application/json", "\"layers\""),
                ("/favicon.svg", "image/svg+xml", "<svg")]:
            status, response, body = self.daemon.get(path)
            self.assertEqual(200, status, path)
            self.assertEqual(expected_type, response.getheader("Content-Type"), path)
            self.assertIn(needle, body if isinstance(body, str) else json.dumps(body), path)
            self.assertEqual("no-cache", response.getheader("Cache-Control"), path)
            self.assertEqual("nosniff", response.getheader("X-Content-Type-Options"), path)

    def test_etag_revalidates_without_a_body(self):
        status, response, body = self.daemon.get("/js/app.js")
        etag = response.getheader("ETag")
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        status, response, body = self.daemon.request("GET", "/js/app.js", headers={"If-None-Match": etag})
        self.assertEqual(304, status)
        self.assertEqual("", body)
        self.assertEqual(etag, response.getheader("ETag"))
        status, _, body = self.daemon.request("GET", "/js/app.js", headers={"If-None-Match": '"0000000000000000"'})
        self.assertEqual(200, status)
        self.assertIn("export", body)

    def test_missing_file_is_a_json_404(self):
        status, response, body = self.daemon.get("/no/such/file.js")
        self.assertEqual(404, status)
        self.assertEqual({"error": "no such file", "path": "/no/such/file.js"}, body)
        # /api/ stays the API's: an unknown route there is never a file.
        status, _, body = self.daemon.get("/api/nope")
        self.assertEqual(404, status)
        self.assertEqual("no such route", body["error"])

    def test_paths_that_climb_out_are_refused(self):
        for path in ["/../etc/passwd", "/%2e%2e/etc/passwd", "/js/../../etc/passwd", "/js//app.js", "/./index.html",
                     "/js\\..\\app.js"]:
            status, _, body = self.daemon.get(path)
            self.assertEqual(400, status, path)
            self.assertIn("not a path of the dashboard", body["error"], path)

    def test_web_dir_serves_from_disk_and_stays_inside(self):
        directory = tempfile.mkdtemp(prefix="mapsage-web-")
        outside = tempfile.mkdtemp(prefix="mapsage-outside-")
        try:
            with open(os.path.join(directory, "index.html"), "w") as f:
                f.write("<p>from disk</p>")
            os.mkdir(os.path.join(directory, "js"))
            with open(os.path.join(outside, "secret.txt"), "w") as f:
                f.write("secret")
            os.symlink(os.path.join(outside, "secret.txt"), os.path.join(directory, "leak.txt"))
            daemon = Daemon(workers=0, extra_args=["--web-dir", directory])
            try:
                status, response, body = daemon.get("/")
                self.assertEqual((200, "<p>from disk</p>"), (status, body))
                self.assertEqual("no-store", response.getheader("Cache-Control"))
                # What the directory lacks still comes from the built-in copy (uPlot, examples).
                status, response, _ = daemon.get("/vendor/uPlot.min.css")
                self.assertEqual((200, "text/css; charset=utf-8"), (status, response.getheader("Content-Type")))
                status, _, body = daemon.get("/leak.txt")
                self.assertEqual(403, status, body)
                self.assertNotIn("secret", str(body))
                status, _, body = daemon.get("/js")  # a directory is not a file
                self.assertEqual(404, status)
            finally:
                daemon.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            shutil.rmtree(outside, ignore_errors=True)

    def test_a_web_dir_that_does_not_exist_stops_the_daemon(self):
        result = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--listen", "127.0.0.1:0",
                                 "--web-dir", "/nonexistent/web"], capture_output=True, timeout=30)
        self.assertEqual(2, result.returncode)
        self.assertIn(b"--web-dir /nonexistent/web", result.stderr)


class Browser(unittest.TestCase):
    def run_in_chromium(self, name, workers, timeout, prepare=None):
        """Runs tests/web/<name> against a daemon of its own (an empty database); `prepare`
        (daemon) → extra environment, for a file that needs something in place first."""
        node = shutil.which("node")
        script = os.path.join(SOURCE_DIR, "tests", "web", name)
        missing = [what for what, ok in [("node", node), (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
                                         ("node_modules/playwright-core (npm ci)",
                                          os.path.isdir(os.path.join(SOURCE_DIR, "node_modules", "playwright-core")))]
                   if not ok]
        self.assertEqual([], missing, "scripts/install-deps and `npm ci` provide these")
        artifacts = os.path.join(BIN_DIR, "artifacts")
        os.makedirs(artifacts, exist_ok=True)
        daemon = Daemon(workers=workers)
        try:
            env = dict(os.environ, MAPSAGE_URL=daemon.url, MAPSAGE_ARTIFACTS=artifacts, MAPSAGE_CHROMIUM=CHROMIUM,
                       **(prepare(daemon) if prepare else {}))
            result = subprocess.run([node, "--test-reporter=spec", script], env=env, timeout=timeout,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            output = result.stdout.decode(errors="replace")
            print(output)
            self.assertEqual(0, result.returncode, "browser tests failed:\n%s\ndaemon log:\n%s" %
                             (output[-6000:], daemon.log()[-3000:]))
        finally:
            daemon.close()

    def test_dashboard_in_chromium(self):
        self.run_in_chromium("dashboard.test.mjs", workers=1, timeout=240)

    def test_organise_in_chromium(self):
        self.run_in_chromium("organise.test.mjs", workers=1, timeout=300)

    def test_studies_in_chromium(self):
        # Two workers: a study's 400 one-epoch runs end in reasonable time under ASan.
        self.run_in_chromium("studies.test.mjs", workers=2, timeout=420)

    def test_datasets_in_chromium(self):
        self.run_in_chromium("datasets.test.mjs", workers=0, timeout=240, prepare=register_tiny_rgb)

    def test_downloads_in_chromium(self):
        self.run_in_chromium("downloads.test.mjs", workers=1, timeout=300, prepare=register_tiny_rgb)


def register_tiny_rgb(daemon):
    """A 3×8×8 dataset of three classes, class 2 rare, a test example copied from training."""
    import numpy as np
    rng = np.random.default_rng(5)
    labels = np.array([0] * 20 + [1] * 16 + [2] * 4)
    images = rng.integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    test_labels = np.array([0, 1, 2] * 4)
    test_images = rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8)
    test_images[0] = images[0]
    directory = os.path.join(daemon.directory, "data", "datasets", "tiny")
    os.makedirs(directory)
    np.savez(os.path.join(directory, "tiny.npz"), x_train=images, y_train=labels, x_test=test_images,
             y_test=test_labels)
    with open(os.path.join(directory, "names.txt"), "w") as f:
        f.write("red\ngreen\nblue\n")
    status, _, answer = daemon.request("POST", "/api/datasets", {"name": "tiny-rgb", "files": ["tiny/tiny.npz"],
                                                                 "names": "tiny/names.txt", "layout": "nchw"})
    assert status == 201, answer
    expected = os.path.join(daemon.directory, "expected.json")
    with open(expected, "w") as f:
        json.dump(images[0].ravel().tolist(), f)
    return {"MAPSAGE_EXPECTED": expected}


if __name__ == "__main__":
    unittest.main(verbosity=2)
