"""`personas`: feed tokens, watch the timeline, one-shot runs, benchmarks."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from clients.analysis import ttff_by_chunk
from clients.feeder import Feeder
from clients.timeline import TimelineRecorder
from protocol import tokenize_like_llm
from protocol.security import client_keys

from . import cli as supervisor_cli
from . import persona_cli
from .cli import OPTION_CONFIG, OPTION_SET, resolve_config


@click.group(help="Talk to a running Personas system, or run one end to end.")
def main() -> None:
    pass


@main.command(help="Stream TEXT (or --file) to the ingress as LLM-like tokens, then `end`.")
@click.argument("text", required=False)
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", default=40.0, show_default=True, help="tokens per second (0 = as fast as accepted)")
@click.option("--seed", default=0, help="token split seed")
@click.option("--no-end", is_flag=True, help="do not send `end` (the turn stays open)")
@OPTION_CONFIG
@OPTION_SET
def feed(text, path, rate, seed, no_end, config_path, overrides) -> None:
    if (text is None) == (path is None):
        raise click.UsageError("give TEXT or --file, not both")
    body = Path(path).read_text(encoding="utf-8") if path else text
    config = resolve_config(config_path, overrides)
    feeder = Feeder(config["endpoints"]["ingress"], curve=client_keys(config))
    count = feeder.feed(tokenize_like_llm(body, seed), rate=rate, end=not no_end)
    feeder.close()
    click.echo(f"sent {count} tokens" + ("" if no_end else " + end"))


@main.command(help="Watch the timeline live (a compact view refreshing in place); --jsonl FILE records it.")
@click.option("--jsonl", type=click.Path(dir_okay=False), help="append every event to this JSONL file")
@click.option("--raw", is_flag=True, help="print every event as a JSON line instead of the live view")
@click.option("--lines", is_flag=True, help="print one compact line per event instead of the live view")
@click.option("--actor", multiple=True, help="only these actors (--raw/--lines)")
@click.option("--stage", multiple=True, help="only these stages (--raw/--lines)")
@click.option("--quiet", is_flag=True, help="print nothing (record only)")
@OPTION_CONFIG
@OPTION_SET
def timeline(jsonl, raw, lines, actor, stage, quiet, config_path, overrides) -> None:
    import signal
    import threading

    from clients.views import LiveView

    config = resolve_config(config_path, overrides)
    endpoint = config["endpoints"]["timeline"]
    stop = threading.Event()  # Ctrl-C or SIGTERM: finish the turn, flush the JSONL, exit 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    recorder = TimelineRecorder(endpoint, jsonl, keep=False, curve=client_keys(config))
    live = None if (raw or lines or quiet or not sys.stdout.isatty()) else LiveView()
    origin = None
    try:
        while not stop.wait(0.25):
            for e in recorder.drain():
                if live is not None:
                    live.add(e)
                elif not quiet and not (actor and e["actor"] not in actor) and not (stage and e["stage"] not in stage):
                    origin = origin or e["ts_ns"]
                    click.echo(json.dumps(e) if raw else format_event(e, origin))
            if live is not None:
                live.draw()
    finally:
        recorder.close()


@main.command(help="Draw a timeline as a time-aligned chart: buffers, chunk sizes, engines, events, latency.")
@click.argument("timeline_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="PNG to write")
def plot(timeline_file, out) -> None:
    from clients.timeline import load_jsonl
    from clients.views import plot as draw

    click.echo(f"wrote {draw(load_jsonl(timeline_file), out, title=Path(timeline_file).name)}")


def format_event(e: dict, origin: int) -> str:
    ids = " ".join(f"{k[0]}{e[k]}" for k in ("epoch", "utterance_id", "chunk_id", "frame") if e[k] >= 0 and k != "epoch")
    data = json.dumps(e["data"], separators=(",", ":"))
    return (f"{(e['ts_ns'] - origin) / 1e9:9.3f} {e['actor']:<10}{e['stage']:<20}{e['result']:<9}"
            f"{e['duration_ms']:8.1f}ms e{e['epoch']} {ids:<22} {data[:100]}")


@main.command(help="One shot: up, feed SCRIPT, wait for the last frame, finalise the recording, down.")
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="MP4 to write")
@click.option("--rate", default=40.0, show_default=True, help="tokens per second")
@click.option("--seed", default=0, help="token split seed")
@OPTION_CONFIG
@OPTION_SET
def run(script, out, rate, seed, config_path, overrides) -> None:
    from clients.session import Session, SessionError

    text = Path(script).read_text(encoding="utf-8")
    timeline_path = Path(out).with_suffix(".timeline.jsonl")
    timeline_path.parent.mkdir(parents=True, exist_ok=True)
    timeline_path.unlink(missing_ok=True)
    log = Path(out).with_suffix(".log")
    started = time.monotonic()
    session = Session(config_path, overrides, record=out, timeline_jsonl=timeline_path, log=log)
    try:
        session.start()
        click.echo(f"up in {time.monotonic() - started:.1f}s; feeding {script} at {rate:g} tokens/s")
        fed = time.monotonic()
        presented = session.say_and_wait(text, rate=rate, seed=seed)
        speaking_s = time.monotonic() - fed
    except SessionError as exc:
        session.stop()
        raise click.ClickException(f"{exc} (supervisor log: {log})") from None
    code = session.stop()
    events = session.timeline.events
    rows = ttff_by_chunk(events)
    click.echo(f"\n{'chunk':>5}  {'generated':>9}  {'presented':>9}  sentence")
    for r in rows:
        click.echo(f"{r['chunk_id']:>5}  {fmt_ms(r['generated_ms'])}  {fmt_ms(r['presented_ms'])}  {r['text'][:60]}")
    first = rows[0] if rows else {}
    underflows = sum(1 for e in events if e["stage"] == "present" and e["result"] == "underflow")
    gaps = sum(1 for e in events if e["stage"] == "stitch" and e["result"] == "gap")
    errors = [e for e in events if e["result"] == "error"]
    click.echo(f"\nfirst sentence TTFF: generated {fmt_ms(first.get('generated_ms'))}, presented {fmt_ms(first.get('presented_ms'))}")
    click.echo(f"sentences {len(rows)}, speaking {speaking_s:.1f}s, underflows {underflows}, gaps {gaps}, errors {len(errors)}, "
               f"last frame at tick {presented['data'].get('tick')}")
    click.echo(f"wrote {out} and {timeline_path} (supervisor exit {code})")
    if code:
        sys.exit(1)


def fmt_ms(value) -> str:
    return f"{value:7.1f}ms" if value is not None else "      n/a"


@main.command(help="Regenerate a session from its timeline: same chunks, engines, timing; byte-identical audio.")
@click.argument("timeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="MP4 to write")
def replay(timeline, out) -> None:
    from clients.replay import ReplayError, replay as run_replay

    try:
        result = run_replay(timeline, out, echo=click.echo)
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {result.ticks} ticks, {result.chunks} chunks re-synthesised {result.modes}")


@main.command(help="Talk with an LLM through the avatar: each reply of an OpenAI-compatible server (llama.cpp, "
                   "Ollama, vLLM, hosted) is streamed into the ingress as it is written, markers and all. One "
                   "MESSAGE, or lines from stdin. A barge-in (--barge-in-after, Ctrl-C, a line typed while it "
                   "speaks, or one from anywhere else) closes the LLM stream. Speaks on the system at --config's "
                   "endpoints, or starts one when none answers (--system).")
@click.argument("message", required=False)
@click.option("--llm-url", required=True, metavar="URL", help="the API's base URL, e.g. http://127.0.0.1:8000/v1")
@click.option("--model", required=True, help="the model name the server knows")
@click.option("--system-prompt", type=click.Path(exists=True, dir_okay=False), default=None,
              help="system prompt file (default: configs/chat_system_prompt.md, the marker vocabulary)")
@click.option("--no-system-prompt", is_flag=True, help="send no system prompt")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, metavar="VAR",
              help="environment variable holding the API key (unset: a placeholder, which local servers ignore)")
@click.option("--max-tokens", default=400, show_default=True, type=click.IntRange(1, 32768))
@click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="(default: the server's)")
@click.option("--seed", type=int, default=None, help="sampling seed, where the server takes one")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(1, 3600),
              help="seconds the LLM server may stay silent inside a reply (connecting: 5)")
@click.option("--barge-in-after", type=click.FloatRange(0, 3600), default=None, metavar="SECONDS",
              help="scripted barge-in: this long after the first token of each reply")
@click.option("--system", "system_mode", type=click.Choice(["auto", "attach", "start"]), default="auto",
              show_default=True, help="attach to the running system, start one, or attach if one answers")
@click.option("--record", type=click.Path(dir_okay=False), help="record to this MP4 (a system started here)")
@click.option("--report", type=click.Path(dir_okay=False), help="append one JSON line per reply (text, timings)")
@OPTION_CONFIG
@OPTION_SET
def chat(message, llm_url, model, system_prompt, no_system_prompt, api_key_env, max_tokens, temperature, seed,
         timeout, barge_in_after, system_mode, record, report, config_path, overrides) -> None:
    import os

    from clients.chat import ChatError, ChatOptions, LLMSettings, load_system_prompt, run_chat

    resolve_config(config_path, overrides)  # a bad config is one line, before anything starts
    try:
        options = ChatOptions(
            llm=LLMSettings(url=llm_url, model=model, api_key=os.environ.get(api_key_env, ""), max_tokens=max_tokens,
                            temperature=temperature, seed=seed, read_timeout_s=timeout),
            system_prompt="" if no_system_prompt else load_system_prompt(system_prompt), system=system_mode,
            barge_in_after=barge_in_after, record=record, report=report,
            log=str(Path(record).with_suffix(".log")) if record else None)
        code = run_chat(options, config_path, overrides, message, echo=lambda s: click.echo(s, err=True),
                        out=lambda s: click.echo(s, nl=False))
    except ChatError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


main.add_command(supervisor_cli.barge_in)
main.add_command(persona_cli.persona)
main.add_command(persona_cli.registry)


@main.command(help="Run the session manager: many conversations, each its own supervisor and actors "
                   "(HTTP API on sessions.host:sessions.port; INTERFACES.md §13).")
@click.option("--ray", "ray_address", default="", metavar="auto|ADDRESS",
              help="place sessions on this Ray cluster (pip install personas[ray]) instead of this machine")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="sessions, tokens and the capacity measurement (default: $PERSONAS_STATE_DIR or ~/.local/state/personas)")
@OPTION_CONFIG
@OPTION_SET
def serve(ray_address, state_dir, config_path, overrides) -> None:
    import asyncio
    import os
    import signal

    from actors.runtime import setup_logging
    from protocol.control_endpoint import STATE_DIR
    from sessions.manager import SessionManager

    config = resolve_config(config_path, overrides)
    state = Path(state_dir or os.environ.get("PERSONAS_STATE_DIR") or STATE_DIR).expanduser()
    os.environ["PERSONAS_STATE_DIR"] = str(state)  # the manager's token file lives there too
    setup_logging("sessions")

    async def main_loop() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            manager = SessionManager(config, state, ray_address)
        except (ValueError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None

        def ready(m: SessionManager) -> None:
            cap = m.capacity()
            click.echo(f"session manager on {m.endpoint} ({m.placement.kind}); capacity {cap['sessions']} sessions "
                       f"({cap['cpu_per_session']:g} cores each, {cap['source']})", err=False)
            click.echo(f"manager token in {m.token_file} (header X-Personas-Token)")

        await manager.serve(ready, stop)

    asyncio.run(main_loop())


@main.group(help="CURVE keys for endpoints bound beyond loopback.")
def keys() -> None:
    pass


@keys.command("gen", help="Write a server key pair, a client key pair and allowed/ (the client's public key) "
                          "into DIR; then set security.curve_dir = DIR. Other clients: copy server.key and give "
                          "them a key pair whose public half goes into DIR/allowed/.")
@click.argument("directory", type=click.Path(file_okay=False))
def keys_gen(directory) -> None:
    from protocol.security import generate_keys

    if Path(directory).exists() and any(Path(directory).iterdir()):
        raise click.ClickException(f"{directory} is not empty: keys are never overwritten")
    made = generate_keys(directory)
    for name, path in made.items():
        click.echo(f"{name:<14} {path}")


@main.group(help="Behavioural scenes: each writes scenes/_artifacts/<scene>/ and a verdict.")
def scenes() -> None:
    pass


@scenes.command("run", help="Run scenes (NAME ... or --all) and print the table of verdicts.")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="every scene")
@click.option("--adapters", default="piper,espeak,wyoming", show_default=True,
              help="engines the swap and persona scenes use, comma-separated")
@click.option("--quick", is_flag=True, help="shorter runs (the Long Read lasts 60 s instead of 5 min)")
def scenes_run(names, run_all, adapters, quick) -> None:
    from scenes.runner import SCENES, run_scenes, table

    chosen = list(SCENES) if run_all or not names else list(names)
    verdicts = run_scenes(chosen, [a for a in adapters.split(",") if a], quick, echo=click.echo)
    click.echo("\n" + table(verdicts))
    if not all(v["passed"] for v in verdicts):
        sys.exit(1)  # the same command as `personas-supervisor barge-in`


@main.group(help="Train the learned parts that ship with Personas.")
def train() -> None:
    pass


@train.command("lips", help="Make the lip model's data (Piper and espeak-ng speak a generated corpus with their "
                            "alignments), train the audio-to-viseme network with a fixed seed, evaluate it on unseen "
                            "sentences and an unseen voice, write the weights and the model card.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="weights file (default: the shipped actors/lips_model/lips.npz); the card is written beside it")
@click.option("--quick", is_flag=True, help="a few sentences and steps: checks the pipeline, not a usable model")
def train_lips(out, quick) -> None:
    from actors.lips import WEIGHTS
    from training.lips import QUICK, Settings, run_training

    card = run_training(QUICK if quick else Settings(), Path(out) if out else WEIGHTS, echo=click.echo)
    click.echo(json.dumps({"sha256": card["sha256"], "evaluation": card["evaluation"]}, indent=2))


@main.group(help="Benchmarks; each figure comes with a baseline measured in the same run.")
def bench() -> None:
    pass


#: Each benchmark, in the order `bench all` runs them: its help line, its own options with
#: their defaults, and whether it starts a system (then it takes --config/--set too). All write
#: their figures under their name in --json.
BENCHMARKS = {
    "ttff": ("Time to first frame from the first sentence-ending token, vs the floor.", {"runs": 10}, True),
    "sync": ("A/V skew and presentation lateness, idle and with both cores loaded.", {}, True),
    "bargein": ("Barge-in at random points: time to the last old audio sample, vs the next frame boundary.",
                {"points": 50}, True),
    "sustained": ("Minutes of narration at 25 fps: CPU, underflows, RSS slope, vs idle.", {"seconds": 300}, True),
    "hop": ("One frame between two processes over ZeroMQ, vs a memory copy.", {}, False),
    "baseline": ("The naive approach (wait, synthesise all, render all) vs streaming.", {}, True),
    "persona": ("Persona pack warm load, anchor selection and build time per photo, each vs a same-run baseline.",
                {}, False),
    "faults": ("Each actor killed mid-paragraph: detection, back ready, speech resumed, words lost / doubled; "
               "with and without warm spares.", {}, True),
    "fuzz": ("Hostile messages on every socket, then valid text: failures, restarts, words lost vs before.",
             {"messages": 10_000}, True),
    "sessions": ("Concurrent speaking sessions with 0 underflows, per-session CPU and RSS, vs one session alone; "
                 "--save writes the capacity measurement the session manager admits by.",
                 {"limit": 4, "save": False}, True),
    "peer": ("Time to first audio vs Pipecat's PiperTTSService (same voice, tokens and rate, one run): sentence rule "
             "and clause-first.", {"runs": 6}, True),
    "lips": ("The learned lip model on held-out sentences and an unseen voice: mouth opening r and lag vs the "
             "engine's alignment, beside the shadow alignment; its cost and look-ahead.", {"held_out": 24}, False),
    "drift": ("Phoneme-to-frame drift over a long narration: each open vowel's mouth-opening peak vs the vowel's "
              "time on the audio clock, alignment-driven and audio-driven lips.", {}, True),
}


def run_benchmark(name: str, config_path: str | None = None, overrides: tuple = (), **options) -> dict:
    from bench import suite

    run = getattr(suite, name)
    if BENCHMARKS[name][2]:
        return run(config_path, overrides, echo=click.echo, **options)
    return run(echo=click.echo, **options)


def _add_benchmark(name: str, summary: str, defaults: dict, starts_system: bool) -> None:
    def command(json_path, config_path=None, overrides=(), **options) -> None:
        save_bench(json_path, name, run_benchmark(name, config_path, overrides, **options))

    for option, default in defaults.items():
        flag = {"is_flag": True} if isinstance(default, bool) else {}
        command = click.option(f"--{option}", default=default, show_default=True, **flag)(command)
    if starts_system:
        command = OPTION_SET(OPTION_CONFIG(command))
    command = click.option("--json", "json_path", type=click.Path(dir_okay=False),
                           help="add the results to this JSON file")(command)
    bench.command(name, help=summary)(command)


for _name, (_summary, _defaults, _starts_system) in BENCHMARKS.items():
    _add_benchmark(_name, _summary, _defaults, _starts_system)


@bench.command("all", help="Every benchmark, into one JSON file (then `personas bench table`).")
@click.option("--json", "json_path", default="out/bench.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--seconds", default=300, show_default=True, help="length of the sustained run")
@OPTION_CONFIG
@OPTION_SET
def bench_all(json_path, seconds, config_path, overrides) -> None:
    for name in BENCHMARKS:
        click.echo(f"\n== bench {name} ==")
        options = {**BENCHMARKS[name][1], **({"seconds": seconds} if name == "sustained" else {})}
        save_bench(json_path, name, run_benchmark(name, config_path, overrides, **options))


@bench.command("table", help="The performance table (markdown) from a bench JSON; --readme rewrites README's.")
@click.option("--json", "json_path", default="out/bench.json", show_default=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--readme", type=click.Path(exists=True, dir_okay=False), help="replace the table between the bench markers")
def bench_table(json_path, readme) -> None:
    from bench.suite import markdown_table

    table = markdown_table(json.loads(Path(json_path).read_text()))
    if readme:
        text = Path(readme).read_text()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start not in text or end not in text:
            raise click.ClickException(f"{readme} has no {start} ... {end} markers")
        head, rest = text.split(start, 1)
        Path(readme).write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])
        click.echo(f"updated {readme}")
    else:
        click.echo(table)


def save_bench(json_path: str | None, key: str, result: dict) -> None:
    if not json_path:
        return
    path = Path(json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[key] = result
    path.write_text(json.dumps(existing, indent=2))
    click.echo(f"wrote {json_path}")
