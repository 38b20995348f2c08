"""`personas-supervisor`: up, down, status, actors, barge-in."""

from __future__ import annotations

import json
import sys
import time

import click

from protocol.config import ConfigError, load_config
from protocol.control_endpoint import ControlClient
from protocol.security import client_keys

OPTION_CONFIG = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="TOML file over configs/default.toml")
OPTION_SET = click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="override one config key (repeatable)")


def control_client(config: dict) -> ControlClient:
    """The control client for ``config``'s supervisor (CURVE keys from security.curve_dir)."""
    return ControlClient(config["endpoints"]["control"], curve=client_keys(config))


def resolve_config(config_path: str | None, overrides: tuple[str, ...]) -> dict:
    try:
        return load_config(config_path, overrides)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(f"config: {exc}") from None


@click.group(help="Run and inspect the Personas actor system.")
def main() -> None:
    pass


@main.command(help="Start the five actors (and the web gateway) in the foreground; Ctrl-C or `down` stops them.")
@OPTION_CONFIG
@OPTION_SET
@click.option("--record", type=click.Path(dir_okay=False), help="record presented A/V to this MP4 (H.264 + AAC)")
@click.option("--persona", "persona_ref", metavar="ID[@VERSION]",
              help="speak with this persona from the registry (default: the built-in astronaut)")
def up(config_path, overrides, record, persona_ref) -> None:
    import logging

    from actors.runtime import setup_logging

    from .arbiter import Arbiter, StartupError, check_builtin_persona, check_persona, check_voice

    config = resolve_config(config_path, overrides)
    if record:
        config["player"]["record"] = record
    if persona_ref is not None:
        config["persona"]["id"] = persona_ref
    problem = check_voice(config) or check_persona(config)
    if problem:  # before any actor starts: a clear error, not an actor in a crash loop
        raise click.ClickException(problem)
    builtin = check_builtin_persona(config)
    if builtin:  # the configured persona is fine: start, and say what a later switch will meet
        click.echo(f"warning: {builtin}; a switch to the built-in persona will be refused", err=True)
    setup_logging("super")
    logging.getLogger("personas.supervisor").info(
        "starting parser, tts, stitcher, driver, player; ingress %s, timeline %s, control %s",
        config["endpoints"]["ingress"], config["endpoints"]["timeline"], config["endpoints"]["control"])
    try:
        arbiter = Arbiter(config, config_source=config_path or "default")
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None
    arbiter.announce = lambda message: click.echo(message, err=False)
    click.echo(f"control token {arbiter.token} (in {arbiter.token_file}, readable by this user only; "
               "clients of this user read it from there)")
    code = arbiter.run()
    if arbiter.stop_reason and code:
        click.echo(f"personas-supervisor: {arbiter.stop_reason}", err=True)
    sys.exit(code)


@main.command(help="Stop a running supervisor and all its actors.")
@OPTION_CONFIG
@OPTION_SET
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for everything to exit")
def down(config_path, overrides, timeout) -> None:
    import psutil

    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["control"]
    status_reply = control_client(config).call("status")
    if status_reply is None:
        raise click.ClickException(f"no supervisor answering at {endpoint}")
    pids = [status_reply["supervisor"]["pid"]] + [a["pid"] for a in status_reply["actors"].values() if a["pid"]]
    waiting = ControlClient(endpoint, timeout_ms=int(timeout * 1000), curve=client_keys(config))
    reply = waiting.call("down", wait=True) or {}
    unspoken = reply.get("unspoken") or {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_running(pid) for pid in pids):
            click.echo("stopped" + (f"; not spoken: {unspoken['chars']} characters in {unspoken['chunks']} chunks, "
                                    f"{unspoken['queued_messages']} ingress messages unread" if any(unspoken.values()) else ""))
            return
        time.sleep(0.1)
    raise click.ClickException(f"still running after {timeout:.0f}s: pids {[p for p in pids if psutil.pid_exists(p)]}")


def _running(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@main.command(help="Per actor: pid, state, cpu, RSS, queues. Exit 1 unless all actors are ready.")
@OPTION_CONFIG
@OPTION_SET
@click.option("--json", "as_json", is_flag=True, help="print the raw status map")
def status(config_path, overrides, as_json) -> None:
    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["control"]
    reply = control_client(config).call("status")
    if reply is None:
        click.echo(f"no supervisor running at {endpoint}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    else:
        click.echo(format_status(reply))
    ready = reply["supervisor"]["state"] == "running" and all(a["state"] == "ready" for a in reply["actors"].values())
    progress = reply["supervisor"].get("progress", {})
    if ready and progress.get("state") == "stuck":  # every actor beats, and still nothing is said
        click.echo(f"STUCK: {progress['stuck_at']} (text waiting: {progress['waiting']}; no speech presented for "
                   f"{progress['quiet_s']} s)", err=True)
        sys.exit(3)
    sys.exit(0 if ready else 1)


def format_status(reply: dict) -> str:
    sup = reply["supervisor"]
    lines = [f"supervisor pid {sup['pid']}  {sup['state']}  epoch {sup['epoch']}  up {sup['uptime_s']:.0f}s  "
             f"ingress {sup['endpoints']['ingress']}  timeline {sup['endpoints']['timeline']}  "
             f"progress {sup.get('progress', {}).get('state', '?')}",
             f"{'actor':<9}{'pid':>8}  {'state':<9}{'cpu%':>6}{'rss MB':>8}{'restarts':>10}  queues / credit"]
    for name, a in reply["actors"].items():
        stats = a.get("stats") or {}
        queues = {k: v for k, v in stats.items() if k not in ("device",)}
        lines.append(f"{name:<9}{a['pid'] or '-':>8}  {a['state']:<9}{a['cpu_percent']:>6.1f}{a['rss_mb']:>8.1f}"
                     f"{str(a['restarts']) + ' (' + str(a.get('restarts_recent', 0)) + ')':>10}  "
                     f"{json.dumps(queues, separators=(',', ':'))[:110]}")
    return "\n".join(lines)


@main.command(help="Print every actor's describe() descriptor.")
@OPTION_CONFIG
@OPTION_SET
def actors(config_path, overrides) -> None:
    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["control"]
    reply = control_client(config).call("actors")
    if reply is None:
        raise click.ClickException(f"no supervisor answering at {endpoint}")
    click.echo(json.dumps(reply["actors"], indent=2))


@main.command("barge-in", help="Interrupt: start a new epoch; every actor drops older work.")
@OPTION_CONFIG
@OPTION_SET
def barge_in(config_path, overrides) -> None:
    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["control"]
    reply = control_client(config).call("barge_in", reason="cli")
    if reply is None:
        raise click.ClickException(f"no supervisor answering at {endpoint}")
    click.echo(f"epoch {reply['epoch']}")


@main.group(help="Read or change the running configuration.")
def config() -> None:
    pass


@config.command("get", help="Print the running configuration, or one section / key (e.g. tts.adapter).")
@click.argument("key", required=False, default="")
@OPTION_CONFIG
@OPTION_SET
def config_get(key, config_path, overrides) -> None:
    reply = _call(config_path, overrides, "config_get", key=key)
    click.echo(json.dumps(reply["value"], indent=2) if isinstance(reply["value"], dict) else reply["value"])


@config.command("set", help="Change live keys, e.g. `config set tts.adapter=espeak`; applied at the next chunk boundary.")
@click.argument("pairs", nargs=-1, required=True)
@OPTION_CONFIG
@OPTION_SET
def config_set(pairs, config_path, overrides) -> None:
    import tomllib

    changes = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise click.UsageError(f"{pair!r} is not section.key=value")
        try:
            changes[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            changes[key.strip()] = raw
    reply = _call(config_path, overrides, "config_set", changes=changes)
    click.echo(f"config version {reply['version']}: " + ", ".join(f"{k}={v}" for k, v in reply["changes"].items()))


@main.command(help="Print every TTS adapter's capability descriptor and voice projection.")
@OPTION_CONFIG
@OPTION_SET
def adapters(config_path, overrides) -> None:
    reply = _call(config_path, overrides, "adapters")
    click.echo(f"active: {reply['active']}   fallback: {reply['fallback'] or '-'}   voice: {(reply['voice'] or {}).get('name')}")
    click.echo(json.dumps(reply["adapters"], indent=2))


def _call(config_path, overrides, cmd: str, **args) -> dict:
    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["control"]
    reply = control_client(config).call(cmd, **args)
    if reply is None:
        raise click.ClickException(f"no supervisor answering at {endpoint}")
    if not reply.get("ok"):
        raise click.ClickException(reply.get("error", "failed"))
    return reply
