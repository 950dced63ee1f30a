"""``ray job submit`` end to end: a head started here on 127.0.0.1, a tiny search submitted to it
as a job, the study checked, the head always stopped (docs/cluster.md walks through the same steps).

Set ``AUTOPRUNE_TRANSCRIPT=PATH`` to keep the commands and their output (what
``benchmarks/figures/ray_job_submit.txt`` holds).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = [pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TRIALS = 3
SEARCH = ["autoprune", "search", "--executor", "ray", "--target", "macs", "--budget", "0.6",
          "--model", "resnet20:width=4", "--image-size", "16", "--dense-epochs", "2", "--trials", str(TRIALS),
          "--fidelity", "kd:20", "--final-steps", "20", "--latency-batch", "2", "--latency-repeats", "3",
          "--latency-warmup", "1", "--searcher", "random", "--seed", "3"]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Head:
    dashboard: str
    gcs: str
    env: dict[str, str]
    log: Path
    transcript: list[str] = field(default_factory=list)

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 900,
            shown: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a client command, keeping the command line and its output in the transcript."""
        result = subprocess.run(argv, env=env or self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout, cwd=ROOT)
        output = _short_tracebacks(ANSI.sub("", result.stdout))
        self.transcript.append(f"$ {shown or shlex.join(argv)}\n{output.rstrip()}\n(exit status {result.returncode})\n")
        return result


def _short_tracebacks(text: str) -> str:
    """A traceback's frames cut to one line in the transcript; the exception's own lines stay."""
    out: list[str] = []
    frames = 0
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            frames = 1
            continue
        if frames and line.startswith(" "):
            frames += 1
            continue
        if frames:
            out.append(f"Traceback (most recent call last): ... ({frames - 1} lines of frames cut)")
            frames = 0
        out.append(line)
    return "\n".join(out)


@pytest.fixture
def head(tmp_path: Path) -> Iterator[Head]:
    """``ray start --head --block`` on 127.0.0.1, every port free, the dashboard on, token auth on;
    stopped with SIGTERM (the whole process group if that fails), never with ``ray stop``, which
    would stop every Ray of this user on the machine."""
    pytest.importorskip("ray")
    gcs, dashboard, *others = _free_ports(10)
    temp = Path(tempfile.mkdtemp(prefix="ap-ray-", dir="/tmp"))  # unix socket paths must stay short
    # `ray start` never creates a missing token (a fresh machine has no ~/.ray/auth_token): the head and
    # every client read this run's own token file, and the user's ~/.ray is left alone
    token = temp / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    names = ["--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port"]
    argv = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(temp), "--disable-usage-stats",
            *[x for name, port in zip(names, others, strict=False) for x in (name, str(port))]]
    log = tmp_path / "head.log"
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    state = Head(f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", env, log)
    try:
        deadline = time.monotonic() + 240
        while "Ray runtime started" not in log.read_text():
            assert process.poll() is None, f"ray start exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the head did not start in 240 s:\n{log.read_text()}"
            time.sleep(1)
        while True:  # the dashboard (which takes the jobs) answers a little after the runtime
            try:
                urllib.request.urlopen(f"{state.dashboard}/api/version", timeout=5).close()
                break
            except urllib.error.HTTPError:
                break  # it answers (perhaps asking for the token): it is up
            except OSError:
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(1)
        shown = shlex.join(["RAY_AUTH_MODE=token", "ray", *argv[1:]]).replace(str(temp), "/tmp/ap-ray-XXXX")
        state.transcript.append(f"$ {shown}\n(the head is up after {time.monotonic() - started:.0f} s; "
                                f"dashboard at {state.dashboard})\n")
        yield state
    finally:
        process.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        state.transcript.append(f"$ kill -TERM <pid of ray start --block>   # stops this head only (`ray stop` "
                                f"stops every Ray of the user)\n(ray start exited with status {process.returncode})\n")
        deadline = time.monotonic() + 30
        while _left_over(process.pid, str(temp)) and time.monotonic() < deadline:
            time.sleep(1)
        left = _left_over(process.pid, str(temp))
        for line in left:  # processes of this head only: their command lines name its temp dir
            os.kill(int(line.split()[0]), signal.SIGKILL)
        keep = os.environ.get("AUTOPRUNE_TRANSCRIPT")
        if keep:
            Path(keep).write_text("\n".join(state.transcript))
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"the head left processes running: {left}"


def _left_over(session: int, temp_marker: str) -> list[str]:
    """``pid sid args`` of the processes of the head's session, or whose command line names its
    temp dir (a process that started a session of its own)."""
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()[1:]]
    return [" ".join(r) for r in rows if len(r) == 3 and (int(r[1]) == session or temp_marker in r[2])]


def test_a_search_submitted_as_a_ray_job_runs_its_trials_on_the_cluster(head: Head, tmp_path: Path) -> None:
    # the trap: a client without RAY_AUTH_MODE=token is refused by a head with token auth (the default)
    plain = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
    refused = head.run([str(BIN / "ray"), "job", "list", "--address", head.dashboard], env=plain, timeout=120,
                       shown=f"ray job list --address {head.dashboard}   # without RAY_AUTH_MODE=token")
    assert refused.returncode != 0 and "Missing authentication token" in refused.stdout, refused.stdout[-2000:]
    # the autoscaler's first report comes some seconds after the head is up ("No cluster status"):
    # ask again until it lists the head's 2 CPUs, keeping only the last answer in the transcript
    deadline = time.monotonic() + 120
    while True:
        status = head.run([str(BIN / "ray"), "status", "--address", head.gcs], timeout=120,
                          shown=f"RAY_AUTH_MODE=token ray status --address {head.gcs}")
        if "No cluster status" not in status.stdout or time.monotonic() > deadline:
            break
        head.transcript.pop()
        time.sleep(2)
    assert status.returncode == 0 and "0.0/2.0 CPU" in ANSI.sub("", status.stdout), status.stdout

    # a relative --run-dir would land in the job's temporary copy of the tree: refused before any work
    relative = head.run([str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", ".", "--",
                         *SEARCH, "--run-dir", "runs/x"], timeout=600,
                        shown=f"RAY_AUTH_MODE=token ray job submit --address {head.dashboard} --working-dir . -- "
                              f"{shlex.join(SEARCH)} --run-dir runs/x")
    assert relative.returncode != 0 and "--run-dir runs/x: this search runs as a Ray job" in relative.stdout

    run_dir, cache = tmp_path / "run", tmp_path / "cache"  # absolute: every node of this one-machine cluster sees them
    argv = [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", ".", "--",
            *SEARCH, "--run-dir", str(run_dir), "--cache-dir", str(cache)]
    job = head.run(argv, shown=shlex.join(["RAY_AUTH_MODE=token", "ray", *argv[1:]]))
    output = ANSI.sub("", job.stdout)
    assert job.returncode == 0, output[-4000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", output), output[-4000:]
    # no --workers, no --ray-address: the job's cluster, its 2 CPUs, one trial of 1 CPU and 1 thread on each
    assert "executor: ray: 2 trials at once on the Ray cluster at" in output, output[-4000:]
    assert "each reserves 1 CPU and 0 GPUs and trains with 1 thread" in output
    study = optuna.load_study(study_name=run_dir.name, storage=f"sqlite:///{run_dir / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    search = [t for t in trials if t.user_attrs.get("fidelity") == "kd:20"]
    assert len(search) == TRIALS and all(t.state == TrialState.COMPLETE for t in search)
    finals = [t for t in trials if t.user_attrs.get("fidelity") == "final"]
    assert len(finals) == 1 and finals[0].state == TrialState.COMPLETE
    assert (run_dir / "model.pt").is_file() and (run_dir / "report.md").is_file()
