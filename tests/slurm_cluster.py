"""slurm_cluster.py — a real one-node Slurm cluster in a temporary directory, for the tests.

Debian's slurm-wlm (22.05) and munge, started by hand as root: munged with its own key and
socket, slurmctld and slurmd with their own slurm.conf and ports (proctrack/linuxproc,
task/none, no accounting: nothing needs systemd, cgroups or slurmdbd). The node is this
machine, with its real CPUs and memory (`slurmd -C`). The client commands (sbatch, squeue,
scontrol, scancel) find the cluster through SLURM_CONF, which `environment()` sets; the
daemons are stopped by their pids. A cluster that cannot start raises ClusterError saying
why, with the daemons' logs: the tests fail on it, they never skip."""
import os
import shutil
import socket
import subprocess
import tempfile
import time


class ClusterError(RuntimeError):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware():
    """NodeName=… CPUs=… RealMemory=… as slurmd sees this machine."""
    output = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(item.split("=", 1) for item in output.split() if "=" in item)
    if "NodeName" not in fields or "CPUs" not in fields:
        raise ClusterError("slurmd -C did not describe this machine: %r" % output)
    return fields


class Cluster:
    """slurmctld + slurmd + munged for one node; a context manager."""

    def __init__(self, start_timeout=60, partition="debug"):
        if os.geteuid() != 0:
            raise ClusterError("the test cluster runs slurmd as root (SlurmdUser=root): run the tests as root")
        for program in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo"):
            if shutil.which(program) is None:
                raise ClusterError("%s is not installed: install slurmctld, slurmd, slurm-client and munge "
                                   "(scripts/install-deps --tests)" % program)
        self.directory = tempfile.mkdtemp(prefix="mapsage-slurm-")
        os.chmod(self.directory, 0o755)  # jobs read their scripts as root anyway; munge checks modes
        self.partition = partition
        self.pids = {}
        self.hardware = node_hardware()
        self.node = self.hardware["NodeName"]
        try:
            self.start_munge()
            self.write_conf()
            self.start_slurm()
            self.wait_idle(start_timeout)
        except BaseException:
            self.stop()
            raise

    def path(self, *parts):
        return os.path.join(self.directory, *parts)

    def environment(self, base=None):
        environment = dict(os.environ if base is None else base)
        environment["SLURM_CONF"] = self.conf
        return environment

    def logs(self):
        text = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            try:
                with open(self.path(name), errors="replace") as f:
                    text.append("--- %s (tail)\n%s" % (name, "".join(f.readlines()[-30:])))
            except OSError:
                text.append("--- %s: none" % name)
        return "\n".join(text)

    def start_munge(self):
        os.makedirs(self.path("munge"))
        os.chmod(self.path("munge"), 0o755)  # the socket reachable by every user, as munged asks
        key = self.path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.munge_socket = self.path("munge", "munge.socket")
        result = subprocess.run(
            ["munged", "--force", "--socket=" + self.munge_socket, "--key-file=" + key,
             "--pid-file=" + self.path("munge", "munged.pid"), "--log-file=" + self.path("munged.log"),
             "--seed-file=" + self.path("munge", "munged.seed")],
            capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise ClusterError("munged did not start (exit %d): %s\n%s"
                               % (result.returncode, result.stderr.strip(), self.logs()))
        self.pids["munged"] = self.read_pid(self.path("munge", "munged.pid"), "munged", 20)

    def write_conf(self):
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        hw = self.hardware
        self.conf = self.path("slurm.conf")
        for name in ("state", "spool"):
            os.makedirs(self.path(name))
        lines = [
            "ClusterName=mapsagetest",
            "SlurmctldHost=%s(127.0.0.1)" % self.node,
            "SlurmctldPort=%d" % self.ctld_port,
            "SlurmdPort=%d" % self.slurmd_port,
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=socket=%s" % self.munge_socket,
            "StateSaveLocation=%s" % self.path("state"),
            "SlurmdSpoolDir=%s" % self.path("spool"),
            "SlurmctldPidFile=%s" % self.path("slurmctld.pid"),
            "SlurmdPidFile=%s" % self.path("slurmd.pid"),
            "SlurmctldLogFile=%s" % self.path("slurmctld.log"),
            "SlurmdLogFile=%s" % self.path("slurmd.log"),
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            # A cancel or a requeue: SIGTERM, then SIGKILL this many seconds later (default 30).
            "KillWait=5",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "MinJobAge=300",
            "NodeName=%s NodeAddr=127.0.0.1 CPUs=%s Boards=%s SocketsPerBoard=%s CoresPerSocket=%s "
            "ThreadsPerCore=%s RealMemory=%s State=UNKNOWN"
            % (self.node, hw["CPUs"], hw.get("Boards", 1), hw.get("SocketsPerBoard", 1),
               hw.get("CoresPerSocket", hw["CPUs"]), hw.get("ThreadsPerCore", 1), hw.get("RealMemory", 1000)),
            "PartitionName=%s Nodes=%s Default=YES MaxTime=INFINITE State=UP" % (self.partition, self.node),
            # A job asking for more time than this can never start here (PartitionTimeLimit).
            "PartitionName=short Nodes=%s MaxTime=1 State=UP" % self.node,
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        # slurmd looks for cgroup.conf beside slurm.conf; with these plugins it needs none of
        # its settings, but an empty one keeps it from reading the system's.
        open(self.path("cgroup.conf"), "w").close()

    def start_slurm(self):
        environment = self.environment()
        for program in ("slurmctld", "slurmd"):
            arguments = [program, "-f", self.conf]
            if program == "slurmctld":
                arguments.append("-c")  # a clean start: no jobs from a former state
            result = subprocess.run(arguments, capture_output=True, text=True, env=environment, timeout=60)
            if result.returncode != 0:
                raise ClusterError("%s did not start (exit %d): %s\n%s"
                                   % (program, result.returncode, result.stderr.strip(), self.logs()))
            self.pids[program] = self.read_pid(self.path(program + ".pid"), program, 30)

    def read_pid(self, path, program, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise ClusterError("%s wrote no pid file %s within %d s\n%s" % (program, path, timeout, self.logs()))

    def restart_controller(self, timeout=60):
        """slurmctld stopped and started again from a clean state: it forgets every job, as a
        controller that lost its StateSaveLocation would."""
        pid = self.pids.pop("slurmctld")
        os.kill(pid, 15)
        deadline = time.time() + timeout
        while time.time() < deadline and os.path.exists("/proc/%d" % pid):
            time.sleep(0.1)
        if os.path.exists(self.path("slurmctld.pid")):  # it removes it itself as it stops
            os.unlink(self.path("slurmctld.pid"))
        result = subprocess.run(["slurmctld", "-f", self.conf, "-c"], capture_output=True, text=True,
                                env=self.environment(), timeout=60)
        if result.returncode != 0:
            raise ClusterError("slurmctld did not start again (exit %d): %s\n%s"
                               % (result.returncode, result.stderr.strip(), self.logs()))
        self.pids["slurmctld"] = self.read_pid(self.path("slurmctld.pid"), "slurmctld", 30)
        self.wait_idle(timeout)

    def run(self, *arguments, check=True, timeout=60):
        result = subprocess.run(list(arguments), capture_output=True, text=True, env=self.environment(),
                                timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError("%s failed (exit %d): %s" % (" ".join(arguments), result.returncode,
                                                             result.stderr.strip()))
        return result.stdout

    def node_state(self):
        return self.run("sinfo", "-h", "-N", "-n", self.node, "-p", self.partition, "-o", "%T", check=False).strip()

    def wait_idle(self, timeout):
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for program, pid in self.pids.items():
                if not os.path.exists("/proc/%d" % pid):
                    raise ClusterError("%s (pid %d) died\n%s" % (program, pid, self.logs()))
            state = self.node_state()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.25)
        raise ClusterError("node %s is not idle after %d s (sinfo says %r)\n%s"
                           % (self.node, timeout, state, self.logs()))

    def drain(self, timeout=60):
        """Cancels every job and waits for their steps to end, so no slurmstepd outlives the
        slurmd that started it."""
        self.run("scancel", "--me", check=False)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "--noheader", "--me", "--states=RUNNING,COMPLETING,CONFIGURING",
                            check=False).strip():
                return
            time.sleep(0.2)

    def stop(self):
        if "slurmctld" in self.pids and "slurmd" in self.pids:
            try:
                self.drain()
            except (OSError, subprocess.SubprocessError):
                pass  # stopping anyway
        for program in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(program, None)
            if pid is None:
                continue
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            deadline = time.time() + 30
            while time.time() < deadline and os.path.exists("/proc/%d" % pid):
                time.sleep(0.1)
            if os.path.exists("/proc/%d" % pid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
