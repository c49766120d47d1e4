"""End to end: 20 HTTP clients change one ``nekobot run`` at once for 30 s; nothing hangs.

Each client loops over random operations on three platform ids (add, remove,
start, stop, restart, update, disable, enable, rollback). Every request must be
answered within 10 s (done, or a clear 4xx / 503), never a 500; afterwards a
brand-new platform can still be added and removed, and every platform's
reported lifecycle is one a person can believe.

Policy: loopback only, the API on a free port, the bot a real subprocess
stopped with SIGTERM (exit 0), ``trio.fail_after`` around everything.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w
import trio

from tests.tiny_platform import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
IDS = ("a", "b", "c")
CLIENTS = 20
SECONDS = 30.0
ANSWER_WITHIN = 10.0
ALLOWED = {200, 201, 404, 409, 503}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, port: int) -> Path:
    data: dict[str, Any] = {
        "bot": {"data_dir": str(tmp_path / "data"), "shutdown_timeout": 2.0},
        "buffer": {"durable": False},
        "api": {"enable": True, "host": "127.0.0.1", "port": port},
        "platforms": {"a": {"type": TINY}, "b": {"type": TINY}},
    }
    path = tmp_path / "nekobot.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def operation(rng: random.Random, versions: list[str]) -> tuple[str, str, dict[str, Any]]:
    pid = rng.choice(IDS)
    kind = rng.choice(
        ["add", "remove", "start", "stop", "restart", "update", "disable", "enable", "rollback"]
    )
    if kind == "add":
        body = {"platform_id": pid, "platform_config": {"type": TINY}}
        return kind, "/api/runtime/platforms", body
    if kind == "remove":
        return kind, "/api/runtime/platforms?platform_id=" + pid, {}
    if kind in ("start", "stop", "restart"):
        return kind, "/api/runtime/lifecycle", {"platform_id": pid, "action": kind}
    if kind == "update":
        body = {"platform_id": pid, "connection": {"reconnect_interval": rng.choice([1.0, 2.0])}}
        return kind, "/api/connection/config", body
    if kind in ("disable", "enable"):
        return kind, f"/api/fault/platform/{kind}", {"platform_id": pid}
    return kind, "/api/config/rollback", {"version_id": rng.choice(versions or ["v1"])}


async def test_twenty_clients_for_thirty_seconds_never_hang_the_runtime(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    log = tmp_path / "bot.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with trio.fail_after(SECONDS + 90), open(log, "wb") as out:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "nekobot", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            env=env,
            cwd=str(tmp_path),
        )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=ANSWER_WITHIN + 5) as api:
                while True:
                    try:
                        if (await api.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None, log.read_text()
                    await trio.sleep(0.1)

                slowest = 0.0
                seen: collections.Counter[tuple[str, int]] = collections.Counter()
                versions: list[str] = ["v1"]
                end = trio.current_time() + SECONDS

                async def client(n: int) -> None:
                    nonlocal slowest
                    rng = random.Random(n)
                    while trio.current_time() < end:
                        kind, path, body = operation(rng, versions)
                        t0 = time.monotonic()
                        if kind == "remove":
                            r = await api.delete(path)
                        else:
                            r = await api.post(path, json=body)
                        took = time.monotonic() - t0
                        slowest = max(slowest, took)
                        assert took <= ANSWER_WITHIN, (kind, path, took)
                        assert r.status_code in ALLOWED, (kind, body, r.status_code, r.text)
                        if r.status_code >= 400:
                            assert r.json()["error"]["message"], r.text
                        seen[kind, r.status_code] += 1
                        if rng.random() < 0.1:
                            listed = (await api.get("/api/config/versions?limit=5")).json()
                            versions[:] = [v["version_id"] for v in listed["versions"]]

                async with trio.open_nursery() as nursery:
                    for n in range(CLIENTS):
                        nursery.start_soon(client, n)

                done = {kind for (kind, status) in seen if status in (200, 201)}
                assert done >= {"add", "remove", "start", "stop", "restart", "disable", "enable"}, (
                    seen
                )

                # the runtime still takes changes: a brand-new platform, added and removed
                for pid in IDS:  # enable everything a client left disabled
                    await api.post("/api/fault/platform/enable", json={"platform_id": pid})
                r = await api.post(
                    "/api/runtime/platforms",
                    json={"platform_id": "fresh", "platform_config": {"type": TINY}},
                )
                assert r.status_code == 201, r.text
                life = (await api.get("/api/runtime/lifecycle")).json()["platforms"]
                assert life["fresh"]["state"] == "running"
                for pid, status in life.items():
                    assert not (status["state"] == "disabled" and status["enabled"]), (pid, status)
                r = await api.delete("/api/runtime/platforms?platform_id=fresh")
                assert r.status_code == 200, r.text
                life = (await api.get("/api/runtime/lifecycle")).json()["platforms"]
                assert "fresh" not in life
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, log.read_text()[-3000:]
