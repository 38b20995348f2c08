"""Personas as a Pipecat service: put :class:`PersonasAvatarService` after the LLM in a Pipecat
pipeline and the avatar speaks the LLM's text, while the frames Personas presents come back
into the pipeline as Pipecat frames for the output transport.

Text in: every spoken text frame (``LLMTextFrame`` and plain ``TextFrame``, ``TTSSpeakFrame``)
goes to the system's ingress as a token, untouched (``<v:...>`` markers included: Personas'
parser takes them out); ``LLMFullResponseStartFrame`` / ``LLMFullResponseEndFrame`` are the turn
boundaries.
Frames out: each ``AVPacket`` the player publishes on ``av_out`` becomes an
``OutputImageRawFrame`` (RGB, ``sync_with_audio``) followed by its own audio, a
``TTSAudioRawFrame`` (the PCM as presented), between ``TTSStartedFrame`` / ``TTSStoppedFrame``
per utterance: picture and sound of one presented frame travel together, so they stay in sync
by construction. Idle frames push their picture (the avatar breathes and blinks) and, unless
``idle_audio``, no sound. An ``InterruptionFrame`` is a Personas barge-in (the control
endpoint's ``barge_in`` naming the interrupted turn); from that moment nothing of the old
epoch is pushed.

Client tooling: the runtime never imports this module, and it needs the optional extra
``pip install personas[pipecat]``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import msgpack
import zmq
import zmq.asyncio

try:
    from pipecat.frames.frames import (CancelFrame, EagerTranscriptionFrame, EndFrame, Frame,
                                       InterimTranscriptionFrame, InterruptionFrame, LLMFullResponseEndFrame,
                                       LLMFullResponseStartFrame, LLMTextFrame, OutputAudioRawFrame,
                                       OutputImageRawFrame, StartFrame, SystemFrame, TextFrame,
                                       TranscriptionFrame, TranslationFrame, TTSAudioRawFrame, TTSSpeakFrame,
                                       TTSStartedFrame, TTSStoppedFrame, TTSTextFrame)
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.utils.errors import ErrorCategory
except ImportError as exc:  # the optional extra is not installed
    raise ImportError("clients.pipecat_service needs Pipecat: pip install 'personas[pipecat]'") from exc

from protocol import AVPacket, ProtocolError, decode
from protocol.control_endpoint import AsyncControlClient, read_token
from protocol.limits import INGRESS_KERNEL_BUFFER_BYTES, INGRESS_QUEUE_MESSAGES, INGRESS_SOCKET_MAX_BYTES
from protocol.security import secure_client
from protocol.transport import make_socket

from .session import Session

__all__ = ["PersonasAvatarService"]

#: Packets the av_out subscription may hold (2 s at 25 fps): the only queue of ours on the way
#: out (Pipecat's own queues are behind push_frame). Past it the player's PUB drops for us.
AV_QUEUE_PACKETS = 50
#: The receive loop's poll: the longest it waits before it looks at its housekeeping.
POLL_MS = 100
#: An ingress message is at most 64 KiB: text frames are sent in pieces of this many
#: characters (at most 16 KB of UTF-8).
TEXT_PIECE_CHARS = 4000
#: The control call of a barge-in waits this long for the supervisor's reply.
CONTROL_TIMEOUT_MS = 2000
#: Closing the ingress waits this long for the last messages to leave.
INGRESS_LINGER_MS = 1000
#: Our tasks get this long to end when cancelled.
CANCEL_TIMEOUT_S = 2.0
#: Barge-ins remembered in :attr:`PersonasAvatarService.barge_ins`.
BARGE_INS_KEPT = 32
#: Text that is not to be spoken: what the user said, and what a TTS already spoke.
NOT_SPOKEN = (TranscriptionFrame, InterimTranscriptionFrame, EagerTranscriptionFrame, TranslationFrame, TTSTextFrame)


class PersonasAvatarService(FrameProcessor):
    """The avatar in a Pipecat pipeline: text frames in, presented picture and sound out.

    Which system it drives, one of:

    - ``endpoints`` (``{"ingress", "control", "av_out", ...}``, e.g. a session manager's reply),
      with ``token`` (None: read this user's token file of the control endpoint) and ``curve``
      (client keys when the endpoints are CURVE servers);
    - ``session``: a :class:`clients.session.Session` already started (or attached);
    - neither: it starts one itself (``config_path``, ``overrides``, the supervisor's output to
      ``log``) while the pipeline sets up, and stops it in :meth:`cleanup`.

    Only a system it started is stopped by it.

    ``idle_video``: push the picture of idle frames (blinks, breathing) so the avatar stays
    alive between replies; ``idle_audio``: also push their (silent) sound, for a transport that
    wants an unbroken audio stream. ``forward_text``: text frames go on downstream after they
    were fed, for the assistant's context aggregator (nothing after this service must speak
    them). ``send_timeout_s``: how long a token may wait for a full pipeline (backpressure)
    before the reply is given up with an error. ``drain_idle_s``: at ``EndFrame`` the speech
    already sent is played out, unless no speech frame has come for this long.
    """

    def __init__(self, endpoints: dict | None = None, *, token: str | None = None, curve: dict | None = None,
                 session: Session | None = None, config_path: str | None = None,
                 overrides: tuple[str, ...] | list[str] = (), log: str | Path | None = None,
                 ready_timeout_s: float = 180.0, stop_timeout_s: float = 60.0, idle_video: bool = True,
                 idle_audio: bool = False, forward_text: bool = True, send_timeout_s: float = 60.0,
                 drain_idle_s: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        if endpoints is not None and session is not None:
            raise ValueError("give the endpoints of a running system or a session, not both")
        self._given = (dict(endpoints), token, curve) if endpoints is not None else None
        self.session = session  # the one driven (started here when none was given)
        self._owned = endpoints is None and session is None
        self._start_args = (config_path, list(overrides), log)
        self._ready_timeout_s, self._stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.idle_video, self.idle_audio, self.forward_text = idle_video, idle_audio, forward_text
        self._send_timeout_s, self._drain_idle_s = send_timeout_s, drain_idle_s
        self._starting: asyncio.Future | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._ingress = self._av = None
        self._control: AsyncControlClient | None = None
        self._receiver: asyncio.Task | None = None
        self._settled = asyncio.Event()  # connected to the system, or known never to be
        self._gate = asyncio.Lock()  # a pushed picture+sound pair and a cut never interleave
        #: The newest epoch seen on av_out (or begun by our barge-in); frames below
        #: ``_drop_below`` are of an interrupted epoch and never pushed.
        self.epoch = -1
        self._drop_below = 0
        self._turn = 0  # the last turn we named
        self._turn_open = False
        self._turn_fed = False  # text of the open turn went to the ingress
        self._skipping = False  # inside an LLM reply marked skip_tts
        self._fed_since_barge = False  # something of ours may still be spoken
        self._unfinished = 0  # turns ended with text whose last frame has not come out yet
        self._last_char = " "
        self._speaking: str | None = None  # context id of the utterance being pushed
        self._timeline_drained_at = 0.0
        self.barge_ins: collections.deque = collections.deque(maxlen=BARGE_INS_KEPT)
        self.stats = {"packets": 0, "speech_frames": 0, "idle_frames": 0, "dropped_stale": 0, "malformed": 0,
                      "tokens": 0, "turns": 0, "barge_ins": 0}

    # -- where the system is --------------------------------------------------------------------
    @property
    def endpoints(self) -> dict | None:
        if self._given is not None:
            return self._given[0]
        return self.session.endpoints if self.session is not None else None

    def _credentials(self) -> tuple[str, dict | None]:
        if self._given is not None:
            _, token, curve = self._given
            return (token if token is not None else read_token(self.endpoints["control"])), curve
        token = self.session.control.token
        return (token if token is not None else read_token(self.endpoints["control"])), self.session.curve

    # -- lifecycle ------------------------------------------------------------------------------
    async def setup(self, setup) -> None:
        """Starts the system when none was given, without waiting for it: Pipecat gives a
        processor's setup 20 s, and a system can take longer to come up on a busy machine.
        Text that comes before it is ready waits for it (up to ``ready_timeout_s``)."""
        await super().setup(setup)
        if not self._owned:
            return
        config_path, overrides, log = self._start_args
        self.session = Session(config_path, overrides, log=log)
        # An executor future, not a task: whatever is cancelled, the start runs to its end, and
        # cleanup waits for it before it stops what it started.
        self._starting = asyncio.get_running_loop().run_in_executor(None, self.session.start, self._ready_timeout_s)

    async def _run(self) -> None:
        """Once the system is up: connect, then push what it presents until cancelled."""
        try:
            if self._starting is not None:
                try:
                    await asyncio.shield(self._starting)
                except Exception as exc:  # noqa: BLE001 - any failure to start is reported the same way
                    await self.push_error(f"Personas did not start: {exc}", exception=exc,
                                          force_treat_as_permanent=True)
                    return
                self.session.timeline.keep = False  # drained as we go: a long pipeline stays small
            self._connect()
        finally:
            self._settled.set()  # senders stop waiting: connected, or never will be
        await self._receive()

    def _connect(self) -> None:
        token, curve = self._credentials()
        self._ctx = zmq.asyncio.Context()
        self._ingress = secure_client(make_socket(self._ctx, zmq.PUSH, max_bytes=INGRESS_SOCKET_MAX_BYTES,
                                                  hwm=INGRESS_QUEUE_MESSAGES, linger_ms=INGRESS_LINGER_MS,
                                                  kernel_buffer=INGRESS_KERNEL_BUFFER_BYTES), curve)
        self._ingress.connect(self.endpoints["ingress"])
        self._av = secure_client(make_socket(self._ctx, zmq.SUB, hwm=AV_QUEUE_PACKETS, linger_ms=0), curve)
        self._av.setsockopt(zmq.SUBSCRIBE, b"")
        self._av.connect(self.endpoints["av_out"])
        self._control = AsyncControlClient(self._ctx, self.endpoints["control"], timeout_ms=CONTROL_TIMEOUT_MS,
                                           token=token, curve=curve)

    async def _close_media(self) -> None:
        """Stop receiving and close our sockets (idempotent)."""
        if self._receiver is not None:
            await self.cancel_task(self._receiver, CANCEL_TIMEOUT_S)
            self._receiver = None
        self._settled.set()
        if self._ctx is not None:
            ctx, self._ctx, self._control = self._ctx, None, None
            self._av.close(linger=0)
            self._ingress.close()  # its linger lets an `end` just sent leave
            try:  # every socket is closed: term returns once the ingress's linger is over
                await asyncio.wait_for(asyncio.to_thread(ctx.term), (INGRESS_LINGER_MS + CONTROL_TIMEOUT_MS) / 1000 + 1)
            except asyncio.TimeoutError:
                await self.push_error("Personas sockets did not close in time", category=ErrorCategory.UNKNOWN)

    async def cleanup(self) -> None:
        """Close everything; stop the system if this service started it."""
        await self._close_media()
        await super().cleanup()
        if not self._owned or self.session is None:
            return
        if self._starting is not None and not self._starting.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._starting), self._ready_timeout_s + 10)
            except BaseException:  # noqa: BLE001 - stopping is what matters here; Session.stop copes with any state
                pass
        await asyncio.to_thread(self.session.stop, self._stop_timeout_s)

    # -- frames in ------------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._receiver = self.create_task(self._run(), f"{self}::av_out")
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            cut = await self._cut()
            await self.push_frame(frame, direction)  # after the cut: nothing old follows it
            if cut:
                await self._barge_in("pipecat interruption")
        elif isinstance(frame, CancelFrame):
            if not self._owned and await self._cut():  # a system we leave running stops speaking for us
                await self._barge_in("pipecat cancel")
            await self._close_media()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._end_turn()
            await self._drain()
            await self._close_media()
            await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMFullResponseStartFrame):
            await self._end_turn()
            self._skipping = bool(getattr(frame, "skip_tts", None))  # a reply not to be spoken
            if not self._skipping:
                self._open_turn()
            await self.push_frame(frame, direction)
        elif isinstance(frame, LLMFullResponseEndFrame):
            await self._end_turn()
            self._skipping = False
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSSpeakFrame):
            await self._end_turn()
            self._open_turn()
            await self._feed(frame.text, spaced=False)
            await self._end_turn()
        elif isinstance(frame, TextFrame) and not isinstance(frame, NOT_SPOKEN) and not frame.skip_tts \
                and not self._skipping:
            await self._on_text(frame)
            if self.forward_text:
                await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _on_text(self, frame: TextFrame) -> None:
        """LLM text joins the open turn (or opens one); a plain text frame outside an LLM
        response is an utterance of its own."""
        alone = not self._turn_open and not isinstance(frame, LLMTextFrame)
        if not self._turn_open:
            self._open_turn()
        await self._feed(frame.text, spaced=frame.includes_inter_frame_spaces)
        if alone:
            await self._end_turn()

    def _open_turn(self) -> None:
        # Turn numbers are one increasing sequence per system, shared by whoever feeds it: a
        # clock in ms keeps ours above those of an earlier service on the same system.
        self._turn = max(self._turn + 1, time.time_ns() // 1_000_000)
        self._turn_open, self._turn_fed = True, False
        self.stats["turns"] += 1

    async def _end_turn(self) -> None:
        if not self._turn_open:
            return
        self._turn_open = False
        if self._turn_fed and await self._send({"type": "end", "turn": self._turn}):
            self._unfinished += 1

    async def _feed(self, text: str, spaced: bool) -> None:
        if not text:
            return
        if not spaced and not self._last_char.isspace() and not text[0].isspace():
            text = " " + text  # whole-text frames carry no spaces between them
        self._turn_fed = self._fed_since_barge = True  # before it leaves: an interruption may come meanwhile
        for start in range(0, len(text), TEXT_PIECE_CHARS):
            piece = text[start:start + TEXT_PIECE_CHARS]
            if not await self._send({"type": "token", "text": piece, "turn": self._turn}):
                return
            self.stats["tokens"] += 1
        self._last_char = text[-1]

    async def _send(self, message: dict) -> bool:
        """One ingress message; waits for a system still starting, and while the system
        applies backpressure, each up to its timeout."""
        try:
            await asyncio.wait_for(self._settled.wait(), self._ready_timeout_s + 10)
        except asyncio.TimeoutError:
            return False
        if self._ctx is None:
            return False  # it did not start (reported), or the pipeline is ending
        try:
            await asyncio.wait_for(self._ingress.send(msgpack.packb(message, use_bin_type=True)), self._send_timeout_s)
            return True
        except zmq.ZMQError:
            return False  # closed under us: the pipeline is ending
        except asyncio.TimeoutError:
            self._turn_open = False  # the rest of this reply is not sent
            await self.push_error(f"Personas took no text for {self._send_timeout_s:.0f} s: the reply is dropped",
                                  category=ErrorCategory.CONNECTIVITY)
            return False

    # -- interruption ---------------------------------------------------------------------------
    async def _cut(self) -> bool:
        """From now on nothing of the current epoch is pushed (a pair being pushed finishes
        first). False when nothing of ours can still be spoken: no barge-in is needed."""
        self._turn_open = False  # the interrupted reply is over, whatever else happens
        async with self._gate:
            if not self._fed_since_barge or self._ctx is None:
                return False
            self._drop_below = max(self._drop_below, self.epoch + 1)
            self._speaking = None
        self._fed_since_barge, self._unfinished = False, 0
        return True

    async def _barge_in(self, reason: str) -> None:
        """The control endpoint's barge-in, naming the interrupted turn (its tokens still in
        flight are dropped by the parser); the ingress's when the control call fails."""
        sent_ns = time.monotonic_ns()
        turn = {"turn": self._turn} if self._turn else {}
        if self._control is None:
            return
        try:
            reply = await self._control.call("barge_in", reason=reason, **turn)
        except zmq.ZMQError:
            reply = None
        record = {"sent_ns": sent_ns, "reply_ms": round((time.monotonic_ns() - sent_ns) / 1e6, 2), **turn}
        if reply is not None and reply.get("ok"):
            async with self._gate:
                self._drop_below = max(self._drop_below, reply["epoch"])
                self.epoch = max(self.epoch, reply["epoch"])
            record.update(via="control", epoch=reply["epoch"])
        else:  # no answer, or refused (no token): the parser asks for the new epoch itself
            await self._send({"type": "barge_in", **turn})
            record.update(via="ingress", epoch=self._drop_below, control_reply=reply)
        self.barge_ins.append(record)
        self.stats["barge_ins"] += 1

    # -- frames out -----------------------------------------------------------------------------
    async def _receive(self) -> None:
        while True:
            if await self._av.poll(POLL_MS):
                try:
                    packet = decode(await self._av.recv_multipart())
                except ProtocolError:
                    self.stats["malformed"] += 1
                    continue
                if isinstance(packet, AVPacket):
                    await self._present(packet)
            if self._owned and time.monotonic() - self._timeline_drained_at > 1.0:
                self._timeline_drained_at = time.monotonic()
                self.session.timeline.drain()  # nobody reads the started session's timeline here

    async def _present(self, packet: AVPacket) -> None:
        async with self._gate:
            self.stats["packets"] += 1
            if packet.epoch < self._drop_below:
                self.stats["dropped_stale"] += 1
                return
            self.epoch = max(self.epoch, packet.epoch)
            if packet.kind == "speech":
                await self._push_speech(packet)
            else:
                await self._push_idle(packet)

    async def _push_speech(self, packet: AVPacket) -> None:
        context = f"personas-{packet.epoch}-{packet.utterance_id}"
        if self._speaking != context:
            if self._speaking is not None:
                await self.push_frame(TTSStoppedFrame(context_id=self._speaking))
            self._speaking = context
            await self.push_frame(TTSStartedFrame(context_id=context))
        await self.push_frame(self._image(packet))
        audio = TTSAudioRawFrame(audio=bytes(packet.pcm), sample_rate=packet.sample_rate, num_channels=1,
                                 context_id=context)
        audio.metadata["personas"] = self._where(packet)
        await self.push_frame(audio)
        self.stats["speech_frames"] += 1
        if packet.final:
            self._speaking = None
            self._unfinished = max(0, self._unfinished - 1)
            if self._unfinished == 0 and not self._turn_open:
                self._fed_since_barge = False  # all of ours is out: an interruption now cuts nothing
            await self.push_frame(TTSStoppedFrame(context_id=context))

    async def _push_idle(self, packet: AVPacket) -> None:
        if self._speaking is not None:  # speech that ended without its final frame
            await self.push_frame(TTSStoppedFrame(context_id=self._speaking))
            self._speaking = None
        self.stats["idle_frames"] += 1
        if self.idle_video:
            await self.push_frame(self._image(packet))
        if self.idle_audio:
            audio = OutputAudioRawFrame(audio=bytes(packet.pcm), sample_rate=packet.sample_rate, num_channels=1)
            audio.metadata["personas"] = self._where(packet)
            await self.push_frame(audio)

    def _image(self, packet: AVPacket) -> OutputImageRawFrame:
        image = OutputImageRawFrame(image=bytes(packet.pixels), size=(packet.width, packet.height), format="RGB")
        image.sync_with_audio = True  # shown when the audio before it has been played
        image.metadata["personas"] = self._where(packet)
        return image

    @staticmethod
    def _where(packet: AVPacket) -> dict:
        """Where a pushed frame sits on Personas' clock (picture and sound of one presented
        frame carry the same)."""
        return {"epoch": packet.epoch, "frame_index": packet.frame_index, "pts_sample": packet.pts_sample,
                "sample_rate": packet.sample_rate, "fps": packet.fps, "kind": packet.kind,
                "utterance_id": packet.utterance_id, "final": packet.final}

    async def _drain(self) -> None:
        """Wait until the replies already sent have been presented, while speech keeps coming."""
        seen, quiet_since = self.stats["speech_frames"], time.monotonic()
        while self._unfinished > 0 and self._receiver is not None and not self._receiver.done():
            await asyncio.sleep(0.05)
            if self.stats["speech_frames"] != seen:
                seen, quiet_since = self.stats["speech_frames"], time.monotonic()
            elif time.monotonic() - quiet_since > self._drain_idle_s:
                await self.push_error(f"Personas presented no speech for {self._drain_idle_s:.0f} s at the end",
                                      category=ErrorCategory.SERVER)
                return
