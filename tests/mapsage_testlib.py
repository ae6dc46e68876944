"""mapsage_testlib.py — what the integration tests share: a real mapsaged on a free port
with a temporary database, a small HTTP client and a Server-Sent Events reader.

Only the Python standard library (/usr/bin/python3 on Debian 12), so the suite needs
nothing beyond the README's packages."""
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BIN_DIR = os.environ.get("MAPSAGE_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "build"))
SOURCE_DIR = os.environ.get("MAPSAGE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))

MLP = {"layers": [{"type": "linear", "out": 32, "name": "fc1"}, {"type": "relu"},
                  {"type": "linear", "out": 10, "name": "out"}]}


def synthetic_config(name="synthetic", epochs=2, train_size=2048, **extra):
    """A config that trains in well under a second (longer with more epochs)."""
    config = {"name": name, "dataset": {"name": "synthetic", "train_size": train_size},
              "model": MLP, "epochs": epochs}
    config.update(extra)
    return {key: value for key, value in config.items() if value is not None}


class Daemon:
    """mapsaged on 127.0.0.1:0 with its own database and data directory."""

    def __init__(self, workers=1, directory=None, extra_args=(), environment=None, open_files=None):
        self.owns_directory = directory is None
        self.environment = dict(os.environ, **(environment or {}))
        self.directory = directory or tempfile.mkdtemp(prefix="mapsage-test-")
        self.db_path = os.path.join(self.directory, "mapsage.db")
        self.workers = workers
        self.extra_args = list(extra_args)
        self.open_files = open_files  # RLIMIT_NOFILE for the daemon, to run it out of descriptors
        self.process = None
        self.start()

    def start(self):
        self.stderr = open(os.path.join(self.directory, "daemon.log"), "ab")
        self.process = subprocess.Popen(
            [os.path.join(BIN_DIR, "mapsaged"), "--listen", "127.0.0.1:0", "--db", self.db_path,
             "--data-dir", os.path.join(self.directory, "data"), "--workers", str(self.workers)]
            + self.extra_args,
            stdout=subprocess.PIPE, stderr=self.stderr, env=self.environment,
            preexec_fn=self.limit_files if self.open_files else None)
        line = self.process.stdout.readline().decode()
        if not line.startswith("mapsaged listening on http://"):
            raise RuntimeError("mapsaged did not start: %r; log:\n%s" % (line, self.log()))
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def limit_files(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def log(self):
        with open(os.path.join(self.directory, "daemon.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self, sig=signal.SIGKILL):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        if self.process:
            self.process.stdout.close()
        self.stderr.close()

    def close(self):
        # A test that stopped or killed it itself sets `stopped`: that is no news.
        died = self.process and self.process.poll() is not None and not getattr(self, "stopped", False)
        self.kill(signal.SIGTERM)
        if died or (self.process and self.process.returncode not in (0, None) and not getattr(self, "stopped", False)):
            # A daemon that died on its own (a sanitizer report, a crash): show why.
            sys.stderr.write("mapsaged exited with %s; its log:\n%s\n" % (self.process.returncode, self.log()))
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- HTTP ---------------------------------------------------------------------------

    def request(self, method, path, body=None, headers=None):
        """Returns (status, headers, parsed JSON or text)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        headers = dict(headers or {})
        # Every body the API reads is JSON, and the daemon refuses one that does not say so
        # (a cross-site form can only say text/plain). Pass another type to test that.
        if body is not None and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            data = json.loads(data)
        else:
            data = data.decode(errors="replace")
        return response.status, response, data

    def get(self, path):
        return self.request("GET", path)

    def submit(self, config):
        status, _, body = self.request("POST", "/api/experiments", config)
        if status != 201:
            raise AssertionError("submit answered %d: %s" % (status, body))
        return body["id"]

    def experiment(self, experiment_id):
        return self.get("/api/experiments/%d" % experiment_id)[2]

    def wait_status(self, experiment_id, statuses, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            experiment = self.experiment(experiment_id)
            if experiment["status"] in statuses:
                return experiment
            time.sleep(0.05)
        raise AssertionError("experiment %d still %s after %ds" % (experiment_id, experiment["status"], timeout))

    def wait_study(self, study_id, statuses, timeout=240):
        """The study once its status is one of `statuses` (GET /api/studies/{id})."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, study = self.get("/api/studies/%d" % study_id)
            if status != 200:
                raise AssertionError("GET /api/studies/%d answered %d: %s" % (study_id, status, study))
            if study["status"] in statuses:
                return study
            time.sleep(0.1)
        raise AssertionError("study %d still %s after %ds: %s" % (study_id, study["status"], timeout, study["counts"]))

    def stream(self, experiment_id, last_event_id=None, timeout=120):
        return SseReader(self.port, "/api/experiments/%d/stream" % experiment_id, last_event_id, timeout)

    def events(self, timeout=120, source=None):
        """The stream of every experiment's changes (from the loopback address `source`)."""
        return SseReader(self.port, "/api/events", None, timeout, source)


class SseReader:
    """Reads a stream event by event: each is a dict with id, event and parsed data."""

    def __init__(self, port, path, last_event_id=None, timeout=120, source=None):
        # `source` (127.0.0.2, …) makes the stream come from another client address.
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                                     source_address=(source, 0) if source else None)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type")

    def __iter__(self):
        return self

    def __next__(self):
        event = {"id": None, "event": "message", "data": []}
        while True:
            line = self.response.readline()
            if not line:
                raise StopIteration
            line = line.decode().rstrip("\n")
            if line == "":
                if event["data"]:
                    event["data"] = json.loads("\n".join(event["data"]))
                    return event
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                event["data"].append(value)
            elif field in ("id", "event"):
                event[field] = value

    def close(self):
        self.connection.close()
