"""The player's sinks and its overlay: MP4 recording (off the presentation thread) and
the static 2D overlay drawn after the neural pass."""

from __future__ import annotations

import fractions
import logging
import queue
import threading
from pathlib import Path

import numpy as np

from .runtime import drop_realtime

LOG = logging.getLogger("personas.player")
#: Frames the recorder may fall behind before presentation would have to wait.
RECORDER_QUEUE = 250


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
    on one clock.
    """

    def __init__(self, path: str, width: int, height: int, fps: int, sample_rate: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        container = av.open(str(self.path), "w")
        video = container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "20"}
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
