"""A real two-node Ray cluster on this machine: a job submitted through the Jobs API runs a sweep
whose trials land on both nodes, with token authentication on, as on the real cluster."""

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.ray_procs import kill_trees, pids_mentioning

# Two Ray nodes started with `ray start` (each with a --temp-dir of its own, so outside
# RAY_TMPDIR: the conftest's guard would not see them; the marker is all there is).
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

VENV_BIN = Path(sys.executable).parent


_handed_out: set = set()


def _free_port() -> int:
    """A port free right now and not handed out before: the OS may offer a just-released port
    again, and two of our components on one port make `ray start` fail."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class LocalCluster:
    """Ray nodes started by this test only, so teardown can stop exactly them."""

    temp_dir: Path
    env: dict
    token: str
    gcs_address: str = ""
    dashboard_url: str = ""
    nodes: list = field(default_factory=list)

    @property
    def auth_header(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def get_json(self, path: str, auth: bool = True) -> dict:
        req = urllib.request.Request(self.dashboard_url + path,
                                     headers=self.auth_header if auth else {})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def start_node(self, name: str, args: list, resources: dict) -> None:
        # Every port explicit: other engineers run Ray on this machine, and Ray's fixed defaults
        # (client server 10001, agent 52365) would collide between our own two nodes as well.
        ports = {f"--{p}": str(_free_port()) for p in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")}
        cmd = [str(VENV_BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
               "--num-cpus", "1", "--resources", json.dumps(resources),
               "--disable-usage-stats", *[x for kv in ports.items() for x in kv], *args]
        log = open(self.temp_dir / f"{name}.log", "w")  # noqa: SIM115 (closed with the dir)
        # Own session = own process group: teardown kills this group, never anyone else's Ray.
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(proc)

    def wait_for(self, what: str, ok, timeout: float = 180.0) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.nodes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a ray node exited while waiting for {what}:\n"
                                       + self.logs())
            try:
                value = ok()
                if value:
                    return value
            except OSError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"timed out waiting for {what}:\n" + self.logs())

    def alive_nodes(self) -> list:
        rows = self.get_json("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return [r for r in rows if r["state"] == "ALIVE"]

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.temp_dir.glob("*.log")))

    def stop(self) -> set:
        """Stop our nodes and everything under them; return the pids still alive (none)."""
        # Anything that left the trees still names our unique temp dir on its command line.
        left = kill_trees(self.nodes, also=pids_mentioning(str(self.temp_dir)))
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left


@pytest.fixture
def two_node_cluster():
    # Short path: Ray's unix sockets live under the temp dir and are limited to ~107 chars.
    temp_dir = Path(tempfile.mkdtemp(prefix="esper7_", dir="/tmp"))
    token = secrets.token_hex(32)
    token_file = temp_dir / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = dict(os.environ)
    # Token auth on, identically for every node and the job driver they start (as cluster.yaml
    # does), with a token private to this cluster: never the user's ~/.ray/auth_token.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file),
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1")
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    cluster = LocalCluster(temp_dir=temp_dir, env=env, token=token)
    try:
        port, dash = _free_port(), _free_port()
        cluster.gcs_address = f"127.0.0.1:{port}"
        cluster.dashboard_url = f"http://127.0.0.1:{dash}"
        cluster.start_node("head", [
            "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dash), "--temp-dir", str(temp_dir),
            "--ray-client-server-port", str(_free_port())], {"esper_head": 1})
        cluster.wait_for("the head", lambda: cluster.alive_nodes())
        # Its own temp dir, like a separate machine's disk: nodes sharing one would share the
        # runtime-env cache, and one node's cleanup would delete the job's working_dir under
        # the other.
        cluster.start_node("worker", ["--address", cluster.gcs_address,
                                      "--temp-dir", str(temp_dir / "w")], {"esper_worker": 1})
        cluster.wait_for("two alive nodes", lambda: len(cluster.alive_nodes()) == 2)
        yield cluster
    finally:
        left = cluster.stop()
    assert not left, f"processes of the test cluster survived teardown: {sorted(left)}"


# Two cells x one seed of the seed sweep on a probe env: two tiny trials, each needing one CPU,
# so with one CPU per node they run at the same time, one on each node.
SWEEP = ["esper-rllib", "ablate", "--sweep", "value_head", "--profile", "quick", "--seeds", "1",
         "--grid", "value_head_gain=1.0", "--grid", "value_head_depth=2",
         "--grid", "value_coef=0.5,1.0", "--set", "env=esper/Probe5-v0",
         "--set", "episodes_per_batch=16", "--set", "iterations=3", "--reference-episodes", "0",
         "--address", "auto", "--name", "multinode"]


def _trial_node_ids(cluster: LocalCluster, trial_dirs: list) -> dict:
    """Trial folder -> id of the node its trainable actor ran on: the pid each trial reported in
    result.json, looked up in the cluster's actor table (both nodes share one IP, so node_ip and
    hostname in the results cannot tell them apart)."""
    actors = cluster.get_json("/api/v0/actors?limit=1000&detail=1")["data"]["result"]["result"]
    node_of_pid = {a["pid"]: a["node_id"] for a in actors if a.get("pid")}
    placed = {}
    for trial in trial_dirs:
        rows = (trial / "result.json").read_text().splitlines()
        pids = {json.loads(row)["pid"] for row in rows}
        assert len(pids) == 1, f"{trial.name} moved between processes: {pids}"
        placed[trial.name] = node_of_pid[pids.pop()]
    return placed


def test_sweep_submitted_as_a_job_runs_on_both_nodes(two_node_cluster):
    from ray.job_submission import JobStatus, JobSubmissionClient

    cluster = two_node_cluster
    # Token auth is really on: the job server refuses a request without the token.
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.get_json("/api/jobs/", auth=False)
    assert refused.value.code in (401, 403)

    storage = cluster.temp_dir / "results"
    client = JobSubmissionClient(cluster.dashboard_url, headers=cluster.auth_header)
    job = client.submit_job(
        entrypoint=" ".join([*SWEEP, "--storage", str(storage)]),
        # Ray skips .git/.venv and honours .gitignore; runs/ is excluded explicitly because
        # shipping old results would be slow and could exceed the upload limit.
        runtime_env={"working_dir": str(REPO), "excludes": ["runs/"]})
    status = cluster.wait_for("the job", lambda: (s := client.get_job_status(job)).is_terminal()
                              and s, timeout=420)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-6000:]

    # The results are where the job said they are.
    experiment = storage / "multinode"
    assert f"experiment folder (Tune trial folders, checkpoints): {experiment}" in logs
    assert f"ablation table: {experiment}/ablation.csv" in logs
    trial_dirs = sorted(p for p in experiment.iterdir() if (p / "result.json").is_file())
    assert len(trial_dirs) == 2, sorted(experiment.iterdir())
    for trial in trial_dirs:
        rows = (trial / "result.json").read_text().splitlines()
        assert json.loads(rows[-1])["training_iteration"] == 3
    with open(experiment / "ablation.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(float(r["value_coef"]) for r in table) == [0.5, 1.0]

    # Trials ran on more than one node: one on the head, one on the worker.
    placed = _trial_node_ids(cluster, trial_dirs)
    print("trial placement:", placed)
    nodes = {n["node_id"] for n in cluster.alive_nodes()}
    assert set(placed.values()) == nodes, (placed, nodes)
