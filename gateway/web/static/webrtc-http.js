// Helpers shared by the WHIP publisher and the WHEP player pages.
// Plain script (no modules, no build step): everything hangs off window.WebrtcHttp.
(function () {
  "use strict";

  const SDP = "application/sdp";
  const SDPFRAG = "application/trickle-ice-sdpfrag";
  const MAX_BACKOFF_S = 30;

  // The stream name is the last segment of the page's own path (/watch/NAME).
  function streamFromPath() {
    const parts = window.location.pathname.split("/").filter(Boolean);
    return decodeURIComponent(parts[parts.length - 1] || "");
  }

  // An API URL relative to the page, so the pages also work under a path prefix.
  function apiUrl(kind, stream) {
    return new URL(`../${kind}/${encodeURIComponent(stream)}`, window.location.href).href;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // RFC 8288 Link header(s) as fetch() joins them: "<a>; rel=x, <b>; rel="y"; events="p,q"".
  // Commas inside <…> or quotes do not split links.
  function parseLinks(header, base) {
    const links = [];
    if (!header) return links;
    const parts = [];
    let current = "";
    let inQuotes = false;
    let inAngle = false;
    for (const ch of header) {
      if (ch === '"' && !inAngle) inQuotes = !inQuotes;
      else if (ch === "<" && !inQuotes) inAngle = true;
      else if (ch === ">" && !inQuotes) inAngle = false;
      if (ch === "," && !inQuotes && !inAngle) {
        parts.push(current);
        current = "";
      } else {
        current += ch;
      }
    }
    parts.push(current);
    for (const part of parts) {
      const m = part.match(/^\s*<([^>]*)>(.*)$/s);
      if (!m) continue;
      const params = {};
      const re = /;\s*([^\s=;]+)\s*(?:=\s*(?:"([^"]*)"|([^;]*)))?/g;
      let p;
      while ((p = re.exec(m[2])) !== null) {
        params[p[1].toLowerCase()] = p[2] !== undefined ? p[2] : (p[3] || "").trim();
      }
      let url = m[1];
      try {
        url = new URL(m[1], base).href;
      } catch (e) {
        // stun:/turn: URIs are not relative to anything; keep them as they are
      }
      links.push({ url: url, raw: m[1], params: params });
    }
    return links;
  }

  function findLink(links, rel) {
    return links.find((l) => (l.params.rel || "").split(/\s+/).includes(rel)) || null;
  }

  // Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).
  function retryAfterSeconds(value, fallback) {
    if (!value) return fallback;
    if (/^\s*\d+\s*$/.test(value)) return parseInt(value, 10);
    const when = Date.parse(value);
    if (!isNaN(when)) return Math.max(0, (when - Date.now()) / 1000);
    return fallback;
  }

  // A readable one-liner from an error response (RFC 9457 problem details or text).
  async function describeError(response) {
    let detail = "";
    try {
      const text = await response.text();
      const type = response.headers.get("Content-Type") || "";
      if (type.includes("json")) {
        const body = JSON.parse(text);
        detail = body.detail || body.title || "";
      } else {
        detail = text.trim().slice(0, 200);
      }
    } catch (e) {
      // no body
    }
    return `${response.status} ${response.statusText}${detail ? ": " + detail : ""}`.trim();
  }

  // Resolves when ICE gathering completes, or after timeoutMs with what was gathered.
  function gatheringDone(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(finish, timeoutMs);
      function onChange() {
        if (pc.iceGatheringState === "complete") finish();
      }
      function finish() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onChange);
        resolve();
      }
      pc.addEventListener("icegatheringstatechange", onChange);
    });
  }

  // Trickles (RFC 8840 PATCH) the candidates that were not in the SDP we POSTed:
  // we wait for gathering before the POST, so this only matters when gathering is slow.
  class Trickler {
    constructor(pc, headers) {
      this.pc = pc;
      this.headers = headers;
      this.resource = null;
      this.etag = null;
      this.pending = [];
      this.ended = false;
      this.sent = new Set();
      this.timer = null;
      this.closed = false;
      this.onCandidate = (event) => {
        if (event.candidate && event.candidate.candidate) this.pending.push(event.candidate.candidate);
        else this.ended = true;
        this.schedule();
      };
      pc.addEventListener("icecandidate", this.onCandidate);
    }

    // Called with the SDP actually POSTed and the resource from the 201.
    start(postedSdp, resource, etag) {
      for (const line of postedSdp.split(/\r?\n/)) {
        if (line.startsWith("a=candidate:")) this.sent.add(line.slice(2).trim());
      }
      if (/^a=end-of-candidates/m.test(postedSdp)) this.sentEnd = true;
      this.resource = resource;
      this.etag = etag;
      this.schedule();
    }

    schedule() {
      if (!this.resource || this.closed || this.timer) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, 50);
    }

    async flush() {
      const fresh = this.pending.filter((c) => !this.sent.has(c));
      this.pending = [];
      const end = this.ended && !this.sentEnd;
      if (!fresh.length && !end) return;
      const desc = this.pc.localDescription && this.pc.localDescription.sdp;
      if (!desc) return;
      const ufrag = (desc.match(/^a=ice-ufrag:(.*)$/m) || [])[1];
      const pwd = (desc.match(/^a=ice-pwd:(.*)$/m) || [])[1];
      const mLine = (desc.match(/^m=(\w+) /m) || [])[1] || "audio";
      const mid = (desc.match(/^a=mid:(.*)$/m) || [])[1] || "0";
      const lines = [`a=ice-ufrag:${ufrag.trim()}`, `a=ice-pwd:${pwd.trim()}`,
        `m=${mLine} 9 UDP/TLS/RTP/SAVPF 0`, `a=mid:${mid.trim()}`];
      for (const c of fresh) {
        this.sent.add(c);
        lines.push(`a=${c}`);
      }
      if (end) {
        this.sentEnd = true;
        lines.push("a=end-of-candidates");
      }
      const headers = Object.assign({ "Content-Type": SDPFRAG }, this.headers);
      if (this.etag) headers["If-Match"] = this.etag;
      try {
        await fetch(this.resource, { method: "PATCH", headers: headers, body: lines.join("\r\n") + "\r\n" });
      } catch (e) {
        // the server learns our address from connectivity checks anyway
      }
    }

    close() {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.pc.removeEventListener("icecandidate", this.onCandidate);
    }
  }

  // What the publisher and the player share as HTTP clients of one resource
  // (RFC 9725 / WHEP): the token on every request, POSTing the offer, reading
  // Location / ETag / Link and the answer, trickling, retrying with backoff,
  // DELETE on teardown, and state changes reported to the page.
  class ResourceClient {
    constructor(options) {
      this.stream = options.stream;
      this.endpoint = options.endpoint;
      this.token = options.token || null;
      this.ui = options.ui || {};
      this.pc = null;
      this.state = "idle";
      this.stopped = false;
      this.resource = null;
      this.etag = null;
      this.links = [];
      this.lastError = null;
      this.attempts = 0;
      this.generation = 0;
      this.retryTimer = null;
      this.trickler = null;
    }

    headers(extra) {
      const h = Object.assign({}, extra || {});
      if (this.token) h.Authorization = `Bearer ${this.token}`;
      return h;
    }

    setState(state, message) {
      this.state = state;
      if (this.ui.onState) this.ui.onState(state, message || "");
    }

    backoffSeconds() {
      const base = Math.min(MAX_BACKOFF_S, Math.pow(2, this.attempts));
      this.attempts += 1;
      return base * (0.75 + Math.random() * 0.5);
    }

    // Ends the current attempt: its timers, trickling and peer connection,
    // and DELETEs the resource (keepalive when the page is going away).
    teardown(leavingPage) {
      this.generation += 1;
      clearTimeout(this.retryTimer);
      if (this.trickler) this.trickler.close();
      this.trickler = null;
      const resource = this.resource;
      this.resource = null;
      const done = deleteResource(resource, this.headers(), leavingPage);
      if (this.pc) {
        this.pc.ontrack = null;
        this.pc.onconnectionstatechange = null;
        this.pc.close();
      }
      this.pc = null;
      return done;
    }

    // Tries again with again() after `seconds`, unless stopped or superseded.
    retryIn(seconds, state, message, again) {
      if (this.stopped) return;
      this.teardown(false);
      const gen = this.generation;
      this.setState(state, message);
      this.retryTimer = setTimeout(() => {
        if (gen === this.generation && !this.stopped) again();
      }, Math.max(0, seconds) * 1000);
    }

    // Makes the offer, waits (up to gatherMs) for candidates and POSTs it:
    // {response, offerSdp}, or null once stale() says the attempt is over.
    // Network errors throw.
    async postOffer(pc, url, gatherMs, stale) {
      this.trickler = new Trickler(pc, this.headers());
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringDone(pc, gatherMs);
      if (stale()) return null;
      const offerSdp = pc.localDescription.sdp;
      const response = await fetch(url, {
        method: "POST",
        headers: this.headers({ "Content-Type": SDP }),
        body: offerSdp,
      });
      return { response: response, offerSdp: offerSdp };
    }

    // A 201: the resource (Location), its ETag and Link headers, then the
    // answer; throws when the peer connection refuses the answer.
    async takeAnswer(pc, response) {
      const location = response.headers.get("Location");
      this.resource = location ? new URL(location, response.url).href : null;
      this.etag = response.headers.get("ETag");
      this.links = parseLinks(response.headers.get("Link"), this.resource || response.url);
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    }

    // Trickles what was gathered after the POST (RFC 8840 PATCH, If-Match: ETag).
    startTrickle(offerSdp) {
      if (this.resource && this.trickler) this.trickler.start(offerSdp, this.resource, this.etag);
    }
  }

  // DELETE that survives the page going away (pagehide).
  function deleteResource(url, headers, keepalive) {
    if (!url) return Promise.resolve();
    return fetch(url, { method: "DELETE", headers: headers || {}, keepalive: !!keepalive })
      .catch(() => undefined);
  }

  window.WebrtcHttp = {
    SDP, SDPFRAG, streamFromPath, apiUrl, sleep, parseLinks, findLink, retryAfterSeconds,
    describeError, gatheringDone, Trickler, deleteResource, ResourceClient,
  };
})();
