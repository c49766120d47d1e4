"""The ``nekobot`` command line, run as a user runs it (subprocesses).

Policy: loopback only; every subprocess is bounded by a timeout so a bug fails
fast instead of hanging.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nekobot.cli import main

ROOT = Path(__file__).resolve().parent.parent

BAD = """
[bot]
name = "x"
colour = "red"

[api]
port = "abc"

[platforms.qq]
mode = "reverse"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nekobot(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "nekobot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def write_bad(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    return path


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    path = write_bad(tmp_path)
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "api.port: expected int, got 'abc'" in err
    assert "bot.colour: unknown key" in err
    assert "platforms.qq.type: required key missing" in err


def test_check_config_ok_on_shipped_file(capsys) -> None:
    assert main(["check-config", "-c", str(ROOT / "nekobot.toml")]) == 0
    out = capsys.readouterr().out
    assert "platform qq: type onebot_v11, enabled" in out


def test_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["check-config", "-c", str(tmp_path / "none.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys) -> None:
    assert main(["no-such-command"]) == 2


def test_run_refuses_bad_config_the_same_way(tmp_path: Path) -> None:
    path = write_bad(tmp_path)
    proc = nekobot("run", "-c", str(path))
    assert proc.returncode == 2
    for line in (
        "api.port: expected int, got 'abc'",
        "bot.colour: unknown key",
        "platforms.qq.type: required key missing",
    ):
        assert line in proc.stderr


def run_config(tmp_path: Path, ws_port: int, api_port: int) -> Path:
    text = (ROOT / "nekobot.toml").read_text()
    text = text.replace("port = 6700", f"port = {ws_port}").replace(
        "port = 8080", f"port = {api_port}"
    )
    text = text.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"')
    path = tmp_path / "nekobot.toml"
    path.write_text(text)
    return path


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@pytest.mark.slow
def test_sigterm_exits_0_within_5s_and_frees_the_port(tmp_path: Path) -> None:
    ws_port, api_port = free_port(), free_port()
    path = run_config(tmp_path, ws_port, api_port)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nekobot", "run", "-c", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_port(ws_port, 20)
        wait_for_port(api_port, 20)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert code == 0, err
    assert elapsed < 5
    for port in (ws_port, api_port):
        with socket.socket() as s:  # no SO_REUSEADDR: the port must be free at once
            s.bind(("127.0.0.1", port))


def test_check_config_imports_plugins(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[bot]\nplugins = ["nekobot.plugins.echo:setup", "no_such_pkg.mod:setup"]\n')
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bot.plugins[1]: cannot load 'no_such_pkg.mod:setup'" in err
    assert "bot.plugins[0]" not in err


def test_reload_refuses_a_stale_pid_file(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "n.toml"
    path.write_text(f'[bot]\ndata_dir = "{data}"\n')
    # a process whose command line mentions nekobot, but is not `nekobot run`
    victim = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "notes-about-nekobot.txt", "nekobot"]
    )
    try:
        (data / "nekobot.pid").write_text(f"{victim.pid}\n")
        assert main(["reload", "-c", str(path)]) == 1
        assert "is not a running nekobot" in capsys.readouterr().err
        assert victim.poll() is None  # not signalled
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.slow
def test_busy_api_port_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "n.toml"
        path.write_text(
            f'[bot]\ndata_dir = "{tmp_path / "data"}"\n[api]\nenable = true\nport = {port}\n'
        )
        proc = nekobot("run", "-c", str(path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert (
        f"nekobot: api could not run: [Errno 98] cannot serve the HTTP API on 127.0.0.1:{port}"
        in (proc.stderr)
    )
