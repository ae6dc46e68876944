"""test_robustness.py — what a hostile network and a broken worker get from the daemon:
slow clients dropped on a deadline, malformed, deeply nested and oversized input refused
with a clear error, traversal refused, idle streams capped, and a worker that writes
garbage, endless lines and floods of events: the daemon stays up, keeps the garbage in the
run's log, stores the valid events and bounds its memory."""
import http.client
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import SOURCE_DIR, Daemon, synthetic_config  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class HostileClients(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1, extra_args=["--request-timeout", "2"])

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def test_a_slow_client_is_dropped(self):
        sock = socket.create_connection(("127.0.0.1", self.daemon.port))
        started = time.monotonic()
        request = (b"POST /api/experiments HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n" % self.daemon.port) + b"{" * 100
        dropped = False
        for byte in request:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 8:
                break
        if not dropped:
            sock.settimeout(3)
            try:
                dropped = sock.recv(100) == b""
            except (ConnectionResetError, socket.timeout):
                dropped = True
        sock.close()
        self.assertTrue(dropped, "a client sending a byte every 0.2 s is cut off")
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual("ok", self.daemon.get("/api/health")[2]["status"])

    def test_malformed_input_gets_clear_errors(self):
        d = self.daemon
        cases = [
            ("[" * 5000 + "]" * 5000, "", "maximum parsing depth"),
            ('{"epochs": 1e400, "model": {}}', "", "invalid JSON"),
            ('{"seed": 99999999999999999999999999}', "", "too big"),
            (b'{"name": "\xff\xfe"}', "", "unable to decode byte 0xff"),
            ('{"name": "a\\u0000b", "model": {"layers": [{"type": "linear", "out": 10}]}}', "", "invalid JSON"),
        ]
        for body, path, words in cases:
            status, _, answer = d.request("POST", "/api/experiments", body)
            self.assertEqual(400, status, body[:40])
            self.assertEqual(path, answer["errors"][0]["path"])
            self.assertIn(words, answer["errors"][0]["message"], body[:40])
        status, _, answer = d.request("POST", "/api/experiments", synthetic_config(epochs=2 ** 40))
        self.assertEqual(400, status)
        self.assertEqual("epochs", answer["errors"][0]["path"])

    def test_traversal_and_strange_paths(self):
        d = self.daemon
        for path in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/css/../../schema.sql", "/a//b",
                     "/..%2f..%2fetc%2fpasswd", "/.git/config"]:
            status, _, answer = d.get(path)
            self.assertIn(status, (400, 404), path)
            self.assertNotIn("root:", str(answer))
        connection = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        connection.request("BREW", "/api/health")
        self.assertIn(connection.getresponse().status, (400, 405, 501))
        connection.close()

    def ended(self, stream, deadline):
        """Whether the stream's response ends (the daemon ended it) before `deadline`."""
        stream.connection.sock.settimeout(max(0.1, deadline - time.time()))
        try:
            for _ in stream:
                pass
            return True
        except (OSError, http.client.HTTPException):
            return time.time() < deadline

    def test_streams_make_room_for_new_viewers(self):
        # Streams from other loopback addresses count as other clients.
        d = self.daemon
        opened = []
        try:
            mine = [d.events(timeout=30, source="127.0.0.2") for _ in range(64)]
            opened += mine
            self.assertTrue(mine)
            self.assertTrue(all(stream.status == 200 for stream in mine))
            # The address's 65th stream is served, and its own idlest (the first) ends.
            opened.append(d.events(timeout=30, source="127.0.0.2"))
            self.assertEqual(200, opened[-1].status)
            self.assertTrue(self.ended(mine[0], time.time() + 20), "the client's idlest stream ended")
            # Every slot taken (64 more from each of three addresses): a new viewer from a
            # fourth is still served, and the one ended is of an address holding the most.
            for address in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
                opened += [d.events(timeout=30, source=address) for _ in range(64)]
            newcomer = d.events(timeout=30, source="127.0.0.6")
            opened.append(newcomer)
            self.assertEqual(200, newcomer.status, "a new viewer is never locked out")
            self.assertEqual("ok", d.get("/api/health")[2]["status"], "requests still work with every slot taken")
            metrics = d.get("/metrics")[2]
            evicted = [line for line in metrics.splitlines() if line.startswith("mapsage_streams_evicted_total ")]
            self.assertEqual(["mapsage_streams_evicted_total 2"], evicted)
        finally:
            for stream in opened:
                stream.close()
        deadline = time.time() + 20
        while d.get("/api/health")[2]["streams"] > 0 and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(0, d.get("/api/health")[2]["streams"], "closed streams are noticed and freed")


class StartFailures(unittest.TestCase):
    def test_a_worker_that_cannot_start_leaves_the_run_waiting_then_it_runs(self):
        # A daemon with few descriptors, taken up by idle streams: a worker's three pipes
        # cannot be made (EMFILE), though a request still gets through.
        d = Daemon(workers=1, open_files=48)
        streams = []
        try:
            for _ in range(100):
                stream = socket.create_connection(("127.0.0.1", d.port), timeout=3)
                stream.sendall(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % d.port)
                try:
                    stream.recv(100)
                except socket.timeout:  # not accepted: the daemon is out of descriptors
                    stream.close()
                    break
                streams.append(stream)
            self.assertTrue(streams)
            self.assertLess(len(streams), 100, "the daemon ran out of descriptors")
            for stream in streams[:5]:  # room for a request, not for a worker's pipes
                stream.close()
            streams = streams[5:]
            first = d.submit(synthetic_config("starved-1", epochs=1))
            second = d.submit(synthetic_config("starved-2", epochs=1))
            deadline = time.time() + 60
            while "waiting" not in (d.experiment(first)["error"] or "") and time.time() < deadline:
                time.sleep(0.1)
            starved = d.experiment(first)
            self.assertEqual("queued", starved["status"], starved)
            self.assertIn("too many open files", starved["error"])
            self.assertEqual(0, starved["attempts"])
            self.assertEqual("queued", d.experiment(second)["status"], "the pass stopped at the first failure")
        finally:
            for stream in streams:
                stream.close()
        try:
            for experiment_id in (first, second):
                done = d.wait_status(experiment_id, ["succeeded", "failed"], timeout=120)
                self.assertEqual("succeeded", done["status"], done)
                self.assertEqual(1, done["attempts"])
        finally:
            d.close()

    def test_a_student_whose_teacher_cannot_start_fails_naming_it(self):
        # A study stores its teacher and students at once: the students are waiting when
        # the teacher's worker fails to start (here: no such program).
        d = Daemon(workers=1, extra_args=["--worker-bin", "/nonexistent/mapsage-worker"])
        try:
            data = {"name": "synthetic", "train_size": 512}
            status, _, created = d.request("POST", "/api/studies", {
                "name": "orphans", "seeds": 2, "baselines": False,
                "base": synthetic_config("student", epochs=None, dataset=data,
                                         stages=[{"epochs": 1, "task_weight": 0.5, "distill_weight": 0.5}]),
                "teacher": {"config": synthetic_config("teacher", epochs=1, dataset=data)}})
            self.assertEqual(201, status, created)
            study = d.get("/api/studies/%d" % created["id"])[2]
            teacher = [run["id"] for run in study["runs"] if run["role"] == "teacher"][0]
            students = [run["id"] for run in study["runs"] if run["role"] == "arm"]
            self.assertEqual(2, len(students))
            failed = d.wait_status(teacher, ["failed"], timeout=30)
            self.assertIn("cannot start the worker", failed["error"])
            for student in students:
                orphan = d.wait_status(student, ["failed"], timeout=30)
                self.assertIn("its teacher, experiment %d, failed: cannot start the worker" % teacher, orphan["error"])
        finally:
            d.close()


class BrokenWorker(unittest.TestCase):
    def test_garbage_endless_lines_and_floods(self):
        fake = os.path.join(SOURCE_DIR, "tests", "fixtures", "misbehaving-worker.py")
        # Under AddressSanitizer freed memory waits in a quarantine (256 MB by default)
        # before it is reused, which would count as the daemon's: keep it small here.
        asan = os.environ.get("ASAN_OPTIONS", "")
        d = Daemon(workers=1, extra_args=["--worker-bin", fake],
                   environment={"ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=16"})
        try:
            experiment_id = d.submit(synthetic_config("misbehaving"))
            peak = 0
            deadline = time.time() + 120
            while time.time() < deadline:
                peak = max(peak, rss_kib(d.process.pid))
                if d.experiment(experiment_id)["status"] != "running" and \
                        d.experiment(experiment_id)["status"] != "queued":
                    break
                time.sleep(0.05)
            experiment = d.experiment(experiment_id)
            self.assertEqual("succeeded", experiment["status"], experiment["error"])
            self.assertLess(peak, 200 * 1024, "the daemon's memory stays bounded (KiB)")
            log = d.get("/api/experiments/%d/log" % experiment_id)[2]
            self.assertIn("not a protocol event", log)
            self.assertIn("this is not json", log)
            self.assertIn("longer than 1048576 bytes was cut", log)
            self.assertIn("a log line from the misbehaving worker", log)
            _, _, curves = d.get("/api/experiments/%d/metrics?names=loss/total" % experiment_id)
            self.assertEqual(list(range(1, 50001)), curves["loss/total"]["step"], "every valid event was stored")
            started = time.monotonic()
            steps = [e["data"]["step"] for e in d.stream(experiment_id, last_event_id="49990") if e["event"] == "metric"]
            self.assertEqual(list(range(49991, 50001)) + [10 ** 12], steps)
            self.assertLess(time.monotonic() - started, 10, "the replay jumped the gap")
            self.assertEqual("ok", d.get("/api/health")[2]["status"])
        finally:
            d.close()

    def test_a_stream_that_falls_behind_loses_nothing(self):
        """A client that stops reading while a worker floods is served from the database
        once it reads again: every step once, in order, then the end of the run."""
        fake = os.path.join(SOURCE_DIR, "tests", "fixtures", "misbehaving-worker.py")
        d = Daemon(workers=1, extra_args=["--worker-bin", fake])
        try:
            experiment_id = d.submit(synthetic_config("falls-behind"))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no room to hide the lag
            sock.connect(("127.0.0.1", d.port))
            sock.sendall(b"GET /api/experiments/%d/stream HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n" % (experiment_id, d.port))
            d.wait_status(experiment_id, ["succeeded", "failed"])  # the flood passes while we do not read
            sock.settimeout(60)
            received = bytearray()
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
            sock.close()
            text = received.decode()
            steps = [int(line[4:]) for line in text.split("\n") if line.startswith("id: ") and "." not in line]
            self.assertEqual(list(range(1, 50001)) + [10 ** 12], steps, "every step once, in order")
            self.assertIn("event: end", text)
        finally:
            d.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
