"""A one-node Slurm on localhost, for the integration tests and by hand.

``SlurmCluster(root).start()`` writes ``root/slurm.conf`` (this machine's CPUs, cons_tres, process groups for
tracking and no cgroup plugins, so it runs inside a container), a munge key, starts ``munged``, ``slurmctld``
and ``slurmd`` in the foreground as child processes, and waits until ``sinfo`` shows the node idle; ``stop()``
cancels what is still queued and ends the three daemons by their process ids. Commands find the cluster
through ``SLURM_CONF`` (``cluster.env``). There is no slurmdbd: job records come from the job-completion log
(``JobCompType=jobcomp/filetxt``), which ``sacct --completion`` reads; a requeued job leaves one record per run.

By hand (Debian/Ubuntu: ``apt-get install -y slurm-wlm munge``; root, or a user that owns the spool)::

    python -m tests.slurm_cluster /tmp/slurm      # runs until Ctrl-C (or SIGTERM)
    export SLURM_CONF=/tmp/slurm/slurm.conf       # in another shell: sinfo, sbatch, sacct -c ...
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.runs import subprocess_env

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "sacct", "scancel")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this machine lacks (empty when the cluster can start)."""
    return [
        name
        for name in (*DAEMONS, *CLIENTS, "mungekey")
        if shutil.which(name) is None and not Path("/usr/sbin", name).exists()
    ]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """One controller and one compute node called ``localhost``, with everything under ``root``."""

    def __init__(self, root: Path, cpus: int | None = None) -> None:
        self.root = Path(root).resolve()
        # Two at least: the tests run two srun tasks of one CPU each (slurmd takes the configured count).
        self.cpus = cpus or max(2, os.cpu_count() or 1)
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "log" / "jobcomp.txt"
        self._procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm commands (and for jobs submitted from it)."""
        return subprocess_env(SLURM_CONF=str(self.conf))

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(128))
            key.chmod(0o400)
        user = getpass.getuser()
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=local",
                    "SlurmctldHost=localhost",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r}/munge/munge.socket",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd.log",
                    # Inside a container: track job processes by process group, no cgroup plugins.
                    "ProctrackType=proctrack/pgid",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",  # CPUs are the only consumable: no memory accounting needed
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
                    "SlurmdParameters=config_overrides",  # take CPUs from here, whatever the machine reports
                    f"NodeName=localhost CPUs={self.cpus} State=UNKNOWN",
                    "PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self._procs[name] = subprocess.Popen(
            [_binary(name), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    def start(self, timeout: float = 60) -> "SlurmCluster":
        """Start the daemons and wait for an idle node; raises RuntimeError (daemons stopped) if it cannot."""
        self.write_config()
        m = self.root / "munge"
        try:
            self._spawn(
                "munged",
                [
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
            self._spawn("slurmctld", ["-D", "-f", str(self.conf)])
            self._spawn("slurmd", ["-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, "the node did not become idle")
        except Exception:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

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

    def stop(self, timeout: float = 30) -> None:
        """Cancel every job still known to the controller, wait for them to leave, then end the daemons."""
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
        for name in reversed(DAEMONS):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

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
        """One record per finished run of the job, from ``sacct --completion``: JobID, State, ExitCode, Start, End."""
        fields = ("JobID", "State", "ExitCode", "Start", "End")
        out = self.run("sacct", "--completion", "-j", str(job_id), "-P", "-n", "-o", ",".join(fields))
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def main(root: str) -> None:
    cluster = SlurmCluster(Path(root)).start()
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
    main(*sys.argv[1:2] or ["/tmp/slurm"])
