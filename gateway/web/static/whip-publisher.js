// A WHIP publisher (RFC 9725): camera and microphone, optionally simulcast.
// window.publisher exposes its state for people and tests.
(function () {
  "use strict";

  const W = window.WebrtcHttp;
  const GATHER_MS = 1500;
  const SIMULCAST = [
    { rid: "h", scaleResolutionDownBy: 1 },
    { rid: "m", scaleResolutionDownBy: 2 },
    { rid: "l", scaleResolutionDownBy: 4 },
  ];

  class WhipPublisher extends W.ResourceClient {
    constructor(options) {
      super(options);
      this.preview = options.preview;
      this.media = null;
      this.simulcast = false;
      this.state = "idle"; // idle | starting | connecting | live | retrying | stopped | failed
    }

    async start(token, simulcast) {
      this.token = token || null;
      this.simulcast = !!simulcast;
      this.stopped = false;
      this.attempts = 0;
      this.setState("starting", "Asking for the camera and microphone…");
      try {
        this.media = await navigator.mediaDevices.getUserMedia({
          audio: true,
          video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
        });
      } catch (err) {
        this.lastError = String(err);
        this.stopped = true;
        this.setState("failed", `No camera or microphone: ${err.message || err}`);
        return;
      }
      if (this.stopped) {
        this.releaseMedia();
        return;
      }
      this.preview.srcObject = this.media;
      await this.connect();
    }

    async stop(leavingPage) {
      this.stopped = true;
      const done = this.teardown(leavingPage);
      this.releaseMedia();
      this.setState("stopped", "Stopped.");
      await done;
    }

    releaseMedia() {
      if (this.media) this.media.getTracks().forEach((t) => t.stop());
      this.media = null;
      if (this.preview) this.preview.srcObject = null;
    }

    retry(seconds, message) {
      this.retryIn(seconds, "retrying", message, () => this.connect());
    }

    async connect() {
      this.teardown(false);
      const gen = this.generation;
      const stale = () => gen !== this.generation || this.stopped;
      this.setState("connecting", "Connecting…");

      const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      this.pc = pc;
      for (const track of this.media.getAudioTracks()) {
        pc.addTransceiver(track, { direction: "sendonly", streams: [this.media] });
      }
      for (const track of this.media.getVideoTracks()) {
        const init = { direction: "sendonly", streams: [this.media] };
        if (this.simulcast) init.sendEncodings = SIMULCAST.map((e) => Object.assign({}, e));
        pc.addTransceiver(track, init);
      }
      pc.onconnectionstatechange = () => this.connectionChanged(gen);

      let posted;
      try {
        posted = await this.postOffer(pc, this.endpoint, GATHER_MS, stale);
        if (!posted) return;
      } catch (err) {
        if (stale()) return;
        this.lastError = String(err);
        const wait = this.backoffSeconds();
        this.retry(wait, `Cannot reach the server (${err}); retrying in ${wait.toFixed(0)} s.`);
        return;
      }
      if (stale()) return;
      const response = posted.response;

      if (response.status !== 201) {
        this.lastError = await W.describeError(response);
        const retryable = response.status === 409 || response.status === 503 || response.status >= 500;
        if (!retryable) {
          // a wrong key, or an offer the server cannot take: retrying changes nothing
          this.stopped = true;
          this.teardown(false);
          this.releaseMedia();
          this.setState("failed", this.lastError);
          return;
        }
        const wait = W.retryAfterSeconds(response.headers.get("Retry-After"), this.backoffSeconds());
        this.retry(wait, `${this.lastError}; retrying in ${Math.round(wait)} s.`);
        return;
      }

      try {
        await this.takeAnswer(pc, response);
      } catch (err) {
        if (stale()) return;
        this.lastError = `The server's answer was refused: ${err}`;
        this.stopped = true;
        this.teardown(false);
        this.releaseMedia();
        this.setState("failed", this.lastError);
        return;
      }
      if (stale()) return;
      this.startTrickle(posted.offerSdp);
      this.setState("connecting", "Negotiated; connecting media…");
    }

    connectionChanged(gen) {
      if (gen !== this.generation || !this.pc) return;
      const state = this.pc.connectionState;
      if (state === "connected") {
        this.attempts = 0;
        this.setState("live", this.simulcast ? "On air (simulcast h/m/l)." : "On air.");
      } else if (state === "failed") {
        const wait = this.backoffSeconds();
        this.retry(wait, `The connection failed; reconnecting in ${wait.toFixed(0)} s.`);
      } else if (state === "disconnected") {
        this.setState("connecting", "The connection is unstable…");
      }
    }
  }

  function setup() {
    const stream = W.streamFromPath();
    const $ = (id) => document.getElementById(id);
    const keyInput = $("key");
    const simulcast = $("simulcast");
    const startButton = $("start");
    const stopButton = $("stop");
    const status = $("status");
    const badge = $("badge");
    const storageKey = `whip-key:${stream}`;
    document.title = `${stream} · publish`;
    $("stream-name").textContent = stream;
    const watchUrl = new URL(`../watch/${encodeURIComponent(stream)}`, window.location.href).href;
    $("watch-link").href = watchUrl;
    $("watch-link").textContent = watchUrl;
    try {
      keyInput.value = window.localStorage.getItem(storageKey) || "";
    } catch (e) {
      // storage may be disabled
    }

    const publisher = new WhipPublisher({
      stream: stream,
      endpoint: W.apiUrl("whip", stream),
      preview: $("preview"),
      ui: {
        onState: (state, message) => {
          status.dataset.state = state;
          status.textContent = message;
          const running = !["idle", "stopped", "failed"].includes(state);
          startButton.disabled = running;
          stopButton.disabled = !running;
          keyInput.disabled = running;
          simulcast.disabled = running;
          badge.dataset.live = String(state === "live");
          badge.textContent = state === "live" ? "ON AIR" : "OFF AIR";
        },
      },
    });

    $("form").addEventListener("submit", (event) => {
      event.preventDefault();
      try {
        window.localStorage.setItem(storageKey, keyInput.value);
      } catch (e) {
        // storage may be disabled
      }
      publisher.start(keyInput.value.trim(), simulcast.checked);
    });
    stopButton.addEventListener("click", () => publisher.stop(false));
    window.addEventListener("pagehide", () => {
      if (!publisher.stopped) publisher.stop(true);
    });
    window.publisher = publisher;
  }

  window.WhipPublisher = WhipPublisher;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
