"""Real parts for the client's tests: a nats-server with JetStream, a validator and sidecars,
each on a free loopback port with a temporary directory, started here and stopped by the PID
started here (also when a test fails)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_bin() -> str:
    if os.environ.get("NATS_SERVER"):
        return os.environ["NATS_SERVER"]
    out = subprocess.run(
        ["bash", str(ROOT / "nats/provision.sh")], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def mycosynth_bin() -> str:
    if os.environ.get("MYCOSYNTH_BIN"):
        return os.environ["MYCOSYNTH_BIN"]
    binary = ROOT / "target/debug/mycosynth"
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "mycosynth", "--bin", "mycosynth"],
        cwd=ROOT,
        check=True,
    )
    return str(binary)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Process:
    """A child process stopped by its PID."""

    def __init__(self, args: List[str], log: Path) -> None:
        self.args, self.log_path = args, log
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")
        env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=env)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL (no clean shutdown) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Stack:
    """nats-server and one validator, shared by the tests of a session."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        port = free_port()
        conf = tmp / "nats.conf"
        conf.write_text(
            f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{tmp / "js"}" }}\n'
        )
        self.nats = Process([nats_server_bin(), "-c", str(conf)], tmp / "nats.log")
        self.nats_url = f"nats://127.0.0.1:{port}"
        wait_until(lambda: "Server is ready" in self.nats.log(), 20, "nats-server")
        self.bin = mycosynth_bin()
        http = free_port()
        self.validator = Process(
            [self.bin, "--nats-url", self.nats_url, "serve", "--http", f"127.0.0.1:{http}"],
            tmp / "validator.log",
        )
        wait_until(lambda: http_status(f"http://127.0.0.1:{http}/health") == 200, 30, "validator")
        self.children: List[Process] = [self.nats, self.validator]

    def cli(self, *args: str, author: str = "pytest") -> subprocess.CompletedProcess:
        env = dict(os.environ, MYCOSYNTH_AUTHOR=author, NO_COLOR="1")
        done = subprocess.run(
            [self.bin, "--nats-url", self.nats_url, *args], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, f"mycosynth {' '.join(args)}: {done.stderr}"
        return done

    def set(self, namespace: str, key: str, value, reason: str = "") -> None:
        self.cli("set", namespace, "prod", key, json.dumps(value), "--reason", reason)

    def sidecar(self, namespace: str, *extra: str) -> "Sidecar":
        sidecar = Sidecar(self, namespace, extra)
        self.children.append(sidecar.process)
        return sidecar

    def stop(self) -> None:
        for child in reversed(self.children):
            child.kill()


class Sidecar:
    """A `mycosynth sidecar NAMESPACE prod` process with its own port and cache dir."""

    def __init__(self, stack: Stack, namespace: str, extra) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cache = stack.tmp / f"cache-{namespace}"
        self.process = Process(
            [
                stack.bin, "--nats-url", stack.nats_url, "sidecar", namespace, "prod",
                "--listen", f"127.0.0.1:{self.port}", "--cache-dir", str(cache), *extra,
            ],
            stack.tmp / f"sidecar-{namespace}.log",
        )
        self.wait_serving()

    def wait_serving(self) -> None:
        wait_until(lambda: http_status(f"{self.url}/health") == 200, 30, "the sidecar")

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process.kill()
        self.process.start()
        self.wait_serving()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing the stack do not see each other."""
    return f"py-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_sidecar(stack: Stack):
    """Starts sidecars for a test; each is killed when the test ends."""
    started: List[Sidecar] = []

    def start(namespace: str, *extra: str) -> Sidecar:
        sidecar = stack.sidecar(namespace, *extra)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.kill()
