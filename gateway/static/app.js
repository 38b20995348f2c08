// Personas in the browser. Presentation is audio-master here too: every packet's audio is
// scheduled on the AudioContext clock behind a small jitter buffer, and its frame is drawn
// when that clock reaches it. A barge-in (epoch change or the Interrupt button) clears both.
"use strict";

const JITTER_S = 0.12;    // playout delay: absorbs network and decode jitter
const RING_S = 60;        // the recent session kept in memory for auditions
const WINDOW_S = 30;      // span of the synchrony panel
const COLOURS = { piper: "#1f77b4", espeak: "#ff7f0e", wyoming: "#2ca02c", openai_speech: "#9467bd" };
const MARKS = {
  chunk: "#7fbf7f", marker: "#17becf", "barge-in": "#ff4d4d", swap: "#ffae42",
  underflow: "#ff00ff", stall: "#b07a4f", gap: "#e377c2",
};

// The control token comes inside the page (another site cannot read it); every POST shows it.
const TOKEN = document.querySelector('meta[name="personas-token"]')?.content || "";
function post(path, body) {
  return fetch(path, { method: "POST", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", "X-Personas-Token": TOKEN } });
}

const audio = new (window.AudioContext || window.webkitAudioContext)({ latencyHint: "interactive" });
const bus = audio.createGain(); // every output stage feeds this; it feeds the speakers and the silence watch
bus.connect(audio.destination);
let silenceWatch = null;
audio.audioWorklet.addModule("/static/silence-watch.js").then(() => {
  silenceWatch = new AudioWorkletNode(audio, "silence-watch", { numberOfOutputs: 1, outputChannelCount: [1] });
  bus.connect(silenceWatch);
  silenceWatch.connect(audio.destination); // it writes silence; connected so that it is rendered
  silenceWatch.port.onmessage = (e) => onSilent(e.data.silentAt);
});
let output = newOutput();
let interruptClick = null; // performance.now() of the last Interrupt click, until it is silent

const state = {
  sr: 22050, fps: 25, epoch: -1, minEpoch: 0, anchor: null, scheduled: [], frames: [], ring: [],
  live: true, offset: null, events: [], depth: [], chunks: [], engines: [], marks: [], lagging: false,
};
const metrics = {
  packets: 0, framesDrawn: 0, canvasChanges: 0, audioScheduled: 0, chartPoints: 0, reanchors: 0,
  epochs: 0, interruptMs: null, interruptSilentMs: null, auditions: 0, droppedVideo: 0,
};
window.personas = { metrics, state, audio };

const avatar = document.getElementById("avatar").getContext("2d");
const strip = document.getElementById("strip");
const chart = strip.getContext("2d");
let lastBitmap = null;

function newOutput() {
  const gain = audio.createGain();
  gain.connect(bus);
  return gain;
}

function clock() { // where new audio is scheduled
  return audio.currentTime;
}

function heardClock() { // the AudioContext time coming out of the speakers now (output latency included)
  const stamp = audio.getOutputTimestamp();
  if (!stamp.performanceTime) return audio.currentTime - (audio.outputLatency || 0);
  return stamp.contextTime + (performance.now() - stamp.performanceTime) / 1000;
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

// -- the stream ------------------------------------------------------------------------------
function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => setStatus("live");
  ws.onclose = (e) => {
    setStatus(`disconnected (${e.reason || e.code}); reconnecting…`);
    setTimeout(connect, 1000);
  };
  ws.onmessage = (e) => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onPacket(e.data));
}

function onPacket(buf) {
  const headerLength = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, headerLength)));
  const start = 4 + headerLength;
  const jpeg = header.jpeg ? new Blob([new Uint8Array(buf, start, header.jpeg)], { type: "image/jpeg" }) : null;
  const pcm = new Int16Array(buf.slice(start + header.jpeg, start + header.jpeg + header.pcm));
  metrics.packets++;
  if (!jpeg) metrics.droppedVideo++;
  if (header.epoch < state.minEpoch) return; // interrupted here already: never play it
  if (header.epoch !== state.epoch) {
    if (state.epoch >= 0) {
      if (state.live) flush();
      else state.anchor = null; // an audition is playing: leave it alone, re-anchor live later
    }
    state.epoch = header.epoch;
    metrics.epochs++;
  }
  const now = clock();
  let at = state.anchor ? state.anchor.t + (header.pts - state.anchor.pts) / header.sr : -1;
  if (at < now + 0.01) { // first packet, or we fell behind: re-anchor behind the jitter buffer
    if (state.anchor) metrics.reanchors++;
    state.anchor = { pts: header.pts, t: now + JITTER_S };
    at = state.anchor.t;
  }
  const offset = at - header.t_ns / 1e9; // server clock -> when it is heard here
  state.offset = state.offset === null ? offset : 0.9 * state.offset + 0.1 * offset;
  const item = { at, pts: header.pts, epoch: header.epoch, kind: header.kind, pcm, jpeg, header };
  remember(item);
  if (state.live) play(item, item.at, output);
}

function play(item, at, gain) {
  if (audio.state === "running" && item.pcm.length) {
    const buffer = audio.createBuffer(1, item.pcm.length, state.sr);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < item.pcm.length; i++) data[i] = item.pcm[i] / 32768;
    const source = audio.createBufferSource();
    source.buffer = buffer;
    source.connect(gain);
    source.start(at);
    state.scheduled.push(source);
    source.onended = () => {
      const i = state.scheduled.indexOf(source);
      if (i >= 0) state.scheduled.splice(i, 1);
    };
    metrics.audioScheduled++;
  }
  if (item.jpeg) {
    createImageBitmap(item.jpeg).then((bitmap) => {
      const frame = { at, bitmap, epoch: item.epoch };
      let i = state.frames.length; // keep the queue ordered by presentation time
      while (i > 0 && state.frames[i - 1].at > at) i--;
      state.frames.splice(i, 0, frame);
    });
  }
}

function flush() {
  for (const source of state.scheduled) {
    try { source.stop(); } catch (e) { /* already ended */ }
  }
  state.scheduled = [];
  state.frames = [];
  state.anchor = null;
  output.disconnect();
  output = newOutput();
}

function remember(item) {
  state.ring.push(item);
  while (state.ring.length && state.ring[0].at < item.at - RING_S) state.ring.shift();
}

function onEvent(e) {
  if (e.type === "hello") {
    state.sr = e.sr;
    state.fps = e.fps;
    return;
  }
  const t = e.ts_ns / 1e9;
  const d = e.data || {};
  if (e.actor === "player" && e.stage === "present" && d.depth != null) state.depth.push([t, d.depth]);
  if (e.actor === "player" && e.stage === "present" && e.result === "underflow") mark(t, "underflow", "underflow");
  if (e.actor === "parser" && e.stage === "parse" && e.result === "ok" && (d.text || "").trim()) {
    state.chunks.push([t, d.tokens]);
    mark(t, "chunk", (d.text || "").trim().slice(0, 40));
  }
  if (e.actor === "tts" && e.stage === "synth" && e.result === "ok" && d.audio_ms) state.engines.push([t, d.adapter, d.audio_ms / 1000]);
  if (e.actor === "driver" && e.stage === "marker") mark(t, "marker", `${d.command}:${d.value}`);
  if (e.actor === "supervisor" && e.stage === "epoch") mark(t, "barge-in", d.reason || "");
  if (e.actor === "tts" && e.stage === "swap") mark(t, "swap", `${d.from} → ${d.to} (${d.reason})`);
  if (e.actor === "tts" && e.stage === "stall") mark(t, "stall", d.adapter);
  if (e.actor === "stitcher" && e.stage === "stitch" && e.result === "gap") mark(t, "gap", "gap");
  if (e.actor === "web" && e.stage === "client" && d.lagging !== undefined) state.lagging = d.lagging;
  const horizon = t - RING_S;
  for (const series of [state.depth, state.chunks, state.engines, state.marks]) {
    while (series.length && series[0][0] < horizon) series.shift();
  }
}

function mark(t, kind, label) {
  state.marks.push([t, kind, label]);
}

// -- drawing ------------------------------------------------------------------------------------
function draw() {
  const now = heardClock(); // frames follow what is heard, not what is queued for the device
  let shown = null;
  while (state.frames.length && state.frames[0].at <= now) shown = state.frames.shift();
  if (shown) {
    avatar.drawImage(shown.bitmap, 0, 0, avatar.canvas.width, avatar.canvas.height);
    if (shown.bitmap !== lastBitmap) metrics.canvasChanges++;
    lastBitmap = shown.bitmap;
    metrics.framesDrawn++;
  }
  drawStrip(now);
  document.getElementById("metrics").textContent =
    `audio clock ${now.toFixed(2)} s   epoch ${state.epoch}   frames drawn ${metrics.framesDrawn}\n` +
    `packets ${metrics.packets}   re-anchors ${metrics.reanchors}   video dropped (slow link) ${metrics.droppedVideo}` +
    (metrics.interruptSilentMs !== null ? `\nlast interrupt: silent ${metrics.interruptSilentMs.toFixed(1)} ms after the click` +
      ` (${metrics.interruptParts.outputLatencyMs.toFixed(0)} ms of it in the audio device's output buffer)` : "") +
    (state.lagging ? "\nthis connection is lagging: video frames are being skipped" : "");
  requestAnimationFrame(draw);
}

function drawStrip(now) {
  const W = strip.width, H = strip.height, left = 44, right = W - 10;
  const nowX = right; // "now" sits at the right edge
  const x = (t) => left + ((t - (now - WINDOW_S)) / WINDOW_S) * (nowX - left);
  const heard = (serverTime) => serverTime + (state.offset || 0);
  chart.clearRect(0, 0, W, H);
  chart.save();
  chart.font = "11px system-ui";
  const rows = { depth: [10, 120], chunks: [140, 200], engine: [212, 230], marks: [244, 290] };
  chart.strokeStyle = "#333";
  for (const [, [top, bottom]] of Object.entries(rows)) chart.strokeRect(left, top, right - left, bottom - top);
  chart.fillStyle = "#888";
  chart.fillText("buffer", 2, 20);
  chart.fillText("2 s", 20, 32);
  chart.fillText("chunk", 2, 150);
  chart.fillText("engine", 2, 225);
  chart.fillText("events", 2, 262);
  let points = 0;
  chart.save();
  chart.beginPath();
  chart.rect(left, 0, right - left, H); // data is drawn only up to "now"
  chart.clip();
  // Buffer depth (player frames -> ms), as heard.
  chart.strokeStyle = "#4aa3ff";
  chart.beginPath();
  for (const [t, depth] of state.depth) {
    const px = x(heard(t)), py = 120 - Math.min(1, (depth * 1000) / state.fps / 2000) * 105;
    if (px < left) continue;
    points++ ? chart.lineTo(px, py) : chart.moveTo(px, py);
  }
  chart.stroke();
  // Chunk sizes (tokens).
  chart.fillStyle = "#7fbf7f";
  for (const [t, tokens] of state.chunks) {
    const px = x(heard(t));
    if (px < left) continue;
    const h = Math.min(1, tokens / 64) * 55;
    chart.fillRect(px - 2, 200 - h, 4, h);
    points++;
  }
  // Engine in use.
  for (const [t, adapter, seconds] of state.engines) {
    const a = x(heard(t)), b = x(heard(t) + seconds);
    if (b < left) continue;
    chart.fillStyle = COLOURS[adapter] || "#999";
    chart.fillRect(Math.max(a, left), 214, Math.max(2, b - Math.max(a, left)), 14);
    points++;
  }
  // Events (clickable).
  const kinds = Object.keys(MARKS);
  state.clickable = [];
  for (const [t, kind, label] of state.marks) {
    const px = x(heard(t));
    if (px < left) continue;
    const row = 250 + (kinds.indexOf(kind) % 4) * 10;
    chart.fillStyle = MARKS[kind];
    chart.fillRect(px - 1, row - 6, 3, 10);
    state.clickable.push({ px, t: heard(t), kind, label });
    points++;
  }
  chart.restore();
  // Now: what is being heard.
  chart.strokeStyle = "#fff";
  chart.beginPath();
  chart.moveTo(x(now), 6);
  chart.lineTo(x(now), H - 6);
  chart.stroke();
  chart.restore();
  metrics.chartPoints = points;
}

function legend() {
  const items = [["buffer depth", "#4aa3ff"], ["chunk size", "#7fbf7f"],
    ...Object.entries(COLOURS), ...Object.entries(MARKS)];
  document.getElementById("legend").innerHTML = items.map(([n, c]) => `<span><i style="background:${c}"></i>${n}</span>`).join("");
}

// -- auditions -----------------------------------------------------------------------------------
strip.addEventListener("click", (e) => {
  const rect = strip.getBoundingClientRect();
  const px = ((e.clientX - rect.left) / rect.width) * strip.width;
  const hit = (state.clickable || []).reduce((best, m) => (Math.abs(m.px - px) < Math.abs((best || { px: 1e9 }).px - px) ? m : best), null);
  if (hit && Math.abs(hit.px - px) < 8) audition(hit.t);
});

function audition(from) {
  const items = state.ring.filter((i) => i.at >= from - 0.05);
  if (!items.length) return;
  resume();
  flush();
  state.live = false;
  metrics.auditions++;
  document.getElementById("live").hidden = false;
  const base = clock() + 0.05;
  for (const item of items) play(item, base + (item.at - items[0].at), output);
  setStatus(`auditioning from ${(items[0].at - from).toFixed(2)} s after the mark`);
}

function backToLive() {
  flush();
  state.live = true;
  document.getElementById("live").hidden = true;
  setStatus("live");
}

// -- controls ------------------------------------------------------------------------------------
function resume() {
  if (audio.state !== "running") audio.resume();
  document.getElementById("start").hidden = true;
}

async function speak() {
  resume();
  const text = document.getElementById("text").value.trim();
  if (text) await post("/say", { text });
}

function interrupt(e) {
  const clicked = e && e.timeStamp ? e.timeStamp : performance.now(); // when the click happened
  const t = audio.currentTime;
  output.gain.cancelScheduledValues(t);
  output.gain.setValueAtTime(output.gain.value, t);
  output.gain.linearRampToValueAtTime(0, t + 0.005); // 5 ms fade: a cut, not a click
  state.minEpoch = state.epoch + 1;                  // whatever is still in flight is stale
  metrics.interruptSilentMs = null;
  interruptClick = clicked;
  metrics.interruptParts = { handlerMs: performance.now() - clicked, armedAt: t };
  if (silenceWatch) silenceWatch.port.postMessage({ armedAt: t });
  setTimeout(() => { if (interruptClick === clicked) onSilent(null); }, 500); // no watch: flush anyway
  metrics.interruptMs = performance.now() - clicked;
  post("/barge-in", {});
}

// The watch reports the last audible sample on the AudioContext clock; getOutputTimestamp maps
// that clock to performance.now(), output latency included, so this is when the speakers go quiet.
function onSilent(silentAt) {
  if (interruptClick === null) return;
  if (silentAt !== null) {
    const stamp = audio.getOutputTimestamp();
    const heardAt = stamp.performanceTime + (silentAt - stamp.contextTime) * 1000;
    metrics.interruptSilentMs = Math.max(0, heardAt - interruptClick);
    Object.assign(metrics.interruptParts, { graphMs: (silentAt - metrics.interruptParts.armedAt) * 1000,
      outputLatencyMs: (audio.outputLatency || 0) * 1000, baseLatencyMs: audio.baseLatency * 1000,
      stampLagMs: performance.now() - stamp.performanceTime });
  }
  interruptClick = null;
  flush();
}

async function loadAdapters() {
  const select = document.getElementById("adapter");
  try {
    const reply = await (await fetch("/adapters")).json();
    state.adapters = Object.keys(reply.adapters || {});
    select.innerHTML = state.adapters.map((a) => `<option ${a === reply.active ? "selected" : ""}>${a}</option>`).join("");
  } catch (e) {
    setTimeout(loadAdapters, 1000);
  }
}

document.getElementById("adapter").addEventListener("change", async (e) => {
  await post("/config", { changes: { "tts.adapter": e.target.value } });
});
document.getElementById("speak").addEventListener("click", speak);
document.getElementById("interrupt").addEventListener("click", interrupt);
document.getElementById("start").addEventListener("click", resume);
document.getElementById("live").addEventListener("click", backToLive);
if (audio.state === "running") document.getElementById("start").hidden = true;

legend();
loadAdapters();
connect();
requestAnimationFrame(draw);
