"""Where a session runs: on this machine (a supervisor process per session), or on a Ray
cluster (a Ray actor per session that runs the same supervisor on its node).

Both give the manager the same asynchronous surface; what differs is who holds the
process, how capacity is judged, and how a lost host shows up (a Ray node that dies
makes every call on its actors fail with RayActorError, which the manager reports).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .host import SessionProcess, SessionRefused, SessionStartError


class HostLost(RuntimeError):
    """The machine or node a session ran on is gone."""


class LocalPlacement:
    kind = "local"

    def __init__(self, base_config: dict, root: Path):
        self.base, self.root = base_config, Path(root)
        self.host = base_config["sessions"]["public_host"] or "127.0.0.1"

    async def open(self, session_id: str, choices: dict, timeout_s: float) -> tuple[SessionProcess, dict]:
        """Off the loop: the session's files are written, its voice read, its actors awaited."""
        def start() -> tuple[SessionProcess, dict]:
            proc = SessionProcess(session_id, self.base, self.root, self.host, choices)
            return proc, proc.start(timeout_s)

        proc, info = await asyncio.to_thread(start)
        return proc, {**info, "node": "local"}

    async def status(self, proc: SessionProcess) -> dict | None:
        if not proc.alive():
            raise HostLost(f"supervisor exited with code {proc.proc.returncode if proc.proc else '?'}")
        return await asyncio.to_thread(proc.status)

    async def usage(self, proc: SessionProcess) -> dict:
        return await asyncio.to_thread(proc.usage)

    async def close(self, proc: SessionProcess, reason: str) -> dict:
        return await asyncio.to_thread(proc.stop, reason)

    def room(self, _opening: int) -> str:
        return ""  # this machine's budget is the manager's capacity formula

    def refresh(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class RayPlacement:
    """Sessions as Ray actors that declare the CPU a session needs; Ray picks the node."""

    kind = "ray"

    def __init__(self, base_config: dict, root: Path, address: str):
        import ray

        self.ray = ray
        self.base, self.root = base_config, Path(root)
        if not ray.is_initialized():
            ray.init(address=address, logging_level="warning", log_to_driver=False)
        self.host_class = ray.remote(max_restarts=0, max_concurrency=4)(RaySessionHost)
        self.cpu = float(base_config["sessions"]["ray_cpus_per_session"])
        self.state: dict = {}
        self.refresh()

    async def open(self, session_id: str, choices: dict, timeout_s: float):
        actor = self.host_class.options(num_cpus=self.cpu, name=f"personas-{session_id}").remote(
            session_id, self.base, str(self.root), choices)
        try:
            info = await asyncio.wait_for(actor.start.remote(timeout_s), timeout_s + 30)
        except self.ray.exceptions.RayTaskError as exc:
            self.ray.kill(actor)
            if isinstance(exc.cause, (SessionRefused, SessionStartError)):
                raise exc.cause from None  # the session's own reason, not Ray's wrapping
            raise
        except BaseException:
            self.ray.kill(actor)
            raise
        return actor, info

    async def status(self, actor) -> dict | None:
        """The session's status; None when it did not answer this time (a slow or briefly
        unreachable node: the manager counts misses); HostLost when its node or process is gone."""
        errors = self.ray.exceptions
        try:
            return await asyncio.wait_for(actor.status.remote(), 5)
        except (asyncio.TimeoutError, errors.ActorUnavailableError):
            return None
        except errors.RayActorError as exc:
            raise HostLost(f"its Ray node is gone ({type(exc).__name__})") from None
        except errors.RayTaskError as exc:
            raise HostLost(f"on its Ray node: {str(exc.cause)[:200]}") from None

    async def usage(self, actor) -> dict:
        try:
            return await asyncio.wait_for(actor.usage.remote(), 5)
        except (asyncio.TimeoutError, self.ray.exceptions.RayError):
            return {"cpu": 0.0, "rss_mb": 0.0}

    async def close(self, actor, reason: str) -> dict:
        try:
            return await asyncio.wait_for(actor.stop.remote(reason), 60)
        except (self.ray.exceptions.RayActorError, asyncio.TimeoutError):
            return {"exit_code": None, "unspoken": None}
        finally:
            self.ray.kill(actor, no_restart=True)

    def room(self, opening: int) -> str:
        """"" when the cluster has the CPU a session declares besides what sessions still being
        placed will take, else why not (from the last refresh)."""
        free = self.state.get("cluster_cpu_free", 0.0) - opening * self.cpu
        if free + 1e-9 < self.cpu:
            alive = sum(n["alive"] for n in self.state.get("nodes", []))
            return (f"the Ray cluster has {max(free, 0):g} free CPU of the {self.cpu:g} a session declares "
                    f"({alive} nodes alive, {opening} sessions being placed)")
        return ""

    def refresh(self) -> None:
        """Ask Ray for its nodes and free CPU (remote calls: the manager runs this off its loop)."""
        nodes = [{"node_id": n["NodeID"], "alive": n["Alive"], "address": n.get("NodeManagerAddress"),
                  "port": n.get("NodeManagerPort"), "resources": n.get("Resources", {})} for n in self.ray.nodes()]
        self.state = {"nodes": nodes, "head_node": self.ray.get_runtime_context().get_node_id(),
                      "cpu_per_session": self.cpu, "cluster_cpu_free": self.ray.available_resources().get("CPU", 0.0),
                      "sessions": int(self.ray.cluster_resources().get("CPU", 0.0) // self.cpu)}

    def describe(self) -> dict:
        return dict(self.state)

    def shutdown(self) -> None:
        self.ray.shutdown()


class RaySessionHost:
    """The Ray actor: one SessionProcess on the node Ray placed it on."""

    def __init__(self, session_id: str, base_config: dict, root: str, choices: dict):
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        host = base_config["sessions"]["public_host"] or ray.util.get_node_ip_address()
        self.args = (session_id, base_config, Path(root) / self.node_id[:12], host, choices)
        self.proc: SessionProcess | None = None

    def start(self, timeout_s: float) -> dict:
        self.proc = SessionProcess(*self.args)  # here, so that a refusal comes back as its own error
        return {**self.proc.start(timeout_s), "node": self.node_id}

    def status(self) -> dict | None:
        if not self.proc.alive():
            raise RuntimeError("the session's supervisor exited")
        return self.proc.status()

    def usage(self) -> dict:
        return self.proc.usage()

    def stop(self, reason: str) -> dict:
        return self.proc.stop(reason)
