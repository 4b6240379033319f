"""A real Slurm on this machine, one node or several, for the integration tests and by hand.

``SlurmCluster(root, nodes=1).start()`` writes ``root/slurm.conf`` (cons_tres, process groups for tracking and
no cgroup plugins, so it runs inside a container; ``gpus_per_node`` GPUs per node declared as GRES, backed by
ordinary files), a munge key, starts ``munged``, ``slurmctld`` and one ``slurmd`` per node in the foreground as
child processes, and waits until ``sinfo`` shows every node idle; ``stop()`` cancels what is still queued, ends
the daemons by their process ids and kills any job process left behind. Commands find the cluster through
``SLURM_CONF`` (``cluster.env``). There is no slurmdbd: job records come from the job-completion log
(``JobCompType=jobcomp/filetxt``), which ``sacct --completion`` reads; a requeued job leaves one record per run.

One node is called ``localhost``. Several nodes are ``node1``, ``node2``, ... at ``127.0.0.11``, ``127.0.0.12``,
... (Slurm's multiple-slurmd support: ``slurmd -N <node>``, each on its own port), every ``slurmd`` in its own UTS
and mount namespace with its node's hostname and a private ``/etc/hosts`` naming all nodes, so a job's tasks see
different hosts and reach each other by name, as on a cluster. That needs root (``unshare``).

By hand (Debian/Ubuntu: ``apt-get install -y slurm-wlm munge``; root, or a user that owns the spool)::

    python -m tests.support.slurm_cluster /tmp/slurm [nodes]   # runs until Ctrl-C (or SIGTERM)
    export SLURM_CONF=/tmp/slurm/slurm.conf                    # in another shell: sinfo, sbatch, sacct -c ...
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.runs import subprocess_env

DAEMONS = ("munged", "slurmctld", "slurmd")
STEPD_TITLE = re.compile(r"slurmstepd: \[(\d+)")  # slurmstepd names its job in its title, not its environment
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "sacct", "scancel")


def missing_binaries(nodes: int = 1) -> list[str]:
    """The programs this machine lacks for a cluster of ``nodes`` nodes (empty when it can start)."""
    needed = (*DAEMONS, *CLIENTS, "mungekey", *(("unshare", "mount", "hostname") if nodes > 1 else ()))
    return [name for name in needed if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JobProcess:
    """A process of a cluster, wherever it runs (read from /proc): a job's, its slurmstepd, or a daemon."""

    pid: int
    job_id: str  # "" for a daemon
    node: str  # SLURMD_NODENAME
    task: str  # SLURM_PROCID (the batch shell and srun have the first task's)
    command: str


class SlurmCluster:
    """One controller and ``nodes`` compute nodes, with everything under ``root``."""

    def __init__(self, root: Path, nodes: int = 1, cpus: int | None = None, gpus_per_node: int = 2) -> None:
        self.root = Path(root).resolve()
        self.nodes = nodes
        if nodes == 1:
            self.names, self.addresses = ["localhost"], ["127.0.0.1"]
        else:
            self.names = [f"node{i}" for i in range(1, nodes + 1)]
            self.addresses = [f"127.0.0.{10 + i}" for i in range(1, nodes + 1)]
        # One node: at least two CPUs (the tests run two srun tasks of one CPU each on it). Several: the machine's
        # CPUs shared out, at least one each (slurmd takes the configured count, whatever the hardware).
        self.cpus = cpus or (max(2, os.cpu_count() or 1) if nodes == 1 else max(1, (os.cpu_count() or 1) // nodes))
        self.gpus_per_node = gpus_per_node
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "log" / "jobcomp.txt"
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands (and for jobs submitted from it)."""
        return subprocess_env(SLURM_CONF=str(self.conf))

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log", "gpus"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)  # munged's socket is in it: job steps must reach it
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(128))
            key.chmod(0o400)
        # GPUs without GPUs: gres.conf points at ordinary files (slurmd logs that they are not devices). The
        # controller then grants or refuses --gpus-per-node requests as on a GPU cluster; the tasks run on CPU.
        for i in range(self.gpus_per_node):
            (self.root / "gpus" / f"gpu{i}").touch()
        files = f"gpu[0-{self.gpus_per_node - 1}]" if self.gpus_per_node > 1 else "gpu0"
        gres = f"Name=gpu File={self.root}/gpus/{files}\n"  # every node: the same files
        (self.root / "gres.conf").write_text("AutoDetect=off\n" + (gres if self.gpus_per_node else ""))
        (self.root / "hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in zip(self.names, self.addresses))
        )
        self.conf.write_text("\n".join([*self._controller_lines(), *self._node_lines(), ""]))

    def _controller_lines(self) -> list[str]:
        user, r = getpass.getuser(), self.root
        return [
            "ClusterName=local",
            # Job ids of their own (1, 1001, ...): Lightning takes a job's rendezvous port from its id (15000 + its
            # last four digits), so jobs of a one-node and a two-node cluster running at once must differ.
            f"FirstJobId={1000 * self.nodes - 999}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={_free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r}/munge/munge.socket",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool/%n",  # %n: the node's name, so that every slurmd keeps its own files
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
            # Inside a container: track job processes by process group, no cgroup plugins.
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",  # CPUs are the only consumable: no memory accounting needed
            "GresTypes=gpu",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "JobRequeue=1",
            # No slurmdbd: job records (state, exit code, one per run of a requeued job) for `sacct -c`.
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            # Fast for tests: schedule on every event, short grace between SIGTERM and SIGKILL.
            "SchedulerType=sched/builtin",
            "KillWait=5",
            "MinJobAge=3600",  # `scontrol show job` keeps finished jobs this long
            "InactiveLimit=0",
            "SlurmdParameters=config_overrides",  # take CPUs and GPUs from here, whatever the machine reports
        ]

    def _node_lines(self) -> list[str]:
        gres = f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        lines = [
            f"NodeName={name} NodeHostname={name} NodeAddr={addr} Port={_free_port()} CPUs={self.cpus}{gres}"
            " State=UNKNOWN"
            for name, addr in zip(self.names, self.addresses)
        ]
        return [*lines, f"PartitionName=local Nodes={','.join(self.names)} Default=YES MaxTime=INFINITE State=UP"]

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self._procs[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    def _slurmd_command(self, node: str) -> list[str]:
        slurmd = [_binary("slurmd"), "-D", "-N", node, "-f", str(self.conf)]
        if self.nodes == 1:
            return slurmd
        # Its own hostname and /etc/hosts, in namespaces that only this slurmd and its job steps see; `exec`
        # keeps the process id, so stop() ends slurmd itself. The network is shared: nodes differ by address.
        script = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
        unshare = [_binary("unshare"), "--uts", "--mount", "--propagation", "private"]
        return [*unshare, "sh", "-c", script, "sh", node, str(self.root / "hosts"), *slurmd]

    def start(self, timeout: float = 60) -> "SlurmCluster":
        """Start the daemons and wait for idle nodes; raises RuntimeError (daemons stopped) if it cannot."""
        if self.nodes > 1 and os.geteuid() != 0:
            raise RuntimeError("several nodes need root: each slurmd runs in its own UTS and mount namespace")
        self.write_config()
        m = self.root / "munge"
        try:
            self._spawn(
                "munged",
                [
                    _binary("munged"),
                    "--foreground",
                    "--force",
                    f"--socket={m}/munge.socket",
                    f"--key-file={m}/munge.key",
                    f"--pid-file={m}/munged.pid",
                    f"--log-file={m}/munged.log",
                    f"--seed-file={m}/munged.seed",
                ],
            )
            self._wait(lambda: (m / "munge.socket").exists(), 10, "munged did not create its socket")
            self._spawn("slurmctld", [_binary("slurmctld"), "-D", "-f", str(self.conf)])
            for node in self.names:
                self._spawn(f"slurmd-{node}", self._slurmd_command(node))
            self._wait(self._nodes_idle, timeout, "the nodes did not become idle")
        except Exception:
            self.stop()
            raise
        return self

    def _nodes_idle(self) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.split() == ["idle"] * self.nodes

    def log_tail(self, name: str, lines: int = 5) -> str:
        texts = [p.read_text(errors="replace") for p in (self.root / "log").glob(f"{name}*") if p.is_file()]
        return " | ".join("\n".join(texts).strip().splitlines()[-lines:])

    @staticmethod
    def _wait(condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.5)

    def stop(self, timeout: float = 30) -> list[JobProcess]:
        """Cancel every job still known to the controller, wait for them to leave, end the daemons, then kill any
        process of the cluster still alive (a job's, a slurmstepd); returns those (none, unless one outlived its
        job)."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(
                ["scancel", "--full", "--quiet", f"--user={getpass.getuser()}"], env=self.env, capture_output=True
            )
            try:
                self._wait(
                    lambda: not self.run("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%i").strip(),
                    timeout,
                    "jobs still running",
                )
            except (RuntimeError, subprocess.CalledProcessError):
                pass  # stopping anyway: the daemons must not outlive the tests
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            if proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        try:  # slurmstepd and job processes end soon after slurmd
            self._wait(lambda: not self.processes(), 10, "processes left")
        except RuntimeError:
            pass
        left = self.processes()
        for proc in left:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def processes(self) -> list[JobProcess]:
        """The live processes of this cluster, on every node: those whose environment names its config (the daemons
        and their slurmstepd, which start with it, and every job process: a job inherits the submitter's
        ``SLURM_CONF``)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "environ").read_bytes()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            env = dict(item.partition("=")[::2] for item in raw.decode(errors="replace").split("\0") if item)
            if env.get("SLURM_CONF") != str(self.conf):
                continue
            stepd = STEPD_TITLE.match(command)
            job_id = env.get("SLURM_JOB_ID") or (stepd.group(1) if stepd else "")
            found.append(
                JobProcess(
                    int(entry.name), job_id, env.get("SLURMD_NODENAME", ""), env.get("SLURM_PROCID", ""), command
                )
            )
        return found

    def job_processes(self, job_id: str) -> list[JobProcess]:
        """The live processes of job ``job_id``, its slurmstepd included, on every node."""
        return [proc for proc in self.processes() if proc.job_id == str(job_id)]

    def run(self, *cmd: str) -> str:
        """A Slurm command against this cluster; its stdout (raises CalledProcessError on failure)."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True).stdout

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, ...)."""
        fields = {}
        for item in self.run("scontrol", "show", "job", "-o", str(job_id)).split():
            key, _, value = item.partition("=")
            fields[key] = value
        return fields

    def records(self, job_id: str) -> list[dict[str, str]]:
        """One record per finished run of the job, from ``sacct --completion``: JobID, State, ExitCode, Start, End,
        NodeList."""
        fields = ("JobID", "State", "ExitCode", "Start", "End", "NodeList")
        out = self.run("sacct", "--completion", "-j", str(job_id), "-P", "-n", "-o", ",".join(fields))
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def main(root: str, nodes: str = "1") -> None:
    cluster = SlurmCluster(Path(root), nodes=int(nodes)).start()
    print(f"Slurm is up: export SLURM_CONF={cluster.conf}   (Ctrl-C or SIGTERM stops it)", flush=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main(*sys.argv[1:3] or ["/tmp/slurm"])
