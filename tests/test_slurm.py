"""test_slurm.py — mapsaged --executor slurm against a real one-node Slurm cluster.

The cluster (tests/slurm_cluster.py: munged, slurmctld and slurmd from Debian's slurm-wlm,
in a temporary directory) is started once for the module; each test has its own daemon.
Runs are small synthetic ones; those an intervention must catch mid-run are made long
enough in steps (small batches), and every test waits on a condition with a deadline. A
cluster that cannot start fails the module, saying why: nothing is skipped."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from mapsage_testlib import Daemon, synthetic_config  # noqa: E402
from slurm_cluster import Cluster  # noqa: E402

CLUSTER = None


def setUpModule():
    global CLUSTER
    CLUSTER = Cluster()  # raises, with the daemons' logs, when it cannot start


def tearDownModule():
    if CLUSTER:
        CLUSTER.stop()


def long_config(name, epochs=6, **extra):
    """Hundreds of steps: a run that streams curves over a few epochs."""
    return synthetic_config(name, epochs=epochs, train_size=4096, batch_size=16, **extra)


# For a test that acts on a run in the middle (a requeue, a node set DOWN, a scancel): six
# epochs of long_config take 0.3 s in a RelWithDebInfo build, and such a run was seen to
# finish before the action took effect. 80 take about 4 s there (about 20 s under ASan): the
# action, taken once a first checkpoint is recorded, lands within a few hundred ms.
MID_RUN_EPOCHS = 80


def wait_for(what, condition, timeout=120, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("not within %d s: %s" % (timeout, what))


class SlurmTest(unittest.TestCase):
    max_jobs = 4

    def setUp(self):
        self.daemon = self.start_daemon()

    extra = ()

    def start_daemon(self, directory=None, port=0):
        # --workers 2: one OpenBLAS thread per job, so two jobs share the node's two CPUs.
        # A restarted daemon listens where its jobs' workers post (the --listen given last wins).
        daemon = Daemon(workers=2, directory=directory, environment=CLUSTER.environment(),
                        extra_args=["--executor", "slurm", "--slurm-poll-ms", "300",
                                    "--slurm-max-jobs", str(self.max_jobs)] + list(self.extra)
                        + (["--listen", "127.0.0.1:%d" % port] if port else []))
        daemon.owns_directory = True  # a restarted one takes over its killed predecessor's
        return daemon

    def tearDown(self):
        self.daemon.close()
        # Jobs a failed test left behind would hold the node for the next one.
        CLUSTER.run("scancel", "--me", check=False)

    def job(self, experiment_id):
        return self.daemon.experiment(experiment_id).get("job")

    def job_id(self, experiment_id):
        return wait_for("experiment %d's job id" % experiment_id,
                        lambda: (self.job(experiment_id) or {}).get("id"), timeout=60)

    def squeue(self, job_id):
        """(state, restarts) of a job as Slurm sees it, or None once it has forgotten it."""
        out = CLUSTER.run("squeue", "--noheader", "--states=all", "--jobs", job_id,
                          "--Format=State:|,RestartCnt:|", check=False).strip()
        if not out:
            return None
        state, restarts = out.split("|")[:2]
        return state, int(restarts)

    def wait_running_with_checkpoint(self, experiment_id):
        """Running (its worker claimed the run) with at least one checkpoint recorded."""
        return wait_for("experiment %d running with a checkpoint" % experiment_id,
                        lambda: (lambda e: e if e["status"] == "running" and e.get("checkpoints") else None)(
                            self.daemon.experiment(experiment_id)), timeout=120, interval=0.05)

    def release(self, job_id):
        # A requeued job waits (BeginTime) before it may start again; on this idle test
        # cluster there is nothing to wait for.
        wait_for("job %s pending again" % job_id,
                 lambda: (self.squeue(job_id) or ("",))[0] == "PENDING", timeout=60)
        CLUSTER.run("scontrol", "update", "jobid=%s" % job_id, "starttime=now")

    def curves(self, experiment_id):
        status, _, body = self.daemon.get("/api/experiments/%d/metrics?names=loss/total,test/accuracy,test/loss"
                                          % experiment_id)
        self.assertEqual(200, status, body)
        return body

    # -----------------------------------------------------------------------------------

    def test_a_run_trains_through_slurm_and_its_curves_stream_live(self):
        d = self.daemon
        # Long enough to be still running when the test reads its first metric (the worker
        # posts every 250 ms; six epochs take 0.3 s in a non-sanitized build).
        experiment_id = d.submit(long_config("through-slurm", epochs=30,
                                             resources={"cpus": 1, "memory": "512M", "time": "00:10:00"}))
        stream = d.stream(experiment_id)
        metric_while_running = None
        steps = []
        for event in stream:
            if event["event"] == "metric":
                steps.append(event["data"]["step"])
                if metric_while_running is None:
                    metric_while_running = d.experiment(experiment_id)["status"]
            if event["event"] == "end":
                self.assertEqual("succeeded", event["data"]["status"], event["data"])
                break
        stream.close()
        self.assertEqual("running", metric_while_running)  # live, not replayed at the end
        self.assertTrue(steps)
        self.assertEqual(list(range(1, len(steps) + 1)), steps)
        experiment = d.experiment(experiment_id)
        self.assertEqual("succeeded", experiment["status"])
        self.assertEqual(1, experiment["attempts"])
        job = wait_for("the job COMPLETED", lambda: (lambda j: j if j["state"] == "COMPLETED" else None)(
            self.job(experiment_id)), timeout=60)
        self.assertEqual(CLUSTER.node, job["node"])
        # The script: kept in the run's directory, the resources as sbatch options, the
        # worker told where the daemon is; the secret only in a 0600 file, never on a
        # command line Slurm shows.
        run_dir = os.path.join(d.directory, "data", "experiments", str(experiment_id))
        self.assertEqual(os.path.realpath(os.path.join(run_dir, "job.sh")), job["script"])
        with open(job["script"]) as f:
            script = f.read()
        for option in ("#SBATCH --cpus-per-task=1", "#SBATCH --mem=512M", "#SBATCH --time=0-00:10:00",
                       "--server '%s'" % d.url, "--experiment %d" % experiment_id):
            self.assertIn(option, script)
        with open(os.path.join(run_dir, "job.secret")) as f:
            secret = f.read().strip()
        self.assertEqual(64, len(secret))
        self.assertNotIn(secret, script)
        self.assertEqual(0o600, stat.S_IMODE(os.stat(os.path.join(run_dir, "job.secret")).st_mode))
        shown = CLUSTER.run("scontrol", "show", "job", job["id"], check=False)
        self.assertNotIn(secret, shown)
        self.assertNotIn(secret, json.dumps(d.get("/api/experiments/%d" % experiment_id)[2]))
        # Someone else posting for the run without the job's secret is refused.
        status, _, body = d.request("POST", "/api/experiments/%d/events" % experiment_id,
                                    '{"event": "log", "level": "info", "message": "x"}\n',
                                    {"Content-Type": "application/x-ndjson"})
        self.assertIn(status, (403, 409), body)

    def test_max_jobs_holds_the_rest_back_and_a_student_waits_for_its_teacher(self):
        self.daemon.close()
        self.max_jobs = 1
        self.daemon = d = self.start_daemon()
        teacher = d.submit(long_config("teacher", epochs=3))
        student = d.submit(synthetic_config("student", epochs=None, teacher={"experiment": teacher},
                                            stages=[{"name": "kd", "epochs": 2, "task_weight": 0.5,
                                                     "distill_weight": 0.5}]))
        other = d.submit(synthetic_config("other", epochs=1))
        self.job_id(teacher)
        # One job at a time: the others have none while the teacher's may still run.
        deadline = time.time() + 180
        while d.experiment(teacher)["status"] != "succeeded":
            self.assertIsNone(self.job(student))
            self.assertIsNone(self.job(other))
            self.assertLess(time.time(), deadline, "the teacher did not finish")
            time.sleep(0.1)
        for experiment_id in (student, other):
            experiment = d.wait_status(experiment_id, ("succeeded", "failed", "cancelled"), timeout=180)
            self.assertEqual("succeeded", experiment["status"], experiment.get("error"))
        # The student learnt from the teacher's checkpoint on the shared directory.
        with open(os.path.join(d.directory, "data", "experiments", str(student), "job.config.json")) as f:
            given = json.load(f)
        self.assertTrue(given["teacher"]["checkpoint"].startswith(
            os.path.realpath(os.path.join(d.directory, "data", "experiments", str(teacher)))))

    def test_a_studys_runs_go_to_the_cluster_within_max_jobs(self):
        self.daemon.close()
        self.max_jobs = 2
        self.daemon = d = self.start_daemon()
        dataset = {"name": "synthetic", "train_size": 512, "test_size": 256, "val_size": 64}
        model = {"layers": [{"type": "linear", "out": 16, "name": "fc1"}, {"type": "relu"},
                            {"type": "linear", "out": 10}]}
        spec = {"name": "on-slurm", "seeds": 2,
                "base": {"dataset": dataset, "model": model, "batch_size": 64,
                         "stages": [{"name": "main", "epochs": 2}],
                         "resources": {"cpus": 1, "time": "00:10:00"}},
                "teacher": {"config": {"dataset": dataset, "model": model, "batch_size": 64, "epochs": 2}},
                "arms": {"kd": {"temperature": {"schedule": "constant", "start": 4},
                                "stages": [{"name": "main", "epochs": 2, "task_weight": 0.7,
                                            "distill_weight": 0.3}]}}}
        status, _, created = d.request("POST", "/api/studies", spec)
        self.assertEqual(201, status, created)
        deadline, most = time.time() + 240, 0
        while True:
            status, _, study = d.get("/api/studies/%d" % created["id"])
            self.assertEqual(200, status, study)
            _, _, active = d.request("POST", "/api/sql", {"sql": "SELECT count(*) FROM jobs WHERE ended_at IS NULL"})
            most = max(most, active["rows"][0][0])
            self.assertLessEqual(most, 2)  # --slurm-max-jobs
            if study["status"] in ("succeeded", "failed", "cancelled"):
                break
            self.assertLess(time.time(), deadline, study.get("counts"))
            time.sleep(0.1)
        self.assertEqual("succeeded", study["status"], study.get("error"))
        roles = {run["id"]: run["role"] for run in study["runs"]}
        self.assertEqual(5, len(roles))  # the teacher; per seed, the arm and its baseline
        for experiment_id, role in roles.items():
            experiment = d.experiment(experiment_id)
            self.assertEqual("succeeded", experiment["status"])
            with open(experiment["job"]["script"]) as f:
                script = f.read()
            # base.resources is every arm's and baseline's; the teacher's config is its own.
            self.assertEqual(role != "teacher", "#SBATCH --time=0-00:10:00" in script, (role, script))

    def test_scancel_from_outside_cancels_and_cancel_in_mapsage_scancels(self):
        d = self.daemon
        outside = d.submit(long_config("scancelled", epochs=MID_RUN_EPOCHS))
        job_id = self.job_id(outside)
        d.wait_status(outside, ("running",), timeout=120)
        CLUSTER.run("scancel", job_id)
        experiment = d.wait_status(outside, ("cancelled", "failed", "succeeded"), timeout=120)
        self.assertEqual("cancelled", experiment["status"], experiment.get("error"))
        self.assertIn("scancel", experiment["error"])

        inside = d.submit(long_config("cancelled-here", epochs=MID_RUN_EPOCHS))
        job_id = self.job_id(inside)
        d.wait_status(inside, ("running",), timeout=120)
        status, _, body = d.request("POST", "/api/experiments/%d/cancel" % inside)
        self.assertIn(status, (200, 202), body)
        self.assertEqual("cancelled", d.wait_status(inside, ("cancelled",), timeout=60)["status"])
        self.assertIn("scancel %s" % job_id, d.log())
        # The worker learns of the cancel from the answer to its next post and stops: when
        # that is before scancel reaches slurmctld, Slurm ends the job FAILED (exit 3), not
        # CANCELLED. Either way the job ends.
        state = wait_for("Slurm ended job %s" % job_id, lambda: (lambda q: q[0] if q and q[0] in (
            "CANCELLED", "FAILED") else None)(self.squeue(job_id) or ("CANCELLED",)), timeout=60)
        if state == "FAILED":
            with open(os.path.join(d.directory, "data", "experiments", str(inside), "job.log")) as f:
                self.assertIn("the daemon takes no more events", f.read())

    def test_requeue_resumes_from_the_checkpoint_with_the_same_result(self):
        d = self.daemon
        config = long_config("requeued", epochs=MID_RUN_EPOCHS)
        requeued = d.submit(config)
        reference = d.submit(dict(config, name="uninterrupted"))
        job_id = self.job_id(requeued)
        self.wait_running_with_checkpoint(requeued)
        CLUSTER.run("scontrol", "requeue", job_id)
        wait_for("the run interrupted", lambda: d.experiment(requeued)["status"] == "interrupted"
                 or d.experiment(requeued)["attempts"] >= 2, timeout=60)
        self.release(job_id)
        for experiment_id in (requeued, reference):
            experiment = d.wait_status(experiment_id, ("succeeded", "failed", "cancelled"), timeout=240)
            self.assertEqual("succeeded", experiment["status"], experiment.get("error"))
        experiment = d.experiment(requeued)
        self.assertEqual(2, experiment["attempts"])
        # The same job, run again: no duplicate. Only if Slurm ended the requeued job before
        # its run was claimed again (a late batch completion taken for the new run's end,
        # docs/slurm.md) is a second job submitted, once the first has ended.
        def jobs():
            status, _, rows = d.request("POST", "/api/sql", {"sql": "SELECT job_id, state, ended_at IS NOT NULL "
                                                                    "FROM jobs WHERE experiment_id = %d ORDER BY id"
                                                                    % requeued})
            self.assertEqual(200, status, rows)
            return rows["rows"]
        rows = wait_for("the last job COMPLETED", lambda: (lambda r: r if r and r[-1][1:] == ["COMPLETED", 1]
                                                           else None)(jobs()), timeout=60)
        self.assertEqual(job_id, rows[0][0])
        self.assertIn(rows, ([[job_id, "COMPLETED", 1]], [[job_id, "FAILED", 1], [experiment["job"]["id"],
                                                                                  "COMPLETED", 1]]))
        status, _, log = d.get("/api/experiments/%d/log" % requeued)
        self.assertIn("requeued", log)
        with open(experiment["job"]["script"]) as f:
            self.assertIn("--resume", f.read())
        with open(os.path.join(d.directory, "data", "experiments", str(requeued), "job.log")) as f:
            self.assertIn("resum", f.read())
        ours, theirs = self.curves(requeued), self.curves(reference)
        self.assertTrue(ours["loss/total"]["value"])
        self.assertEqual(theirs["loss/total"], ours["loss/total"])
        self.assertEqual(theirs["test/accuracy"], ours["test/accuracy"])
        self.assertEqual(theirs["test/loss"], ours["test/loss"])

    def test_a_daemon_killed_while_a_job_runs_reattaches_without_a_duplicate(self):
        d = self.daemon
        experiment_id = d.submit(long_config("reattached", epochs=12))
        job_id = self.job_id(experiment_id)
        d.wait_status(experiment_id, ("running",), timeout=120)
        d.kill(signal.SIGKILL)
        d.stopped = True
        self.daemon = d = self.start_daemon(directory=d.directory, port=d.port)
        experiment = d.wait_status(experiment_id, ("succeeded", "failed", "cancelled"), timeout=240)
        self.assertEqual("succeeded", experiment["status"], experiment.get("error"))
        self.assertIn("reattaching to Slurm job %s" % job_id, d.log())
        status, _, rows = d.request("POST", "/api/sql", {"sql": "SELECT job_id FROM jobs WHERE experiment_id = %d"
                                                                % experiment_id})
        self.assertEqual(200, status, rows)
        self.assertEqual([[job_id]], rows["rows"])  # one job, never submitted again
        self.assertEqual(job_id, experiment["job"]["id"])

    def test_a_restarted_daemon_submits_again_a_job_slurm_forgot(self):
        self.daemon.close()
        self.extra = ("--slurm-extra", "--hold")
        self.daemon = d = self.start_daemon()
        experiment_id = d.submit(synthetic_config("forgotten"))
        self.job_id(experiment_id)
        d.kill(signal.SIGKILL)
        d.stopped = True
        CLUSTER.restart_controller()  # every job forgotten
        self.extra = ()
        self.daemon = d = self.start_daemon(directory=d.directory, port=d.port)
        experiment = d.wait_status(experiment_id, ("succeeded", "failed", "cancelled"), timeout=180)
        self.assertEqual("succeeded", experiment["status"], experiment.get("error"))
        wait_for("the new job COMPLETED", lambda: self.job(experiment_id)["state"] == "COMPLETED", timeout=60)
        status, _, rows = d.request("POST", "/api/sql", {"sql": "SELECT state FROM jobs WHERE experiment_id = %d "
                                                                "ORDER BY id" % experiment_id})
        self.assertEqual(200, status, rows)
        self.assertEqual([["VANISHED"], ["COMPLETED"]], rows["rows"])
        self.assertIn("Slurm no longer knows job", d.log())

    def test_a_job_that_cannot_start_fails_with_slurms_reason(self):
        d = self.daemon
        nowhere = d.submit(synthetic_config("no-partition", resources={"partition": "nowhere"}))
        experiment = d.wait_status(nowhere, ("failed", "succeeded"), timeout=60)
        self.assertEqual("failed", experiment["status"])
        self.assertIn("sbatch refused the job", experiment["error"])
        self.assertIn("invalid partition", experiment["error"].lower())

        too_long = d.submit(synthetic_config("too-long", resources={"partition": "short", "time": "00:05:00"}))
        experiment = d.wait_status(too_long, ("failed", "succeeded"), timeout=60)
        self.assertEqual("failed", experiment["status"])
        self.assertIn("PartitionTimeLimit", experiment["error"])
        job_id = experiment["job"]["id"]
        wait_for("job %s cancelled" % job_id,
                 lambda: (self.squeue(job_id) or ("CANCELLED",))[0] == "CANCELLED", timeout=60)

    def test_a_held_job_shows_slurms_reason_and_one_that_cannot_see_the_data_directory_says_so(self):
        self.daemon.close()
        self.extra = ("--slurm-extra", "--hold")
        self.daemon = d = self.start_daemon()
        experiment_id = d.submit(synthetic_config("held"))
        job_id = self.job_id(experiment_id)
        # Pending: the run is queued, with Slurm's reason.
        job = wait_for("the job held", lambda: (lambda j: j if j.get("reason") == "JobHeldUser" else None)(
            self.job(experiment_id)), timeout=60)
        self.assertEqual("PENDING", job["state"])
        self.assertEqual("queued", d.experiment(experiment_id)["status"])
        # A node that does not see the shared directory sees no job.secret there either.
        os.unlink(os.path.join(d.directory, "data", "experiments", str(experiment_id), "job.secret"))
        CLUSTER.run("scontrol", "release", job_id)
        experiment = d.wait_status(experiment_id, ("failed", "succeeded"), timeout=120)
        self.assertEqual("failed", experiment["status"])
        self.assertIn("its Slurm job %s ended FAILED" % job_id, experiment["error"])
        self.assertIn("is not visible on %s" % CLUSTER.node, experiment["error"])
        self.assertIn("shared storage", experiment["error"])

    def test_a_node_set_down_mid_run_requeues_the_job(self):
        d = self.daemon
        experiment_id = d.submit(long_config("node-down", epochs=MID_RUN_EPOCHS))
        job_id = self.job_id(experiment_id)
        self.wait_running_with_checkpoint(experiment_id)
        CLUSTER.run("scontrol", "update", "nodename=%s" % CLUSTER.node, "state=down", "reason=mapsage-test")
        try:
            # Interrupted, or already claimed again: the requeued attempt's worker may post its
            # last checkpoint after the daemon saw the requeue, and claim the run (attempt 2).
            wait_for("the run interrupted", lambda: (lambda e: e["status"] == "interrupted" or e["attempts"] >= 2)(
                d.experiment(experiment_id)), timeout=60, interval=0.05)
        finally:
            # ReturnToService=2 may have brought it back already, when its slurmd registered.
            CLUSTER.run("scontrol", "update", "nodename=%s" % CLUSTER.node, "state=resume", check=False)
            CLUSTER.wait_idle(60)
        self.release(job_id)
        experiment = d.wait_status(experiment_id, ("succeeded", "failed", "cancelled"), timeout=240)
        self.assertEqual("succeeded", experiment["status"], experiment.get("error"))
        self.assertEqual(2, experiment["attempts"])
        self.assertEqual(job_id, experiment["job"]["id"])


if __name__ == "__main__":
    unittest.main()
