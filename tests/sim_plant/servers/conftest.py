"""Fixtures for the protocol server tests: real mosquitto brokers and Debian CLIs on 127.0.0.1.

The tests need three Debian packages: ``mosquitto`` (the broker and
``mosquitto_passwd``), ``mosquitto-clients`` (``mosquitto_sub``) and ``mbpoll``.
A missing one fails the test that needs it with the ``apt-get install`` line to
run; nothing is skipped.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

APT_PACKAGE = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "mosquitto_sub": "mosquitto-clients",
    "mosquitto_pub": "mosquitto-clients",
    "mbpoll": "mbpoll",
}


def require(program: str) -> str:
    """The path of a Debian CLI the test needs; fail (not skip) with the install line when it is missing."""
    found = shutil.which(program) or next(
        (str(p) for d in ("/usr/sbin", "/usr/bin") if (p := Path(d) / program).exists()), None
    )
    if found is None:
        package = APT_PACKAGE.get(program, program)
        pytest.fail(f"{program} is not installed: run `apt-get install -y {package}` before these tests", pytrace=False)
    return found


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


class Broker:
    """A mosquitto process on 127.0.0.1 with its own config, log file and port; stopped by its PID."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, extra_config: str = "", anonymous: bool = True) -> None:
        exe = require("mosquitto")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            "persistence false",
            # started as root, mosquitto would switch to the `mosquitto` user, which cannot read tmp_path
            f"user {getpass.getuser()}",
            "log_dest stderr",  # stderr is unbuffered: the tests read the log while the broker runs
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
            "log_type unsubscribe",
            "connection_messages true",
            extra_config,
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([exe, "-c", str(self.config)], stdout=self._log, stderr=self._log)
        self.pid = self.proc.pid
        try:
            wait_for_port(self.host, self.port, 10.0, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"mosquitto did not start:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until a line of the broker's log matches ``pattern`` (a regex)."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := regex.search(self.log()):
                return m
            time.sleep(0.02)
        raise TimeoutError(f"no line matching {pattern!r} in the mosquitto log:\n{self.log()}")

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One anonymous broker shared by a test module."""
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Start brokers of a test's own (with extra config, or with users); all are stopped at teardown."""
    started: list[Broker] = []

    def start(extra_config: str = "", users: dict[str, str] | None = None) -> Broker:
        workdir = tmp_path / f"mosquitto{len(started)}"
        workdir.mkdir()
        if users:
            passwd = require("mosquitto_passwd")
            password_file = workdir / "passwd"
            for i, (user, password) in enumerate(users.items()):
                args = [passwd, "-b", *(["-c"] if i == 0 else []), str(password_file), user, password]
                subprocess.run(args, check=True, capture_output=True, timeout=10)
            extra_config += f"\npassword_file {password_file}"
        broker = Broker(workdir, extra_config, anonymous=not users)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()
