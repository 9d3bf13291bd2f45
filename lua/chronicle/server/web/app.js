// chronicle console: a read-only view of one store through the HTTP API (docs/HTTP.md).
// Plain JavaScript, no framework, no build step. Pages are chosen by the URL's hash:
//   #/                         dashboard: counts and a live chart of appends per second
//   #/streams?prefix=&after=   streams, with search and paging
//   #/stream/NAME?from=        one stream's events
//   #/event/POSITION           one event: data, meta, correlation and causation links
//   #/id/UUID                  the event with that id (follows correlation and causation)
//   #/log?category=&types=     the whole log, filtered, with a live tail
//   #/read-side                projections, reactors, handlers, dead letters
//   #/aggregate/NAME/ID?version=  an aggregate's state at any version (serve --scripts)
"use strict";

const app = document.getElementById("app");
let cleanup = [];          // what the current page must stop when another one opens (event sources, timers)

// ---- helpers ----

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function pretty(value) { return esc(JSON.stringify(value, null, 2)); }

function short(value, n) {
  const text = JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

async function api(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({ code: "bad_answer", message: "the server did not answer JSON" }));
  if (!res.ok) throw Object.assign(new Error(body.message || res.statusText), { status: res.status, body });
  return body;
}

function params(query) {
  const out = {};
  new URLSearchParams(query || "").forEach((v, k) => { out[k] = v; });
  return out;
}

function qs(obj) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(obj)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const text = p.toString();
  return text ? "?" + text : "";
}

function segment(s) { return encodeURIComponent(s); }

function when(iso) { return iso ? esc(iso.replace("T", " ").replace(/\.(\d{3})\d*Z$/, ".$1Z")) : ""; }

function nsTime(v) {
  // stream infos carry times as integer nanoseconds ({"$int": "..."} beyond 2^53)
  const text = v && v.$int !== undefined ? v.$int : String(v);
  const ms = Number(text.slice(0, -6));
  return isFinite(ms) ? new Date(ms).toISOString() : text;
}

function fail(err) {
  app.innerHTML = `<h1>Something went wrong</h1><p class="bad" id="error">${esc(err.message)}</p>`;
}

function eventRow(ev, fresh) {
  return `<tr class="${fresh ? "fresh" : ""}" data-position="${ev.position}">
    <td class="num"><a href="#/event/${ev.position}">${ev.position}</a></td>
    <td><a href="#/stream/${segment(ev.stream)}">${esc(ev.stream)}</a></td>
    <td class="num">${ev.version}</td><td>${esc(ev.type)}</td><td>${when(ev.time)}</td>
    <td><code>${esc(short(ev.data, 90))}</code></td></tr>`;
}

const EVENT_HEAD = `<thead><tr><th class="num">position</th><th>stream</th><th class="num">version</th>
  <th>type</th><th>time</th><th>data</th></tr></thead>`;

function setNav(name) {
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name));
}

// ---- pages ----

async function dashboard() {
  setNav("dashboard");
  const stats = await api("/stats");
  app.innerHTML = `<h1>Dashboard</h1>
    <div class="cards">
      <div class="card"><div class="value" id="events">${stats.events}</div><div class="label">events</div></div>
      <div class="card"><div class="value" id="streams">${stats.streams}</div><div class="label">streams</div></div>
      <div class="card"><div class="value" id="head">${stats.head}</div><div class="label">head position</div></div>
      <div class="card"><div class="value">${(stats.used_bytes / 1048576).toFixed(1)} MiB</div><div class="label">used of ${(stats.map_size / 1048576).toFixed(0)} MiB</div></div>
    </div>
    <h2>Appends per second <span class="muted" id="rate"></span></h2>
    <canvas id="chart" width="1100" height="140"></canvas>
    <h2>Latest events</h2>
    <table id="latest">${EVENT_HEAD}<tbody></tbody></table>`;
  const per = new Array(60).fill(0);
  let second = Math.floor(Date.now() / 1000);
  const tbody = app.querySelector("#latest tbody");
  const recent = await api(`/all?backward=true&count=10`);
  tbody.innerHTML = recent.events.map((ev) => eventRow(ev)).join("");
  const source = new EventSource(`/subscribe?from=${stats.head + 1}`);
  source.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    per[per.length - 1] += 1;
    document.getElementById("events").textContent = Number(document.getElementById("events").textContent) + 1;
    document.getElementById("head").textContent = ev.position;
    tbody.insertAdjacentHTML("afterbegin", eventRow(ev, true));
    while (tbody.rows.length > 10) tbody.deleteRow(-1);
  };
  const draw = () => {
    const now = Math.floor(Date.now() / 1000);
    while (second < now) { per.shift(); per.push(0); second += 1; }
    const canvas = document.getElementById("chart");
    if (!canvas) return;
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    const max = Math.max(1, ...per);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#2456a6";
    const bw = w / per.length;
    per.forEach((n, i) => { const bh = (n / max) * (h - 20); ctx.fillRect(i * bw + 1, h - bh, bw - 2, bh); });
    ctx.fillStyle = "#6b6b66";
    ctx.fillText(`max ${max}/s, last 60 s`, 6, 12);
    document.getElementById("rate").textContent = `(${per[per.length - 2] || 0}/s a second ago)`;
  };
  const timer = setInterval(draw, 500);
  draw();
  cleanup.push(() => source.close(), () => clearInterval(timer));
}

async function streams(q) {
  setNav("streams");
  const page = await api(`/streams${qs({ prefix: q.prefix, after: q.after, count: 50 })}`);
  const rows = page.streams.map((s) => `<tr><td><a href="#/stream/${segment(s.stream)}">${esc(s.stream)}</a></td>
      <td>${esc(s.category)}</td><td class="num">${s.version}</td><td class="num">${s.count}</td>
      <td>${when(nsTime(s.updated))}</td></tr>`).join("");
  const last = page.streams.length ? page.streams[page.streams.length - 1].stream : null;
  app.innerHTML = `<h1>Streams</h1>
    <form class="filters" id="search"><input type="text" name="prefix" placeholder="name starts with…" value="${esc(q.prefix || "")}">
      <button>Search</button></form>
    <table id="streams"><thead><tr><th>stream</th><th>category</th><th class="num">version</th><th class="num">events</th>
      <th>updated</th></tr></thead><tbody>${rows || `<tr><td colspan="5" class="muted">no streams</td></tr>`}</tbody></table>
    <div class="pager">${page.links.next ? `<a id="next" href="#/streams${qs({ prefix: q.prefix, after: last })}">next page →</a>` : ""}</div>`;
  app.querySelector("#search").onsubmit = (e) => {
    e.preventDefault();
    location.hash = "#/streams" + qs({ prefix: e.target.prefix.value });
  };
}

let aggregates = null;   // names of the aggregates the server loaded (serve --scripts), fetched once

async function stream(name, q) {
  setNav("streams");
  const page = await api(`/streams/${segment(name)}${qs({ from: q.from, count: 50 })}`);
  if (aggregates === null) aggregates = (await api("/aggregates").catch(() => ({ aggregates: [] }))).aggregates;
  const info = page.stream;
  const category = info ? info.category : name.split("-")[0];
  const travel = info && aggregates.includes(category) && name.length > category.length + 1
    ? `<p><a id="travel" href="#/aggregate/${segment(category)}/${segment(name.slice(category.length + 1))}">State at any version →</a></p>` : "";
  const next = page.links.next ? params(page.links.next.split("?")[1]).from : null;
  app.innerHTML = `<h1>Stream <code>${esc(name)}</code></h1>
    ${info ? `<dl class="fields"><dt>category</dt><dd>${esc(info.category)}</dd><dt>version</dt><dd>${info.version}</dd>
      <dt>events</dt><dd>${info.count}</dd><dt>positions</dt><dd>${info.first_position} … ${info.last_position}</dd>
      <dt>created</dt><dd>${when(nsTime(info.created))}</dd><dt>updated</dt><dd>${when(nsTime(info.updated))}</dd></dl>`
      : `<p class="muted">This stream has no events.</p>`}
    ${travel}
    <table id="events">${EVENT_HEAD}<tbody>${page.events.map((ev) => eventRow(ev)).join("")}</tbody></table>
    <div class="pager">${next !== null ? `<a id="next" href="#/stream/${segment(name)}?from=${next}">next page →</a>` : ""}</div>`;
}

function idLink(id) {
  return typeof id === "string" ? `<a href="#/id/${segment(id)}">${esc(id)}</a>` : esc(JSON.stringify(id));
}

async function event(position) {
  setNav("log");
  const page = await api(`/all?from=${Number(position)}&count=1`);
  const ev = page.events[0];
  if (!ev || ev.position !== Number(position)) throw new Error(`no event at position ${position}`);
  const meta = ev.meta || {};
  app.innerHTML = `<h1>Event ${ev.position}: <code>${esc(ev.type)}</code></h1>
    <dl class="fields" id="event">
      <dt>stream</dt><dd><a href="#/stream/${segment(ev.stream)}">${esc(ev.stream)}</a> @ version ${ev.version}</dd>
      <dt>position</dt><dd>${ev.position}</dd><dt>time</dt><dd>${when(ev.time)}</dd>
      <dt>id</dt><dd>${esc(ev.id)}</dd><dt>schema</dt><dd>${ev.schema}</dd>
      ${meta.correlation_id ? `<dt>correlation</dt><dd id="correlation">${idLink(meta.correlation_id)}</dd>` : ""}
      ${meta.causation_id ? `<dt>causation</dt><dd id="causation">${idLink(meta.causation_id)}</dd>` : ""}
    </dl>
    <h2>data</h2><pre id="data">${pretty(ev.data === undefined ? null : ev.data)}</pre>
    <h2>meta</h2><pre id="meta">${pretty(ev.meta === undefined ? null : ev.meta)}</pre>
    <div class="pager">${ev.position > 1 ? `<a href="#/event/${ev.position - 1}">← previous</a>` : ""}
      <a href="#/event/${ev.position + 1}">next →</a></div>`;
}

async function byId(id) {
  const ev = await api(`/events/${segment(id)}`);
  location.replace(`#/event/${ev.position}`);
}

async function log(q) {
  setNav("log");
  const filters = { category: q.category, types: q.types };
  const page = await api(`/all${qs({ ...filters, backward: "true", count: 50 })}`);
  app.innerHTML = `<h1>Log</h1>
    <form class="filters" id="filters">
      <input type="text" name="category" placeholder="category (e.g. order)" value="${esc(q.category || "")}">
      <input type="text" name="types" placeholder="types, comma-separated" value="${esc(q.types || "")}">
      <button>Filter</button>
      <label><input type="checkbox" id="live" checked> live tail</label>
    </form>
    <table id="log">${EVENT_HEAD}<tbody>${page.events.map((ev) => eventRow(ev)).join("")}</tbody></table>`;
  app.querySelector("#filters").onsubmit = (e) => {
    e.preventDefault();
    location.hash = "#/log" + qs({ category: e.target.category.value, types: e.target.types.value });
  };
  const tbody = app.querySelector("#log tbody");
  const head = page.events.length ? page.events[0].position : 0;
  const stats = await api("/stats");
  let source = null;
  const follow = () => {
    source = new EventSource(`/subscribe${qs({ ...filters, from: Math.max(head, stats.head) + 1 })}`);
    source.onmessage = (m) => {
      tbody.insertAdjacentHTML("afterbegin", eventRow(JSON.parse(m.data), true));
      while (tbody.rows.length > 200) tbody.deleteRow(-1);
    };
  };
  follow();
  app.querySelector("#live").onchange = (e) => {
    if (e.target.checked && !source) follow();
    if (!e.target.checked && source) { source.close(); source = null; }
  };
  cleanup.push(() => source && source.close());
}

async function readSide() {
  setNav("read-side");
  const [side, letters] = await Promise.all([api("/projections"), api("/dead-letters")]);
  const status = (s) => `<span class="status-${esc(s || "live")}">${esc(s || "live")}</span>`;
  const fault = (f) => f ? `<code class="bad">${esc(typeof f === "string" ? f : (f.error || f.message || JSON.stringify(f)))}</code>` : "";
  const rows = (list, cols) => list.length ? list.map(cols).join("") : `<tr><td colspan="6" class="muted">none</td></tr>`;
  app.innerHTML = `<h1>Read side <span class="muted">(head ${side.head})</span></h1>
    <h2>Projections</h2>
    <table id="projections"><thead><tr><th>name</th><th class="num">version</th><th class="num">checkpoint</th>
      <th class="num">lag</th><th>status</th><th>fault</th></tr></thead><tbody>${rows(side.projections, (p) => `<tr>
      <td><a href="#/view/${segment(p.name)}">${esc(p.name)}</a></td><td class="num">${p.version ?? ""}</td>
      <td class="num">${p.checkpoint ?? 0}</td><td class="num">${p.lag}</td><td>${status(p.status)}</td><td>${fault(p.fault)}</td></tr>`)}</tbody></table>
    <h2>Reactors</h2>
    <table id="reactors"><thead><tr><th>name</th><th class="num">checkpoint</th><th class="num">lag</th><th>status</th>
      <th>fault</th></tr></thead><tbody>${rows(side.reactors, (r) => `<tr><td>${esc(r.name)}</td>
      <td class="num">${r.checkpoint ?? 0}</td><td class="num">${r.lag}</td><td>${status(r.status)}</td><td>${fault(r.fault)}</td></tr>`)}</tbody></table>
    <h2>Handlers</h2>
    <table id="handlers"><thead><tr><th>name</th><th class="num">checkpoint</th><th class="num">lag</th>
      <th class="num">dead letters</th></tr></thead><tbody>${rows(side.handlers, (h) => `<tr><td>${esc(h.name)}</td>
      <td class="num">${h.checkpoint ?? 0}</td><td class="num">${h.lag}</td><td class="num ${h.dead_letters ? "bad" : ""}">${h.dead_letters}</td></tr>`)}</tbody></table>
    <h2>Dead letters</h2>
    <table id="dead-letters"><thead><tr><th>handler</th><th class="num">position</th><th>error</th></tr></thead>
      <tbody>${rows(letters.dead_letters, (d) => `<tr><td>${esc(d.handler || d.name || "")}</td>
      <td class="num"><a href="#/event/${d.position}">${d.position}</a></td><td><code>${esc(d.error || "")}</code></td></tr>`)}</tbody></table>`;
}

async function viewRows(name, q) {
  setNav("read-side");
  const page = await api(`/views/${segment(name)}${qs({ after: q.after, count: 50 })}`);
  const last = page.rows.length ? page.rows[page.rows.length - 1].key : null;
  app.innerHTML = `<h1>View <code>${esc(name)}</code></h1>
    <table id="rows"><thead><tr><th>key</th><th>row</th></tr></thead><tbody>${page.rows.map((r) =>
      `<tr><td><code>${esc(r.key)}</code></td><td><code>${esc(short(r.value, 140))}</code></td></tr>`).join("")
      || `<tr><td colspan="2" class="muted">no rows</td></tr>`}</tbody></table>
    <div class="pager">${page.links.next ? `<a href="#/view/${segment(name)}${qs({ after: last })}">next page →</a>` : ""}</div>`;
}

async function aggregate(name, id, q) {
  setNav("streams");
  const now = await api(`/aggregates/${segment(name)}/${segment(id)}`);
  const top = Math.max(0, now.stream_version);
  const version = q.version !== undefined ? Math.min(Number(q.version), top) : top;
  app.innerHTML = `<h1>Aggregate <code>${esc(name)}</code> <code>${esc(id)}</code></h1>
    <p><a href="#/stream/${segment(now.stream)}">stream ${esc(now.stream)}</a>, ${now.stream_version + 1} events</p>
    <div class="slider"><span>version</span>
      <input type="range" id="version" min="0" max="${top}" value="${version}" ${now.stream_version < 0 ? "disabled" : ""}>
      <strong id="version-label">${version}</strong></div>
    <pre id="state"></pre>`;
  const show = async (v) => {
    const at = await api(`/aggregates/${segment(name)}/${segment(id)}?version=${v}`);
    document.getElementById("version-label").textContent = v;
    document.getElementById("state").innerHTML = pretty(at.state);
  };
  const slider = document.getElementById("version");
  slider.oninput = () => show(Number(slider.value));
  await show(version);
}

// ---- routing ----

const routes = [
  [/^#?\/?$/, () => dashboard()],
  [/^#\/streams$/, (m, q) => streams(q)],
  [/^#\/stream\/(.+)$/, (m, q) => stream(decodeURIComponent(m[1]), q)],
  [/^#\/event\/(\d+)$/, (m) => event(m[1])],
  [/^#\/id\/(.+)$/, (m) => byId(decodeURIComponent(m[1]))],
  [/^#\/log$/, (m, q) => log(q)],
  [/^#\/read-side$/, () => readSide()],
  [/^#\/view\/(.+)$/, (m, q) => viewRows(decodeURIComponent(m[1]), q)],
  [/^#\/aggregate\/([^/]+)\/(.+)$/, (m, q) => aggregate(decodeURIComponent(m[1]), decodeURIComponent(m[2]), q)],
];

async function route() {
  cleanup.forEach((stop) => stop());
  cleanup = [];
  const [path, query] = location.hash.split("?");
  for (const [pattern, page] of routes) {
    const m = path.match(pattern);
    if (m) {
      try { await page(m, params(query)); } catch (err) { fail(err); }
      document.body.dataset.page = path || "#/";
      return;
    }
  }
  fail(new Error("no such page: " + location.hash));
}

window.addEventListener("hashchange", route);
api("/health").then((h) => {
  document.getElementById("server-state").textContent = h.writable ? "accepts writes with a token" : "read-only";
}).catch(() => {});
route();
