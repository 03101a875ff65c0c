// shard cluster view: asks this node for GET /api/cluster/live once a second
// (the node asks each member once for its own figures) and draws it: the
// ring with an arc per node sized by its partitions, each node's state and
// rates as sparklines, and the links between every pair with their queues.
// No dependency, no build step; the DOM is built with createElement only,
// so nothing a node reports is ever parsed as markup.

const POLL_MS = 1000; // the view is live: one ask a second
const FETCH_TIMEOUT_MS = 4000; // the node answers within ~1 s, asking members included
const HISTORY = 60; // samples per sparkline: the last minute
const KEY_STORE = 'shard.cluster.key';
const HIGH_QUEUE = 1000; // frames: a peer this far behind is worth a look
const SVG_NS = 'http://www.w3.org/2000/svg';

// Colours by order of first sight, so that a node keeps its colour while the
// page is open, whoever joins or leaves.
const PALETTE = ['#4f5bd5', '#16a06a', '#e07b24', '#c2409a', '#2a9fd6', '#b59a00', '#7a4fd5', '#d23f3f', '#3aa39a', '#8a6d3b'];

const METRICS = [
  { key: 'messages', label: 'messages', title: 'chat messages accepted from clients on this node' },
  { key: 'deliveries', label: 'deliveries', title: 'msg frames handed to client connections' },
  { key: 'peer', label: 'node-to-node', title: 'requests this node sent to other nodes' },
];

const $ = (id) => document.getElementById(id);

const view = {
  key: null,
  colors: new Map(), // node name -> colour
  series: new Map(), // node name -> { inc, messages: [], deliveries: [], peer: [] }
  updates: 0,
  answered: 0, // time of the last answer drawn
  timer: 0,
};

function colorOf(name) {
  if (!view.colors.has(name)) view.colors.set(name, PALETTE[view.colors.size % PALETTE.length]);
  return view.colors.get(name);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  e.append(...children);
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  setAttrs(e, attrs);
  e.append(...children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('data-')) e.dataset[k.slice(5).replace(/-./g, (m) => m[1].toUpperCase())] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
}

function fmtRate(v) {
  if (v === undefined || v === null) return '—';
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + 'k';
  if (v >= 100) return v.toFixed(0);
  return v.toFixed(1);
}

function pct(part, total) {
  return total ? Math.round((100 * part) / total) + '%' : '—';
}

// ---- the key ------------------------------------------------------------

// A key given as ?key= is kept in this tab (sessionStorage) and taken out of
// the address bar at once, so that it is not left in the history, a
// bookmark or a screenshot of the page.
function takeKey() {
  const url = new URL(location.href);
  const given = url.searchParams.get('key');
  if (given !== null) {
    if (given) sessionStorage.setItem(KEY_STORE, given);
    url.searchParams.delete('key');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(KEY_STORE);
}

function askForKey(message) {
  clearTimeout(view.timer);
  $('main').dataset.locked = 'true';
  $('key-form').hidden = false;
  $('key-error').textContent = message;
  $('forget-key').hidden = true;
  setLive('locked', 'Needs the API key');
  $('key').focus();
}

$('key-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const key = $('key').value.trim();
  if (!key) {
    $('key-error').textContent = 'Enter the key the nodes were started with (--api-key).';
    return;
  }
  view.key = key;
  sessionStorage.setItem(KEY_STORE, key);
  $('key').value = '';
  $('key-form').hidden = true;
  $('main').dataset.locked = 'false';
  poll();
});

$('forget-key').addEventListener('click', () => {
  sessionStorage.removeItem(KEY_STORE);
  view.key = null;
  askForKey('');
});

// ---- asking -------------------------------------------------------------

function setLive(state, text) {
  const live = $('live');
  live.dataset.state = state;
  $('live-text').textContent = text;
}

async function poll() {
  clearTimeout(view.timer);
  try {
    const headers = view.key ? { Authorization: 'Bearer ' + view.key } : {};
    const res = await fetch('/api/cluster/live', { headers, cache: 'no-store', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    if (res.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      askForKey(view.key ? 'The node refused that key.' : '');
      view.key = null;
      return;
    }
    if (!res.ok) throw new Error('answered ' + res.status);
    const live = await res.json();
    render(live);
    view.updates++;
    $('live').dataset.updates = String(view.updates);
    setLive('live', 'Live · ' + new Date(live.time).toLocaleTimeString());
    $('forget-key').hidden = !view.key;
  } catch (err) {
    setLive('lost', 'This node does not answer (' + (err.name === 'TimeoutError' ? 'timed out' : err.message) + '); asking again');
  }
  view.timer = setTimeout(poll, POLL_MS);
}

// ---- what the answer means ----------------------------------------------

// stateOf is what a member is, in one word: gossip's state, refined by
// what the member said about itself.
function stateOf(m) {
  if (m.state === 'left' || m.state === 'dead') return m.state;
  if (!m.node) return 'unreachable';
  if (m.node.state !== 'ready') return m.node.state; // draining, starting
  return m.state === 'suspect' ? 'suspect' : 'alive';
}

const STATE_TEXT = {
  alive: 'alive', suspect: 'suspect', draining: 'draining', starting: 'starting',
  left: 'left', dead: 'dead', unreachable: 'not answering',
};

function record(m) {
  let s = view.series.get(m.name);
  if (m.node && (!s || s.inc !== m.node.inc)) {
    s = { inc: m.node.inc, messages: [], deliveries: [], peer: [] };
    view.series.set(m.name, s);
  }
  if (s && m.rates) {
    for (const { key } of METRICS) {
      s[key].push(m.rates[key]);
      if (s[key].length > HISTORY) s[key].shift();
    }
  }
  return s;
}

function render(live) {
  if (live.time === view.answered) return; // the node's answer of a moment ago, served again
  view.answered = live.time;
  $('self').textContent = live.self;
  const members = [...live.members].sort((a, b) => a.name.localeCompare(b.name));
  for (const m of members) {
    colorOf(m.name);
    m.view = stateOf(m);
    m.series = record(m);
  }
  for (const name of view.series.keys()) {
    if (!members.some((m) => m.name === name)) view.series.delete(name); // forgotten by gossip
  }
  renderRing(members);
  renderNodes(members, renderAgreement(members));
  renderLinks(members);
}

// ---- the ring -----------------------------------------------------------

const R_OUT = 128;
const R_IN = 92;
const GAP = 0.012; // radians between two arcs

function point(angle, r) {
  return [r * Math.cos(angle), r * Math.sin(angle)];
}

function arcPath(a0, a1, outer, inner) {
  const large = a1 - a0 > Math.PI ? 1 : 0;
  const [x0, y0] = point(a0, outer);
  const [x1, y1] = point(a1, outer);
  const [x2, y2] = point(a1, inner);
  const [x3, y3] = point(a0, inner);
  const f = (n) => n.toFixed(2);
  return `M${f(x0)} ${f(y0)}A${outer} ${outer} 0 ${large} 1 ${f(x1)} ${f(y1)}` +
    `L${f(x2)} ${f(y2)}A${inner} ${inner} 0 ${large} 0 ${f(x3)} ${f(y3)}Z`;
}

// A whole ring is two half arcs: one arc cannot start and end on one point.
function segmentPath(a0, a1) {
  if (a1 - a0 >= 2 * Math.PI - 1e-6) {
    return arcPath(a0, a0 + Math.PI, R_OUT, R_IN) + arcPath(a0 + Math.PI, a0 + 2 * Math.PI, R_OUT, R_IN);
  }
  return arcPath(a0, a1, R_OUT, R_IN);
}

function renderRing(members) {
  const ring = $('ring');
  const owners = members.filter((m) => m.node && m.node.ring.partitions > 0 && m.view !== 'left' && m.view !== 'dead');
  const total = members.find((m) => m.node)?.node.ring.total ?? 0;
  const owned = owners.reduce((n, m) => n + m.node.ring.partitions, 0);
  // Nodes agree on the ring once they route by one version; while they do
  // not, their own shares may overlap or leave a gap, which is shown as such.
  const scale = Math.max(owned, total);
  const parts = [];
  let a = -Math.PI / 2;
  for (const m of owners) {
    const span = (2 * Math.PI * m.node.ring.partitions) / scale;
    parts.push({ m, a0: a, a1: a + span });
    a += span;
  }
  const nodes = [];
  if (parts.length === 0) {
    nodes.push(svg('circle', { class: 'track', r: (R_OUT + R_IN) / 2, 'stroke-width': R_OUT - R_IN }));
  }
  if (owned < total && parts.length) {
    nodes.push(svg('path', { class: 'arc unknown', d: segmentPath(a, -Math.PI / 2 + 2 * Math.PI) },
      svg('title', { text: `${total - owned} partitions no answering node claims (yet)` })));
  }
  for (const { m, a0, a1 } of parts) {
    const whole = parts.length === 1 && owned >= total;
    const d = whole ? segmentPath(a0, a1) : arcPath(a0 + GAP / 2, Math.max(a0 + GAP / 2 + 0.001, a1 - GAP / 2), R_OUT, R_IN);
    const share = `${m.node.ring.partitions} of ${total} partitions (${pct(m.node.ring.partitions, total)})`;
    nodes.push(svg('path', {
      class: 'arc', d, fill: colorOf(m.name), 'data-node': m.name, 'data-partitions': m.node.ring.partitions, 'data-state': m.view,
    }, svg('title', { text: `${m.name}: ${share}` })));
    // The label sits outside the arc, at its middle.
    const mid = (a0 + a1) / 2;
    const [lx, ly] = point(mid, R_OUT + 16);
    const anchor = Math.abs(Math.cos(mid)) < 0.3 ? 'middle' : Math.cos(mid) > 0 ? 'start' : 'end';
    const base = Math.sin(mid) > 0.3 ? 10 : Math.sin(mid) < -0.3 ? -6 : 4;
    nodes.push(svg('text', { class: 'arc-label', x: lx.toFixed(1), y: (ly + base).toFixed(1), 'text-anchor': anchor, 'data-label': m.name },
      svg('tspan', { class: 'arc-name', text: m.name }),
      svg('tspan', { class: 'arc-share', dx: 6, text: pct(m.node.ring.partitions, total) })));
  }
  const alive = members.filter((m) => m.view !== 'left' && m.view !== 'dead');
  const conns = members.reduce((n, m) => n + (m.node && m.view !== 'left' ? m.node.connections : 0), 0);
  const msgs = members.reduce((n, m) => n + (m.rates ? m.rates.messages : 0), 0);
  nodes.push(
    svg('text', { class: 'center-big', y: -14, 'text-anchor': 'middle', 'data-testid': 'ring-members', text: `${alive.length} node${alive.length === 1 ? '' : 's'}` }),
    svg('text', { class: 'center-small', y: 10, 'text-anchor': 'middle', text: `${conns} connection${conns === 1 ? '' : 's'}` }),
    svg('text', { class: 'center-small', y: 30, 'text-anchor': 'middle', text: `${fmtRate(msgs)} messages/s` }),
  );
  ring.replaceChildren(...nodes);
  ring.setAttribute('aria-label', 'Ring: ' + (parts.map(({ m }) => `${m.name} ${pct(m.node.ring.partitions, total)}`).join(', ') || 'no node owns partitions'));
}

// renderAgreement says whether the nodes route alike, as they do once they
// report one ring version, and returns the version most of them report.
function renderAgreement(members) {
  const versions = new Map();
  let total = 0;
  for (const m of members) {
    if (!m.node || m.view === 'left' || m.view === 'dead') continue;
    versions.set(m.node.ring.version, (versions.get(m.node.ring.version) || 0) + 1);
    total = m.node.ring.total;
  }
  const note = $('ring-note');
  if (versions.size === 1) {
    const [[version, n]] = [...versions];
    note.textContent = `${n === 1 ? 'The node routes' : `All ${n} nodes route`} by ring ${version.slice(0, 8)}, ${total} partitions.`;
  } else {
    note.textContent = versions.size ? `The ring is changing: the nodes route by ${versions.size} different rings.` : 'No node answered.';
  }
  note.dataset.agree = String(versions.size === 1);
  return [...versions].sort((x, y) => y[1] - x[1])[0]?.[0];
}

// ---- the nodes ----------------------------------------------------------

// sparkline draws the last minute of one rate, newest on the right: a
// minute of time is always the whole width, so a young series is short.
function sparkline(values, color) {
  const w = 120;
  const h = 28;
  const box = svg('svg', { class: 'spark', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    svg('line', { class: 'spark-base', x1: 0, y1: h - 0.5, x2: w, y2: h - 0.5 }));
  if (values.length < 2) return box;
  const max = Math.max(1, ...values);
  const step = w / (HISTORY - 1);
  const x0 = w - step * (values.length - 1);
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 1 - ((h - 4) * Math.max(0, v)) / max).toFixed(1)}`);
  box.append(
    svg('path', { class: 'spark-area', fill: color, d: `M${x0.toFixed(1)},${h}L${pts.join('L')}L${w},${h}Z` }),
    svg('polyline', { class: 'spark-line', stroke: color, points: pts.join(' ') }),
  );
  return box;
}

function renderNodes(members, majority) {
  const cards = members.map((m) => {
    const color = colorOf(m.name);
    const gone = m.view === 'left' || m.view === 'dead';
    const head = el('header', { class: 'node-head' },
      el('span', { class: 'swatch', 'aria-hidden': 'true' }),
      el('h3', { class: 'node-name', text: m.name }),
      el('span', { class: 'pill', 'data-testid': 'node-state', 'data-state': m.view, text: STATE_TEXT[m.view] || m.view }),
    );
    head.querySelector('.swatch').style.background = color;
    const facts = el('dl', { class: 'facts' });
    const fact = (label, value, attrs = {}) => facts.append(el('div', attrs, el('dt', { text: label }), el('dd', {}, value)));
    if (m.node && !gone) {
      const r = m.node.ring;
      fact('ring', `${r.partitions}/${r.total} · ${pct(r.partitions, r.total)}`, { 'data-fact': 'partitions', 'data-value': r.partitions });
      fact('connections', String(m.node.connections), { 'data-fact': 'connections', 'data-value': m.node.connections });
      if (majority && r.version !== majority) fact('ring version', r.version.slice(0, 8) + ' (differs)', { class: 'warn' });
    } else if (m.error && !gone) {
      fact('why', m.error, { class: 'warn' });
    }
    // Each node serves the view too: the way over if this one goes away.
    fact('address', gone || !m.http ? m.http || '—' : el('a', { href: `http://${m.http}/cluster`, title: `this view, served by ${m.name}`, text: m.http }));
    const rates = el('div', { class: 'rates' });
    const s = m.series || { messages: [], deliveries: [], peer: [] };
    for (const { key, label, title } of METRICS) {
      const now = gone ? null : m.rates ? m.rates[key] : null;
      rates.append(el('div', { class: 'rate', 'data-metric': key, 'data-value': now ?? '', title },
        el('span', { class: 'rate-label', text: label }),
        sparkline(s[key], color),
        el('span', { class: 'rate-value', text: fmtRate(now) }),
      ));
    }
    return el('article', { class: 'node', 'data-node': m.name, 'data-state': m.view, 'data-testid': 'node' }, head, facts, rates);
  });
  $('nodes').replaceChildren(...cards);
}

// ---- the links ----------------------------------------------------------

function renderLinks(members) {
  const nodes = members.filter((m) => m.node && m.view !== 'left' && m.view !== 'dead');
  const table = $('links');
  if (nodes.length < 2) {
    table.replaceChildren(el('caption', { text: nodes.length ? 'One node: no links.' : 'No node answered.' }));
    return;
  }
  const dot = (name) => {
    const d = el('span', { class: 'dot', 'aria-hidden': 'true' });
    d.style.background = colorOf(name);
    return d;
  };
  const head = el('tr', {}, el('th', { class: 'corner', scope: 'col', text: 'from \\ to' }),
    ...nodes.map((n) => el('th', { scope: 'col' }, dot(n.name), n.name)));
  const rows = nodes.map((from) => {
    const cells = nodes.map((to) => {
      if (from.name === to.name) return el('td', { class: 'self', 'aria-label': 'itself', text: '·' });
      const l = from.node.links.find((x) => x.peer === to.name);
      const state = l ? l.state : 'none';
      const queued = l ? l.queued : 0;
      const level = queued >= HIGH_QUEUE ? 'high' : queued > 0 ? 'some' : 'none';
      const title = `${from.name} → ${to.name}: ${l ? `link ${state}, ${queued} frame${queued === 1 ? '' : 's'} waiting` : 'not a peer yet'}` +
        (l ? `; ${to.name}'s own link to ${from.name} is ${l.accepted ? 'open' : 'not open here'}` : '');
      return el('td', { 'data-from': from.name, 'data-to': to.name, 'data-state': state, 'data-queued': queued, 'data-level': level, title },
        el('span', { class: 'chip', 'data-state': state, 'aria-hidden': 'true' }),
        el('span', { class: 'queued', text: String(queued) }));
    });
    return el('tr', {}, el('th', { scope: 'row' }, dot(from.name), from.name), ...cells);
  });
  table.replaceChildren(el('thead', {}, head), el('tbody', {}, ...rows));
}

view.key = takeKey();
poll();
