"""The player's overlay and MP4 recorder on their own."""

import numpy as np
from PIL import Image

from actors.sinks import Mp4Recorder, Overlay, join_recording, recording_parts
from tests.media import read_mp4


def test_overlay_draws_text_and_logo_without_touching_the_rest(tmp_path):
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (40, 20), (255, 0, 0, 255)).save(logo)
    overlay = Overlay(128, 128, text="gro.", logo=str(logo))
    frame = np.full((128, 128, 3), 100, np.uint8)
    out = overlay.draw(frame.copy())
    assert (out[8:12, 8:12] == [255, 0, 0]).all()          # logo top-left, opaque
    assert np.abs(out[110:125, 90:125].astype(int) - 100).max() > 50  # text bottom-right
    assert (out[40:90, 40:90] == 100).all()                 # the face area is never touched


def test_recorder_writes_what_it_was_given_on_one_clock(tmp_path):
    path = tmp_path / "r.mp4"
    rec = Mp4Recorder(str(path), 64, 64, 25, 22050)
    for tick in range(50):
        pcm = (3000 * np.sin(np.arange(882) * 0.1 + tick)).astype(np.int16)
        rec.write(tick, np.full((64, 64, 3), tick * 5, np.uint8), pcm)
    rec.close()
    assert rec.error is None and rec.frames == 50
    frames, audio, sr, fps, durations = read_mp4(path)
    assert len(frames) == 50 and fps == 25 and sr == 22050
    assert abs(durations["video"] - 2.0) < 1e-6 and abs(durations["audio"] - durations["video"]) <= 1 / 25
    assert abs(int(frames[40].mean()) - 200) <= 3


def test_a_recording_cut_by_a_crash_keeps_its_fragments_and_the_parts_join_on_one_clock(tmp_path):
    record = tmp_path / "rec.mp4"
    first = Mp4Recorder(str(tmp_path / "rec.part0.mp4"), 64, 64, 25, 22050, survives_crash=True)
    for tick in range(75):  # 3 s: three one-second fragments
        first.write(tick, np.full((64, 64, 3), 40, np.uint8), np.full(882, 1000, np.int16))
    first.close()
    whole = (tmp_path / "rec.part0.mp4").read_bytes()
    (tmp_path / "rec.part0.mp4").write_bytes(whole[: int(len(whole) * 0.8)])  # the process died mid-write
    second = Mp4Recorder(str(tmp_path / "rec.part1.mp4"), 64, 64, 25, 22050, survives_crash=True)
    for tick in range(50):
        second.write(tick, np.full((64, 64, 3), 200, np.uint8), np.full(882, 1000, np.int16))
    second.close()
    parts = recording_parts(record)
    assert [p.name for p in parts] == ["rec.part0.mp4", "rec.part1.mp4"]
    joined = join_recording(parts, record)
    frames, audio, sr, fps, durations = read_mp4(record)
    assert 25 + 50 <= joined == len(frames) < 75 + 50  # at least the first whole fragment survived
    first_part = joined - 50
    assert abs(int(frames[first_part - 1].mean()) - 40) <= 3 and abs(int(frames[first_part].mean()) - 200) <= 3
    # the second part starts where the first ended (both streams: a cut part's audio may run
    # a few AAC frames past its video, and the seam waits for the later of the two)
    assert abs(durations["video"] - joined / 25) < 0.2
    assert abs(len(audio) / sr - joined / 25) < 0.2


def test_a_recording_of_one_part_joins_into_the_file_a_plain_recorder_writes(tmp_path):
    def record(path, survives_crash):
        rec = Mp4Recorder(str(path), 64, 64, 25, 22050, survives_crash=survives_crash)
        for tick in range(50):
            rec.write(tick, np.full((64, 64, 3), tick * 5, np.uint8),
                      (3000 * np.sin(np.arange(882) * 0.1 + tick)).astype(np.int16))
        rec.close()

    record(tmp_path / "plain.mp4", False)
    record(tmp_path / "rec.part0.mp4", True)
    join_recording(recording_parts(tmp_path / "rec.mp4"), tmp_path / "rec.mp4")
    plain, joined = read_mp4(tmp_path / "plain.mp4"), read_mp4(tmp_path / "rec.mp4")
    assert plain[4] == joined[4]  # the same durations: the video is not moved, the audio keeps its priming skip
    assert np.array_equal(plain[1], joined[1]) and np.array_equal(plain[0], joined[0])
