"""test_organise.py — keeping runs in order through the API (docs/api.md, "Organising"):
tags, notes, renaming, archiving and deleting experiments and studies, and the experiment
list's sort, filters (tag, archived, where) and columns; each refusal with its reason. A
real mapsaged with real workers on the synthetic data, and a database of the previous
schema version migrated when the daemon opens it."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import BIN_DIR, SOURCE_DIR, Daemon, synthetic_config  # noqa: E402


def query(**parameters):
    return "?" + urllib.parse.urlencode(parameters)


def run_mapsage(daemon, *arguments, stdin=None):
    """`mapsage ARGUMENTS` against `daemon`: (exit code, stdout, stderr)."""
    env = dict(os.environ, MAPSAGE_SERVER=daemon.url)
    env.pop("MAPSAGE_TOKEN_FILE", None)
    done = subprocess.run([os.path.join(BIN_DIR, "mapsage"), *arguments], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60)
    return done.returncode, done.stdout, done.stderr


class Organise(unittest.TestCase):
    """One daemon with three finished runs of different learning rates (and a study that
    never runs: workers are busy with a long run by then)."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1)
        cls.ids = {}
        for name, lr in [("alpha", 0.1), ("beta", 0.01), ("gamma", 0.001)]:
            cls.ids[name] = cls.daemon.submit(synthetic_config(name, epochs=1, optimizer={"type": "sgd", "lr": lr}))
        for experiment_id in cls.ids.values():
            cls.daemon.wait_status(experiment_id, ["succeeded"])

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def patch(self, path, body):
        return self.daemon.request("PATCH", path, body)

    def listed(self, **parameters):
        status, _, body = self.daemon.get("/api/experiments" + query(**parameters))
        self.assertEqual(200, status, body)
        return body

    def names(self, **parameters):
        return [e["name"] for e in self.listed(**parameters)["experiments"] if e["name"] in self.ids]

    def assert_refused(self, method, path, body, status, pattern):
        answer_status, _, answer = self.daemon.request(method, path, body)
        self.assertEqual(status, answer_status, answer)
        self.assertRegex(answer["error"], pattern)

    # --- tags, note, name ------------------------------------------------------------------

    def test_tags_note_and_name_are_changed_and_shown(self):
        experiment_id = self.daemon.submit(synthetic_config("to-rename", epochs=1))
        path = "/api/experiments/%d" % experiment_id
        status, _, body = self.patch(path, {"name": "renamed", "note": "lr too high?\nsecond line",
                                            "tags": ["baseline", "mlp", "v1.2"]})
        self.assertEqual(200, status, body)
        self.assertEqual(("renamed", "lr too high?\nsecond line", ["baseline", "mlp", "v1.2"]),
                         (body["name"], body["note"], body["tags"]))
        self.assertEqual("renamed", body["config"]["name"])  # "edit as new" starts from the new name
        status, _, body = self.patch(path, {"add_tags": ["keep", "mlp"], "remove_tags": ["baseline", "absent"]})
        self.assertEqual(200, status, body)
        self.assertEqual(["keep", "mlp", "v1.2"], body["tags"])  # sorted, each once
        shown = self.daemon.experiment(experiment_id)
        self.assertEqual((["keep", "mlp", "v1.2"], "renamed"), (shown["tags"], shown["name"]))
        listed = [e for e in self.listed(name="renamed")["experiments"] if e["id"] == experiment_id]
        self.assertEqual(1, len(listed))
        self.assertEqual(["keep", "mlp", "v1.2"], listed[0]["tags"])
        status, _, body = self.patch(path, {"tags": [], "note": ""})
        self.assertEqual(([], ""), (body["tags"], body["note"]))

    def test_a_bad_patch_names_the_field_and_changes_nothing(self):
        experiment_id = self.ids["alpha"]
        path = "/api/experiments/%d" % experiment_id
        before = self.daemon.experiment(experiment_id)
        for body, pattern in [
                ({"colour": "red"}, r"^colour: not a field that can be changed"),
                ({"tags": "a"}, r"^tags: must be an array of strings"),
                ({"tags": ["ok", "has space"]}, r"^tags: element 1 must be a tag"),
                ({"tags": ["x" * 65]}, r"^tags: element 0 must be a tag: 1 to 64"),
                ({"add_tags": [""]}, r"^add_tags: element 0"),
                ({"tags": ["t%d" % i for i in range(33)]}, r"^tags: at most 32 tags"),
                ({"archived": "yes"}, r"^archived: must be true or false"),
                ({"name": 7}, r"^name: must be a string"),
                ({"name": "n" * 300}, r"^name: must be a string of at most"),
                ({"note": ["x"]}, r"^note: must be a string"),
                ({"note": "x" * 20001}, r"^note: must be a string of at most 20000 bytes"),
                ([1], r"^body: must be a JSON object"),
                ("{not json", r"^body: not JSON"),
                ({"note": "fine", "tags": ["fine", "bad tag"]}, r"^tags: element 1")]:
            self.assert_refused("PATCH", path, body, 400, pattern)
        self.assertEqual(before, self.daemon.experiment(experiment_id))
        self.assert_refused("PATCH", "/api/experiments/999999", {"note": "x"}, 404, r"no experiment 999999")
        status, _, body = self.daemon.request("PATCH", path, "{}", headers={"Content-Type": "text/plain"})
        self.assertEqual(415, status, body)

    def test_a_patch_reaches_the_global_stream(self):
        experiment_id = self.ids["gamma"]
        events = self.daemon.events()
        try:
            status, _, _ = self.patch("/api/experiments/%d" % experiment_id, {"tags": ["streamed"]})
            self.assertEqual(200, status)
            for event in events:
                if event["event"] == "experiment" and event["data"]["id"] == experiment_id:
                    self.assertEqual(["streamed"], event["data"]["tags"])
                    break
        finally:
            events.close()
            self.patch("/api/experiments/%d" % experiment_id, {"tags": []})

    # --- archive -------------------------------------------------------------------------

    def test_archived_runs_leave_the_default_list_and_come_back(self):
        experiment_id = self.daemon.submit(synthetic_config("to-archive", epochs=1))
        path = "/api/experiments/%d" % experiment_id
        status, _, body = self.patch(path, {"archived": True})
        self.assertEqual(200, status, body)
        self.assertRegex(body["archived_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        first = body["archived_at"]
        self.assertEqual(first, self.patch(path, {"archived": True})[2]["archived_at"])  # the first date stays
        ids = lambda **p: [e["id"] for e in self.listed(**p)["experiments"]]  # noqa: E731
        self.assertNotIn(experiment_id, ids())
        self.assertNotIn(experiment_id, ids(archived="0"))
        self.assertIn(experiment_id, ids(archived="1"))
        self.assertNotIn(self.ids["alpha"], ids(archived="1"))
        self.assertIn(experiment_id, ids(archived="all"))
        self.assertIn(self.ids["alpha"], ids(archived="all"))
        self.assertEqual(200, self.daemon.get(path)[0])  # kept: shown by id
        status, _, body = self.patch(path, {"archived": False})
        self.assertIsNone(body["archived_at"])
        self.assertIn(experiment_id, ids())
        self.assert_refused("GET", "/api/experiments?archived=yes", None, 400, r"^archived: must be 0")

    # --- delete --------------------------------------------------------------------------

    def test_delete_removes_rows_and_checkpoints_and_the_id_is_not_given_again(self):
        experiment_id = self.daemon.submit(synthetic_config("to-delete", epochs=2))
        done = self.daemon.wait_status(experiment_id, ["succeeded"])
        self.assertTrue(done["checkpoints"])
        directory = os.path.join(self.daemon.directory, "data", "experiments", str(experiment_id))
        files = os.listdir(directory)
        self.assertTrue(files)
        self.patch("/api/experiments/%d" % experiment_id, {"tags": ["doomed"], "note": "bye"})
        events = self.daemon.events()
        try:
            status, _, body = self.daemon.request("DELETE", "/api/experiments/%d" % experiment_id)
            self.assertEqual(200, status, body)
            for event in events:  # the lists are told
                if event["event"] == "deleted":
                    self.assertEqual({"id": experiment_id}, event["data"])
                    break
        finally:
            events.close()
        self.assertEqual({"id": experiment_id, "deleted": True, "files_removed": len(files)}, body)
        self.assertFalse(os.path.exists(directory))
        for suffix in ["", "/metrics", "/log", "/report"]:
            self.assertEqual(404, self.daemon.get("/api/experiments/%d%s" % (experiment_id, suffix))[0], suffix)
        database = sqlite3.connect("file:%s?mode=ro" % self.daemon.db_path, uri=True)
        try:
            for table in ["metrics", "evals", "series", "checkpoints", "logs", "stage_starts", "experiment_tags"]:
                rows = database.execute("SELECT count(*) FROM %s WHERE experiment_id = ?" % table,
                                        (experiment_id,)).fetchone()[0]
                self.assertEqual(0, rows, table)
        finally:
            database.close()
        self.assert_refused("DELETE", "/api/experiments/%d" % experiment_id, None, 404, r"no experiment")
        # SQLite would give the largest id again once deleted: mapsaged does not.
        self.assertGreater(self.daemon.submit(synthetic_config("after", epochs=1)), experiment_id)

    def test_delete_is_refused_while_running_and_for_a_teacher(self):
        teacher = self.ids["beta"]
        student = self.daemon.submit(synthetic_config("student", epochs=None, teacher={"experiment": teacher},
                                                      stages=[{"epochs": 1, "distill_weight": 0.5}]))
        self.assert_refused("DELETE", "/api/experiments/%d" % teacher, None, 409,
                            r"^experiment %d is the teacher of experiment %d: delete that one first" % (teacher, student))
        long_run = self.daemon.submit(synthetic_config("long", epochs=3000))
        self.daemon.wait_status(long_run, ["running"])
        self.assert_refused("DELETE", "/api/experiments/%d" % long_run, None, 409,
                            r"^experiment %d is running: cancel it first" % long_run)
        self.daemon.request("POST", "/api/experiments/%d/cancel" % long_run)
        self.daemon.wait_status(long_run, ["cancelled"])
        self.daemon.wait_status(student, ["succeeded", "failed"])
        self.assertEqual(200, self.daemon.request("DELETE", "/api/experiments/%d" % long_run)[0])
        self.assertEqual(200, self.daemon.get("/api/experiments/%d" % teacher)[0])  # still there

    def test_delete_is_refused_for_a_checkpoint_teacher_and_a_study_run(self):
        teacher = self.ids["gamma"]
        checkpoint = self.daemon.experiment(teacher)["checkpoints"][-1]["path"]
        student = self.daemon.submit(synthetic_config("from-file", epochs=None, teacher={"checkpoint": checkpoint},
                                                      stages=[{"epochs": 1, "distill_weight": 0.5}]))
        self.assert_refused("DELETE", "/api/experiments/%d" % teacher, None, 409,
                            r"is the teacher of experiment %d" % student)

    # --- the list ------------------------------------------------------------------------

    def test_sort_by_columns_and_config_values(self):
        self.assertEqual(["gamma", "beta", "alpha"], self.names(sort="id", order="desc"))
        self.assertEqual(["alpha", "beta", "gamma"], self.names(sort="name"))
        self.assertEqual(["gamma", "beta", "alpha"], self.names(sort="name", order="desc"))
        self.assertEqual(["gamma", "beta", "alpha"], self.names(sort="optimizer.lr"))
        self.assertEqual(["alpha", "beta", "gamma"], self.names(sort="config.optimizer.lr", order="desc"))
        listed = self.listed(sort="summary.final_test_accuracy", order="desc", limit=500)["experiments"]
        figures = [e["summary"]["final_test_accuracy"] for e in listed if e["summary"]]
        self.assertGreater(len(figures), 2)
        self.assertEqual(sorted(figures, reverse=True), figures)
        # Runs without the value come last, whichever the order.
        self.assertIsNone(listed[-1]["summary"]) if any(e["summary"] is None for e in listed) else None
        self.assert_refused("GET", "/api/experiments?sort=nmae", None, 400,
                            r'^sort: "nmae" is neither a column \(id, name, status, .*\) nor a field')
        self.assert_refused("GET", "/api/experiments?sort=name&order=up", None, 400, r"^order: must be asc or desc")

    def test_sorted_pages_follow_offset(self):
        pages, offset = [], 0
        while offset is not None:
            page = self.listed(sort="name", limit=2, offset=offset)
            self.assertIsNone(page["next_before"])  # only id order pages by id
            pages.extend(e["name"] for e in page["experiments"])
            offset = page["next_offset"]
        self.assertGreater(len(pages), 2)
        self.assertEqual(sorted(pages, key=str.lower), pages)

    def test_where_filters_by_config_and_summary_values(self):
        self.assertEqual(["alpha"], self.names(where="optimizer.lr>0.01"))
        self.assertEqual(["beta", "alpha"], self.names(where="optimizer.lr>=0.01"))
        self.assertEqual(["gamma"], self.names(where="optimizer.lr<0.01"))
        self.assertEqual(["beta"], self.names(where="optimizer.lr=0.01"))
        self.assertEqual(["gamma", "alpha"], self.names(where="optimizer.lr!=0.01"))
        self.assertEqual(["beta"], self.names(where="optimizer.lr<=0.01,optimizer.lr>0.001"))
        self.assertEqual(["gamma", "beta", "alpha"], self.names(where="optimizer.type=sgd"))
        self.assertEqual([], self.names(where='optimizer.type="adam"'))
        self.assertEqual(["gamma"], self.names(where="name=gamma,stages[0].epochs=1"))
        self.assertEqual(["gamma", "beta", "alpha"], self.names(where="summary.final_test_accuracy>=0"))
        for where, pattern in [
                ("optimizer.lr", r'^where: "optimizer.lr" has no operator \(=, !=, <, <=, >, >=\)'),
                ("optimizer.lr=>1", r'^where: "optimizer.lr=>1": => is not an operator'),
                ("optimizer.lr<>1", r'^where: "optimizer.lr<>1": <> is not an operator'),
                ("optimizer.lrr>0.01", r"^where: optimizer.lrr: no experiment's config has this field"),
                ("summary.nothing>1", r"^where: summary.nothing: no experiment's summary has this field"),
                ("optimizer..lr>1", r'^where: "optimizer..lr" is not a field \(names separated by dots'),
                ("stages[x].epochs>1", r'^where: "stages\[x\].epochs" is not a field'),
                (",".join(["seed>0"] * 9), r"^where: at most 8 items")]:
            self.assert_refused("GET", "/api/experiments" + query(where=where), None, 400, pattern)

    def test_filter_by_tag_status_and_name_together(self):
        self.patch("/api/experiments/%d" % self.ids["alpha"], {"add_tags": ["sweep"]})
        self.patch("/api/experiments/%d" % self.ids["gamma"], {"add_tags": ["sweep", "best"]})
        try:
            self.assertEqual(["gamma", "alpha"], self.names(tag="sweep"))
            self.assertEqual(["gamma"], self.names(tag="best"))
            self.assertEqual(["gamma", "alpha"], self.names(tag="best,sweep"))  # any of them
            self.assertEqual(["alpha"], self.names(tag="sweep", name="alp", status="succeeded"))
            self.assertEqual([], self.names(tag="sweep", status="failed"))
            self.assert_refused("GET", "/api/experiments?tag=a%20b", None, 400, r'^tag: "a b" is not a tag')
        finally:
            self.patch("/api/experiments/%d" % self.ids["alpha"], {"remove_tags": ["sweep"]})
            self.patch("/api/experiments/%d" % self.ids["gamma"], {"remove_tags": ["sweep", "best"]})

    def test_columns_show_chosen_values(self):
        listed = self.listed(columns="optimizer.lr,summary.final_test_accuracy,model.layers[0],dataset.name",
                             sort="name")["experiments"]
        rows = {e["name"]: e["columns"] for e in listed if e["name"] in self.ids}
        self.assertEqual(3, len(rows))
        self.assertEqual(0.1, rows["alpha"]["optimizer.lr"])
        self.assertEqual(0.001, rows["gamma"]["optimizer.lr"])
        self.assertEqual("synthetic", rows["beta"]["dataset.name"])
        self.assertEqual("linear", rows["beta"]["model.layers[0]"]["type"])  # an object stays one
        alpha = [e for e in listed if e["name"] == "alpha"][0]
        self.assertEqual(alpha["summary"]["final_test_accuracy"], rows["alpha"]["summary.final_test_accuracy"])
        self.assertNotIn("columns", self.listed()["experiments"][0])
        self.assert_refused("GET", "/api/experiments?columns=optimizer.nope", None, 400,
                            r"^columns: optimizer.nope: no experiment's config has this field")

    def test_cli_ls_filters_sorts_and_adds_columns(self):
        """mapsage ls --tag/--where/--archived/--all/--sort/--desc/--order/--columns/--offset:
        the rows, their order and the added cells are what the API's options give."""
        def ls(*arguments, code=0):
            exit_code, out, err = run_mapsage(self.daemon, "ls", *arguments)
            self.assertEqual(code, exit_code, (arguments, out, err))
            return out.splitlines(), err

        def names(*arguments):
            lines, _ = ls(*arguments)
            self.assertRegex(lines[0], r"^ *ID +NAME +STATUS")
            return [line.split()[1] for line in lines[1:]]

        alpha, beta, gamma = (self.ids[n] for n in ("alpha", "beta", "gamma"))
        for experiment_id in (alpha, beta, gamma):
            self.patch("/api/experiments/%d" % experiment_id, {"add_tags": ["cli-ls"]})
        self.patch("/api/experiments/%d" % beta, {"add_tags": ["cli-ls-beta"]})
        try:
            self.assertEqual(["gamma", "beta", "alpha"], names("--tag", "cli-ls"))  # newest first
            self.assertEqual(["alpha", "beta", "gamma"], names("--tag", "cli-ls", "--sort", "optimizer.lr", "--desc"))
            self.assertEqual(["alpha", "beta", "gamma"],
                             names("--tag", "cli-ls", "--sort", "optimizer.lr", "--order", "desc"))
            self.assertEqual(["gamma", "beta", "alpha"], names("--tag", "cli-ls", "--sort", "optimizer.lr"))
            self.assertEqual(["alpha", "beta"], names("--tag", "cli-ls", "--where", "optimizer.lr>=0.01",
                                                      "--sort", "name"))
            self.assertEqual(["beta"], names("--tag", "cli-ls", "--where", "optimizer.lr>=0.01",
                                             "--where", "optimizer.lr<0.1"))  # all must hold
            self.assertEqual(["beta"], names("--tag", "cli-ls-beta", "--tag", "no-such-tag"))  # any of them
            # Added columns: a header by the field's name, each row's value under it.
            lines, _ = ls("--tag", "cli-ls", "--sort", "name", "--columns", "optimizer.lr,dataset.name",
                          "--columns", "summary.final_test_accuracy")
            header = lines[0].split()
            self.assertEqual(["OPTIMIZER.LR", "DATASET.NAME", "SUMMARY.FINAL_TEST_ACCURACY"], header[-3:])
            rows = {line.split()[1]: line.split() for line in lines[1:]}
            self.assertEqual(["0.1", "synthetic"], rows["alpha"][-3:-1])
            self.assertEqual(["0.001", "synthetic"], rows["gamma"][-3:-1])
            accuracy = self.daemon.experiment(beta)["summary"]["final_test_accuracy"]
            self.assertAlmostEqual(accuracy, float(rows["beta"][-1]), places=5)
            # A sorted page says where the next one starts, and --offset goes there.
            lines, err = ls("--tag", "cli-ls", "--sort", "name", "--limit", "2")
            self.assertEqual(["alpha", "beta"], [line.split()[1] for line in lines[1:]])
            self.assertIn("--offset 2", err)
            self.assertEqual(["gamma"], names("--tag", "cli-ls", "--sort", "name", "--limit", "2", "--offset", "2"))
            # Archived: out of the default list, alone with --archived, with the rest with --all.
            self.patch("/api/experiments/%d" % gamma, {"archived": True})
            self.assertEqual(["beta", "alpha"], names("--tag", "cli-ls"))
            self.assertEqual(["gamma"], names("--tag", "cli-ls", "--archived"))
            self.assertEqual(["gamma", "beta", "alpha"], names("--tag", "cli-ls", "--all"))
            out = json.loads(run_mapsage(self.daemon, "ls", "--json", "--tag", "cli-ls", "--all",
                                         "--columns", "optimizer.lr")[1])
            self.assertEqual({alpha: 0.1, beta: 0.01, gamma: 0.001},
                             {e["id"]: e["columns"]["optimizer.lr"] for e in out["experiments"]})
            # The server's refusals name the parameter and the field; the CLI's own, the flag.
            _, err = ls("--where", "optimizer.lrr>1", code=1)
            self.assertIn("where: optimizer.lrr: no experiment's config has this field", err)
            _, err = ls("--sort", "nmae", code=1)
            self.assertIn('sort: "nmae" is neither a column', err)
            _, err = ls("--order", "up", code=2)
            self.assertIn("--order must be asc or desc, not 'up'", err)
            _, err = ls("--where", code=2)
            self.assertIn("--where needs a value", err)
        finally:
            self.patch("/api/experiments/%d" % gamma, {"archived": False})
            for experiment_id in (alpha, beta, gamma):
                self.patch("/api/experiments/%d" % experiment_id, {"remove_tags": ["cli-ls", "cli-ls-beta"]})

    # --- studies -------------------------------------------------------------------------

    def test_study_tags_note_name_and_archive(self):
        spec = {"name": "organised", "seeds": 1,
                "base": {"dataset": {"name": "synthetic", "train_size": 2048}, "model": {
                    "layers": [{"type": "linear", "out": 16}, {"type": "relu"}, {"type": "linear", "out": 10}]},
                    "stages": [{"name": "main", "epochs": 1}]},
                "teacher": {"experiment": self.ids["alpha"]},
                "arms": {"kd": {"stages": [{"name": "main", "epochs": 1, "distill_weight": 0.5}]}}}
        status, _, body = self.daemon.request("POST", "/api/studies", spec)
        self.assertEqual(201, status, body)
        study_id = body["id"]
        path = "/api/studies/%d" % study_id
        status, _, body = self.patch(path, {"name": "organised-2", "note": "first try", "tags": ["kd"]})
        self.assertEqual(200, status, body)
        self.assertEqual(("organised-2", "first try", ["kd"]), (body["name"], body["note"], body["tags"]))
        status, _, body = self.patch(path, {"archived": True})
        self.assertIsNotNone(body["archived_at"])
        studies = lambda archived: [s["id"] for s in self.daemon.get(  # noqa: E731
            "/api/studies?archived=%s" % archived)[2]["studies"]]
        self.assertNotIn(study_id, studies("0"))
        self.assertIn(study_id, studies("1"))
        self.assertIn(study_id, studies("all"))
        self.assert_refused("PATCH", path, {"tags": ["a b"]}, 400, r"^tags: element 0 must be a tag")
        self.assert_refused("PATCH", path, {}, 400, r"^body: names nothing to change")
        self.assert_refused("PATCH", "/api/studies/99999", {"note": "x"}, 404, r"no study 99999")
        self.assert_refused("GET", "/api/studies?archived=2", None, 400, r"^archived: must be 0")
        # A study's run is not deleted alone: the study's statistics are over its runs.
        run = self.daemon.get(path)[2]["runs"][0]["id"]
        self.daemon.wait_status(run, ["succeeded", "failed", "queued", "running"])
        deadline = time.time() + 120
        while self.daemon.experiment(run)["status"] == "running" and time.time() < deadline:
            time.sleep(0.1)
        self.assert_refused("DELETE", "/api/experiments/%d" % run, None, 409,
                            r"^experiment %d is a run of study %d: archive it instead" % (run, study_id))


class Cli(unittest.TestCase):
    """mapsage tag, note, rename, archive and rm (cli/organise.c) against a live daemon."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon(workers=1)
        cls.id = cls.daemon.submit(synthetic_config("cli-run", epochs=2))
        cls.daemon.wait_status(cls.id, ["succeeded"])

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()

    def mapsage(self, *arguments, stdin=None):
        return run_mapsage(self.daemon, *arguments, stdin=stdin)

    def test_tag_note_rename_archive(self):
        experiment = str(self.id)
        self.assertEqual((0, "experiment %s: tags best, sweep\n" % experiment, ""),
                         self.mapsage("tag", experiment, "sweep", "best"))
        self.assertEqual((0, "experiment %s: tags sweep\n" % experiment, ""),
                         self.mapsage("tag", experiment, "best", "--remove"))
        code, out, err = self.mapsage("tag", experiment, "has space")
        self.assertEqual(1, code)
        self.assertIn("add_tags: element 0 must be a tag", err)
        self.assertEqual(["sweep"], self.daemon.experiment(self.id)["tags"])
        self.assertEqual((0, "experiment %s: tags (none)\n" % experiment, ""), self.mapsage("tag", experiment, "--clear"))
        self.assertEqual(0, self.mapsage("note", experiment, "first line")[0])
        self.assertEqual("first line", self.daemon.experiment(self.id)["note"])
        code, out, _ = self.mapsage("note", experiment, "-", stdin="from stdin\nsecond\n")
        self.assertEqual((0, "experiment %s: note saved (17 bytes)\n" % experiment), (code, out))
        self.assertEqual("from stdin\nsecond", self.daemon.experiment(self.id)["note"])
        self.assertEqual((0, "experiment %s: note cleared\n" % experiment, ""), self.mapsage("note", experiment, ""))
        self.assertEqual((0, "experiment %s: renamed cli-renamed\n" % experiment, ""),
                         self.mapsage("rename", experiment, "cli-renamed"))
        self.assertEqual("cli-renamed", self.daemon.experiment(self.id)["name"])
        code, out, _ = self.mapsage("archive", experiment)
        self.assertEqual(0, code)
        self.assertRegex(out, r"^experiment %s: archived \(\d{4}-" % experiment)
        code, out, _ = self.mapsage("ls")
        self.assertNotIn("cli-renamed", out)  # archived: out of the default list
        self.assertEqual((0, "experiment %s: not archived\n" % experiment, ""),
                         self.mapsage("archive", experiment, "--undo"))
        code, out, _ = self.mapsage("archive", experiment, "--json")
        self.assertIsNotNone(json.loads(out)["archived_at"])
        self.mapsage("archive", experiment, "--undo")

    def test_usage_errors(self):
        for arguments, message in [(["tag"], "which experiment?"), (["tag", "7"], "which tags?"),
                                   (["tag", "x", "a"], "an ID is a positive number"),
                                   (["tag", "7", "a", "--clear"], "--clear takes no tags"),
                                   (["note", "7"], "give the note as one argument"),
                                   (["rename", "7", "a", "b"], "give the new name as one argument"),
                                   (["archive", "7", "--bogus"], "unknown option --bogus"),
                                   (["rm"], "which experiment?")]:
            code, _, err = self.mapsage(*arguments)
            self.assertEqual(2, code, arguments)
            self.assertIn(message, err, arguments)
        code, out, _ = self.mapsage("tag", "--help")
        self.assertEqual(0, code)
        self.assertIn("usage: mapsage tag ID TAG...", out)

    def test_rm_deletes_and_says_why_not(self):
        doomed = self.daemon.submit(synthetic_config("cli-doomed", epochs=2))
        self.daemon.wait_status(doomed, ["succeeded"])
        files = len(os.listdir(os.path.join(self.daemon.directory, "data", "experiments", str(doomed))))
        self.assertGreater(files, 0)
        self.assertEqual((0, "deleted experiment %d (%d checkpoint files)\n" % (doomed, files), ""),
                         self.mapsage("rm", str(doomed)))
        self.assertEqual(404, self.daemon.get("/api/experiments/%d" % doomed)[0])
        code, _, err = self.mapsage("rm", str(doomed))
        self.assertEqual(1, code)
        self.assertIn("no experiment %d" % doomed, err)
        long_run = self.daemon.submit(synthetic_config("cli-long", epochs=3000))
        self.daemon.wait_status(long_run, ["running"])
        code, _, err = self.mapsage("rm", str(long_run))
        self.assertEqual(1, code)
        self.assertIn("experiment %d is running: cancel it first" % long_run, err)
        self.daemon.request("POST", "/api/experiments/%d/cancel" % long_run)
        self.daemon.wait_status(long_run, ["cancelled"])


class Migration(unittest.TestCase):
    def test_a_version_3_database_gains_notes_archive_and_tags(self):
        """schema.sql as it was before note and archived_at, with a row in it: the daemon
        adds the columns, keeps the row, and the new routes work on it."""
        with open(os.path.join(SOURCE_DIR, "schema.sql")) as f:
            schema = f.read()
        lines = [line for line in schema.split("\n") if not re.match(r"  (note|archived_at) ", line)]
        old = "\n".join(lines).replace("planned_stages INTEGER,", "planned_stages INTEGER ")
        old = old.replace("statistics   TEXT,", "statistics   TEXT ")
        self.assertEqual(4, len(schema.split("\n")) - len(lines))  # note and archived_at, twice
        old = old.replace("e.note,", "'' AS note,").replace("e.archived_at", "NULL AS archived_at")
        daemon = Daemon(workers=0)
        daemon.kill()
        os.remove(daemon.db_path)
        database = sqlite3.connect(daemon.db_path)
        database.executescript(old)
        config = json.dumps(synthetic_config("old-run", epochs=1))
        database.execute("INSERT INTO experiments (name, config, planned_epochs, planned_stages) VALUES (?, ?, 1, 1)",
                         ("old-run", config))
        database.execute("PRAGMA user_version = 3")
        database.commit()
        database.close()
        try:
            daemon.start()
            listed = daemon.get("/api/experiments")[2]["experiments"]
            self.assertEqual(["old-run"], [e["name"] for e in listed])
            self.assertEqual(("", [], None), (listed[0]["note"], listed[0]["tags"], listed[0]["archived_at"]))
            status, _, body = daemon.request("PATCH", "/api/experiments/%d" % listed[0]["id"],
                                             {"note": "migrated", "tags": ["old"]})
            self.assertEqual(200, status, body)
            self.assertEqual(("migrated", ["old"]), (body["note"], body["tags"]))
            database = sqlite3.connect("file:%s?mode=ro" % daemon.db_path, uri=True)
            self.assertEqual(5, database.execute("PRAGMA user_version").fetchone()[0])
            self.assertEqual(("migrated", "old"), database.execute(
                "SELECT note, tags FROM experiment_summary").fetchone())
            database.close()
        finally:
            daemon.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
