// The stream list: polls /api/streams every 2 s.
(function () {
  "use strict";

  const REFRESH_MS = 2000;
  const body = document.querySelector("#streams tbody");
  const empty = document.getElementById("empty");
  const error = document.getElementById("error");

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    row.append(td);
    return td;
  }

  function link(text, href, cls) {
    const a = document.createElement("a");
    a.textContent = text;
    a.href = href;
    if (cls) a.className = cls;
    return a;
  }

  function render(streams) {
    const names = Object.keys(streams).sort();
    body.replaceChildren();
    for (const name of names) {
      const s = streams[name];
      const row = document.createElement("tr");
      row.dataset.stream = name;
      row.dataset.live = String(!!s.live);
      const path = encodeURIComponent(name);
      cell(row, link(name, `watch/${path}`, "watch"));
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.live = String(!!s.live);
      badge.textContent = s.live ? "LIVE" : (s.publisher && s.publisher.state) || "offline";
      cell(row, badge);
      cell(row, s.viewers === undefined ? "" : String(s.viewers)); // public_listing = "names": no counts
      const codecs = (s.publisher && s.publisher.codecs) || {};
      cell(row, Object.values(codecs).filter(Boolean).join(" + "));
      const actions = document.createElement("span");
      actions.append(link("watch", `watch/${path}`), " · ", link("publish", `publish/${path}`));
      cell(row, actions);
      body.append(row);
    }
    empty.hidden = names.length > 0;
  }

  async function refresh() {
    try {
      const response = await fetch("api/streams", { cache: "no-store" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      render((await response.json()).streams || {});
      error.hidden = true;
    } catch (err) {
      error.textContent = `Cannot list streams: ${err.message || err}`;
      error.hidden = false;
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  document.getElementById("new-stream").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = document.getElementById("new-name").value.trim();
    if (name) window.location.href = `publish/${encodeURIComponent(name)}`;
  });

  refresh();
})();
