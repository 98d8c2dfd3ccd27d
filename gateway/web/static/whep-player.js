// A WHEP player (draft-ietf-wish-whep) with the server-sent events and layer
// selection extensions.  window.player exposes its state for people and tests.
(function () {
  "use strict";

  const W = window.WebrtcHttp;
  const SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events";
  const LAYER_REL = "urn:ietf:params:whep:ext:core:layer";
  const WANTED_EVENTS = ["active", "inactive", "layers", "reconnect", "viewercount"];
  const GATHER_MS = 1500;
  const DISCONNECTED_GRACE_MS = 5000;

  class WhepPlayer extends W.ResourceClient {
    constructor(options) {
      super(options);
      this.video = options.video;
      this.state = "idle"; // idle | connecting | waiting | connected | retrying | stopped
      this.live = null; // from the active / inactive events
      this.viewers = null; // from viewercount events
      this.layers = {}; // the last layers event: {mediaId: [layer, ...]}
      this.events = []; // every event received: {name, data, at}
      this.eventStream = null;
      this.eventSource = null;
      this.lastLayerStatus = null;
      this.needsToken = false; // the last POST was refused for want of a (valid) viewer token
      this.disconnectTimer = null;
    }

    start(url) {
      this.stopped = false;
      this.connect(url || this.endpoint);
    }

    // Ends the session: DELETE the resource (keepalive when the page is going away).
    stop(leavingPage) {
      this.stopped = true;
      this.teardown(leavingPage);
      this.setState("stopped", "Stopped.");
    }

    teardown(leavingPage) {
      clearTimeout(this.disconnectTimer);
      if (this.eventSource) this.eventSource.close();
      this.eventSource = null;
      this.eventStream = null;
      return super.teardown(leavingPage);
    }

    retry(url, seconds, state, message) {
      this.retryIn(seconds, state, message, () => this.connect(url));
    }

    async connect(url) {
      this.teardown(false);
      const gen = this.generation;
      const stale = () => gen !== this.generation || this.stopped;
      this.setState("connecting", "Connecting…");

      const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      this.pc = pc;
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
      const media = new MediaStream();
      pc.ontrack = (event) => {
        media.addTrack(event.track);
        if (this.video.srcObject !== media) this.video.srcObject = media;
        const played = this.video.play();
        if (played && played.catch) played.catch(() => undefined);
      };
      pc.onconnectionstatechange = () => this.connectionChanged(gen, url);

      let posted;
      try {
        posted = await this.postOffer(pc, url, GATHER_MS, stale);
        if (!posted) return;
      } catch (err) {
        if (stale()) return;
        this.lastError = String(err);
        const wait = this.backoffSeconds();
        this.retry(url, wait, "retrying", `Cannot reach the server (${err}); retrying in ${wait.toFixed(0)} s.`);
        return;
      }
      if (stale()) return;
      const response = posted.response;
      this.needsToken = response.status === 401 || response.status === 403;

      if (response.status === 409) {
        // No live publisher yet (section 4.2): wait as long as the server asks.
        const wait = W.retryAfterSeconds(response.headers.get("Retry-After"), this.backoffSeconds());
        this.lastError = await W.describeError(response);
        this.setLive(false);
        this.retry(url, wait, "waiting", `Waiting for the stream to go live; retrying in ${Math.round(wait)} s.`);
        return;
      }
      if (response.status !== 201) {
        this.lastError = await W.describeError(response);
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          this.stopped = true;
          this.teardown(false);
          this.setState("stopped", this.lastError);
          if (this.needsToken && this.ui.onTokenNeeded) this.ui.onTokenNeeded(response.status, this.lastError);
          return;
        }
        const wait = W.retryAfterSeconds(response.headers.get("Retry-After"), this.backoffSeconds());
        this.retry(url, wait, "retrying", `${this.lastError}; retrying in ${Math.round(wait)} s.`);
        return;
      }

      try {
        await this.takeAnswer(pc, response);
      } catch (err) {
        if (stale()) return;
        this.lastError = `The server's answer was refused: ${err}`;
        const wait = this.backoffSeconds();
        this.retry(url, wait, "retrying", `${this.lastError}; retrying in ${wait.toFixed(0)} s.`);
        return;
      }
      if (stale()) return;
      this.startTrickle(posted.offerSdp);
      this.setState("connecting", "Negotiated; connecting media…");
      this.subscribe(gen, url);
    }

    connectionChanged(gen, url) {
      if (gen !== this.generation || !this.pc) return;
      const state = this.pc.connectionState;
      clearTimeout(this.disconnectTimer);
      if (state === "connected") {
        this.attempts = 0;
        this.setState("connected", "Playing.");
      } else if (state === "failed") {
        const wait = this.backoffSeconds();
        this.retry(url, wait, "retrying", `The connection failed; reconnecting in ${wait.toFixed(0)} s.`);
      } else if (state === "disconnected") {
        this.disconnectTimer = setTimeout(() => {
          if (gen === this.generation && this.pc && this.pc.connectionState !== "connected") {
            this.retry(url, 0, "retrying", "The connection was lost; reconnecting…");
          }
        }, DISCONNECTED_GRACE_MS);
      }
    }

    // Server-sent events extension: POST the wanted names, then read the stream.
    async subscribe(gen, url) {
      const link = W.findLink(this.links, SSE_REL);
      if (!link) return;
      const offered = (link.params.events || "").split(",").map((s) => s.trim()).filter(Boolean);
      const names = offered.length ? WANTED_EVENTS.filter((n) => offered.includes(n)) : WANTED_EVENTS;
      let response;
      try {
        response = await fetch(link.url, {
          method: "POST",
          headers: this.headers({ "Content-Type": "application/json" }),
          body: JSON.stringify(names),
        });
      } catch (err) {
        return;
      }
      if (gen !== this.generation || response.status !== 201) return;
      // EventSource cannot send Authorization: the event-stream URL the
      // authorized POST returned works on its own, so no token goes into a URL.
      this.eventStream = new URL(response.headers.get("Location"), response.url).href;
      const source = new EventSource(this.eventStream);
      this.eventSource = source;
      for (const name of names) {
        source.addEventListener(name, (event) => {
          if (gen !== this.generation) return;
          let data = {};
          try {
            data = JSON.parse(event.data || "{}");
          } catch (e) {
            data = {};
          }
          this.handleEvent(name, data, url);
        });
      }
    }

    handleEvent(name, data, url) {
      this.events.push({ name: name, data: data, at: Date.now() });
      if (name === "active") this.setLive(true);
      else if (name === "inactive") this.setLive(false);
      else if (name === "viewercount") {
        this.viewers = typeof data.viewercount === "number" ? data.viewercount : null;
        if (this.ui.onViewers) this.ui.onViewers(this.viewers);
      } else if (name === "layers") {
        this.layers = data || {};
        if (this.ui.onLayers) this.ui.onLayers(this.layers);
      } else if (name === "reconnect") {
        const target = data && data.url ? new URL(data.url, this.resource || url).href : (url || this.endpoint);
        this.attempts = 0;
        this.retry(target, 0, "retrying", "The server asked us to reconnect…");
      }
    }

    setLive(live) {
      this.live = live;
      if (this.ui.onLive) this.ui.onLive(live);
    }

    // Layer selection extension: {mediaId, rid | spatialLayerId, temporalLayerId}, or {mediaId}.
    async selectLayer(body) {
      const link = W.findLink(this.links, LAYER_REL);
      if (!link) throw new Error("the server offers no layer selection");
      const response = await fetch(link.url, {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
      });
      this.lastLayerStatus = response.status;
      if (!response.ok) this.lastError = await W.describeError(response);
      return response.status;
    }
  }

  // -- the page -------------------------------------------------------------

  function describeLayer(layer) {
    const bits = [];
    if (layer.rid !== undefined) bits.push(`rid ${layer.rid}`);
    if (layer.spatialLayerId !== undefined) bits.push(`S${layer.spatialLayerId}`);
    if (layer.temporalLayerId !== undefined) bits.push(`T${layer.temporalLayerId}`);
    if (layer.width && layer.height) bits.push(`${layer.width}×${layer.height}`);
    const rate = layer.bitrate || layer.targetBitrate;
    if (rate) bits.push(`${Math.round(rate / 1000)} kbit/s`);
    if (!layer.bitrate) bits.push("(inactive)");
    return bits.join(" ");
  }

  function layerRequest(mediaId, layer) {
    const body = { mediaId: String(mediaId) };
    if (layer.rid !== undefined) body.rid = layer.rid;
    if (layer.spatialLayerId !== undefined) body.spatialLayerId = layer.spatialLayerId;
    if (layer.temporalLayerId !== undefined) body.temporalLayerId = layer.temporalLayerId;
    return body;
  }

  function setup() {
    const stream = W.streamFromPath();
    const params = new URLSearchParams(window.location.search);
    const $ = (id) => document.getElementById(id);
    const badge = $("badge");
    const status = $("status");
    const viewers = $("viewers");
    const select = $("layer");
    const layerStatus = $("layer-status");
    const tokenForm = $("token-form");
    const tokenInput = $("token");
    const storageKey = `whep-token:${stream}`;
    document.title = `${stream} · watch`;
    $("stream-name").textContent = stream;
    $("publish-link").href = `../publish/${encodeURIComponent(stream)}`;

    function showLive(live) {
      badge.dataset.live = live === null ? "unknown" : String(live);
      badge.textContent = live === null ? "…" : live ? "LIVE" : "OFFLINE";
    }

    // The viewer token, sent as Bearer: ?token= in the page's URL, else the
    // one entered here before (asked for when the stream answers 401/403).
    let token = params.get("token");
    if (!token) {
      try {
        token = window.localStorage.getItem(storageKey);
      } catch (e) {
        // storage may be disabled
      }
    }

    const player = new WhepPlayer({
      stream: stream,
      endpoint: W.apiUrl("whep", stream),
      token: token,
      video: $("video"),
      ui: {
        onTokenNeeded: () => {
          tokenForm.hidden = false;
          tokenInput.focus();
        },
        onState: (state, message) => {
          status.dataset.state = state;
          status.textContent = message;
        },
        onLive: showLive,
        onViewers: (n) => {
          viewers.textContent = n === null ? "–" : String(n);
        },
        onLayers: (layers) => {
          // Rebuilt only when the set of layers changes (the event repeats every
          // few seconds with new bitrates): an open dropdown stays open.
          const wanted = [{ value: "", label: "automatic" }];
          for (const [mediaId, list] of Object.entries(layers || {})) {
            for (const layer of Array.isArray(list) ? list : []) {
              wanted.push({ value: JSON.stringify(layerRequest(mediaId, layer)), label: describeLayer(layer) });
            }
          }
          const current = [...select.options].map((o) => o.value);
          if (current.join("\n") === wanted.map((w) => w.value).join("\n")) {
            wanted.forEach((w, i) => {
              if (select.options[i].textContent !== w.label) select.options[i].textContent = w.label;
            });
          } else {
            const previous = select.value;
            select.replaceChildren(...wanted.map((w) => new Option(w.label, w.value)));
            if (wanted.some((w) => w.value === previous)) select.value = previous;
          }
          select.disabled = wanted.length < 2;
        },
      },
    });
    showLive(null);

    select.addEventListener("change", async () => {
      let body;
      if (select.value) {
        body = JSON.parse(select.value);
      } else {
        const first = Object.keys(player.layers)[0];
        body = { mediaId: first !== undefined ? String(first) : "1" };
      }
      layerStatus.textContent = "…";
      try {
        const code = await player.selectLayer(body);
        layerStatus.textContent = code === 200 ? "ok" : `${player.lastError}`;
      } catch (err) {
        layerStatus.textContent = String(err);
      }
    });

    tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = tokenInput.value.trim();
      try {
        window.localStorage.setItem(storageKey, value);
      } catch (e) {
        // storage may be disabled
      }
      player.token = value || null;
      tokenForm.hidden = true;
      player.start();
    });

    $("unmute").addEventListener("click", () => {
      const video = $("video");
      video.muted = !video.muted;
      $("unmute").textContent = video.muted ? "Unmute" : "Mute";
    });

    window.addEventListener("pagehide", () => player.stop(true));
    window.player = player;
    player.start();
  }

  window.WhepPlayer = WhepPlayer;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setup);
  else setup();
})();
