"""`personas persona ...` and `personas registry serve`: build, publish and inspect personas.

Every command talks to the registry ``[registry]`` names: the embedded one (SQLite + files,
in this process) by default, or a running service (``registry.url``). A build prints its
progress, a QC table (each input accepted or rejected, with the reason) and either the
published version or what to recapture.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from registry.errors import RegistryError

from .cli import OPTION_CONFIG, OPTION_SET, resolve_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
BUILD_TIMEOUT_S = 1800.0


def registry_of(config_path, overrides):
    from registry.client import open_registry

    return open_registry(resolve_config(config_path, overrides)["registry"])


@click.group(help="Create, build, publish and inspect personas (the registry).")
def persona() -> None:
    pass


@persona.command("create", help="Register a new persona id (no version yet).")
@click.argument("persona_id")
@click.option("--name", "display_name", default="", help="a display name")
@OPTION_CONFIG
@OPTION_SET
def persona_create(persona_id, display_name, config_path, overrides) -> None:
    with registry_of(config_path, overrides) as registry:
        try:
            created = registry.create_persona(persona_id, display_name=display_name)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"created {created['persona_id']}" + (f" ({display_name})" if display_name else ""))


def gather_inputs(images: tuple[str, ...], video: str | None, voice_refs: tuple[str, ...]) -> list:
    from persona.builder import InputFile

    files = []
    for given in images:
        path = Path(given)
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
        files += [InputFile(p.name, p.read_bytes(), "image") for p in paths]
    if video:
        files.append(InputFile(Path(video).name, Path(video).read_bytes(), "video"))
    files += [InputFile(Path(v).name, Path(v).read_bytes(), "voice_ref") for v in voice_refs]
    return files


@persona.command("build", help="Build a new version from photos (a folder or files), a clip and voice refs.")
@click.argument("persona_id")
@click.option("--images", multiple=True, type=click.Path(exists=True), required=True, help="a folder of photos, or photos")
@click.option("--video", type=click.Path(exists=True, dir_okay=False), help="a clip: frames are sampled from it")
@click.option("--voice-ref", "voice_refs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a recording of the voice (repeatable)")
@click.option("--voice", help="the voice schema to speak with (configs/voices/NAME.json); default: joe")
@click.option("--min-anchors", type=int, help="usable photos a camera mode needs to be published (default 2)")
@OPTION_CONFIG
@OPTION_SET
def persona_build(persona_id, images, video, voice_refs, voice, min_anchors, config_path, overrides) -> None:
    inputs = gather_inputs(images, video, voice_refs)
    if not [i for i in inputs if i.kind != "voice_ref"]:
        raise click.UsageError("no photos found (give a folder of .jpg/.png or photo files)")
    options = {k: v for k, v in (("voice", voice), ("min_anchors_per_mode", min_anchors)) if v is not None}
    with registry_of(config_path, overrides) as registry:
        try:
            job = registry.create_version(persona_id, inputs, options)
            status = watch(registry, job)
        except (RegistryError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(qc_table(status.get("qc") or []))
    for warning in status.get("warnings") or []:
        click.echo(f"warning: {warning}")
    if status["state"] == "published":
        click.echo(status["message"])
        return
    click.echo(status.get("message") or status.get("error") or status["state"], err=True)
    sys.exit(1)


def watch(registry, job: str) -> dict:
    """The job's progress as a bar, until it ends."""
    with click.progressbar(length=100, label="building", show_percent=True, file=sys.stderr) as bar:
        seen = [0]

        def progress(fraction: float, message: str) -> None:
            step = int(fraction * 100) - seen[0]
            if step > 0:
                bar.update(step)
                seen[0] += step
            bar.label = f"building: {message}"[:60]

        status = registry.wait_job(job, timeout=BUILD_TIMEOUT_S, on_progress=progress)
        bar.update(100 - seen[0])
    return status


def qc_table(items: list[dict]) -> str:
    if not items:
        return "(no QC report)"
    width = max(len(q["name"]) for q in items)
    rows = [f"{'input':<{width}}  verdict   reason / measures"]
    for q in items:
        metrics = q.get("metrics") or {}
        detail = "; ".join(q["reasons"]) if q["reasons"] else ", ".join(
            f"{k} {metrics[k]}" for k in ("face_px", "sharpness", "face_luma") if k in metrics)
        rows.append(f"{q['name']:<{width}}  {'accepted' if q['accepted'] else 'REJECTED':<8}  {detail}")
    return "\n".join(rows)


@persona.command("list", help="Every persona and its latest version.")
@OPTION_CONFIG
@OPTION_SET
def persona_list(config_path, overrides) -> None:
    with registry_of(config_path, overrides) as registry:
        try:
            personas = registry.list_personas()
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    for p in personas:
        latest = f"@{p['latest_version']}" if p.get("latest_version") else " (no version)"
        click.echo(f"{p['persona_id']}{latest}  {p.get('display_name') or ''}")


@persona.command("versions", help="The published versions of a persona.")
@click.argument("persona_id")
@OPTION_CONFIG
@OPTION_SET
def persona_versions(persona_id, config_path, overrides) -> None:
    with registry_of(config_path, overrides) as registry:
        try:
            versions = registry.list_versions(persona_id)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
    for v in versions:
        click.echo(f"{persona_id}@{v['version']}  {v.get('published_at', '')}  {v.get('content_hash', '')[:12]}")


@persona.command("show", help="A version's anchors per camera mode, QC summary, identity spread, warnings.")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="the whole pack")
@OPTION_CONFIG
@OPTION_SET
def persona_show(ref, as_json, config_path, overrides) -> None:
    from persona.pack import PackError, parse_ref

    with registry_of(config_path, overrides) as registry:
        try:
            persona_id, version = parse_ref(ref)
            pack = registry.get_pack(persona_id, version)
        except (RegistryError, PackError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(pack.record, indent=2))
        return
    click.echo(describe_pack(pack))


def describe_pack(pack) -> str:
    record = pack.record
    lines = [f"{pack.ref}  {record.get('display_name', '')}  (builder {record['builder_version']})",
             f"QC: {record['qc']['accepted']} accepted, {record['qc']['rejected']} rejected; "
             f"identity spread {record['embeddings']['face_spread']:.3f}; "
             f"voice {record['voice']['name']}, voice embedding {'yes' if record['embeddings'].get('voice_ref') else 'no'}"]
    for mode, anchors in record["anchors"].items():
        lines.append(f"{mode}: {len(anchors)} anchor(s)")
        for a in anchors:
            pose = a["tags"]["pose"]
            lines.append(f"  {a['anchor_id']:<14} {a['tags']['expression']:<9} yaw {pose['yaw']:>6.1f} pitch {pose['pitch']:>6.1f} "
                         f"roll {pose['roll']:>5.1f}  {a['tags']['lighting']:<12} {a['crop_transform']['size']}px  {a['source']}")
    lines += [f"warning: {w}" for w in record["warnings"]]
    return "\n".join(lines)


@click.group(help="The persona registry as an HTTP service.")
def registry() -> None:
    pass


@registry.command("serve", help="Serve the registry over HTTP (registry.host:registry.port) until Ctrl-C.")
@OPTION_CONFIG
@OPTION_SET
def registry_serve(config_path, overrides) -> None:
    from registry.service import serve

    serve(resolve_config(config_path, overrides)["registry"])
