#!/usr/bin/env python3
"""test_package.py — the install: `cmake --install` into a prefix, and the Debian package
`cpack -G DEB` builds, installed by dpkg into a temporary root (its maintainer scripts run
chrootless with DPKG_ROOT, so that they change that root only), then the installed mapsaged
started from it: it serves /api/health, finds the installed worker beside itself and trains
a run that the installed mapsage submits and watches; the installed Python client talks to
it. Then the package is purged. What it cannot show is systemd starting the unit on a
booted Debian 12 (no systemd runs here): the unit's paths are checked against the root
instead, and its enabling symlink, which the postinst makes offline.

CTest sets MAPSAGE_BIN_DIR (a configured, built tree) and MAPSAGE_SOURCE_DIR."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mapsage_testlib import BIN_DIR, SOURCE_DIR, synthetic_config  # noqa: E402

CONFIG = synthetic_config("installed", epochs=2)
PROGRAMS = ("mapsaged", "mapsage-worker", "mapsage")


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        return re.search(r"project\(mapsage VERSION (\S+)", f.read()).group(1)


def unit_settings(path):
    """The unit's Key=value lines (the last of a repeated key wins; Environment= gathered)."""
    settings, environment = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if "=" in line and not line.startswith("#") and not line.startswith("["):
                key, value = line.split("=", 1)
                if key == "Environment":
                    name, _, setting = value.partition("=")
                    environment[name] = setting
                else:
                    settings[key] = value
    return settings, environment


class Package(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="mapsage-test-package-")
        self.processes = []

    def tearDown(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
            process.stdout.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def run_checked(self, command, what, **options):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, **options)
        self.assertEqual(done.returncode, 0, "%s: %s\n%s\n%s" % (what, command, done.stdout, done.stderr))
        return done.stdout

    def start_daemon(self, prefix):
        """The installed mapsaged, with its state in the test's directory."""
        state = os.path.join(self.directory, "state")
        log = open(os.path.join(self.directory, "mapsaged.log"), "wb")
        environment = {key: value for key, value in os.environ.items() if not key.startswith("MAPSAGE_")}
        process = subprocess.Popen([os.path.join(prefix, "bin", "mapsaged"), "--listen", "127.0.0.1:0",
                                    "--db", os.path.join(state, "mapsage.db"), "--data-dir", os.path.join(state, "data"),
                                    "--workers", "1"], stdout=subprocess.PIPE, stderr=log, env=environment)
        log.close()
        self.processes.append(process)
        line = process.stdout.readline().decode()
        self.assertTrue(line.startswith("mapsaged listening on http://"), line + self.daemon_log())
        return line.split()[-1]

    def daemon_log(self):
        with open(os.path.join(self.directory, "mapsaged.log"), errors="replace") as f:
            return f.read()

    def check_installed_daemon(self, prefix):
        """Starts the daemon of `prefix`, checks it serves and trains with its own worker,
        and that the prefix's mapsage and Python client reach it."""
        url = self.start_daemon(prefix)
        with urllib.request.urlopen(url + "/api/health", timeout=60) as response:
            health = json.load(response)
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["version"], project_version())
        self.assertIn("worker %s" % os.path.join(prefix, "bin", "mapsage-worker"), self.daemon_log(),
                      "mapsaged found the worker installed beside it")
        # The dashboard is built into the daemon: its page is served without any file.
        with urllib.request.urlopen(url + "/", timeout=60) as response:
            self.assertIn("<html", response.read().decode().lower())

        mapsage = os.path.join(prefix, "bin", "mapsage")
        config = os.path.join(self.directory, "config.json")
        with open(config, "w") as f:
            json.dump(CONFIG, f)
        environment = dict(os.environ, MAPSAGE_SERVER=url, HOME=self.directory)
        run = int(self.run_checked([mapsage, "submit", config], "the installed mapsage submits", env=environment))
        out = self.run_checked([mapsage, "watch", str(run)], "the installed mapsage watches", env=environment)
        self.assertRegex(out.splitlines()[-1], r"^experiment %d succeeded" % run)

        python = os.path.join(prefix, "lib", "python3", "dist-packages")
        out = self.run_checked([sys.executable, "-c", "import mapsage_client, sys; "
                                "print(mapsage_client.__file__); "
                                "print(mapsage_client.Client(sys.argv[1]).experiment(%d)['status'])" % run, url],
                               "the installed Python client", env=dict(environment, PYTHONPATH=python))
        self.assertEqual(out.splitlines(), [os.path.join(python, "mapsage_client.py"), "succeeded"])

    def check_layout(self, prefix, files_root=""):
        """What a prefix holds; the unit's paths are read inside `files_root`."""
        for program in PROGRAMS:
            self.assertTrue(os.access(os.path.join(prefix, "bin", program), os.X_OK), program)
            self.assertTrue(os.path.isfile(os.path.join(prefix, "share", "man", "man1", program + ".1")), program)
        for path in ("share/bash-completion/completions/mapsage", "share/zsh/vendor-completions/_mapsage",
                     "share/doc/mapsage/README.md", "share/doc/mapsage/docs/api.md", "share/doc/mapsage/docs/cli.md",
                     "share/doc/mapsage/docs/install.md", "share/doc/mapsage/docs/python.md",
                     "lib/python3/dist-packages/mapsage_client.py"):
            self.assertTrue(os.path.isfile(os.path.join(prefix, path)), path)
        examples = glob.glob(os.path.join(prefix, "share/doc/mapsage/examples/*.json"))
        self.assertTrue(examples, "the example configs are installed")
        with open(os.path.join(prefix, "share", "mapsage", "schema.sql")) as f, \
                open(os.path.join(SOURCE_DIR, "schema.sql")) as g:
            self.assertEqual(f.read(), g.read())
        unit = os.path.join(prefix, "lib", "systemd", "system", "mapsaged.service")
        settings, environment = unit_settings(unit)
        installed_prefix = prefix[len(files_root):] if files_root else prefix
        self.assertEqual(settings["ExecStart"], os.path.join(installed_prefix, "bin", "mapsaged"))
        self.assertEqual(environment["MAPSAGE_WORKER_BIN"], os.path.join(installed_prefix, "bin", "mapsage-worker"))
        for path in (settings["ExecStart"], environment["MAPSAGE_WORKER_BIN"]):
            self.assertTrue(os.access(files_root + path, os.X_OK), "the unit's %s is installed" % path)
        readme = settings["Documentation"].split("file://", 1)[1]
        self.assertTrue(os.path.isfile(files_root + readme), readme)
        self.assertEqual(settings["User"], "mapsage")
        return unit

    def test_cmake_install_prefix(self):
        prefix = os.path.join(self.directory, "prefix")
        self.run_checked(["cmake", "--install", BIN_DIR, "--prefix", prefix], "cmake --install")
        self.check_layout(prefix)
        self.check_installed_daemon(prefix)

    def test_debian_package(self):
        packages = os.path.join(self.directory, "packages")
        self.run_checked(["cpack", "--config", os.path.join(BIN_DIR, "CPackConfig.cmake"), "-G", "DEB",
                          "-B", packages], "cpack -G DEB")
        debs = glob.glob(os.path.join(packages, "*.deb"))
        self.assertEqual(len(debs), 1, debs)
        deb = debs[0]
        control = self.run_checked(["dpkg-deb", "--field", deb], "dpkg-deb --field")
        fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line)
        self.assertEqual(fields["Package"], "mapsage")
        self.assertEqual(fields["Version"], project_version())
        for dependency in ("passwd", "libmicrohttpd12", "libsqlite3-0", "libuv1", "libjansson4", "libcurl4",
                           "libopenblas0"):
            self.assertIn(dependency, fields["Depends"])
        self.assertIn("dataset-fashion-mnist", fields["Recommends"])

        # An empty root with a dpkg database and the accounts a base system has.
        root = os.path.join(self.directory, "root")
        for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
            os.makedirs(os.path.join(root, directory))
        for name, text in (("var/lib/dpkg/status", ""), ("var/lib/dpkg/available", ""),
                           ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                           ("etc/shadow", "root:*:19000:0:99999:7:::\n"), ("etc/gshadow", "root:*::\n")):
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        dpkg = ["dpkg", "--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"]
        if os.geteuid() != 0:
            dpkg = ["fakeroot"] + dpkg + ["--force-not-root"]
        self.run_checked(dpkg + ["--install", deb], "dpkg --install into a temporary root")
        status = self.run_checked(["dpkg-query", "--root=" + root, "-W", "-f=${Status} ${Version}", "mapsage"],
                                  "dpkg-query")
        self.assertEqual(status, "install ok installed %s" % project_version())

        unit = self.check_layout(os.path.join(root, "usr"), files_root=root)
        # postinst: the system user, its state directory, the unit enabled.
        with open(os.path.join(root, "etc", "passwd")) as f:
            users = {line.split(":")[0]: line.rstrip("\n").split(":") for line in f}
        self.assertIn("mapsage", users)
        user = users["mapsage"]
        self.assertLess(int(user[2]), 1000, "a system user")
        self.assertEqual(user[5:], ["/var/lib/mapsage", "/usr/sbin/nologin"])
        state = os.stat(os.path.join(root, "var", "lib", "mapsage"))
        self.assertEqual((state.st_uid, state.st_mode & 0o777), (int(user[2]), 0o750))
        wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants/mapsaged.service")
        self.assertEqual(os.readlink(wants), unit[len(root):])

        self.check_installed_daemon(os.path.join(root, "usr"))

        # Purge: the files, the enabling and the state go; the user stays (Debian's way).
        self.run_checked(dpkg + ["--purge", "mapsage"], "dpkg --purge")
        for path in ("usr/bin/mapsaged", "usr/lib/systemd/system/mapsaged.service", "var/lib/mapsage"):
            self.assertFalse(os.path.exists(os.path.join(root, path)), path)
        self.assertFalse(os.path.lexists(wants))


if __name__ == "__main__":
    unittest.main(verbosity=2)
