"""A real local Prefect server: serve the deployments from prefect.yaml, trigger the manual
one through the API with parameters, and see the run complete with its artifacts."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DO_NOT_TRACK": "true",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    server = subprocess.Popen([str(ROOT / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_deployment_triggered_through_the_api_completes_with_artifacts(prefect_server, tmp_path):
    env = prefect_server
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    api = env["PREFECT_API_URL"]
    try:
        deadline = time.monotonic() + 120
        while httpx.get(f"{api}/deployments/name/selfloop-loop/manual", timeout=5).status_code != 200:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "deployments were not served"
            time.sleep(0.5)
        workdir = tmp_path / "run"
        params = {"iterations": 1, "workdir": str(workdir), "overrides": [*TINY, "run.control=false"]}
        trigger = (
            "import json, sys\n"
            "from prefect.deployments import run_deployment\n"
            "fr = run_deployment('selfloop-loop/manual', parameters=json.loads(sys.argv[1]), timeout=600)\n"
            "print(json.dumps({'state': fr.state.type.value, 'id': str(fr.id)}))\n"
        )
        out = subprocess.run([sys.executable, "-c", trigger, json.dumps(params)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        run = json.loads(out.stdout.strip().splitlines()[-1])
        assert run["state"] == "COMPLETED"
        assert (workdir / "gen_001" / "metrics.json").exists()

        flow_run = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()
        assert flow_run["parameters"]["iterations"] == 1  # the parameters given through the API
        arts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [
            "selfloop-gen-001", "selfloop-results"]}}}, timeout=10).json()
        by_key = {a["key"]: a for a in arts}
        assert set(by_key) == {"selfloop-gen-001", "selfloop-results"}
        rows = by_key["selfloop-gen-001"]["data"]
        rows = json.loads(rows) if isinstance(rows, str) else rows
        assert {r["level"] for r in rows} == {3, 4, 5} and all("greedy_acc" in r for r in rows)
        assert "Held-out greedy accuracy" in by_key["selfloop-results"]["data"]
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
