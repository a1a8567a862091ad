"""ConfigClient against a real sidecar, nats-server and validator."""

import json
import queue
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mycosynth import ConfigClient

ROOT = Path(__file__).resolve().parents[3]


def test_reads_come_from_the_copy_loaded_at_start(stack, namespace, make_sidecar):
    stack.set(namespace, "database.pool_size", 50)
    stack.set(namespace, "feature.dark_mode", True)
    sidecar = make_sidecar(namespace)
    with ConfigClient(sidecar.url) as config:
        assert (config.namespace, config.environment) == (namespace, "prod")
        assert config.version == 2
        assert config.get("database.pool_size") == 50
        assert config.get_all() == {"database.pool_size": 50, "feature.dark_mode": True}
        assert config.get_bool("feature.dark_mode") is True
        assert config.get("http.timeout_ms", default=250) == 250
        with pytest.raises(KeyError, match="http.timeout_ms"):
            config.get("http.timeout_ms")


def test_get_int_names_the_bound_it_breaks(stack, namespace, make_sidecar):
    stack.set(namespace, "database.pool_size", 50)
    stack.set(namespace, "feature.dark_mode", True)
    sidecar = make_sidecar(namespace)
    with ConfigClient(sidecar.url) as config:
        assert config.get_int("database.pool_size", min_val=1, max_val=200) == 50
        assert config.get_int("database.pool_size", min_val=50, max_val=50) == 50
        with pytest.raises(ValueError, match=r"'database.pool_size' is 50, above max_val=10"):
            config.get_int("database.pool_size", max_val=10)
        with pytest.raises(ValueError, match=r"below min_val=51"):
            config.get_int("database.pool_size", min_val=51)
        with pytest.raises(TypeError, match="feature.dark_mode"):
            config.get_int("feature.dark_mode")
        with pytest.raises(KeyError, match="database.timeout"):
            config.get_int("database.timeout", min_val=1)
        # A default is the caller's own value, returned as given.
        assert config.get_int("database.timeout", 30, min_val=1) == 30


def test_a_change_reaches_on_change(stack, namespace, make_sidecar):
    stack.set(namespace, "limits.max_items", 20)
    stack.set(namespace, "feature.dark_mode", True)
    sidecar = make_sidecar(namespace)
    changes = queue.Queue()
    with ConfigClient(sidecar.url) as config:
        config.on_change(changes.put)
        wait_connected(config)
        stack.set(namespace, "limits.max_items", 30, reason="more room")
        change = changes.get(timeout=10)
        assert change.keys == ("limits.max_items",)
        assert change.values == {"limits.max_items": 30}
        assert (change.version, change.previous_version) == (3, 2)
        assert (change.author, change.reason, change.cause) == ("pytest", "more room", "event")
        assert (change.approved_by, change.change_request) == ((), None)
        # The callback runs after the change is applied: reads see it.
        assert config.get("limits.max_items") == 30 and config.version == 3
        stack.cli("delete", namespace, "prod", "feature.dark_mode")
        change = changes.get(timeout=10)
        assert change.deleted == ("feature.dark_mode",) and change.values == {}
        assert config.get("feature.dark_mode", default=None) is None


def test_a_change_request_names_its_approvers_and_id(stack, namespace, make_sidecar):
    stack.set(namespace, "limits.max_items", 20)
    sidecar = make_sidecar(namespace)
    changes = queue.Queue()
    with ConfigClient(sidecar.url) as config:
        config.on_change(changes.put)
        wait_connected(config)
        proposed = stack.cli(
            "--json", "set", namespace, "prod", "limits.max_items", "25", "--propose",
            "--reason", "reviewed", author="alice",
        )
        request = json.loads(proposed.stdout)["proposed"]
        stack.cli(
            "requests", "approve", request["id"], "--content-hash", request["content_hash"],
            author="bob",
        )
        stack.cli("requests", "apply", request["id"], author="alice")
        change = changes.get(timeout=10)
        assert change.values == {"limits.max_items": 25}
        assert (change.approved_by, change.change_request) == (("bob",), request["id"])


def test_reads_keep_working_while_the_sidecar_is_killed_and_restarted(
    stack, namespace, make_sidecar
):
    stack.set(namespace, "limits.max_items", 20)
    sidecar = make_sidecar(namespace)
    changes = queue.Queue()
    with ConfigClient(sidecar.url, backoff=(0.05, 0.5)) as config:
        config.on_change(changes.put)
        wait_connected(config)
        sidecar.kill()
        wait_for(lambda: not config.connected, "the client to see the stream end")
        for _ in range(1000):
            assert config.get_int("limits.max_items", min_val=1) == 20
        # Changed while no sidecar runs; the restarted one starts from its cache, catches
        # up from NATS, and the client resumes from the version it holds.
        stack.set(namespace, "limits.max_items", 40, reason="while down")
        sidecar.restart()
        change = changes.get(timeout=20)
        assert change.values == {"limits.max_items": 40}
        assert config.get("limits.max_items") == 40
        assert config.connected


def test_no_sidecar_is_a_clear_connection_error():
    started = time.monotonic()
    with pytest.raises(ConnectionError, match="no config from the Mycosynth sidecar"):
        ConfigClient("http://127.0.0.1:9", start_timeout=0.5)
    assert time.monotonic() - started < 5


def readme_python(readme):
    """The one ```python block of `readme`'s sidecar section."""
    text = readme.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, f"{readme}: expected one python block, found {len(blocks)}"
    return blocks[0]


def test_the_readme_example_runs_as_written(stack, namespace, make_sidecar, tmp_path):
    stack.set(namespace, "database.pool_size", 50)
    stack.set(namespace, "feature.dark_mode", True)
    sidecar = make_sidecar(namespace)
    readme = ROOT / "README.md"
    section = readme.read_text().split("## Any language: the sidecar", 1)[1].split("\n## ", 1)[0]
    example = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(example) == 1, "README.md's sidecar section holds one python block"
    example = example[0]
    assert len(example.splitlines()) <= 10
    # The client's own README shows the same example.
    assert readme_python(ROOT / "clients/python/README.md") == example
    script = tmp_path / "readme_example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MYCOSYNTH_SIDECAR_URL": sidecar.url, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pool 50, dark mode True, timeout 250 ms, version 2"


def wait_connected(config):
    wait_for(lambda: config.connected, "the change stream to connect")


def wait_for(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
