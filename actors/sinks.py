"""The player's sinks and its overlay: MP4 recording (off the presentation thread) and
the static 2D overlay drawn after the neural pass."""

from __future__ import annotations

import fractions
import logging
import os
import queue
import struct
import threading
from pathlib import Path

import numpy as np

from .runtime import drop_realtime

LOG = logging.getLogger("personas.player")
#: Frames the recorder may fall behind before presentation would have to wait.
RECORDER_QUEUE = 250
#: libx264 for a 2-core machine shared with four other actors. At 512x512 (measured, one
#: core): veryfast 6.0 ms of CPU a frame, superfast 4.4 ms, ultrafast 3.4 ms at 2.5x the
#: bytes; superfast at crf 20 is ~0.75 Mbit/s of a mostly still face. One thread: the
#: recorder is bulk work beside the clock, and zerolatency's sliced threads only add
#: hand-offs when the cores are busy anyway.
VIDEO_OPTIONS = {"preset": "superfast", "tune": "zerolatency", "crf": "20", "threads": "1"}


class Overlay:
    """A pre-rendered RGBA patch (text bottom-right, optional logo top-left), alpha-blended
    onto each presented frame. Drawn after the render, so it never warps with the face."""

    def __init__(self, width: int, height: int, text: str = "", logo: str = ""):
        from PIL import Image, ImageDraw, ImageFont

        self.patches: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        if text:
            font = ImageFont.load_default(size=max(10, height // 18))
            probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
            left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
            pad = 3
            patch = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 110))
            ImageDraw.Draw(patch).text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 235))
            self._add(np.asarray(patch), width - patch.width - 6, height - patch.height - 6)
        if logo:
            with Image.open(Path(logo).expanduser()) as img:
                img = img.convert("RGBA")
                img.thumbnail((width // 4, height // 4))
                self._add(np.asarray(img), 6, 6)

    def _add(self, rgba: np.ndarray, x: int, y: int) -> None:
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        self.patches.append((max(x, 0), max(y, 0), rgba[..., :3].astype(np.float32) * alpha, 1.0 - alpha))

    def draw(self, frame: np.ndarray) -> np.ndarray:
        for x, y, premultiplied, keep in self.patches:
            h, w = premultiplied.shape[:2]
            region = frame[y:y + h, x:x + w]
            h, w = region.shape[:2]
            region[:] = (region * keep[:h, :w] + premultiplied[:h, :w]).astype(np.uint8)
        return frame


class Mp4Recorder:
    """H.264 + AAC via PyAV on a writer thread; ``close()`` drains and finalises the file.

    Timestamps come from the presentation tick: video pts = tick (1/fps), audio pts =
    tick's first sample (1/sample_rate), so the file carries exactly what was presented,
    on one clock. With ``survives_crash`` the file is fragmented MP4 flushed one fragment
    (one second) at a time: if the process dies, what was written up to the last fragment
    can still be read (a plain MP4 is unreadable without the index written at close).
    """

    def __init__(self, path: str, width: int, height: int, fps: int, sample_rate: int, survives_crash: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.survives_crash = survives_crash
        self.fps, self.sample_rate = fps, sample_rate
        self.width, self.height = width, height
        self.frames = 0
        self.dropped = 0
        self.error: Exception | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=RECORDER_QUEUE)
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def write(self, tick: int, pixels: np.ndarray, pcm: np.ndarray, wait_s: float = 0.0) -> bool:
        """Queue one presented frame. The player never waits (``wait_s`` = 0: a full queue
        drops the frame, counted); an offline writer (replay) may wait up to ``wait_s``."""
        try:
            if wait_s > 0:
                self._queue.put((tick, pixels, pcm), timeout=wait_s)
            else:
                self._queue.put_nowait((tick, pixels, pcm))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout: float = 30.0) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the writer died (self.error says why) or is hopelessly behind
            LOG.error("recorder did not drain within %.0f s; the file may be truncated", timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        import av

        drop_realtime()  # encoding is bulk work: it must not run at the clock's priority
        # Fragments cannot start before 0; left to itself the muxer would move the video later
        # by the AAC priming to make room, so it is told not to (the join puts the priming back).
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1",
                   "avoid_negative_ts": "disabled"} \
            if self.survives_crash else {}
        container = av.open(str(self.path), "w", options=options)
        video = container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.options = VIDEO_OPTIONS | {"g": str(self.fps)}
        audio = container.add_stream("aac", rate=self.sample_rate)
        audio.layout = "mono"
        video_tb, audio_tb = fractions.Fraction(1, self.fps), fractions.Fraction(1, self.sample_rate)
        try:
            while True:
                try:
                    item = self._queue.get(timeout=1.0)
                except queue.Empty:  # nothing presented for a second: keep waiting for frames or close
                    continue
                if item is None:
                    break
                tick, pixels, pcm = item
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = tick, video_tb
                for packet in video.encode(frame):
                    container.mux(packet)
                sound = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
                sound.sample_rate = self.sample_rate
                sound.pts, sound.time_base = tick * self.sample_rate // self.fps, audio_tb
                for packet in audio.encode(sound):
                    container.mux(packet)
                self.frames += 1
            for stream in (video, audio):
                for packet in stream.encode():
                    container.mux(packet)
        except Exception as exc:  # a failing disk must not take presentation down
            self.error = exc
            LOG.error("recorder failed: %s", exc)
        finally:
            container.close()


def part_path(record: str | Path, index: int) -> Path:
    """Where the ``index``-th player process of a session records (``NAME.partK.mp4``)."""
    record = Path(record)
    return record.with_name(f"{record.stem}.part{index}{record.suffix}")


def recording_parts(record: str | Path) -> list[Path]:
    """The parts of a recording, in order: one per player process (``NAME.partK.mp4``)."""
    record = Path(record)
    found = []
    for part in record.parent.glob(f"{record.stem}.part*{record.suffix}"):
        index = part.name[len(record.stem) + len(".part"):-len(record.suffix) or None]
        if index.isdigit():
            found.append((int(index), part))
    return [part for _, part in sorted(found)]


def join_recording(parts: list[Path], record: str | Path) -> int:
    """One plain MP4 from the parts (packets copied, not re-encoded), each part starting
    where the one before ended, audio and video together; returns the video frames. A part
    cut short by a crash ends at its last whole fragment.

    Fragmented MP4 does not keep the AAC encoder's priming (the first frame of samples is
    its delay, which a plain MP4 tells the decoder to skip with an edit list): the first
    part's audio is moved back by one frame so the muxer writes that edit list again, and a
    later part's priming frame is left out, so the audio stays on the video's clock."""
    import av

    out = av.open(str(record), "w")
    streams: dict[str, object] = {}
    offset_s, frames = 0.0, 0
    try:
        for index, part in enumerate(parts):
            intact = intact_length(part)
            if intact < part.stat().st_size:
                os.truncate(part, intact)  # a fragment half-written when the process died
            with av.open(str(part)) as src:
                for stream in src.streams:
                    if stream.type not in streams and stream.type in ("video", "audio"):
                        streams[stream.type] = out.add_stream_from_template(stream)
                end_s = offset_s
                try:
                    for packet in src.demux():
                        target = streams.get(packet.stream.type)
                        if packet.dts is None or target is None:
                            continue
                        shift = int(round(offset_s / packet.stream.time_base))
                        if packet.stream.type == "audio":
                            priming = packet.stream.codec_context.frame_size or 1024
                            if index > 0 and packet.dts < priming:
                                continue
                            shift -= priming
                        packet.pts, packet.dts = (packet.pts if packet.pts is not None else packet.dts) + shift, packet.dts + shift
                        end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * packet.stream.time_base))
                        frames += packet.stream.type == "video"
                        packet.stream = target
                        out.mux(packet)
                except (av.error.InvalidDataError, av.error.EOFError):
                    pass  # the end a crash cut off
                offset_s = end_s
    finally:
        out.close()
    return frames


def intact_length(path: Path) -> int:
    """Bytes of a fragmented MP4 up to its last whole fragment: top-level boxes are walked by
    their sizes, and a fragment's header (``moof``) counts only with its media (``mdat``)."""
    size, offset, intact = path.stat().st_size, 0, 0
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            box_size, kind = struct.unpack(">I4s", f.read(8))
            if box_size == 1:
                box_size = struct.unpack(">Q", f.read(8))[0]
            if box_size < 8 or offset + box_size > size:
                break
            offset += box_size
            if kind != b"moof":
                intact = offset
    return intact
