"""Who may connect: loopback by default, CURVE (libzmq's, through pyzmq) beyond it.

Rules (checked at start-up by :func:`check_binds`):

- internal endpoints (the proxy, the supervisor's channels, the actors' inboxes) bind on
  loopback or ipc only: they carry the system's own traffic and trust whoever connects;
- a public endpoint (ingress, timeline, control, av_out) bound beyond loopback needs CURVE:
  ``security.curve_dir`` names the directory ``personas keys gen DIR`` wrote.

That directory holds ``server.key`` / ``server.key_secret`` (the binding processes' key pair),
``client.key`` / ``client.key_secret`` (a key pair for this machine's own clients: the gateway,
the CLI) and ``allowed/`` (the public keys of the clients allowed in; ``client.key`` is put
there). A remote client needs ``server.key`` and its own key pair, whose public half the
operator copies into ``allowed/``. With CURVE on, every public socket is a CURVE server and a
ZAP handler in each binding process lets in only the allowed keys; a refusal is counted and
reported on the timeline by that process (``auth`` error: address, the key's first characters).
"""

from __future__ import annotations

import collections
import ipaddress
import re
import threading
from pathlib import Path

import zmq

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
PUBLIC = ("ingress", "timeline", "control", "av_out")
#: Refusals kept until the owner's loop reports them (older ones are only counted).
REFUSALS_KEPT = 64


class SecurityError(ValueError):
    pass


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc and for tcp on a loopback address or ``localhost``."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = re.fullmatch(r"tcp://(\[?([^\]]+?)\]?):\d+", endpoint)
    if not match:
        return False
    host = match.group(2)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or "*": it may be reachable from anywhere


def curve_dir(config: dict) -> Path | None:
    raw = config.get("security", {}).get("curve_dir", "")
    return Path(raw).expanduser() if raw else None


def check_binds(config: dict) -> None:
    """Raise SecurityError (one line, naming the endpoint and the remedy) for an internal
    endpoint beyond loopback, or a public one beyond loopback without CURVE keys."""
    keys = curve_dir(config)
    for name, endpoint in config["endpoints"].items():
        if is_loopback(endpoint):
            continue
        if name not in PUBLIC:
            raise SecurityError(f"endpoints.{name} = {endpoint}: internal endpoints bind on loopback or ipc only")
        if keys is None:
            raise SecurityError(f"endpoints.{name} = {endpoint} binds beyond loopback: set security.curve_dir "
                                "(`personas keys gen DIR` makes one)")
    if keys is not None:
        missing = [p for p in (keys / "server.key_secret", keys / "allowed") if not p.exists()]
        if missing:
            raise SecurityError(f"security.curve_dir {keys}: missing {', '.join(str(p) for p in missing)}")


def generate_keys(directory: str | Path) -> dict:
    """A server key pair, a client key pair and ``allowed/`` with the client's public key."""
    import shutil

    import zmq.auth

    directory = Path(directory)
    (directory / "allowed").mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    server_public, server_secret = zmq.auth.create_certificates(directory, "server")
    client_public, client_secret = zmq.auth.create_certificates(directory, "client")
    for secret in (server_secret, client_secret):
        Path(secret).chmod(0o600)
    shutil.copy(client_public, directory / "allowed" / "client.key")
    return {"server_public": server_public, "server_secret": server_secret, "client_public": client_public,
            "client_secret": client_secret, "allowed": str(directory / "allowed")}


def client_keys(config: dict) -> dict | None:
    """What a client of this config sets on a socket to a CURVE endpoint (None: CURVE off)."""
    keys = curve_dir(config)
    if keys is None:
        return None
    import zmq.auth

    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    public, secret = zmq.auth.load_certificate(keys / "client.key_secret")
    return {"serverkey": server_public, "publickey": public, "secretkey": secret}


def secure_client(sock: zmq.Socket, keys: dict | None) -> zmq.Socket:
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
            keys["serverkey"], keys["publickey"], keys["secretkey"]
    return sock


class CurveServer:
    """CURVE for the public sockets one process binds, with its own ZAP handler: a thread
    answering libzmq's authentication requests from the allow-list."""

    def __init__(self, ctx: zmq.Context, config: dict):
        import zmq.auth

        keys = curve_dir(config)
        self.public, self.secret = zmq.auth.load_certificate(keys / "server.key_secret")
        self.allowed = set(zmq.auth.load_certificates(keys / "allowed"))  # z85 public keys
        self.refused: collections.deque = collections.deque(maxlen=REFUSALS_KEPT)
        self.refusals = 0
        self._ctx = ctx
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._monitors: list[zmq.Socket] = []  # handed to the ZAP thread, which alone reads them
        self._zap = ctx.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(ZAP_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self._thread.start()

    def secure(self, sock: zmq.Socket) -> zmq.Socket:
        """Make ``sock`` a CURVE server (before it binds). A peer with a key not allowed is
        refused by the ZAP handler; a peer without CURVE never reaches it (libzmq refuses the
        mechanism), so a monitor on the socket reports those."""
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = self.public, self.secret
        sock.zap_domain = b"personas"
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        with self._lock:
            self._monitors.append(monitor)
        return sock

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        watched: list[zmq.Socket] = []
        while not self._stop.is_set():
            with self._lock:
                for monitor in self._monitors[len(watched):]:
                    poller.register(monitor, zmq.POLLIN)
                    watched.append(monitor)
            ready = dict(poller.poll(100))
            for monitor in watched:
                if monitor in ready:
                    self._handshake_failed(monitor)
            if self._zap not in ready:
                continue
            try:
                version, request_id, _domain, address, _identity, mechanism, *credentials = self._zap.recv_multipart()
            except ValueError:
                self._zap.send_multipart([b"1.0", b"", b"400", b"malformed ZAP request", b"", b""])
                continue
            key = credentials[0] if mechanism == b"CURVE" and credentials else b""
            allowed = mechanism == b"CURVE" and _z85(key).encode() in self.allowed
            if not allowed:
                self.refusals += 1
                self.refused.append({"address": address.decode(errors="replace"), "mechanism": mechanism.decode(errors="replace"),
                                     "key": _z85(key)[:8]})
            self._zap.send_multipart([version, request_id, b"200" if allowed else b"400",
                                      b"OK" if allowed else b"key not allowed", b"", b""])

    def _handshake_failed(self, monitor: zmq.Socket) -> None:
        from zmq.utils.monitor import parse_monitor_message

        try:
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
        except (zmq.Again, ValueError):
            return
        self.refusals += 1
        self.refused.append({"address": str(event.get("endpoint", b""), errors="replace") if isinstance(
            event.get("endpoint"), bytes) else str(event.get("endpoint", "")), "mechanism": "not CURVE", "key": ""})

    def drain(self) -> list[dict]:
        out = []
        while self.refused:
            out.append(self.refused.popleft())
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self._zap.close()
        for monitor in self._monitors:
            monitor.close(linger=0)


def _z85(key: bytes) -> str:
    try:
        return zmq.utils.z85.encode(key).decode() if len(key) == 32 else ""
    except Exception:  # a malformed key only names itself as unknown
        return ""
