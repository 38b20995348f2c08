"""The persona the driver renders: a published PersonaPack from the registry, its anchors of
one camera mode decoded into the images the renderer warps.

``persona.id`` names the version (``ada@2``, or ``ada`` for the latest); empty means the
built-in astronaut, which is built through the same builder pipeline into the registry the
first time it is asked for. Loading happens at start-up and when the persona changes (at an
utterance boundary), never on the render path.
"""

from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from persona.builder import BUILTIN_ID, BUILTIN_OPTIONS, builtin_inputs, decode_vector
from persona.pack import Anchor, PackError, PersonaPack, parse_ref
from registry.errors import NotFound, RegistryError

LOG = logging.getLogger("personas.persona")
#: How long the first start may take to build the built-in persona.
BUILTIN_BUILD_TIMEOUT_S = 120.0


class PersonaUnavailable(RuntimeError):
    """The configured persona cannot be rendered; the message says which and why."""


@dataclass
class FaceImage:
    """One aligned photo the renderer warps: a canonical crop and its 68 landmarks."""

    name: str
    image: np.ndarray  # RGB uint8 (S, S, 3)
    landmarks: np.ndarray  # (68, 2) float32, crop pixels

    @property
    def size(self) -> int:
        return int(self.image.shape[0])


@dataclass
class LoadedPersona:
    pack: PersonaPack
    mode: str
    anchors: dict[str, Anchor]  # anchor_id -> anchor, of ``mode``
    faces: dict[str, FaceImage]  # anchor_id -> the decoded photo
    identity: np.ndarray  # the pack's face embedding (128-d)
    qc: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.pack.ref


@contextmanager
def registry_for(config: dict, registry=None):
    """``registry`` if the caller has one; else the one ``[registry]`` names, closed after use."""
    if registry is not None:
        yield registry
        return
    from registry.client import open_registry

    opened = open_registry(config["registry"])
    try:
        yield opened
    finally:
        if hasattr(opened, "close"):
            opened.close()


def resolve_pack(config: dict, registry=None) -> PersonaPack:
    """The pack ``persona.id`` names (building the built-in one if needed); PersonaUnavailable
    with the reason when it cannot be had."""
    wanted = str(config["persona"]["id"]).strip()
    try:
        with registry_for(config, registry) as source:
            if not wanted:
                return builtin_pack(source)
            persona_id, version = parse_ref(wanted)
            return source.get_pack(persona_id, version)
    except (PackError, RegistryError, KeyError, LookupError, ValueError) as exc:
        raise PersonaUnavailable(f"persona {wanted or BUILTIN_ID!r}: {exc}") from None
    except Exception as exc:  # a lost database, a timed-out build: still a clear refusal, not a crash
        raise PersonaUnavailable(f"persona {wanted or BUILTIN_ID!r}: {type(exc).__name__}: {exc}") from None


def builtin_pack(registry) -> PersonaPack:
    try:
        return registry.get_pack(BUILTIN_ID, None)
    except NotFound:
        pass
    LOG.info("building the built-in persona %r (first start)", BUILTIN_ID)
    if BUILTIN_ID not in {p["persona_id"] for p in registry.list_personas()}:
        registry.create_persona(BUILTIN_ID, display_name=BUILTIN_OPTIONS["display_name"])
    job = registry.create_version(BUILTIN_ID, builtin_inputs(), BUILTIN_OPTIONS)
    status = registry.wait_job(job, timeout=BUILTIN_BUILD_TIMEOUT_S)
    if status.get("state") != "published":
        raise PersonaUnavailable(f"the built-in persona did not build: {status.get('error') or status.get('message')}")
    return registry.get_pack(BUILTIN_ID, status["version"])


def load_persona(config: dict, registry=None) -> LoadedPersona:
    with registry_for(config, registry) as source:
        pack = resolve_pack(config, source)
        mode = config["persona"]["mode"]
        anchors = {a.anchor_id: a for a in pack.anchors(mode)}
        if not anchors:
            modes = sorted({a.mode for a in pack.anchors()})
            raise PersonaUnavailable(f"persona {pack.ref} has no {mode} anchors (it has: {', '.join(modes)}); "
                                     f"set persona.mode to one of them")
        try:
            faces = {aid: decode_face(source.read_asset(a.image_ref), a) for aid, a in anchors.items()}
            identity = decode_vector(source.read_asset(pack.face_embedding_ref))
        except (RegistryError, KeyError) as exc:
            raise PersonaUnavailable(f"persona {pack.ref}: {exc}") from None
    qc = {k: pack.record["qc"][k] for k in ("accepted", "rejected")}
    return LoadedPersona(pack, mode, anchors, faces, identity, qc)


def decode_face(data: bytes, anchor: Anchor) -> FaceImage:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        image = np.asarray(img.convert("RGB"))
    if image.shape[0] != anchor.crop_size or image.shape[1] != anchor.crop_size:
        raise PersonaUnavailable(f"anchor {anchor.anchor_id}: its image is {image.shape[1]}x{image.shape[0]}, "
                                 f"the pack says {anchor.crop_size}")
    return FaceImage(anchor.anchor_id, image, np.asarray(anchor.landmarks, np.float32))
