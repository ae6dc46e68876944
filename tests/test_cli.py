#!/usr/bin/env python3
"""test_cli.py — the `mapsage` client driven as a user drives it: real processes, real HTTP.

Most tests start the real mapsaged (with --listen 127.0.0.1:0, a temporary database and data
directory, and the real mapsage-worker), run `mapsage` against it and check its output and
exit codes (docs/cli.md). One test serves a hand-written event stream from this process,
because a real daemon cannot be asked to drop a connection in the middle of an event: it
checks that `watch` parses awkward but valid SSE and resumes with Last-Event-ID.

CTest sets MAPSAGE_BIN_DIR (the build directory) and MAPSAGE_SOURCE_DIR (the repository);
run by hand, it defaults to <repo>/build. Python standard library only.
"""
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mapsage_testlib import BIN_DIR, Daemon, synthetic_config  # noqa: E402

MAPSAGE = os.path.join(BIN_DIR, "mapsage")

# A tiny run on generated data: a fraction of a second of training.
CONFIG = synthetic_config("t", epochs=2)


def display_cells(line, widths):
    """Cuts a table line into its cells by terminal columns (East Asian wide characters
    count two), the cells separated by three spaces."""
    cells, column, start = [], 0, 0
    for width in widths:
        end, used = start, 0
        while end < len(line) and used < width:
            used += 2 if unicodedata.east_asian_width(line[end]) in "WF" else 1
            end += 1
        cells.append(line[start:end])
        if line[end:end + 3] not in ("   ", ""):
            raise AssertionError("column %d of %r does not end at display column %d" % (column, line, width))
        start, column = end + 3, column + 1
    return cells


def free_port():
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CliTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-test-cli-")
        self.daemons = []
        self.config_path = self.write("t.json", json.dumps(CONFIG))

    def tearDown(self):
        for daemon in self.daemons:
            daemon.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------

    def write(self, name, text):
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_daemon(self, workers=1, token_file=None, extra_args=()):
        directory = os.path.join(self.directory, "daemon%d" % len(self.daemons))
        os.makedirs(directory)
        daemon = Daemon(workers=workers, directory=directory,
                        extra_args=(["--token-file", token_file] if token_file else []) + list(extra_args))
        self.daemons.append(daemon)
        return daemon.url

    def mapsage(self, *arguments, server=None, stdin=None, timeout=30, extra_env=None):
        """Runs mapsage; returns (exit code, stdout, stderr)."""
        env = dict(os.environ)
        env.pop("MAPSAGE_TOKEN_FILE", None)
        env["MAPSAGE_SERVER"] = server or (self.daemons[0].url if self.daemons else "http://127.0.0.1:9")
        env.update(extra_env or {})
        done = subprocess.run([MAPSAGE, *arguments], input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def check(self, expected_code, result, what):
        code, out, err = result
        self.assertEqual(code, expected_code, "%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (what, code, expected_code, out, err))
        return out, err

    def submit(self, *arguments, stdin=None, server=None):
        out, err = self.check(0, self.mapsage("submit", *arguments, stdin=stdin, server=server), "submit")
        self.assertRegex(out, r"^\d+\n$", "submit prints just the id on stdout")
        self.assertRegex(err, r"submitted experiment %s \((queued|running)\)" % out.strip())
        return int(out)

    # --- tests ------------------------------------------------------------------------

    def test_submit_ls_watch_show(self):
        self.start_daemon(workers=1)
        id = self.submit(self.config_path)

        out, _ = self.check(0, self.mapsage("ls"), "ls")
        header, *rows = out.splitlines()
        self.assertEqual(header.split(), ["ID", "NAME", "STATUS", "EPOCH", "TEST-ACC", "AGE", "DURATION"])
        self.assertTrue(any(row.split()[:2] == [str(id), "t"] for row in rows), out)

        out, err = self.check(0, self.mapsage("watch", str(id)), "watch of a run that succeeds")
        self.assertIn("epoch 1/2", out)
        self.assertIn("epoch 2/2", out)
        self.assertNotIn("\r", out, "no live line when stdout is not a terminal")
        self.assertRegex(out.splitlines()[-1], r"^experiment %d succeeded .*test accuracy \d+\.\d\d%%" % id)

        out, _ = self.check(0, self.mapsage("show", str(id)), "show")
        self.assertRegex(out, r"status\s+succeeded")
        self.assertRegex(out, r"final_test_accuracy\s+0\.\d+\s+\(\d+\.\d\d%\)")
        self.assertIn('"layers"', out, "show prints the config")

        out, _ = self.check(0, self.mapsage("show", str(id), "--json"), "show --json")
        self.assertEqual(json.loads(out)["status"], "succeeded")
        out, _ = self.check(0, self.mapsage("ls", "--json", "--status", "succeeded", "--limit", "5"), "ls --json")
        self.assertEqual([e["id"] for e in json.loads(out)["experiments"]], [id])
        out, _ = self.check(0, self.mapsage("ls", "--name", "no such name"), "ls --name")
        self.assertEqual(len(out.splitlines()), 1, "only the header: " + out)

    def test_config_from_stdin_and_set(self):
        self.start_daemon(workers=0)
        id = self.submit("-", "--set", "name=renamed", "--set", "epochs=1", "--set", "optimizer.lr=0.01",
                         stdin=json.dumps(CONFIG))
        out, _ = self.check(0, self.mapsage("show", str(id), "--json"), "show --json")
        config = json.loads(out)["config"]
        self.assertEqual(config["name"], "renamed")
        self.assertEqual(config["optimizer"]["lr"], 0.01)
        self.assertEqual(sum(stage["epochs"] for stage in config["stages"]), 1)

        _, err = self.check(2, self.mapsage("submit", self.config_path, "--set", "model.layers[7].out=3"),
                            "--set past the end of an array")
        self.assertIn("model.layers[7].out", err)
        self.assertIn("out of range", err)
        _, err = self.check(2, self.mapsage("submit", self.config_path, "--set", "name.first=x"),
                            "--set through a string")
        self.assertIn("name is a string, not an object", err)

    def test_invalid_config_lists_each_path(self):
        self.start_daemon(workers=0)
        bad = dict(CONFIG, epochs=0)
        bad["model"] = {"layers": [{"type": "conv"}]}
        out, err = self.check(1, self.mapsage("submit", "-", stdin=json.dumps(bad)), "an invalid config")
        self.assertEqual(out, "")
        self.assertTrue(err.startswith("mapsage: invalid config:\n"), err)
        self.assertRegex(err, r"(?m)^  epochs: ")
        self.assertRegex(err, r"(?m)^  model\.layers\[0\]\.type: ")
        out, err = self.check(1, self.mapsage("submit", "-", stdin="{\"name\": "), "text that is not JSON")
        self.assertIn("mapsage: invalid config:", err)

    def test_cancel_queued_and_watch_it(self):
        self.start_daemon(workers=0)  # nothing runs: what is submitted stays queued
        id = self.submit(self.config_path)
        watcher = subprocess.Popen([MAPSAGE, "watch", str(id)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=dict(os.environ, MAPSAGE_SERVER=self.daemons[0].url))
        try:
            time.sleep(0.5)
            out, _ = self.check(0, self.mapsage("cancel", str(id)), "cancel of a queued experiment")
            self.assertEqual(out, "experiment %d: cancelled\n" % id)
            out, err = watcher.communicate(timeout=15)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        self.assertEqual(watcher.returncode, 1, "watch of a cancelled run\nstdout: %s\nstderr: %s" % (out, err))
        self.assertIn("experiment %d (t): queued" % id, out)
        self.assertIn("experiment %d cancelled" % id, out)

        _, err = self.check(1, self.mapsage("cancel", str(id)), "cancel of an ended experiment")
        self.assertIn("already ended", err)
        _, err = self.check(1, self.mapsage("show", "999"), "show of an unknown id")
        self.assertIn("mapsage: no experiment 999", err)

    def test_token(self):
        token = self.write("token", "s3cret-s3cret-s3cret\n")
        os.chmod(token, 0o600)  # the daemon refuses a token others can read
        url = self.start_daemon(workers=0, token_file=token)
        _, err = self.check(1, self.mapsage("submit", self.config_path, server=url), "submit without the token")
        self.assertIn("Authorization", err)
        self.check(0, self.mapsage("--token-file", token, "submit", self.config_path, server=url), "--token-file")
        self.check(0, self.mapsage("submit", self.config_path, server=url, extra_env={"MAPSAGE_TOKEN_FILE": token}),
                   "MAPSAGE_TOKEN_FILE")

    def test_unreachable_server(self):
        url = "http://127.0.0.1:%d" % free_port()
        for arguments in (["ls"], ["show", "1"], ["watch", "1"], ["cancel", "1"], ["submit", self.config_path],
                          ["sql", "SELECT 1"]):
            _, err = self.check(3, self.mapsage(*arguments, server=url), " ".join(arguments) + " with no server")
            self.assertIn("cannot reach the server at " + url, err)
        self.check(3, self.mapsage("--server", url, "ls"), "--server")

    def test_usage(self):
        out, _ = self.check(0, self.mapsage("--help"), "--help")
        self.assertTrue(out.startswith("usage: mapsage "))
        self.assertIn("Exit status", out)
        for command in ("submit", "ls", "show", "watch", "cancel", "sql"):
            out, _ = self.check(0, self.mapsage(command, "--help"), command + " --help")
            self.assertTrue(out.startswith("usage: mapsage " + command), out)
            self.assertIn("Example", out)
        self.check(2, self.mapsage(), "no command")
        self.check(2, self.mapsage("frobnicate"), "an unknown command")
        self.check(2, self.mapsage("ls", "--bogus"), "an unknown option")
        self.check(2, self.mapsage("show", "seven"), "an id that is not a number")
        self.check(2, self.mapsage("submit"), "submit without a file")
        _, err = self.check(2, self.mapsage("submit", os.path.join(self.directory, "missing.json")), "a missing file")
        self.assertIn("missing.json", err)

    def test_report(self):
        self.start_daemon(workers=1)
        config = dict(CONFIG, stages=[{"name": "warm", "epochs": 1}, {"name": "main", "epochs": 1, "task_weight": 0.5}])
        config.pop("epochs")
        id = self.submit("-", stdin=json.dumps(config))
        self.check(0, self.mapsage("watch", str(id)), "watch")
        out, _ = self.check(0, self.mapsage("report", str(id)), "report")
        self.assertIn("experiment %d (t): succeeded" % id, out)
        self.assertRegex(out, r"stage 1 warm \(steps 1-\d+\)")
        self.assertRegex(out, r"stage 2 main")
        self.assertRegex(out, r"loss/task +[\d.e-]+ -> [\d.e-]+ +\( *-[\d.]+%\) +100% of the total")
        out, _ = self.check(0, self.mapsage("report", str(id), "--json"), "report --json")
        self.assertEqual(["warm", "main"], [stage["name"] for stage in json.loads(out)["stages"]])
        _, err = self.check(1, self.mapsage("report", "99999"), "report of nothing")
        self.assertIn("no experiment 99999", err)

    def test_sql(self):
        self.start_daemon(workers=1, extra_args=["--sql-max-rows", "5"])
        id = self.submit(self.config_path)
        self.daemons[0].wait_status(id, ["succeeded"])

        # The table: header, rule, rows aligned by display width; numbers right-aligned to
        # 6 significant digits, NULL empty, a wide (Chinese) name counted as two columns.
        query = ("SELECT id, name, status, final_test_accuracy AS acc, error FROM experiment_summary "
                 "UNION ALL SELECT 100, '学生-模型', 'x', 0.5, NULL ORDER BY id")
        out, err = self.check(0, self.mapsage("sql", query), "sql")
        self.assertRegex(err, r"^\(2 rows, \d+\.\d+ ms\)\n$")
        header, rule, *rows = out.splitlines()
        widths = [len(dashes) for dashes in rule.split("   ")]
        self.assertTrue(all(set(dashes) == {"-"} for dashes in rule.split("   ")), rule)
        table = [display_cells(line, widths) for line in [header] + rows]
        self.assertEqual([cell.strip() for cell in table[0]], ["id", "name", "status", "acc", "error"])
        self.assertEqual(table[1][0], " " * (widths[0] - len(str(id))) + str(id), "ids are right-aligned")
        self.assertEqual(table[1][1].rstrip(), "t", "text is left-aligned")
        self.assertEqual(table[2][1], "学生-模型", "the widest name sets the width: 4 × 2 + 1 columns")
        self.assertEqual(widths[1], 9)
        self.assertEqual(table[2][4], "", "NULL is empty")
        accuracy = self.daemons[0].experiment(id)["summary"]["final_test_accuracy"]
        self.assertEqual(table[1][3].strip(), "%.6g" % accuracy)
        self.assertEqual(table[2][3].strip(), "0.5")

        # Control characters (and NULs, which JSON carries as \u0000) are escaped in the table.
        out, _ = self.check(0, self.mapsage("sql", "SELECT 'a' || char(0) || char(27) || '[31mb' || char(10) AS raw"),
                            "sql of text with control characters")
        self.assertEqual(out.splitlines()[2], "a\\x00\\x1b[31mb\\n")

        # --csv holds the same values as --json, with NULL and '' apart, and quotes what needs it.
        query = ("SELECT id, name, final_test_accuracy, NULL AS missing, '' AS empty, "
                 "'a,b \"c\"' || char(10) || 'd' AS tricky, 0.1 + 0.2 AS sum, 1.0 AS one "
                 "FROM experiment_summary WHERE id = ?1")
        out, _ = self.check(0, self.mapsage("sql", query, "--json", "--param", str(id)), "sql --json")
        answer = json.loads(out)
        self.assertEqual(answer["columns"], ["id", "name", "final_test_accuracy", "missing", "empty", "tricky",
                                             "sum", "one"])
        self.assertFalse(answer["truncated"])
        self.assertIsInstance(answer["elapsed_ms"], float)
        self.assertEqual(len(answer["rows"]), 1)
        row = answer["rows"][0]
        self.assertEqual(row[:2] + row[3:6], [id, "t", None, "", 'a,b "c"\nd'])
        self.assertEqual(out.count("\n"), 8, "one member of the answer a line, one row a line:\n" + out)
        status, _, direct = self.daemons[0].request("POST", "/api/sql", {"sql": query, "params": [id]})
        self.assertEqual((status, direct["rows"]), (200, answer["rows"]), "--json is the server's answer")

        done = subprocess.run([MAPSAGE, "sql", query, "--csv", "--param", str(id)], capture_output=True,
                              env=dict(os.environ, MAPSAGE_SERVER=self.daemons[0].url))
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stderr, b"", "--csv prints nothing else")
        raw = done.stdout.decode()
        self.assertTrue(raw.endswith("\r\n") and raw.count("\r\n") == 2, repr(raw))
        self.assertIn(',,"",', raw, "NULL is an empty field, the empty string a quoted one")
        records = list(csv.reader(io.StringIO(raw, newline="")))
        self.assertEqual(records[0], answer["columns"])
        self.assertEqual(len(records), 2)
        for column, (text, value) in enumerate(zip(records[1], row)):
            if value is None or isinstance(value, str):
                self.assertEqual(text, value or "", answer["columns"][column])
            else:
                self.assertEqual(float(text), value, "%s: every digit" % answer["columns"][column])
        self.assertEqual(records[1][7], "1.0", "a whole REAL stays a REAL")

        # --param: JSON numbers, booleans and null as such, a JSON string literal as its
        # contents, anything else as text.
        out, _ = self.check(0, self.mapsage("sql", "SELECT ?1, typeof(?1), typeof(?2), ?3, typeof(?4), ?5, ?6, typeof(?6)",
                                            "--param", "7", "--param", "2.5", "--param", "loss/total",
                                            "--param=null", "--param", "true", "--param", '"42"', "--json"),
                            "sql --param")
        self.assertEqual(json.loads(out)["rows"], [[7, "integer", "real", "loss/total", "null", 1, "42", "text"]])
        _, err = self.check(1, self.mapsage("sql", "SELECT ?1"), "a parameter missing")
        self.assertIn("params: the statement has 1 parameters but 0 were given", err)

        # Writing is refused in the server's words, and nothing changes.
        out, err = self.check(1, self.mapsage("sql", "DELETE FROM experiments"), "sql DELETE")
        self.assertEqual((out, err), ("", "mapsage: sql: DELETE is not allowed: this endpoint only reads\n"))
        self.check(1, self.mapsage("sql", "SELECT 1; DROP TABLE metrics"), "two statements")
        self.assertEqual(self.daemons[0].experiment(id)["status"], "succeeded")

        # The statement from standard input, and a cut answer said so.
        out, err = self.check(0, self.mapsage("sql", "-", "--param", str(id),
                                              stdin="SELECT count(*) AS n\n  FROM metrics WHERE experiment_id = ?1;\n"),
                              "sql -")
        self.assertEqual(out.splitlines()[0].strip(), "n")
        self.assertGreater(int(out.splitlines()[2]), 0)
        out, err = self.check(0, self.mapsage("sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                                              "LIMIT 50) SELECT x FROM c", "--csv"), "a query past the row limit")
        self.assertEqual(out.split(), ["x", "1", "2", "3", "4", "5"])
        self.assertIn("stopped at the row limit of 5 rows (mapsaged --sql-max-rows)", err)

        # Usage errors.
        self.check(2, self.mapsage("sql"), "sql without a statement")
        self.check(2, self.mapsage("sql", "SELECT 1", "--csv", "--json"), "--csv and --json")
        self.check(2, self.mapsage("sql", "SELECT 1", "SELECT 2"), "two statement arguments")
        self.check(2, self.mapsage("sql", "SELECT ?1", "--param"), "--param without a value")

    def test_watch_parses_sse_and_resumes(self):
        server = FakeStreamServer()
        try:
            out, err = self.check(1, self.mapsage("watch", "4", server=server.url), "watch of a stream that breaks")
        finally:
            server.close()
        self.assertEqual(server.last_event_ids, [None, "3"], "the second connection resumes after event 3")
        self.assertIn("reconnecting", err)
        self.assertIn("epoch 1/2  step 3  loss 0.5  val 80.00%  test 79.00%", out)
        self.assertIn("experiment 4 failed", out)
        self.assertIn("mapsage: experiment 4 failed: the loss became NaN", err)


class FakeStreamServer:
    """Serves experiment 4 and its stream: the first connection breaks inside event 4 (which
    must not count as received); the second must carry Last-Event-ID: 3. The stream mixes
    CRLF, CR and LF line endings, a byte-order mark, comments, multi-line data and an event
    type the client does not know, each valid SSE."""

    def __init__(self):
        self.last_event_ids = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *arguments):
                pass

            def do_GET(self):
                if self.path == "/api/experiments/4":
                    body = json.dumps({"id": 4, "name": "", "status": "running", "attempts": 1, "error": None,
                                       "progress": {"epoch": 1, "epochs": 2, "step": 3, "stage": 0, "stages": 1},
                                       "summary": None}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                owner.last_event_ids.append(self.headers.get("Last-Event-ID"))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if len(owner.last_event_ids) == 1:
                    self.send_first()
                else:
                    self.send_second()

            def send(self, text):
                self.wfile.write(text.encode())
                self.wfile.flush()

            def send_first(self):
                self.send("\ufeffretry: 50\r\nevent: status\r\ndata: {\"id\":4,\"status\":\"running\",")
                self.send("\r\ndata: \"error\":null,\"attempts\":1}\r")
                self.send("\n\r\n: ping\n\n")
                for step in (1, 2, 3):
                    self.send("event: metric\rid: %d\rdata:{\"step\":%d,\"epoch\":1,\"stage\":0,"
                              "\"values\":{\"loss/total\":0.5}}\r\r" % (step, step))
                self.send("event: something-new\ndata: not json at all\n\n")
                self.send("event: metric\nid: 4\ndata: {\"step\":4,")  # and the connection drops

            def send_second(self):
                self.send("event: status\ndata: {\"id\":4,\"status\":\"running\",\"error\":null,\"attempts\":1}\n\n")
                for n, split, accuracy in ((2, "val", 0.8), (3, "test", 0.79)):
                    self.send("event: eval\nid: 3.%d\ndata: {\"step\":3,\"epoch\":1,\"stage\":0,\"split\":\"%s\","
                              "\"values\":{\"accuracy\":%s}}\n\n" % (n, split, accuracy))
                self.send("event: status\ndata: {\"id\":4,\"status\":\"failed\",\"error\":\"the loss became NaN\","
                          "\"attempts\":1}\n\n")
                self.send("event: end\ndata: {\"status\":\"failed\"}\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
