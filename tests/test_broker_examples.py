"""The broker-mode examples (examples/broker/, issue 13), exercised as far as this machine allows: Redis runs
with the example's redis.conf, Flower runs from the systemd unit's ExecStart and lists a live worker, the
worker environment file loads, and the compose file's services ask for what the workers accept."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import redis
import yaml

from klipnote.config import load_settings, tomllib  # tomli on Python 3.10
from klipnote.spool import HOSTNAME

from .conftest import REPO
from .support.rediskit import (
    RedisServer,
    broker_env,
    free_port,
    get,
    listed_workers,
    redis_binary,
    start_broker_worker,
    stop,
    wait_until,
)

EXAMPLES = REPO / "examples" / "broker"
COMPOSE = yaml.safe_load((EXAMPLES / "compose.yaml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def env_file(name: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them."""
    lines = (EXAMPLES / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_example_redis_conf_runs_redis_without_eviction_and_with_a_password(tmp_path):
    port = free_port()
    proc = subprocess.Popen([redis_binary(), str(EXAMPLES / "redis.conf"), "--bind", "127.0.0.1", "--port",
                             str(port), "--dir", str(tmp_path), "--requirepass", "pw"],  # this host's values
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password="pw", decode_responses=True)
        wait_until(lambda: _pings(client), "redis-server with the example's config", 20)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
    finally:
        proc.kill()
        proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (OSError, redis.RedisError):  # not listening yet, or still loading
        return False


def test_the_worker_environment_file_sets_spool_and_broker():
    settings = load_settings(environ=env_file("broker.env"))
    assert settings.sources["broker"] == "environment KLIPNOTE_BROKER"
    assert settings.broker is not None and settings.broker.startswith("redis://:")
    assert str(settings.spool) == "/mnt/klipnote/spool"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_flower_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "klipnote-flower.service"
    unit.write_text((EXAMPLES / unit.name).read_text().replace("/opt/klipnote", str(REPO)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          check=False)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


@pytest.mark.slow
def test_the_flower_units_command_lists_a_live_worker(spool_dir, tmp_path):
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", (EXAMPLES / "klipnote-flower.service").read_text(), re.M)
    port = free_port()
    argv = exec_start.replace("/opt/klipnote/.venv/bin/klipnote", f"{sys.executable} -m klipnote").split()
    argv[argv.index("--port") + 1] = str(port)
    server = RedisServer(tmp_path / "redis", password="pw").start()
    env = broker_env(server, tmp_path / "home", KLIPNOTE_SPOOL=str(spool_dir), FLOWER_BASIC_AUTH="admin:secret")
    worker = start_broker_worker(spool_dir, "wx", tmp_path / "hosts", env)
    flower = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = f"http://127.0.0.1:{port}/api/workers?refresh=1"
        assert f"wx@{HOSTNAME}" in wait_until(lambda: listed_workers(api, "admin:secret"), "Flower's workers", 90)
        assert get(api)[0] == 401
    finally:
        flower.terminate()
        flower.wait(20)
        stop(worker)
        server.kill()


def worker_options() -> set[str]:
    done = subprocess.run([sys.executable, "-m", "klipnote", "worker", "--help"], capture_output=True, text=True,
                          check=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    return set(re.findall(r"--[a-z][a-z-]+", done.stdout))


def test_the_compose_workers_run_one_model_per_gpu_on_the_broker_with_options_the_worker_accepts():
    services = COMPOSE["services"]
    workers = {name: s for name, s in services.items() if "build" in s}
    assert set(workers) == {"whisperx-0", "belle2-1"}
    accepted = worker_options()
    (celery,) = [spec for spec in PYPROJECT["project"]["optional-dependencies"]["broker"] if spec.startswith("celery")]
    for name, service in workers.items():
        model = name.split("-")[0]
        assert f"FROM klipnote-{model}" in service["build"]["dockerfile_inline"]
        assert f'pip install "{celery}"' in service["build"]["dockerfile_inline"]  # as the broker extra
        flags = {arg for arg in service["command"] if arg.startswith("--")}
        assert flags <= accepted, flags - accepted
        grace = float(service["command"][service["command"].index("--grace") + 1])
        assert float(service["stop_grace_period"].rstrip("s")) > grace
        assert "KLIPNOTE_BROKER" in service["environment"] and service["environment"]["KLIPNOTE_SPOOL"] == "/spool"
        (gpu,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert gpu["device_ids"] == [name.split("-")[1]]


def test_the_compose_redis_and_flower_stay_off_public_networks():
    services = COMPOSE["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_command and "noeviction" in redis_command
    assert all(not port.startswith(("0.0.0.0", "6379")) for port in services["redis"]["ports"])
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
