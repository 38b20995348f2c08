"""The persona builder on real photos (the face_recognition sdist's test images: several
photos of one person, one of another, partial faces; `make faces` fetches them) and on
synthetic cases made from them: two faces side by side, a blurred copy, a photo with no face."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from persona.blobs import LocalBlobStore
from persona.builder import BUILTIN_OPTIONS, BuildError, InputFile, build, builtin_inputs, decode_vector
from persona.pack import PersonaPack

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
pytestmark = pytest.mark.skipif(not (FACES / ".fetched").exists(), reason="run `make faces` first (make test does)")


def photo(name: str) -> InputFile:
    return InputFile(name, (FACES / name).read_bytes(), "image")


def png(image: Image.Image, name: str) -> InputFile:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return InputFile(name, out.getvalue(), "image")


def load(name: str) -> Image.Image:
    return Image.open(FACES / name).convert("RGB")


def published(result, version: int = 1) -> PersonaPack:
    assert result.blocked is None, result.blocked
    return PersonaPack.from_dict({**result.draft, "version": version})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LocalBlobStore:
    return LocalBlobStore(tmp_path_factory.mktemp("blobs"))


@pytest.fixture(scope="module")
def three(store):
    return build("obama", [photo("obama.jpg"), photo("obama2.jpg"), photo("obama3.jpg")], store)


def test_three_photos_of_one_person_publish_anchors_tagged_with_pose_and_expression(three, store):
    pack = published(three)
    close = pack.anchors("close_up")
    assert [a.source for a in close] == ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    assert {a.expression for a in close} >= {"smile", "neutral"}  # the official portrait smiles
    assert all(-45 < a.pose.yaw < 45 and -45 < a.pose.pitch < 45 and -45 < a.pose.roll < 45 for a in close)
    assert len({round(a.pose.yaw) for a in close}) == 3  # three different head turns, measured
    for anchor in pack.anchors():  # every ref resolves, and the crop is the aligned face
        crop = Image.open(io.BytesIO(store.get(anchor.image_ref)))
        assert crop.size == (anchor.crop_size, anchor.crop_size)
        eyes = np.array(anchor.landmarks)[36:48].mean(axis=0) / anchor.crop_size
        assert abs(eyes[0] - 0.5) < 0.03  # eyes centred in the canonical crop
        assert decode_vector(store.get(anchor.embedding_ref)).shape == (128,)
    assert pack.record["embeddings"]["face_spread"] < 0.6
    assert not [w for w in three.warnings if "identity" in w]
    assert pack.refs() <= {ref for ref in pack.refs() if store.exists(ref)}


def test_a_photo_of_another_person_gives_the_identity_drift_warning(store):
    result = build("obama", [photo("obama.jpg"), photo("obama2.jpg"), photo("biden.jpg")], store)
    drift = [w for w in result.warnings if w.startswith("identity drift risk")]
    assert drift and "biden.jpg" in drift[0]
    assert published(result).record["embeddings"]["face_spread"] > 0.6


def test_partial_two_face_blurred_and_faceless_photos_are_each_rejected_with_their_reason(store):
    obama, biden = load("obama.jpg"), load("biden.jpg").resize((910, int(910 * 2204 / 970)))
    pair = Image.new("RGB", (obama.width + biden.width, max(obama.height, biden.height)))
    pair.paste(obama, (0, 0))
    pair.paste(biden, (obama.width, 0))
    inputs = [photo("obama.jpg"), photo("obama2.jpg"), photo("obama_partial_face.jpg"), png(pair, "two_faces.png"),
              png(obama.filter(ImageFilter.GaussianBlur(4)), "blurred.png"),
              png(obama.crop((0, 700, 300, 1000)), "no_face.png"),
              InputFile("notes.txt", b"not a photo at all", "image")]
    result = build("obama", inputs, store)
    reasons = {q["name"]: " ".join(q["reasons"]) for q in result.qc}
    assert "partial face" in reasons["obama_partial_face.jpg"]
    assert reasons["two_faces.png"].startswith("2 faces")
    assert reasons["blurred.png"].startswith("blurred")
    assert reasons["no_face.png"] == "no face found"
    assert reasons["notes.txt"].startswith("not an image")
    assert reasons["obama.jpg"] == reasons["obama2.jpg"] == ""
    assert result.blocked is None and published(result).record["qc"]["rejected"] == 5


def test_too_few_usable_photos_block_the_publish_and_say_what_to_recapture(store):
    result = build("obama", [photo("obama.jpg"), photo("obama_partial_face.jpg")], store)
    assert result.draft is None
    assert "not published" in result.blocked and "close_up needs 2" in result.blocked
    assert "obama_partial_face.jpg (face partly outside the photo" in result.blocked


def test_the_same_inputs_build_the_same_pack_and_write_nothing_new(three, store):
    files_before = sorted(p.name for p in store.root.rglob("*") if p.is_file())
    again = build("obama", [photo("obama3.jpg"), photo("obama.jpg"), photo("obama2.jpg")], store)  # any order
    assert again.content_hash == three.content_hash and again.draft == three.draft
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == files_before
    other = build("obama", [photo("obama.jpg"), photo("obama2.jpg")], store, {"min_anchors_per_mode": 1})
    assert other.content_hash != three.content_hash


def test_frames_sampled_from_a_clip_become_anchors(store, tmp_path):
    import av

    clip = tmp_path / "clip.mp4"
    frame = np.asarray(load("obama.jpg").resize((456, 570)))
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 456, 570, "yuv420p"
        for i in range(25):  # 2.5 s, a slow drift to the right
            shifted = np.roll(frame, i * 2, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(shifted, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = build("clip", [InputFile("clip.mp4", clip.read_bytes(), "video")], store, {"modes": ["close_up"]})
    sources = [a.source for a in published(result).anchors("close_up")]
    assert sources == ["clip.mp4@0.0s", "clip.mp4@1.0s", "clip.mp4@2.0s"]


def test_the_built_in_astronaut_goes_through_the_same_pipeline(store):
    pack = published(build("astronaut", builtin_inputs(), store, BUILTIN_OPTIONS))
    (anchor,) = pack.anchors("close_up")
    assert anchor.expression == "smile" and pack.record["display_name"].startswith("Astronaut")
    assert pack.behavior_policy["defaulted"] is True  # no policy given: the safe defaults, said so
    assert "no behaviour policy given: safe defaults" in pack.record["warnings"]


def test_unbuildable_requests_are_refused_before_any_work(store):
    with pytest.raises(BuildError, match="no inputs"):
        build("obama", [], store)
    with pytest.raises(BuildError, match="unknown build options"):
        build("obama", [photo("obama.jpg")], store, {"min_anchors": 1})
    with pytest.raises(BuildError, match="unknown kind"):
        build("obama", [InputFile("x.gif", b"GIF89a", "gif")], store)


def test_voice_refs_give_the_pack_a_speaker_embedding_and_a_bad_one_is_reported(store):
    import soundfile

    from actors.adapters import make_adapter
    from persona.voice import load_voice
    from persona.voice_embedding import cosine, voice_embedding
    from protocol.config import load_config

    espeak = make_adapter("espeak", load_config())
    espeak.load()
    speech = espeak.synthesize("Hello, this is how I sound when I read a sentence aloud.", load_voice("joe"))
    wav = io.BytesIO()
    soundfile.write(wav, speech.pcm, speech.sample_rate, format="WAV", subtype="PCM_16")
    refs = [InputFile("me.wav", wav.getvalue(), "voice_ref"), InputFile("noise.wav", b"RIFF? not audio", "voice_ref")]
    pack = published(build("obama", [photo("obama.jpg"), photo("obama2.jpg"), *refs], store))
    embeddings = pack.record["embeddings"]
    assert embeddings["voice_ref"] and embeddings["voice_model"] in ("resemblyzer-ge2e-256", "mfcc-stats-40")
    stored = decode_vector(store.get(embeddings["voice_ref"]))
    direct, _ = voice_embedding(speech.pcm, speech.sample_rate)
    assert cosine(stored, direct) > 0.999  # the mean of one clip is that clip's embedding
    rejected = {q["name"]: q["reasons"] for q in pack.record["qc"]["items"] if not q["accepted"]}
    assert list(rejected) == ["noise.wav"] and rejected["noise.wav"][0].startswith("voice ref unusable")
