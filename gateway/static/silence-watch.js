// Runs on the audio rendering thread: reports, on the AudioContext clock, the last sample
// that was still audible after it was armed. The page turns that into "silent N ms after
// the click" without depending on how busy its main thread is.
"use strict";

const AUDIBLE = 1e-4; // about -80 dBFS

class SilenceWatch extends AudioWorkletProcessor {
  constructor() {
    super();
    this.armedAt = null;
    this.lastAudible = null;
    this.port.onmessage = (e) => {
      this.armedAt = e.data.armedAt;
      this.lastAudible = e.data.armedAt;
    };
  }

  process(inputs) {
    if (this.armedAt === null) return true;
    const channel = inputs[0] && inputs[0][0];
    let loud = -1;
    if (channel) {
      for (let i = channel.length - 1; i >= 0; i--) {
        if (Math.abs(channel[i]) >= AUDIBLE) { loud = i; break; }
      }
    }
    if (loud >= 0) {
      this.lastAudible = currentTime + (loud + 1) / sampleRate;
    } else if (currentTime >= this.armedAt) { // a whole silent render quantum: it has stopped
      this.port.postMessage({ silentAt: this.lastAudible });
      this.armedAt = null;
    }
    return true;
  }
}

registerProcessor("silence-watch", SilenceWatch);
