"""test_security.py — the defences of docs/security.md against a real daemon: other web
pages (Host, Origin, Content-Type, the dashboard's headers), stopping with work in flight,
workers that outlive a killed daemon, the token file and the loopback check, the unit.

Each test here failed before its defence existed; docs/security.md says which is which."""
import glob
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, Daemon, synthetic_config  # noqa: E402

EVIL = "http://evil.example"


def raw_request(port, method, path, body=None, headers=None):
    """Exactly these headers (http.client adds Host and Content-Length only)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    data = body.encode() if isinstance(body, str) else body
    if data is not None:
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    response = connection.getresponse()
    text = response.read().decode(errors="replace")
    connection.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return response.status, response, parsed


class OtherWebPages(unittest.TestCase):
    """What a page of another site can make a browser send, and what it must not get."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=0)  # experiments stay queued: cancelling them is visible

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def names(self):
        return [e["name"] for e in self.daemon.get("/api/experiments")[2]["experiments"]]

    def test_a_text_plain_post_submits_nothing(self):
        # <form enctype="text/plain"> or fetch(…, {mode: "no-cors", body: "{…}"}) from any page.
        config = json.dumps(synthetic_config("cross-site"))
        for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                             "multipart/form-data; boundary=x"):
            status, _, body = raw_request(self.daemon.port, "POST", "/api/experiments", config,
                                          {"Content-Type": content_type})
            self.assertEqual(415, status, body)
            self.assertIn('Content-Type: application/json', body["error"])
            self.assertIn(content_type.split(";")[0], body["error"])
        self.assertNotIn("cross-site", self.names())

    def test_sql_and_studies_take_json_only(self):
        for path, payload in (("/api/sql", {"sql": "SELECT 1"}), ("/api/studies?dry_run=1", {"name": "x"})):
            status, _, body = raw_request(self.daemon.port, "POST", path, json.dumps(payload),
                                          {"Content-Type": "text/plain"})
            self.assertEqual(415, status, body)
            # A JSON body that does not say what it is is refused too; one that does passes.
            status, _, body = raw_request(self.daemon.port, "POST", path, json.dumps(payload))
            self.assertEqual(415, status, body)
        status, _, body = self.daemon.request("POST", "/api/sql", {"sql": "SELECT 1 AS one"})
        self.assertEqual(200, status, body)
        status, _, body = raw_request(self.daemon.port, "POST", "/api/sql", json.dumps({"sql": "SELECT 1"}),
                                      {"Content-Type": "Application/JSON; charset=utf-8"})
        self.assertEqual(200, status, body)

    def test_events_take_ndjson_or_json(self):
        experiment_id = self.daemon.submit(synthetic_config("events-type"))
        path = "/api/experiments/%d/events" % experiment_id
        line = '{"type":"log","level":"info","message":"hello"}\n'
        status, _, body = raw_request(self.daemon.port, "POST", path, line, {"Content-Type": "text/plain"})
        self.assertEqual(415, status, body)
        self.assertIn("application/x-ndjson or application/json", body["error"])
        for content_type in ("application/x-ndjson", "application/json"):
            status, _, body = raw_request(self.daemon.port, "POST", path, line, {"Content-Type": content_type})
            self.assertNotEqual(415, status, body)

    def test_another_sites_page_cannot_cancel(self):
        experiment_id = self.daemon.submit(synthetic_config("cancel-me"))
        path = "/api/experiments/%d/cancel" % experiment_id
        # No body, no type: a "simple" request any page may send; only its Origin tells.
        for origin in (EVIL, "null", "http://127.0.0.1.evil.example:%d" % self.daemon.port,
                       "http://127.0.0.1:%d" % (self.daemon.port + 1)):
            status, _, body = raw_request(self.daemon.port, "POST", path, headers={"Origin": origin})
            self.assertEqual(403, status, (origin, body))
            self.assertIn("Origin", body["error"])
        status, _, body = raw_request(self.daemon.port, "POST", "/api/sql", json.dumps({"sql": "SELECT 1"}),
                                      {"Content-Type": "application/json", "Origin": EVIL})
        self.assertEqual(403, status, body)
        self.assertEqual("queued", self.daemon.experiment(experiment_id)["status"])
        # The dashboard's own page (and the CLI, which sends no Origin) may.
        status, _, body = raw_request(self.daemon.port, "POST", path,
                                      headers={"Origin": "http://127.0.0.1:%d" % self.daemon.port})
        self.assertEqual(200, status, body)
        self.assertEqual("cancelled", self.daemon.experiment(experiment_id)["status"])

    def test_another_name_is_refused(self):
        # DNS rebinding: evil.example now resolves to 127.0.0.1; the browser still says its name.
        port = self.daemon.port
        for host in ("evil.example:%d" % port, "127.0.0.1.evil.example:%d" % port, "localhost.evil:%d" % port,
                     "evil.example"):
            for path in ("/api/experiments", "/", "/api/events", "/metrics"):
                status, _, body = raw_request(port, "GET", path, headers={"Host": host})
                self.assertEqual(421, status, (host, path, body))
                self.assertIn(host, body["error"])
                self.assertIn("--allowed-host", body["error"])
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "[::1]:%d" % port, "127.0.0.1"):
            status, _, body = raw_request(port, "GET", "/api/health", headers={"Host": host})
            self.assertEqual(200, status, (host, body))
        status, _, body = raw_request(port, "GET", "/api/health", headers={"Host": "localhost:%d" % (port + 1)})
        self.assertEqual(421, status, body)

    def test_dashboard_headers(self):
        for path in ("/", "/js/app.js", "/css/app.css"):
            status, response, _ = raw_request(self.daemon.port, "GET", path)
            self.assertEqual(200, status)
            policy = response.getheader("Content-Security-Policy") or ""
            for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                              "frame-ancestors 'none'", "connect-src 'self'"):
                self.assertIn(directive, policy)
            self.assertNotIn("unsafe", policy)
            self.assertEqual("DENY", response.getheader("X-Frame-Options"))
            self.assertEqual("no-referrer", response.getheader("Referrer-Policy"))
            self.assertEqual("nosniff", response.getheader("X-Content-Type-Options"))
        status, response, _ = raw_request(self.daemon.port, "GET", "/api/health")
        self.assertEqual("DENY", response.getheader("X-Frame-Options"))
        self.assertIn("default-src 'none'", response.getheader("Content-Security-Policy"))


class AllowedHosts(unittest.TestCase):
    def test_flag_and_environment(self):
        d = Daemon(workers=0, extra_args=["--allowed-host", "mapsage.test", "--allowed-host", "proxy.test:8443"])
        try:
            for host, expected in (("mapsage.test", 200), ("mapsage.test:1234", 200), ("proxy.test:8443", 200),
                                   ("proxy.test:8444", 421), ("other.test:%d" % d.port, 421)):
                status, _, body = raw_request(d.port, "GET", "/api/health", headers={"Host": host})
                self.assertEqual(expected, status, (host, body))
            status, _, body = raw_request(d.port, "POST", "/api/sql", json.dumps({"sql": "SELECT 1"}),
                                          {"Content-Type": "application/json", "Host": "mapsage.test",
                                           "Origin": "https://mapsage.test"})
            self.assertEqual(200, status, body)
        finally:
            d.close()
        d = Daemon(workers=0, environment={"MAPSAGE_ALLOWED_HOST": "a.test, b.test:9"})
        try:
            for host, expected in (("a.test:1", 200), ("b.test:9", 200), ("b.test:10", 421)):
                status, _, body = raw_request(d.port, "GET", "/api/health", headers={"Host": host})
                self.assertEqual(expected, status, (host, body))
        finally:
            d.close()

    def test_a_bad_name_is_refused_at_start(self):
        run = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--listen", "127.0.0.1:0", "--allowed-host",
                              "http://x/", "--db", ":memory:", "--workers", "0"],
                             capture_output=True, timeout=60, cwd=tempfile.gettempdir())
        self.assertNotEqual(0, run.returncode)
        self.assertIn(b"--allowed-host", run.stderr)


class Shutdown(unittest.TestCase):
    def test_sigterm_while_a_query_and_a_stream_run(self):
        d = Daemon(workers=0, extra_args=["--sql-timeout-ms", "3000"])
        answers = []

        def slow_query():
            try:
                answers.append(d.request("POST", "/api/sql", {
                    "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"}))
            except Exception as error:  # noqa: BLE001 — what the client saw is the point
                answers.append(error)

        try:
            stream = d.events(timeout=30)
            thread = threading.Thread(target=slow_query)
            thread.start()
            time.sleep(1.0)  # the query is running on the thread pool, its connection suspended
            started = time.monotonic()
            d.stopped = True
            d.process.send_signal(signal.SIGTERM)
            d.process.wait(timeout=30)
            thread.join(timeout=30)
            stream.close()
            log = d.log()
            self.assertEqual(0, d.process.returncode, log)
            self.assertNotIn("suspended connections", log)
            self.assertLess(time.monotonic() - started, 15)
            self.assertEqual(1, len(answers))
            self.assertIsInstance(answers[0], tuple, "the query's client got no answer: %r" % answers)
            self.assertIn(answers[0][0], (200, 400, 503), answers[0])
        finally:
            d.close()

    def test_new_requests_while_stopping_get_503(self):
        d = Daemon(workers=0, extra_args=["--sql-timeout-ms", "3000"])
        try:
            connection = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
            connection.request("GET", "/api/health")
            connection.getresponse().read()  # a kept-alive connection, open across the stop
            thread = threading.Thread(target=lambda: d.request("POST", "/api/sql", {
                "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"}))
            thread.start()
            time.sleep(1.0)
            d.stopped = True
            d.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # past the streams' drain: waiting for the query
            connection.request("GET", "/api/health")
            response = connection.getresponse()
            body = json.loads(response.read())
            self.assertEqual(503, response.status, body)
            self.assertIn("stopping", body["error"])
            connection.close()
            thread.join(timeout=30)
            d.process.wait(timeout=30)
            self.assertEqual(0, d.process.returncode, d.log())
        finally:
            d.close()


def process_gone(pid):
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Workers(unittest.TestCase):
    def test_a_worker_stops_with_a_killed_daemon(self):
        d = Daemon(workers=1)
        pid = None
        try:
            experiment_id = d.submit(synthetic_config("orphan", epochs=200, train_size=4096))
            d.wait_status(experiment_id, ["running"])
            deadline = time.time() + 60
            while pid is None and time.time() < deadline:
                match = re.search(r"experiment %d started \(attempt 1, pid (\d+)" % experiment_id, d.log())
                pid = int(match.group(1)) if match else None
                time.sleep(0.05)
            self.assertIsNotNone(pid, d.log())
            while time.time() < deadline and not d.get("/api/experiments/%d/metrics" % experiment_id)[2]:
                time.sleep(0.05)  # training, past loading and the first events
            # Stopped, it cannot see its pipes break; it learns of the daemon's death only
            # from the signal that death sends it, waiting for it when it wakes.
            os.kill(pid, signal.SIGSTOP)
            d.stopped = True
            d.process.kill()
            d.process.wait(timeout=30)
            continued = time.time()
            os.kill(pid, signal.SIGCONT)
            deadline = time.time() + 30
            while not process_gone(pid) and time.time() < deadline:
                time.sleep(0.1)
            self.assertTrue(process_gone(pid), "the worker outlived its daemon")
            directory = os.path.join(d.directory, "data", "experiments", str(experiment_id))
            partial = glob.glob(os.path.join(directory, "epoch-*-partial.ckpt"))
            # Continued, the worker finishes the batch it was in before it sees the stop; when
            # that batch ended an epoch, the epoch's own checkpoint (written after the continue)
            # holds the state and there is nothing newer to save (train.c saves only when
            # t->step != t->saved_step): one stop in ~32 batches lands so (1 CI run in ~30).
            whole = [path for path in glob.glob(os.path.join(directory, "epoch-*.ckpt"))
                     if not path.endswith("-partial.ckpt") and os.path.getmtime(path) >= continued - 0.05]
            self.assertTrue(partial or whole, "the worker stopped without its stop checkpoint")
        finally:
            if pid is not None and not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
            d.close()

    def test_a_worker_whose_daemon_is_already_gone_stops(self):
        # The race --parent-pid closes: the daemon died before the worker asked for the signal.
        worker = subprocess.run([os.path.join(BIN_DIR, "mapsage-worker"), "--experiment", "1",
                                 "--parent-pid", str(os.getpid() + 1000000)],
                                input=json.dumps(synthetic_config("late", epochs=50)).encode(),
                                capture_output=True, timeout=120)
        self.assertEqual(128 + signal.SIGTERM, worker.returncode)

    def test_a_worker_started_by_hand_is_not_affected(self):
        worker = subprocess.run([os.path.join(BIN_DIR, "mapsage-worker"), "--experiment", "1"],
                                input=json.dumps(synthetic_config("by-hand", epochs=1)).encode(),
                                capture_output=True, timeout=120)
        self.assertEqual(0, worker.returncode, worker.stderr.decode(errors="replace"))


class TokenAndListen(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-security-")

    def tearDown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self, *arguments):
        return subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--db", os.path.join(self.directory, "m.db"),
                               "--data-dir", os.path.join(self.directory, "data"), "--workers", "0"]
                              + list(arguments), capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    def token_file(self, content, mode=0o600):
        path = os.path.join(self.directory, "token")
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    def test_token_file_others_can_read_is_refused(self):
        for mode in (0o640, 0o604, 0o644):
            run = self.start("--listen", "127.0.0.1:0", "--token-file", self.token_file(b"s" * 32 + b"\n", mode))
            self.assertEqual(2, run.returncode, (oct(mode), run.stderr))
            self.assertIn(b"chmod 600", run.stderr)

    def test_token_with_nul_or_empty_is_refused(self):
        for content, words in ((b"s" * 20 + b"\0" + b"t" * 20, b"NUL"), (b"", b"empty"), (b" \n", b"empty")):
            run = self.start("--listen", "127.0.0.1:0", "--token-file", self.token_file(content))
            self.assertEqual(2, run.returncode, (content, run.stderr))
            self.assertIn(words, run.stderr)

    def test_names_that_start_like_loopback_are_not_loopback(self):
        for listen in ("127.0.0.1.evil.example:0", "localhost.evil:0", "127.evil:0"):
            run = self.start("--listen", listen)
            self.assertEqual(2, run.returncode, (listen, run.stderr))
            self.assertIn(b"without --token-file", run.stderr)

    def test_loopback_addresses_need_no_token(self):
        process = subprocess.Popen([os.path.join(BIN_DIR, "mapsaged"), "--listen", "[::1]:0", "--db",
                                    os.path.join(self.directory, "m.db"), "--data-dir",
                                    os.path.join(self.directory, "data"), "--workers", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = process.stdout.readline().decode()
            if not line:
                # A machine without IPv6 loopback cannot bind it; the daemon must still have
                # taken [::1] for loopback (no token asked), which is what is tested here.
                error = process.stderr.read().decode()
                self.assertNotIn("without --token-file", error)
                self.assertIn("cannot listen", error)
                return
            self.assertIn("listening on http://[::1]:", line)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        self.assertEqual(0, process.returncode)


class Service(unittest.TestCase):
    # The unit as CMake writes it for this build's prefix, from systemd/mapsaged.service.in.
    UNIT = os.path.join(BIN_DIR, "systemd", "mapsaged.service")

    def test_limits(self):
        with open(self.UNIT) as f:
            settings = dict(line.strip().split("=", 1) for line in f
                            if "=" in line and not line.lstrip().startswith("#"))
        for name in ("MemoryMax", "TasksMax", "LimitNOFILE"):
            self.assertIn(name, settings)
        # MHD serves up to 1000 connections; each needs a descriptor.
        self.assertGreater(int(settings["LimitNOFILE"]), 1100)

    def test_systemd_analyze_security(self):
        analyze = shutil.which("systemd-analyze")
        self.assertIsNotNone(analyze, "systemd-analyze is missing: scripts/install-deps --tests installs systemd")
        run = subprocess.run([analyze, "security", "--offline=true", self.UNIT], capture_output=True, timeout=120)
        match = re.search(rb"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
        self.assertIsNotNone(match, "systemd-analyze could not rate the unit: %s" % run.stderr.decode(errors="replace"))
        # 0.9 SAFE: what remains is the network itself, AF_UNIX (libuv's pipes to the workers)
        # and the root directory.
        self.assertLessEqual(float(match.group(1)), 0.9, run.stdout.decode(errors="replace"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
