"""Start and stop a local argilla-server by process ids.

    python -m annotate.server start [--port 6900] [--home .argilla]   # prints the URL and API key
    python -m annotate.server stop
    python -m annotate.server status

The first start creates ``.argilla-venv`` from requirements/argilla-server.txt (about 30 s from a local
index). State (SQLite database, Redis, logs, process ids) lives under ``--home``; records survive a restart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = Path(__file__).resolve().parent / "launch.py"
REQUIREMENTS = ROOT / "requirements" / "argilla-server.txt"


@dataclass
class ServerConfig:
    home: str = str(ROOT / ".argilla")
    venv: str = str(ROOT / ".argilla-venv")
    host: str = "127.0.0.1"
    port: int = 6900
    redis_port: int = 6390
    api_key: str = "argilla.apikey"  # the owner's key: fine on loopback, change it anywhere else
    password: str = "12345678"
    startup_timeout: float = 180.0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return Path(self.home) / "pids.json"


def _python(config: ServerConfig) -> Path:
    return Path(config.venv) / "bin" / "python"


def ensure_venv(config: ServerConfig) -> Path:
    python = _python(config)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", config.venv], check=True)
    check = subprocess.run([str(python), "-c", "import argilla_server"], capture_output=True)
    if check.returncode != 0:
        _run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], "installing argilla-server")
    return python


def _run(command: list[str], what: str, env: dict | None = None, expect: str | None = None) -> None:
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0 or (expect and expect not in done.stdout):
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n" + (done.stdout + done.stderr)[-3000:])


def _environment(config: ServerConfig) -> dict:
    return {
        **os.environ,
        "ARGILLA_HOME_PATH": config.home,
        "ARGILLA_SEARCH_ENGINE": "sql",
        "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{config.redis_port}/0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "ARGILLA_BASE_URL": "/",
    }


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _server_ready(config: ServerConfig) -> bool:
    try:
        with urllib.request.urlopen(f"{config.url}/api/_status", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _spawn(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    # A session of its own, so stop() can end the process and its children (the worker forks) together.
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True)


def _wait(ready, process: subprocess.Popen, log: Path, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; last log lines:\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        if time.time() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout:.0f} s; see {log}")
        time.sleep(0.3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def status(config: ServerConfig) -> dict:
    pids = json.loads(config.pid_file.read_text()) if config.pid_file.exists() else {}
    return {"url": config.url, "ready": _server_ready(config),
            "processes": {name: (pid, _alive(pid)) for name, pid in pids.items()}}


def start(config: ServerConfig) -> dict:
    """Start Redis, migrate the database, make the owner, start the server and its worker; wait until ready."""
    if _server_ready(config):
        return status(config)
    home = Path(config.home)
    home.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(config)
    env = _environment(config)
    pids: dict[str, int] = {}
    try:
        if not _redis_ready(config.redis_port):
            redis = _spawn(["redis-server", "--port", str(config.redis_port), "--bind", "127.0.0.1", "--dir",
                            str(home), "--save", "", "--appendonly", "no"], home / "redis.log")
            pids["redis"] = redis.pid
            _wait(lambda: _redis_ready(config.redis_port), redis, home / "redis.log", 30, "redis-server")
        for step in (["database", "migrate"],
                     ["database", "users", "create_default", "--api-key", config.api_key,
                      "--password", config.password, "--quiet"]):
            _run([str(python), "-m", "argilla_server", *step], "argilla_server " + " ".join(step[:3]), env)
        server = _spawn([str(python), str(LAUNCH), "server", "--host", config.host, "--port", str(config.port)],
                        home / "server.log", env)
        pids["server"] = server.pid
        worker = _spawn([str(python), str(LAUNCH), "worker"], home / "worker.log", env)
        pids["worker"] = worker.pid
        config.pid_file.write_text(json.dumps(pids))
        _wait(lambda: _server_ready(config), server, home / "server.log", config.startup_timeout, "argilla-server")
    except BaseException:
        _kill(pids)
        config.pid_file.unlink(missing_ok=True)
        raise
    return status(config)


def add_user(config: ServerConfig, username: str, api_key: str, password: str = "12345678",
             role: str = "annotator", workspace: str = "argilla") -> None:
    """A reviewer account with a known API key (the server's own CLI; the client cannot set keys)."""
    _run([str(_python(config)), "-m", "argilla_server", "database", "users", "create", "--username", username,
          "--role", role, "--password", password, "--api-key", api_key, "--workspace", workspace,
          "--first-name", username], f"creating user {username}", _environment(config),
         expect="successfully created")  # the CLI exits 0 when it refuses (an existing name)


def _kill(pids: dict[str, int], timeout: float = 15.0) -> None:
    for pid in pids.values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + timeout
    for pid in pids.values():
        while _alive(pid) and time.time() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap our own children so they do not linger as zombies
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def stop(config: ServerConfig) -> None:
    """Stop the processes start() recorded (server, worker, and Redis if start() launched it)."""
    if config.pid_file.exists():
        _kill(json.loads(config.pid_file.read_text()))
        config.pid_file.unlink()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m annotate.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    defaults = ServerConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    action = args.pop("action")
    config = ServerConfig(**args)
    if action == "start":
        print(json.dumps(start(config), indent=2))
        print(f"export ARGILLA_API_URL={config.url} ARGILLA_API_KEY={config.api_key}")
    elif action == "stop":
        stop(config)
    else:
        print(json.dumps(status(config), indent=2))


if __name__ == "__main__":
    main()
