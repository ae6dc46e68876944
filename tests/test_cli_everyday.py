#!/usr/bin/env python3
"""test_cli_everyday.py — the `mapsage` commands and settings of everyday use, driven as a
user drives them against the real mapsaged: rerun, logs (-f), --json on every command, the
config file (and its errors), shell completion (bash run for real, zsh parsed), the man
pages and --version of the three programs, and the shared option parser's forms.

CTest sets MAPSAGE_BIN_DIR (the build directory) and MAPSAGE_SOURCE_DIR; run by hand it
defaults to <repo>/build. Python standard library only."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mapsage_testlib import BIN_DIR, SOURCE_DIR, Daemon, synthetic_config  # noqa: E402
from test_cli_study import STUDY  # noqa: E402

MAPSAGE = os.path.join(BIN_DIR, "mapsage")
CONFIG = synthetic_config("everyday", epochs=2)
# Occupies the one worker (cancelled long before it would end).
BLOCKER = synthetic_config("blocker", epochs=500, train_size=4096)


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        match = re.search(r"project\(mapsage VERSION (\S+)", f.read())
    assert match, "CMakeLists.txt has no project(mapsage VERSION …)"
    return match.group(1)


class Everyday(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-test-everyday-")
        self.home = os.path.join(self.directory, "home")
        os.makedirs(self.home)
        self.daemons = []
        self.config_path = self.write("config.json", json.dumps(CONFIG))

    def tearDown(self):
        for daemon in self.daemons:
            daemon.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- helpers ----------------------------------------------------------------------

    def write(self, name, text):
        path = os.path.join(self.directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_daemon(self, workers=1, extra_args=()):
        directory = os.path.join(self.directory, "daemon%d" % len(self.daemons))
        os.makedirs(directory)
        daemon = Daemon(workers=workers, directory=directory, extra_args=list(extra_args))
        self.daemons.append(daemon)
        return daemon

    def environment(self, server=True, extra_env=None):
        """A clean environment: HOME in the test's directory (so no config file of the
        person running the tests is read), no XDG_CONFIG_HOME, and the daemon's URL in
        MAPSAGE_SERVER unless `server` is False."""
        env = {key: value for key, value in os.environ.items()
               if key not in ("MAPSAGE_SERVER", "MAPSAGE_TOKEN_FILE", "XDG_CONFIG_HOME")}
        env["HOME"] = self.home
        if server:
            env["MAPSAGE_SERVER"] = self.daemons[0].url if self.daemons else "http://127.0.0.1:9"
        env.update(extra_env or {})
        return env

    def mapsage(self, *arguments, server=True, extra_env=None, timeout=60):
        done = subprocess.run([MAPSAGE, *arguments], capture_output=True, text=True, timeout=timeout,
                              env=self.environment(server, extra_env))
        return done.returncode, done.stdout, done.stderr

    def check(self, expected_code, result, what):
        code, out, err = result
        self.assertEqual(code, expected_code, "%s: exit %d, expected %d\nstdout: %s\nstderr: %s"
                         % (what, code, expected_code, out, err))
        return out, err

    def json_lines(self, text, what):
        lines = [json.loads(line) for line in text.splitlines()]
        self.assertTrue(lines, "%s printed no JSON line" % what)
        return lines

    # --- rerun --------------------------------------------------------------------------

    def test_rerun(self):
        daemon = self.start_daemon(workers=0)  # nothing runs: the configs are what is tested
        first = daemon.submit(CONFIG)
        original = daemon.experiment(first)["config"]
        out, err = self.check(0, self.mapsage("rerun", str(first), "--set", "optimizer.lr=0.02",
                                              "--set", "name=again", "--set", "seed=7"), "rerun --set")
        self.assertRegex(out, r"^\d+\n$", "rerun prints just the new id on stdout")
        second = int(out)
        self.assertNotEqual(second, first)
        self.assertRegex(err, r"^submitted experiment %d \(queued\): rerun of %d\n$" % (second, first))
        config = daemon.experiment(second)["config"]
        self.assertEqual(config["name"], "again")
        self.assertEqual(config["seed"], 7)
        self.assertEqual(config["optimizer"]["lr"], 0.02)
        # The stage's lr had been filled in from optimizer.lr: it follows the new one.
        self.assertTrue(config["stages"], "the filled config has its stages")
        self.assertEqual([stage["lr"] for stage in config["stages"]], [0.02] * len(config["stages"]))
        # Everything not --set is the original's.
        for key in ("dataset", "model", "batch_size", "max_attempts"):
            self.assertEqual(config[key], original[key], key)

        # --json: the server's answer.
        out, _ = self.check(0, self.mapsage("rerun", str(first), "--json"), "rerun --json")
        answer = json.loads(out)
        self.assertEqual(answer["status"], "queued")
        self.assertEqual(daemon.experiment(answer["id"])["config"], original)

        # A path that cannot be applied is refused here, naming it; an unknown field by the
        # server, naming it too; an experiment that does not exist by the server.
        _, err = self.check(2, self.mapsage("rerun", str(first), "--set", "model.layers[9].out=3"),
                            "rerun --set past an array's end")
        self.assertIn("model.layers[9].out: index 9 is out of range: model.layers has 3 elements", err)
        self.assertIn("experiment %d's config" % first, err)
        _, err = self.check(1, self.mapsage("rerun", str(first), "--set", "optimizer.lrr=0.1"), "rerun, unknown field")
        self.assertIn("optimizer.lrr: unknown field", err)
        _, err = self.check(1, self.mapsage("rerun", "999"), "rerun of no experiment")
        self.assertIn("999", err)
        _, err = self.check(2, self.mapsage("rerun"), "rerun without an id")
        self.assertIn("which experiment? give its ID", err)
        _, err = self.check(2, self.mapsage("rerun", "7", "--set", "novalue"), "rerun --set without =")
        self.assertIn("--set novalue: expected path=value", err)
        experiments = daemon.get("/api/experiments")[2]["experiments"]
        self.assertEqual(len(experiments), 3, "the refused reruns created nothing")

    # --- logs ---------------------------------------------------------------------------

    def test_logs_and_follow(self):
        daemon = self.start_daemon(workers=1)
        blocker = daemon.submit(BLOCKER)
        daemon.wait_status(blocker, ("running",))
        run = daemon.submit(CONFIG)  # queued behind the blocker
        # Follow the queued run from before its worker starts to its end.
        follower = subprocess.Popen([MAPSAGE, "logs", "-f", str(run)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=self.environment())
        json_follower = subprocess.Popen([MAPSAGE, "--json", "logs", "--follow", str(run)], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=self.environment())
        try:
            self.check(0, self.mapsage("cancel", str(blocker)), "cancel the blocker")
            daemon.wait_status(run, ("succeeded",))
            followed, follow_err = follower.communicate(timeout=60)
            followed_json, _ = json_follower.communicate(timeout=60)
        finally:
            for process in (follower, json_follower):
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        self.assertEqual(follower.returncode, 0, follow_err)
        self.assertEqual(json_follower.returncode, 0)

        out, _ = self.check(0, self.mapsage("logs", str(run)), "logs")
        lines = out.splitlines()
        self.assertTrue(lines, "the run's log is empty")
        self.assertTrue(all(line.startswith("attempt 1 | ") for line in lines), out)
        self.assertTrue(any('experiment %d "everyday"' % run in line for line in lines), out)
        self.assertEqual(followed, out, "-f printed the whole log, each line once")

        records = self.json_lines(followed_json, "logs --follow --json")
        self.assertEqual(records, [{"attempt": 1, "line": line[len("attempt 1 | "):]} for line in lines])
        out, _ = self.check(0, self.mapsage("logs", str(run), "--json"), "logs --json")
        self.assertEqual(self.json_lines(out, "logs --json"), records)

        _, err = self.check(1, self.mapsage("logs", "999"), "logs of no experiment")
        self.assertIn("999", err)
        self.check(2, self.mapsage("logs", "--bogus", "1"), "logs with an unknown option")

    # --- --json everywhere --------------------------------------------------------------

    def test_json_on_every_command(self):
        daemon = self.start_daemon(workers=1)
        out, _ = self.check(0, self.mapsage("submit", self.config_path, "--json"), "submit --json")
        run = json.loads(out)["id"]
        daemon.wait_status(run, ("succeeded",))

        out, _ = self.check(0, self.mapsage("watch", str(run), "--json"), "watch --json")
        events = self.json_lines(out, "watch --json")
        self.assertEqual(events[0]["event"], "status")
        self.assertEqual(events[-1], {"event": "end", "id": events[-1].get("id"),
                                      "data": {"status": "succeeded", "error": None}})
        metrics = [event for event in events if event["event"] == "metric"]
        self.assertTrue(metrics, "watch --json replayed the run's metrics")
        self.assertTrue(all("loss/total" in event["data"]["values"] for event in metrics))
        evals = [event for event in events if event["event"] == "eval"]
        self.assertEqual(sorted({event["data"]["epoch"] for event in evals}), [1, 2])

        for arguments, check in (
                (("ls", "--json"), lambda answer: [e["id"] for e in answer["experiments"]] == [run]),
                (("--json", "ls"), lambda answer: [e["id"] for e in answer["experiments"]] == [run]),
                (("show", str(run), "--json"), lambda answer: answer["status"] == "succeeded"),
                (("report", str(run), "--json"), lambda answer: answer["id"] == run),
                (("sql", "SELECT count(*) AS n FROM experiments", "--json"), lambda answer: answer["rows"] == [[1]]),
                (("--json", "sql", "SELECT 1"), lambda answer: answer["rows"] == [[1]])):
            out, _ = self.check(0, self.mapsage(*arguments), " ".join(arguments))
            self.assertTrue(check(json.loads(out)), "%s: %s" % (" ".join(arguments), out))

        blocker = daemon.submit(BLOCKER)
        daemon.wait_status(blocker, ("running",))
        out, _ = self.check(0, self.mapsage("cancel", str(blocker), "--json"), "cancel --json")
        answer = json.loads(out)
        self.assertEqual(answer["id"], blocker)
        daemon.wait_status(blocker, ("cancelled",))

    def test_json_on_study_commands(self):
        self.start_daemon(workers=0)  # the study's runs stay queued until it is cancelled
        study_path = self.write("study.json", json.dumps(STUDY))
        out, _ = self.check(0, self.mapsage("study", "submit", study_path, "--json"), "study submit --json")
        study = json.loads(out)["id"]
        out, _ = self.check(0, self.mapsage("study", "ls", "--json"), "study ls --json")
        self.assertEqual([s["id"] for s in json.loads(out)["studies"]], [study])
        out, _ = self.check(0, self.mapsage("study", "show", str(study), "--json"), "study show --json")
        self.assertEqual(json.loads(out)["status"], "queued")

        # study watch --json follows the study while it is cancelled.
        watcher = subprocess.Popen([MAPSAGE, "study", "watch", "--json", str(study)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=self.environment())
        try:
            # The watcher is listening once the daemon counts its stream.
            deadline = time.time() + 60
            while self.daemons[0].get("/api/health")[2]["streams"] < 1:
                self.assertLess(time.time(), deadline, "study watch never opened its stream")
                time.sleep(0.05)
            out, _ = self.check(0, self.mapsage("study", "cancel", str(study), "--json"), "study cancel --json")
            self.assertEqual(json.loads(out)["status"], "cancelled")
            watched, watch_err = watcher.communicate(timeout=60)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        self.assertEqual(watcher.returncode, 1, "a cancelled study: exit 1\n" + watch_err)
        events = self.json_lines(watched, "study watch --json")
        self.assertEqual(events[-1]["event"], "end")
        runs = [event for event in events if event["event"] == "run"]
        self.assertTrue(runs, "the runs' cancellations came as events")
        self.assertTrue(all(event["data"]["status"] == "cancelled" for event in runs))
        self.assertNotIn("study %d" % study, watched, "no lines for people among the JSON")
        # An ended study has no stream to print: its record stands for it, one line.
        code, out, _ = self.mapsage("study", "watch", str(study), "--json")
        self.assertEqual(code, 1)
        lines = self.json_lines(out, "study watch --json of an ended study")
        self.assertEqual([(line["event"], line["data"]["id"], line["data"]["status"]) for line in lines],
                         [("study", study, "cancelled")])

    # --- the config file ------------------------------------------------------------------

    def test_config_file(self):
        daemon = self.start_daemon(workers=0)
        daemon.submit(CONFIG)
        config_dir = os.path.join(self.home, ".config", "mapsage")
        self.write(os.path.join(config_dir, "config"), "# where mapsaged runs\n\nserver = %s\n" % daemon.url)
        out, _ = self.check(0, self.mapsage("ls", "--json", server=False), "ls with the server from ~/.config")
        self.assertEqual(len(json.loads(out)["experiments"]), 1)

        # The environment wins over the file, and a flag over both.
        unreachable = "http://127.0.0.1:9"
        self.check(3, self.mapsage("ls", server=False, extra_env={"MAPSAGE_SERVER": unreachable}),
                   "MAPSAGE_SERVER over the file")
        self.check(0, self.mapsage("--server", daemon.url, "ls", server=False,
                                   extra_env={"MAPSAGE_SERVER": unreachable}), "--server over MAPSAGE_SERVER")

        # XDG_CONFIG_HOME replaces ~/.config.
        xdg = os.path.join(self.directory, "xdg")
        self.write(os.path.join(xdg, "mapsage", "config"), "server = %s\n" % unreachable)
        self.check(3, self.mapsage("ls", server=False, extra_env={"XDG_CONFIG_HOME": xdg}),
                   "the file in $XDG_CONFIG_HOME")

        # A bad line stops the command, naming the file and the line.
        for text, line, message in (
                ("server = %s\nsever = x\n" % daemon.url, 2, 'unknown key "sever" (keys: server, token-file)'),
                ("# comment\n\njust some words\n", 3, 'expected KEY = VALUE (keys: server, token-file), not "just some words"'),
                ("token-file =\n", 1, "token-file has no value"),
                ("server = a\nserver = b\n", 2, "server is set a second time")):
            path = self.write(os.path.join(xdg, "mapsage", "config"), text)
            _, err = self.check(2, self.mapsage("ls", server=False, extra_env={"XDG_CONFIG_HOME": xdg}),
                                "config file %r" % text)
            self.assertEqual(err, "mapsage: %s:%d: %s\n" % (path, line, message))
        # Only what talks to a server reads it: help and completion still work.
        env = {"XDG_CONFIG_HOME": xdg}
        self.assertTrue(self.check(0, self.mapsage("ls", "--help", server=False, extra_env=env), "ls --help")[0])
        self.assertTrue(self.check(0, self.mapsage("completion", "bash", server=False, extra_env=env), "completion")[0])

    def test_config_file_token(self):
        token = self.write("secrets/token", "s3cret-s3cret-s3cret\n")
        os.chmod(token, 0o600)
        daemon = self.start_daemon(workers=0, extra_args=["--token-file", token])
        xdg = os.path.join(self.directory, "xdg")
        self.write(os.path.join(xdg, "mapsage", "config"), "server = %s\n" % daemon.url)
        env = {"XDG_CONFIG_HOME": xdg}
        _, err = self.check(1, self.mapsage("submit", self.config_path, server=False, extra_env=env),
                            "submit without a token")
        self.assertIn("Authorization", err)
        # A relative token-file is relative to the config file's directory.
        os.symlink(os.path.dirname(token), os.path.join(xdg, "mapsage", "secrets"))
        self.write(os.path.join(xdg, "mapsage", "config"), "server = %s\ntoken-file = secrets/token\n" % daemon.url)
        self.check(0, self.mapsage("submit", self.config_path, server=False, extra_env=env),
                   "submit with the config file's token")
        # MAPSAGE_TOKEN_FILE wins over the file's.
        wrong = self.write("wrong-token", "not-the-token\n")
        self.check(1, self.mapsage("submit", self.config_path, server=False,
                                   extra_env=dict(env, MAPSAGE_TOKEN_FILE=wrong)), "the environment's token first")
        self.assertEqual(len(daemon.get("/api/experiments")[2]["experiments"]), 1)

    # --- completion -------------------------------------------------------------------------

    def complete(self, *words, script=None):
        """COMPREPLY for `mapsage WORDS…` with the cursor on the last word, from the script
        `mapsage completion bash` prints, run in a real bash."""
        script = script or self.write("completion.bash", self.check(0, self.mapsage("completion", "bash"),
                                                                     "completion bash")[0])
        words = (MAPSAGE,) + words
        program = ("source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_mapsage\nprintf '%%s\\n' \"${COMPREPLY[@]}\"\n"
                   % (script, " ".join("'%s'" % word for word in words), len(words) - 1))
        done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=60,
                              env=self.environment())
        self.assertEqual(done.returncode, 0, done.stderr)
        return sorted(line for line in done.stdout.splitlines() if line)

    def test_bash_completion(self):
        daemon = self.start_daemon(workers=0)
        runs = [daemon.submit(CONFIG) for _ in range(3)]
        script = self.write("completion.bash", self.check(0, self.mapsage("completion", "bash"), "completion bash")[0])
        commands = self.complete("", script=script)
        for command in ("submit", "ls", "show", "watch", "cancel", "rerun", "logs", "report", "sql", "study",
                        "completion", "help"):
            self.assertIn(command, commands)
        self.assertEqual(self.complete("re", script=script), ["report", "rerun"])
        self.assertEqual(self.complete("--s", script=script), ["--server"])
        self.assertEqual(self.complete("study", "s", script=script), ["show", "submit"])
        self.assertEqual(self.complete("logs", "--", script=script), ["--follow", "--help", "--json"])
        self.assertEqual(self.complete("study", "show", "--a", script=script), ["--all"])
        self.assertEqual(self.complete("completion", "", script=script), ["bash", "zsh"])
        # Ids from the server, the global options already typed passed on.
        self.assertEqual(self.complete("show", "", script=script), sorted(str(run) for run in runs))
        self.assertEqual(self.complete("--server", daemon.url, "rerun", "", script=script),
                         sorted(str(run) for run in runs))
        # A file where a file goes; nothing after an option that takes a value.
        self.assertIn(self.config_path, self.complete("submit", os.path.join(self.directory, "conf"), script=script))
        self.assertEqual(self.complete("ls", "--status", "", script=script), [])
        # The build installs the same script.
        with open(os.path.join(BIN_DIR, "completion", "mapsage")) as f, open(script) as g:
            self.assertEqual(f.read(), g.read())

    def test_help_lists_every_option(self):
        """The option tables (which parse, and which the completion lists) and the help
        texts written by hand say the same: every option a command takes is in its --help
        and its usage line, and every option its usage line shows is one it takes."""
        script = self.check(0, self.mapsage("completion", "bash"), "completion bash")[0]
        tables = re.findall(r'^    "([a-z ]+)"\) flags="([^"]*)"', script, re.MULTILINE)
        self.assertGreaterEqual(len(tables), 16, "every command's table is in the script")
        for command, flags in tables:
            out, _ = self.check(0, self.mapsage(*command.split(), "--help"), command + " --help")
            usage = out.splitlines()[0]
            taken = {flag for flag in flags.split() if flag.startswith("--") and flag != "--help"}
            for flag in taken:
                self.assertRegex(out, r"(?m)^ +(-\w, )?%s\b" % re.escape(flag),
                                 "%s --help describes %s on a line of its own" % (command, flag))
                self.assertIn(flag, usage, "%s's usage line shows %s" % (command, flag))
            self.assertEqual(set(re.findall(r"--[a-z-]+", usage)) - {"--help"}, taken, command)

    def test_zsh_completion(self):
        zsh = shutil.which("zsh")
        self.assertIsNotNone(zsh, "zsh is missing: scripts/install-deps --tests installs it")
        out, _ = self.check(0, self.mapsage("completion", "zsh"), "completion zsh")
        self.assertTrue(out.startswith("#compdef mapsage\n"))
        for command in ("submit", "rerun", "logs", "study"):
            self.assertIn("'%s:" % command, out)
        path = self.write("_mapsage", out)
        done = subprocess.run([zsh, "-n", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, "zsh cannot parse the script: " + done.stderr)
        # Loaded the way zsh loads a completion function, it defines _mapsage.
        program = "fpath=(%s $fpath); autoload -U compinit; compinit -u -d %s; autoload -U +X _mapsage; " \
                  "whence -w _mapsage" % (self.directory, os.path.join(self.directory, "zcompdump"))
        done = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True, timeout=60,
                              env=self.environment())
        self.assertEqual(done.stdout.strip(), "_mapsage: function", done.stderr)
        with open(os.path.join(BIN_DIR, "completion", "_mapsage")) as f:
            self.assertEqual(f.read(), out)

    # --- man pages, --version, the shared parser -------------------------------------------

    def test_man_pages_and_versions(self):
        version = project_version()
        for program, options in (("mapsaged", ["--listen", "--max-worker-memory", "--version"]),
                                 ("mapsage-worker", ["--experiment", "--memory-limit", "--version"]),
                                 ("mapsage", ["--server", "--token-file", "--json", "--version"])):
            done = subprocess.run([os.path.join(BIN_DIR, program), "--version"], capture_output=True, text=True,
                                  timeout=60)
            self.assertEqual((done.returncode, done.stdout), (0, "%s %s\n" % (program, version)))
            with open(os.path.join(BIN_DIR, "man", program + ".1")) as f:
                page = f.read()
            self.assertRegex(page, r'\.TH %s "1" "[^"]+" "MapSage %s"' % (re.escape(program.upper()),
                                                                           re.escape(version)))
            for option in options:
                self.assertIn(option.replace("-", "\\-"), page, "%s's page lacks %s" % (program, option))
            if program == "mapsage":
                # Every command's --help is a part of the COMMANDS section.
                for command in ("submit FILE|", "rerun ID", "logs ID", "study submit FILE|", "completion bash|zsh"):
                    self.assertIn('.SS "mapsage %s' % command.replace("-", "\\-"), page)
                self.assertIn("optimizer.lr=0.01, seed=2, stages[1].epochs=5", page)
        daemon = self.start_daemon(workers=0)
        self.assertEqual(daemon.get("/api/health")[2]["version"], version)

    def test_option_forms(self):
        # --name=value, a unique prefix (the daemon's getopt_long rule), and the errors.
        directory = os.path.join(self.directory, "forms")
        daemon = Daemon(workers=0, directory=None, extra_args=["--sql-max=5", "--request-timeout=10"])
        self.daemons.append(daemon)
        rows = daemon.request("POST", "/api/sql", {"sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                                                          "FROM n WHERE i < 20) SELECT i FROM n"})[2]
        self.assertEqual(len(rows["rows"]), 5, "--sql-max=5 is --sql-max-rows 5")
        self.assertTrue(rows["truncated"])
        for arguments, message in ((["--workers"], "mapsaged: --workers needs a value: N"),
                                   (["--help=x"], "mapsaged: --help takes no value"),
                                   (["--s", "1"], "mapsaged: ambiguous option --s"),
                                   (["--bogus"], "mapsaged: unknown option --bogus"),
                                   (["stray"], 'mapsaged: unexpected argument "stray"')):
            done = subprocess.run([os.path.join(BIN_DIR, "mapsaged"), "--db", os.path.join(directory, "never.db"),
                                   *arguments], capture_output=True, text=True, timeout=60)
            self.assertEqual(done.returncode, 2, arguments)
            self.assertTrue(done.stderr.startswith(message), "%s: %s" % (arguments, done.stderr))
        self.assertFalse(os.path.exists(directory), "a refused command line opened nothing")
        done = subprocess.run([os.path.join(BIN_DIR, "mapsage-worker"), "-e"], capture_output=True, text=True,
                              timeout=60)
        self.assertEqual(done.returncode, 2)
        self.assertTrue(done.stderr.startswith("mapsage-worker: -e needs a value: ID"), done.stderr)
        # mapsage: --opt=value and -- before an argument that starts with a dash.
        out, _ = self.check(0, self.mapsage("sql", "--param=7", "--json", "--", "SELECT ?1 AS v"), "sql --param=7 --")
        self.assertEqual(json.loads(out)["rows"], [[7]])
        _, err = self.check(2, self.mapsage("ls", "--limit"), "ls --limit without its value")
        self.assertIn("--limit needs a value: N", err)
        _, err = self.check(2, self.mapsage("show", "--json=yes", "1"), "a flag given a value")
        self.assertIn("--json takes no value", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
