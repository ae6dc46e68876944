"""test_sql.py — POST /api/sql against the real daemon: reads work, nothing can write
(the database files stay identical byte for byte), only a reader's functions run, every
value comes back (text that is not UTF-8 marked, never dropped), limits stop runaway
queries with a clear error, and neither a slow query nor a large answer stalls a live
stream."""
import hashlib
import http.client
import json
import os
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import Daemon, synthetic_config  # noqa: E402

ENDLESS = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c"

WRITES = [
    ("INSERT INTO experiments (config) VALUES ('{}')", "INSERT is not allowed"),
    ("UPDATE experiments SET name = 'x'", "UPDATE is not allowed"),
    ("DELETE FROM metrics", "DELETE is not allowed"),
    ("DROP TABLE metrics", "DROP is not allowed"),
    ("DROP VIEW curves", "DROP is not allowed"),
    ("CREATE TABLE t (a)", "CREATE is not allowed"),
    ("CREATE TEMP TABLE t AS SELECT * FROM metrics", "CREATE is not allowed"),
    ("CREATE INDEX i ON metrics (value)", "CREATE is not allowed"),
    ("ALTER TABLE experiments ADD COLUMN x", "not allowed"),
    ("ATTACH 'evil.db' AS evil", "ATTACH (or VACUUM INTO) is not allowed"),
    ("VACUUM INTO 'copy.db'", "VACUUM is not allowed"),
    ("VACUUM", "not allowed"),
    ("PRAGMA user_version = 99", "PRAGMA that sets something is not allowed"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA that sets something is not allowed"),
    ("PRAGMA writable_schema = ON", "PRAGMA that sets something is not allowed"),
    ("SELECT load_extension('/tmp/x.so')", "load_extension() is not allowed"),
    ("BEGIN IMMEDIATE", "a transaction is not allowed"),
    ("REINDEX", "not allowed"),
    ("ANALYZE", "not allowed"),
    ("SELECT 1; DELETE FROM metrics", "one statement per request"),
    ("SELECT 1; SELECT 2", "one statement per request"),
]


# Each makes one value far past the value limit (16 MiB) in a single step of SQLite's
# machine, where the time limit cannot reach: the length limit must stop it.
HUGE_VALUES = [
    "SELECT length(printf('%.*c', 1000000000, 'x'))",
    "SELECT length(replace(printf('%.*c', 1000000, 'x'), 'x', printf('%.*c', 1000, 'y')))",
    "WITH RECURSIVE c(n, s) AS (SELECT 1, printf('%.*c', 1000000, 'x') UNION ALL SELECT n + 1, s FROM c "
    "LIMIT 100) SELECT length(group_concat(s, '')) FROM c",
    "SELECT length(printf('%.*c', 10000000, 'x') || printf('%.*c', 10000000, 'y'))",
]



def large_text(megabytes, character):
    """SQL for a text of `megabytes` million `character`s, made by copying (replace), which
    is quicker than printf's repeating: the tests stay well inside the time limit."""
    return "replace(printf('%%.*c', 1000, 'x'), 'x', printf('%%.*c', %d, '%s'))" % (megabytes * 1000, character)


# Rows of 2 MB each: 50 rows (the test daemon's row limit) would make 100 MB of JSON.
LARGE_ANSWER = ("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c LIMIT 50) "
                "SELECT n, %s FROM c" % large_text(2, "x"))

# A worker that logs a line longer than the daemon's log line (1024 bytes) and an event
# line longer than EV_LINE_MAX, both of three-byte characters, then succeeds.
CUTTING_WORKER = r"""#!/usr/bin/python3
import json, sys
out = sys.stdout.buffer
out.write(json.dumps({"event": "log", "level": "info", "message": "\u20ac" * 400}).encode() + b"\n")
out.write("\u20ac".encode() * 400000 + b"\n")
out.write(json.dumps({"event": "finished", "status": "succeeded", "summary": {}}).encode() + b"\n")
out.flush()
"""


def post_raw(daemon, body):
    """POST /api/sql and return (status, raw bytes): parsing is left for later, so that a
    large answer does not hold the interpreter while another thread times a stream."""
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=60)
    connection.request("POST", "/api/sql", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def file_digests(db_path):
    digests = {}
    for suffix in ("", "-wal"):
        path = db_path + suffix
        if os.path.exists(path):
            with open(path, "rb") as f:
                digests[suffix] = hashlib.sha256(f.read()).hexdigest()
    return digests


class Sql(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1, extra_args=["--sql-timeout-ms", "500", "--sql-max-rows", "50"])
        cls.finished = []
        for seed in (1, 2):
            experiment_id = cls.daemon.submit(synthetic_config("sql-%d" % seed, epochs=2, seed=seed))
            cls.finished.append(cls.daemon.wait_status(experiment_id, ["succeeded"]))

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def sql(self, text, params=None, expected=200):
        body = {"sql": text} if params is None else {"sql": text, "params": params}
        status, _, answer = self.daemon.request("POST", "/api/sql", body)
        self.assertEqual(expected, status, (text[:300], str(answer)[:300]))
        return answer

    def test_reads_and_views(self):
        answer = self.sql("SELECT id, status, final_test_accuracy, epochs, stage_plan FROM experiment_summary "
                          "ORDER BY id")
        self.assertEqual(["id", "status", "final_test_accuracy", "epochs", "stage_plan"], answer["columns"])
        self.assertFalse(answer["truncated"])
        self.assertGreaterEqual(answer["elapsed_ms"], 0)
        by_id = {row[0]: row for row in answer["rows"]}
        for experiment in self.finished:
            row = by_id[experiment["id"]]
            self.assertEqual("succeeded", row[1])
            self.assertAlmostEqual(experiment["summary"]["final_test_accuracy"], row[2], places=6)
            self.assertEqual((2, "train:2"), (row[3], row[4]))
        # The long view has every eval under its full name, and agrees with the evals table.
        answer = self.sql("SELECT count(*) FROM curves WHERE experiment_id = ?1 AND name = 'test/accuracy'",
                          [self.finished[0]["id"]])
        self.assertEqual([[2]], answer["rows"])

    def test_stage_summary(self):
        d = self.daemon
        staged = d.submit(synthetic_config("staged", epochs=None, stages=[
            {"name": "warm", "epochs": 1}, {"name": "main", "epochs": 2, "task_weight": 0.5}]))
        d.wait_status(staged, ["succeeded"])
        rows = self.sql("SELECT stage, stage_name, name, first_step, last_step, steps, start_value, end_value "
                        "FROM stage_summary WHERE experiment_id = ?1 ORDER BY stage, name", [staged])["rows"]
        by_key = {(row[1], row[2]): row for row in rows}
        self.assertEqual({"warm", "main"}, {row[1] for row in rows})
        warm, main = by_key[("warm", "loss/task")], by_key[("main", "loss/task")]
        self.assertEqual(1, warm[3])
        self.assertEqual(warm[4] + 1, main[3], "stages meet without a gap")
        self.assertEqual(main[4] - main[3] + 1, main[5])
        self.assertLess(main[7], warm[6], "the task loss fell")
        weighted = by_key[("main", "weighted/task")]
        self.assertAlmostEqual(0.5 * main[7], weighted[7], places=5)

    def test_params_types_and_introspection(self):
        answer = self.sql("SELECT ?1 + ?2, ?3, ?4, ?5", [1, 2.5, "text", None, True])
        self.assertEqual([[3.5, "text", None, 1]], answer["rows"])
        answer = self.sql("PRAGMA table_info(metrics)")
        self.assertIn("name", [row[1] for row in answer["rows"]])
        self.assertEqual([[4]], self.sql("PRAGMA user_version")["rows"])
        self.assertEqual([[0]], self.sql("PRAGMA foreign_keys")["rows"])  # per connection: reading is allowed
        answer = self.sql("SELECT * FROM pragma_table_info('metrics')", expected=403)
        self.assertIn("use PRAGMA table_info(t)", answer["error"])
        # Every digit comes back, and what JSON cannot say becomes null rather than vanish.
        self.assertEqual([[123456789012.5, None, 2]], self.sql("SELECT 123456789012.5, 1e999, 2")["rows"])

    def test_row_limit(self):
        answer = self.sql("SELECT step FROM metrics ORDER BY step")
        self.assertEqual(50, len(answer["rows"]))
        self.assertTrue(answer["truncated"])
        self.assertIn("row limit of 50", answer["warning"])

    def test_nothing_can_write(self):
        before = file_digests(self.daemon.db_path)
        for text, words in WRITES:
            status, _, answer = self.daemon.request("POST", "/api/sql", {"sql": text})
            self.assertIn(status, (400, 403), text)
            self.assertIn(words, answer["error"], text)
        self.assertEqual(before, file_digests(self.daemon.db_path), "the database files are unchanged")
        self.assertFalse(os.path.exists(os.path.join(self.daemon.directory, "copy.db")))
        self.assertFalse(os.path.exists("copy.db"))

    def test_bad_bodies(self):
        cases = [
            ("not json", "must be a JSON object"),
            ({"query": "SELECT 1"}, "query: unknown field"),
            ({"sql": 1}, "sql: must be a string"),
            ({"sql": "SELECT ?1", "params": "x"}, "params: must be an array"),
            ({"sql": "SELECT ?1", "params": [[1]]}, "params: each value"),
            ({"sql": "SELECT ?1, ?2", "params": [1]}, "has 2 parameters but 1 were given"),
            ({"sql": "  -- nothing\n"}, "there is no statement"),
            ({"sql": "SELEC 1"}, "syntax error"),
            ({"sql": "SELECT * FROM nowhere"}, "no such table: nowhere"),
        ]
        for body, words in cases:
            status, _, answer = self.daemon.request("POST", "/api/sql", body)
            self.assertEqual(400, status, body)
            self.assertIn(words, answer["error"], body)
        self.assertEqual(405, self.daemon.request("GET", "/api/sql")[0])

    def test_only_a_readers_functions(self):
        # What a person writing analysis SQL uses works: scalar, text, date, math, JSON.
        row = self.sql("""
            SELECT abs(-2), round(2.345, 2), printf('%05.1f', 3.14159), format('%d-%s', 7, 'x'),
                   substr('distill', 2, 3), instr('teacher', 'ch'), length('abc'), lower('AB'), upper('ab'),
                   trim('  x '), ltrim('..x', '.'), rtrim('x..', '.'), replace('a-b', '-', '+'),
                   coalesce(NULL, 1), ifnull(NULL, 2), nullif(3, 3), iif(1 > 0, 'yes', 'no'), typeof(1.5),
                   'Loss' LIKE 'l%', 'loss/task' GLOB 'loss/*', hex('A'), quote('it''s'), unicode('A'), char(66),
                   date('2026-11-27T19:30:00.123Z'), time('2026-11-27T19:30:00.123Z'),
                   julianday('2026-11-27T12:00:00Z') - julianday('2026-11-26T12:00:00Z'),
                   strftime('%Y', '2026-11-27'), unixepoch('1970-01-02'), datetime('2026-11-27T19:30:00Z', '+1 day'),
                   sqrt(16), floor(2.5), ceil(2.5), pow(2, 10), exp(0), ln(1), log10(100), log(2, 8), mod(7, 3),
                   pi() > 3, sign(-3), trunc(2.7), likely(1), MAX(1, 5, 3), min(4, 2),
                   json_extract('{"a": [1, 2]}', '$.a[1]'), '{"a": 5}' ->> '$.a', '{"a": [5]}' -> '$.a',
                   json_array_length('[1,2,3]'), json_type('{"a": 1}', '$.a'), json_remove('{"a":1,"b":2}', '$.a'),
                   json_valid('{'), json_object('k', 1), json_array(1, 'x'), json('[1, 2]'), random() IS NOT NULL
            """)["rows"][0]
        self.assertEqual([2, 2.35, "003.1", "7-x", "ist", 4, 3, "ab", "AB", "x", "x", "x", "a+b", 1, 2, None, "yes",
                          "real", 1, 1, "41", "'it''s'", 65, "B", "2026-11-27", "19:30:00", 1.0, "2026", 86400,
                          "2026-11-28 19:30:00", 4.0, 2.0, 3.0, 1024.0, 1.0, 0.0, 2.0, 3.0, 1.0, 1, -1, 2.0, 1, 5, 2,
                          2, 5, "[5]", 3, "integer", '{"b":2}', 0, '{"k":1}', '[1,"x"]', "[1,2]", 1], row)
        # Aggregates and every window function.
        rows = self.sql("""
            WITH v(x) AS (VALUES (1), (2), (3), (4))
            SELECT x, row_number() OVER w, rank() OVER w, dense_rank() OVER w, percent_rank() OVER w,
                   cume_dist() OVER w, ntile(2) OVER w, lag(x) OVER w, lead(x) OVER w, first_value(x) OVER w,
                   last_value(x) OVER (ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
                   nth_value(x, 2) OVER (ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
                   sum(x) OVER w, avg(x) OVER (), count(*) OVER (), max(x) OVER (), min(x) OVER (),
                   total(x) OVER (), group_concat(x, ',') OVER ()
              FROM v WINDOW w AS (ORDER BY x) ORDER BY x LIMIT 2""")["rows"]
        self.assertEqual([[1, 1, 1, 1, 0.0, 0.25, 1, None, 2, 1, 4, 2, 1, 2.5, 4, 4, 1, 10.0, "1,2,3,4"],
                          [2, 2, 2, 2, 1 / 3, 0.5, 1, 1, 3, 1, 4, 2, 3, 2.5, 4, 4, 1, 10.0, "1,2,3,4"]], rows)
        # The JSON table-valued functions, over literals and over the stored configs.
        self.assertEqual([[3, 6, 2.0, 6.0, 3, 1, "3,1,2", "[3,1,2]", '{"k3":3,"k1":1,"k2":2}']], self.sql(
            "SELECT count(*), sum(x), avg(x), total(x), max(x), min(x), group_concat(x), json_group_array(x), "
            "json_group_object('k' || x, x) FROM (SELECT value AS x FROM json_each('[3, 1, 2]'))")["rows"])
        self.assertEqual([["a", 1, "integer"], ["b", "[2]", "array"]],
                         self.sql("""SELECT key, value, type FROM json_each('{"a": 1, "b": [2]}')""")["rows"])
        self.assertEqual([[5, "$ $[0] $[1] $[1][0] $[1][1]"]],
                         self.sql("SELECT count(*), group_concat(fullkey, ' ') FROM json_tree('[1, [2, 3]]')")["rows"])
        self.assertEqual([["train", 2]], self.sql(
            "SELECT json_extract(s.value, '$.name'), json_extract(s.value, '$.epochs') "
            "FROM experiments e, json_each(e.config, '$.stages') s WHERE e.id = ?1", [self.finished[0]["id"]])["rows"])
        # Every view of the schema reads through the same authorizer.
        views = [row[0] for row in self.sql("SELECT name FROM sqlite_master WHERE type = 'view'")["rows"]]
        self.assertIn("experiment_summary", views)
        for view in views:
            self.sql("SELECT * FROM %s LIMIT 1" % view)
        # Everything else is refused by name, before it runs: fts3_tokenizer() hands out a
        # heap address, zeroblob() and randomblob() make up to the value limit in one step.
        for name, text in [("fts3_tokenizer", "SELECT fts3_tokenizer('simple')"),
                           ("fts3_tokenizer", "SELECT upper(hex(fts3_tokenizer('simple')))"),
                           ("zeroblob", "SELECT length(zeroblob(1000000000))"),
                           ("randomblob", "SELECT randomblob(1000000000)"),
                           ("load_extension", "SELECT load_extension('/tmp/x.so')"),
                           ("changes", "SELECT changes()"),
                           ("sqlite_log", "SELECT sqlite_log(1, 'x')")]:
            answer = self.sql(text, expected=403)
            self.assertEqual("sql: the function %s() is not allowed: this endpoint only reads" % name,
                             answer["error"], text)
        # Virtual tables other than json_each and json_tree are refused by name too.
        for table in ("dbstat", "sqlite_stmt", "fts3tokenize"):
            answer = self.sql("SELECT count(*) FROM %s" % table, expected=403)
            self.assertEqual("sql: the virtual table %s is not allowed: this endpoint only reads" % table,
                             answer["error"])

    def test_text_that_is_not_utf8_is_marked_not_dropped(self):
        answer = self.sql("SELECT 'a', CAST(x'41ff42' AS TEXT) AS broken, CAST(x'e282' AS TEXT) AS cut, 'c'")
        self.assertEqual(["'a'", "broken", "cut", "'c'"], answer["columns"])
        self.assertEqual([["a", "A\ufffdB", "\ufffd\ufffd", "c"]], answer["rows"], "each bad byte is one U+FFFD")
        self.assertIn("2 values were not valid UTF-8 (columns broken, cut)", answer["warning"])
        self.assertIn("hex(", answer["warning"])
        self.assertEqual([["41FF42"]], self.sql("SELECT hex(CAST(x'41ff42' AS TEXT))")["rows"], "the exact bytes")
        answer = self.sql("SELECT 'd\u00e9j\u00e0 \u20ac \U0001F600', char(0, 10, 34, 92)")
        self.assertEqual([["d\u00e9j\u00e0 \u20ac \U0001F600", "\u0000\n\"\\"]], answer["rows"])
        self.assertNotIn("warning", answer, "valid text carries no warning")

    def test_error_messages_are_cut_between_characters(self):
        # SQLite's message echoes the name; the daemon's error has room for about 500 bytes.
        status, _, answer = self.daemon.request("POST", "/api/sql", {"sql": 'SELECT * FROM "%s"' % ("\u20ac" * 300)})
        self.assertEqual(400, status, answer)
        prefix = "no such table: "
        self.assertTrue(answer["error"].startswith(prefix + "\u20ac" * 100), answer)
        rest = answer["error"][len(prefix):]
        self.assertEqual("\u20ac" * len(rest), rest, "only whole characters, none replaced")

    def test_log_lines_are_cut_between_characters(self):
        directory = tempfile.mkdtemp(prefix="mapsage-cutting-worker-")
        fake = os.path.join(directory, "cutting-worker.py")
        with open(fake, "w") as f:
            f.write(CUTTING_WORKER)
        os.chmod(fake, stat.S_IRWXU)
        d = Daemon(workers=1, extra_args=["--worker-bin", fake])
        try:
            experiment_id = d.submit(synthetic_config("cutting"))
            d.wait_status(experiment_id, ["succeeded", "failed"])
            status, _, answer = d.request("POST", "/api/sql", {
                "sql": "SELECT hex(line) FROM logs WHERE experiment_id = ?1 ORDER BY line_number",
                "params": [experiment_id]})
            self.assertEqual(200, status, answer)
            lines = [bytes.fromhex(row[0]).decode("utf-8", errors="replace") for row in answer["rows"]]
            # A line longer than the daemon's 1024-byte log line ends at the last whole character.
            self.assertIn("[info] " + "\u20ac" * 338, lines)
            # A line past EV_LINE_MAX is quoted by its first 200 bytes, whole characters only.
            self.assertIn("[mapsaged] a line longer than 1048576 bytes was cut; it began: " + "\u20ac" * 66, lines)
        finally:
            d.close()
            os.unlink(fake)
            os.rmdir(directory)

    def test_value_limit_stops_a_huge_value_in_one_step(self):
        for text in HUGE_VALUES:
            answer = self.sql(text, expected=400)
            self.assertIn("longer than the value limit of 16777216 bytes", answer["error"], text)
        # Right below the limit is fine.
        self.assertEqual([[16000000]], self.sql("SELECT length(%s)" % large_text(16, "x"))["rows"])
        self.assertEqual([[16000000]], self.sql("SELECT length(printf('%.*c', 16000000, 'x'))")["rows"])
        # printf() and format() are SQLite's own but for the guard on repeating a %c.
        self.assertEqual([["007|  ab|x    |xxx|3.14|'it''s'|2nd|%|ab"]], self.sql(
            "SELECT printf('%03d|%4s|%-5c|%.3c|%.2f|%Q|%r|%%|%s', 7, 'ab', 'x', 'x', 3.14159, 'it''s', 2, ?1)",
            ["ab"])["rows"])
        self.assertEqual([["xxxx-7"]], self.sql("SELECT format('%.*c-%d', 4, 'x', 7)")["rows"])
        # SQLite's NULLs: no format, an empty text, a text past the value limit made at once.
        self.assertEqual([[None, None, None]],
                         self.sql("SELECT printf(NULL), printf(''), printf('%.*d', 100000000, 1)")["rows"])
        for text in ("SELECT printf('%.*c%.*c', 3, 'x', 1000000000, 'y')", "SELECT format('%!.2000000000c', 'x')",
                     "SELECT printf('%5.*c', -100000000, 'x')", "SELECT printf('%-3.*lc', 4294967297, 'x')"):
            self.assertIn("longer than the value limit", self.sql(text, expected=400)["error"], text)

    def test_memory_limit(self):
        # Fifteen values of 10 MB, each under the value limit, held at once in one row.
        columns = ", ".join(large_text(10, chr(ord("a") + i)) for i in range(15))
        answer = self.sql("SELECT " + columns, expected=400)
        self.assertIn("memory limit of 134217728 bytes", answer["error"])

    def test_answer_limit(self):
        status, data = post_raw(self.daemon, {"sql": LARGE_ANSWER})
        self.assertEqual(200, status, data[:300])
        self.assertLessEqual(len(data), 32 * 1024 * 1024)
        answer = json.loads(data)
        self.assertTrue(answer["truncated"])
        self.assertIn("stopped at the answer limit of 33554432 bytes", answer["warning"])
        rows = answer["rows"]
        self.assertGreater(len(rows), 10)
        self.assertEqual(list(range(1, len(rows) + 1)), [row[0] for row in rows], "whole rows, in order")
        self.assertEqual({"x" * 2000000}, {row[1] for row in rows}, "no value is cut")

    def test_time_limit_does_not_stall_streams(self):
        d = self.daemon
        experiment_id = d.submit(synthetic_config("streams-on", epochs=300, train_size=4096))
        stream = d.stream(experiment_id)
        arrivals = []

        def follow():
            for event in stream:
                if event["event"] == "metric":
                    arrivals.append(time.monotonic())
                if len(arrivals) > 5000 or event["event"] == "end":
                    return

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        while len(arrivals) < 10:
            time.sleep(0.01)
        started = time.monotonic()
        answers = []
        slow = threading.Thread(target=lambda: answers.append(d.request("POST", "/api/sql", {"sql": ENDLESS})))
        slow.start()
        time.sleep(0.1)  # the query is under way: health is asked while it runs
        before_health = time.monotonic()
        self.assertEqual(200, d.get("/api/health")[0])
        health_latency = time.monotonic() - before_health
        slow.join()
        # A large answer, made and written as JSON in the thread pool, and values that
        # SQLite would build in one step: the stream must not notice them either.
        raw = [post_raw(d, {"sql": LARGE_ANSWER})] + [post_raw(d, {"sql": text}) for text in HUGE_VALUES]
        ended = time.monotonic()
        self.assertLess(health_latency, 0.2, "other requests are answered while a query runs")
        self.assertEqual(1, len(answers))
        for status, _, answer in answers:
            self.assertEqual(400, status)
            self.assertIn("longer than the time limit of 500 ms", answer["error"])
        self.assertGreaterEqual(ended - started, 0.45)
        during = [t for t in arrivals if started <= t <= ended]
        self.assertGreater(len(during), 4, "metric events kept arriving while the query ran")
        gaps = [b - a for a, b in zip(during, during[1:])]
        self.assertLess(max(gaps), 0.25, "no stall of the stream")
        self.assertEqual([200] + [400] * len(HUGE_VALUES), [status for status, _ in raw])
        self.assertTrue(json.loads(raw[0][1])["truncated"])
        d.request("POST", "/api/experiments/%d/cancel" % experiment_id)
        reader.join(timeout=30)
        stream.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
