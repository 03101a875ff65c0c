// shard chat page: the people, groups, rooms and messages a person sees,
// over the JavaScript client (/sdk/shard.js), which speaks the protocol:
// one connection to whichever node nginx picks, reconnecting by itself when
// a node drains (1012) or dies, catching up on what came meanwhile (inbox,
// rooms, groups), resending a send lost on the way. With a message store the
// conversation list, its unread counts and the read ticks come from the
// server, so that every device of a person agrees. User text only ever
// reaches the page through textContent.
import { Client, ClosedError, FrameTooLargeError, HandshakeError, ShardError, newKey, validId } from './sdk/shard.js';
import { $, clock, h, hue, paintAvatar } from './dom.js';
import { GroupDialog, eventText, parseMembers, readText, renderMembers } from './groups.js';

// Reconnect: full-jitter exponential backoff. The first retry after a
// drain comes within 250 ms; a cluster that stays down is asked at most
// every 8 s.
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 8000;

// Who is in the open room is refreshed often, the cluster's nodes rarely.
// A person's presence is not asked for: it comes as events (watch).
const ROOM_REFRESH_MS = 5000;
const CLUSTER_REFRESH_MS = 30000;
const API_TIMEOUT_MS = 5000;

// Typing: one frame per conversation at most every 2 s while the person
// types (the node forwards no more); "alice is typing…" shows for 5 s
// after the last one came.
const TYPING_SEND_MS = 2000;
const TYPING_SHOW_MS = 5000;

// Bounds on what a long-open tab keeps in memory.
const MAX_MSGS_PER_CONV = 500;
const MAX_SEEN_MIDS = 10000;

// Read state: the conversation in view is marked read once a burst of new
// messages has settled, with one read frame, not one per message.
const READ_BURST_MS = 400;
// A group first seen in the conversation list (on another device, or
// while away) brings its newest messages along, at most this many.
const GROUP_HISTORY = 50;
// A reloaded page brings back this many of the inbox's newest messages it
// had before, or from its oldest unread one: one sync page (at most 100).
const INBOX_HISTORY = 100;
// Users per watch frame: far below any sensible --max-frame.
const WATCH_CHUNK = 200;

// Why a connection ended, as a person would want it said.
function lostText(code, node, welcomed) {
  const n = node || 'the node';
  switch (code) {
    case 1001: return `${n} went away`;
    case 1008: return `${n} dropped this tab as too slow`;
    case 1009: return `${n} refused a message that was too large`;
    case 1011: return `${n} had an internal error`;
    case 1012: return `${n} is restarting`;
    default: return welcomed ? `Lost the connection to ${n}` : 'Cannot reach the cluster';
  }
}

const S = {
  me: '',           // user id; from the welcome when signed in with a token
  token: '',        // JWT when the page was opened with ?token=
  client: null,     // the shard client: the connection, its requests and its catch-up
  open: false,      // the client is connected and caught up
  node: '',
  connects: 0,      // connections that came up: the test reads it
  outbox: [],       // {conv, m} waiting for a connection or a room join
  inflight: new Set(), // own messages sent and not answered yet
  convs: new Map(), // '@bob', '+team' or '#lobby' -> conversation
  active: null,
  seen: new Set(),
  seenOrder: [],
  timers: {},
  stopped: true,
  cluster: null,    // names of the alive nodes, for the empty view
  lost: '',         // why the last connection ended, until the next one is up
  gen: 0,           // welcomes on this page: the connection a message went out on
  store: null,      // 'kept' or 'none', from the welcome
  seenBefore: null, // {inbox, rooms: Map, groups: Map}: the highest offsets seen before this page loaded
  saveTimer: 0,
  parked: false,    // in the back/forward cache: no connection until shown again
  convTimer: 0,     // a conversations refresh due soon
  toWatch: [],      // people whose presence to ask for, in the next watch frame
  groupDialog: null,
  inboxFetched: false, // the inbox's recent messages were brought back after a reload
};

// ---------- small helpers ----------

function clearTimer(name) {
  clearTimeout(S.timers[name]);
  clearInterval(S.timers[name]);
  delete S.timers[name];
}

function apiURL(path) { return new URL(path, location.href).toString(); }

async function getJSON(path) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), API_TIMEOUT_MS);
  try {
    const r = await fetch(apiURL(path), { signal: ctl.signal, cache: 'no-store' });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.error && body.error.code) || `HTTP ${r.status}`);
    return body;
  } finally {
    clearTimeout(t);
  }
}

// ---------- connection ----------

function wsURL() {
  const u = new URL('ws', location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.search = '';
  u.hash = '';
  return u.toString();
}

function newClient() {
  const client = new Client({
    url: wsURL(),
    user: S.token ? undefined : S.me,
    token: S.token || undefined,
    reconnect: true,
    backoffMin: BACKOFF_BASE_MS,
    backoffMax: BACKOFF_CAP_MS,
    offsets: loadOffsets,
  });
  client.on('welcome', onWelcome);
  client.on('connected', onConnected);
  client.on('disconnected', onDisconnected);
  client.on('reconnecting', onReconnecting);
  client.on('message', onMsg);
  client.on('presence', onPresence);
  client.on('typing', onTyping);
  client.on('receipt', onReceipt);
  client.on('closed', onClosed);
  // Removed from a group while away: the catch-up could not sync it.
  client.on('syncfailed', ({ group }) => {
    const c = S.convs.get(key('group', group));
    if (c) markGone(c, 'You are no longer a member of this group');
  });
  client.on('rejoinfailed', ({ room, error }) => {
    const c = S.convs.get(key('room', room));
    if (c) c.joinError = error.code;
  });
  client.on('error', (err) => console.warn('shard:', err.message));
  return client;
}

function connect() {
  if (S.stopped) return;
  setConn('connecting', 'Connecting…');
  S.client.connect().catch(() => { /* told by the events */ });
}

function onWelcome(w) {
  const before = S.node;
  S.gen++;
  S.node = String(w.node || '');
  if (w.user) S.me = String(w.user);
  S.store = w.store === true ? 'kept' : 'none';
  renderStoreText();
  if (before && before !== S.node && S.active) {
    addNote(S.active, `Reconnected through ${S.node} (was ${before})`);
  }
}

// onConnected: the client has joined its rooms again and synced the
// inbox; the outbox can go.
function onConnected() {
  S.open = true;
  S.connects++;
  S.lost = '';
  clearTimer('countdown');
  $('conn').dataset.connects = String(S.connects);
  $('me').textContent = S.me;
  paintAvatar($('me-avatar'), S.me, 'dm');
  setConn('open', 'Connected');
  // What came back with the catch-up has come back: an own message that
  // did not, never will.
  settleOwn(() => true);
  const joined = new Set(S.client.rooms);
  for (const c of S.convs.values()) {
    if (c.kind !== 'room') continue;
    c.joined = joined.has(c.name);
    renderItem(c);
    if (c.wanted && !c.joined) join(c);
  }
  for (const m of S.inflight) if (m.status === 'queued') setStatus(m, 'sending');
  flush();
  saveOffsets();
  renderHeader();
  refreshRoom(S.active);
  refreshCluster();
  // What came meanwhile is in: the counts and the list, as the server has them.
  refreshConversations();
  if (S.active && S.active.kind === 'group') loadMembers(S.active);
}

function onDisconnected({ code }) {
  S.open = false;
  $('conn').dataset.lastClose = String(code);
  S.lost = lostText(code, S.node, true);
  // Sent and not answered: the client sends them again once reconnected
  // (with a store), or they turn 'lost'.
  for (const m of S.inflight) setStatus(m, 'queued');
  for (const c of S.convs.values()) {
    if (c.kind === 'room') {
      c.joined = false;
      c.joining = false;
    }
  }
  saveOffsets();
  renderHeader();
  if (!S.stopped) setConn('connecting', 'Reconnecting…', `${S.lost}: reconnecting…`);
}

function onReconnecting({ delay }) {
  if (S.stopped) return;
  // Keep the first reason through the failed attempts that follow it.
  if (!S.lost) S.lost = lostText(0, '', false);
  clearTimer('countdown');
  const due = Date.now() + delay;
  const show = () => {
    const left = due - Date.now();
    if (left <= 0) {
      clearTimer('countdown');
      setConn('connecting', 'Reconnecting…', `${S.lost}: reconnecting…`);
      return;
    }
    const s = `${(left / 1000).toFixed(1)} s`;
    setConn('reconnecting', `Reconnecting in ${s}`, `${S.lost}: reconnecting in ${s}`);
  };
  show();
  S.timers.countdown = setInterval(show, 100);
}

// onClosed: the client stopped for good. Only a refusal for good (a bad
// name, token or origin) does that by itself.
function onClosed({ error }) {
  if (S.stopped || !(error instanceof HandshakeError)) return;
  const detail = error.detail;
  if (error.status === 401) {
    if (!S.token) {
      fail('This server needs you to sign in: open the link you were given, the one that ends in ?token=…');
      return;
    }
    try { sessionStorage.removeItem('shard.token'); } catch (e) { /* none */ }
    fail(`Your sign-in token was refused (${detail || 'unauthorized'}). Open the page again with a fresh one.`);
    return;
  }
  // (403: the node refused this page's origin.)
  fail(detail || (error.status === 403 ? 'the server refused this page' : 'the server refused this name'));
}

function fail(message) {
  S.stopped = true;
  for (const name of Object.keys(S.timers)) clearTimer(name);
  setConn('failed', 'Not connected');
  showLogin(message);
}

// ---------- history: offsets kept across reloads ----------

function hasStore() { return S.store === 'kept'; }

// loadOffsets gives the client, at its first welcome, the offsets this tab
// saved before a reload, so that it asks only for what came after; their
// highest is remembered so that what comes back is not counted as unread.
function loadOffsets(user) {
  S.me = user;
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem('shard.seq.' + user) || 'null'); } catch (e) { saved = null; }
  if (!saved || typeof saved !== 'object') saved = null;
  const hi = (v) => (v && Number.isSafeInteger(v.hi) ? v.hi : 0);
  const streams = (field) => {
    const m = new Map();
    if (saved && saved[field] && typeof saved[field] === 'object') {
      for (const [name, v] of Object.entries(saved[field])) m.set(name, hi(v));
    }
    return m;
  };
  S.seenBefore = { inbox: hi(saved && saved.inbox), rooms: streams('rooms'), groups: streams('groups') };
  return saved;
}

function saveOffsets() {
  clearTimeout(S.saveTimer);
  S.saveTimer = 0;
  if (!S.client || !S.me) return;
  const v = S.client.offsets();
  if (!v.inbox) return; // no welcome yet: nothing new to keep
  try { sessionStorage.setItem('shard.seq.' + S.me, JSON.stringify(v)); } catch (e) { /* private mode */ }
}

function saveOffsetsSoon() {
  if (!S.saveTimer) S.saveTimer = setTimeout(saveOffsets, 250);
}

// seenBeforeLoad reports whether offset seq of the stream message f came
// from (a room's, a group's, the inbox) was seen by this tab before the
// page loaded.
function seenBeforeLoad(f, seq) {
  if (!seq || !S.seenBefore) return false;
  if (f.room) return seq <= (S.seenBefore.rooms.get(f.room) || 0);
  if (f.group) return seq <= (S.seenBefore.groups.get(f.group) || 0);
  return seq <= S.seenBefore.inbox;
}

// Messages this page sent on an earlier socket can come back, from a sync
// or a join's replay, as the copy the server keeps for the sender. Once
// the replay is done, what has not come back never will.
function settleOwn(which) {
  for (const c of S.convs.values()) {
    if (!which(c)) continue;
    for (const m of c.msgs) if (m.own && !m.mid && m.lastGen && m.lastGen < S.gen) m.settled = true;
  }
}

// ownCopy finds the page's own message that a msg frame from S.me is the
// server's copy of, when its ack was lost with its socket: by body among
// those sent on an earlier socket and not yet settled. (An acked one has
// its mid from the ack, and the copy is known by that: S.seen.)
function ownCopy(c, f) {
  if (!hasStore()) return null;
  return c.msgs.find((x) => x.own && !x.mid && !x.settled && x.lastGen && x.lastGen < S.gen &&
    x.body === f.body) || null;
}

function renderStoreText() {
  $('empty-fine').textContent = hasStore()
    ? 'Messages are kept: someone who is not connected gets them when they come back.'
    : 'Messages are delivered live to whoever is connected; nothing is stored.';
  // Groups live in the store: a cluster without one has none.
  $('new-group').hidden = S.store === 'none';
}

function setConn(state, text, banner) {
  const el = $('conn');
  el.dataset.state = state;
  $('conn-text').textContent = text;
  $('node').textContent = state === 'open' ? S.node : (S.node ? S.node : '—');
  $('node').classList.toggle('stale', state !== 'open');
  $('reconnect-now').hidden = state !== 'reconnecting';
  const b = $('banner');
  if (state === 'open' || state === 'failed') {
    b.hidden = true;
  } else {
    b.hidden = false;
    b.dataset.kind = state === 'reconnecting' ? 'warn' : '';
    $('banner-text').textContent = banner || text;
    $('banner-retry').hidden = state !== 'reconnecting';
  }
  renderComposerHint();
}

// ---------- conversations ----------

const KEY_PREFIX = { dm: '@', group: '+', room: '#' };

function key(kind, name) { return KEY_PREFIX[kind] + name; }

function ensureConv(kind, name) {
  const k = key(kind, name);
  let c = S.convs.get(k);
  if (c) return c;
  c = {
    key: k, kind, name, msgs: [], unread: 0, last: null,
    wanted: kind === 'dm', joined: false, joining: false, joinError: '',
    presence: null, presenceError: '', li: null,
    typing: new Map(), // who types here -> until when it shows
    typingSent: 0,     // when this page last said it types here
    lastTs: 0,         // the newest activity: the list's order
    // Read state (with a store), as offsets of this user's inbox (direct)
    // or of the group's stream:
    hiSeq: 0,          // the newest offset known in the conversation
    hiOther: 0,        // the newest one of a message or event of someone else
    readSeq: 0,        // how far this user has read, on any device
    readTimer: 0,      // a read frame due at the end of a burst
    readWant: 0,       // the offset it will say: what was in view
    peerRead: 0,       // direct: how far the other person has read this user's messages
    reads: new Map(),  // group: how far each member has read
    // Groups:
    members: null,     // Map user -> {admin, since}, once asked
    membersError: '',
    admin: false,      // this user is an admin of it
    gone: false,       // no longer a member: read-only
    fetched: false,    // its newest messages were asked for
  };
  S.convs.set(k, c);
  // The person's presence comes as events from now on, also after a
  // reconnect (the client watches again).
  if (kind === 'dm' && name !== S.me && S.client) watchSoon(name);
  return c;
}

// watchSoon asks for a person's presence, in one watch frame with the
// others asked for at the same moment (a conversation list brings many).
function watchSoon(name) {
  S.toWatch.push(name);
  if (S.toWatch.length > 1) return;
  queueMicrotask(() => {
    const users = S.toWatch;
    S.toWatch = [];
    for (let i = 0; i < users.length; i += WATCH_CHUNK) {
      S.client.watch(users.slice(i, i + WATCH_CHUNK)).catch(() => { /* told by 'error' */ });
    }
  });
}

function convName(c) { return c.kind === 'room' ? '#' + c.name : c.name; }

function showInList(c) {
  if (c.li) return;
  const li = h('li');
  const b = h('button', 'conv');
  b.type = 'button';
  b.dataset.testid = 'conv';
  b.dataset.conv = c.key;
  b.dataset.kind = c.kind;
  const av = h('span', 'avatar');
  paintAvatar(av, c.name, c.kind);
  if (c.kind === 'dm') {
    const dot = h('span', 'presence');
    dot.dataset.online = 'unknown';
    av.appendChild(dot);
  }
  const main = h('span', 'conv-main');
  main.append(h('span', 'conv-name', convName(c)), h('span', 'conv-last'));
  const side = h('span', 'conv-side');
  const badge = h('span', 'badge');
  badge.dataset.testid = 'unread';
  side.append(h('time'), badge);
  b.append(av, main, side);
  b.addEventListener('click', () => openConv(c, true));
  li.appendChild(b);
  c.li = li;
  if (c.kind === 'room') $('rooms-list').appendChild(li);
  else placeInList(c);
  renderItem(c);
}

// placeInList puts a person's or a group's conversation where its newest
// activity belongs: the newest first.
function placeInList(c) {
  if (!c.li || c.kind === 'room') return;
  const list = $('chats-list');
  let before = null;
  for (const li of list.children) {
    if (li === c.li) continue;
    const other = S.convs.get(li.firstChild.dataset.conv);
    if (other && other.lastTs < c.lastTs) {
      before = li;
      break;
    }
  }
  if (c.li.parentNode === list && c.li.nextSibling === before) return; // in its place already
  list.insertBefore(c.li, before);
}

function hideFromList(c) {
  if (!c.li) return;
  c.li.remove();
  c.li = null;
}

function previewText(c) {
  const m = c.last;
  if (m.note) return m.body;
  const who = m.own ? 'You' : (c.kind === 'dm' ? '' : m.from);
  return (who ? who + ': ' : '') + m.body.replace(/\s+/g, ' ');
}

function renderItem(c) {
  if (!c.li) return;
  const b = c.li.firstChild;
  b.setAttribute('aria-current', String(c === S.active));
  b.dataset.joined = String(c.kind === 'room' ? c.joined : true);
  b.classList.toggle('gone', c.gone);
  const lastEl = b.querySelector('.conv-last');
  const typing = typingText(c, true);
  lastEl.classList.toggle('typing', !!typing);
  if (typing) {
    lastEl.textContent = typing;
  } else if (c.kind === 'group' && c.gone) {
    lastEl.textContent = 'you are no longer a member';
  } else if (c.last) {
    lastEl.textContent = previewText(c);
  } else if (c.kind === 'room') {
    lastEl.textContent = c.joined ? 'joined' : c.joinError ? 'not joined' : 'joining…';
  } else {
    lastEl.textContent = c.lastTs ? '' : 'no messages yet';
  }
  const ts = Math.max(c.lastTs, c.last ? c.last.ts : 0);
  b.querySelector('time').textContent = ts ? clock(ts) : '';
  const badge = b.querySelector('.badge');
  badge.textContent = c.unread ? (c.unread > 99 ? '99+' : String(c.unread)) : '';
  if (c.unread) b.dataset.unread = String(c.unread); else delete b.dataset.unread;
  const what = { room: 'room ', group: 'group ', dm: '' }[c.kind];
  b.setAttribute('aria-label', `${what}${c.name}${c.unread ? `, ${c.unread} unread` : ''}`);
  const dot = b.querySelector('.presence');
  if (dot && c.presence) {
    dot.dataset.online = String(!!c.presence.online);
    dot.title = presenceText(c.presence);
  }
}

function totalUnread() {
  let n = 0;
  for (const c of S.convs.values()) n += c.unread;
  return n;
}

function renderTitle() {
  const n = totalUnread();
  document.title = (n ? `(${n}) ` : '') + (S.me ? `${S.me} · shard` : 'shard');
  const others = n - (S.active ? S.active.unread : 0);
  const bu = $('back-unread');
  bu.hidden = others <= 0;
  bu.textContent = others > 0 ? String(others) : '';
}

function introText(c) {
  if (c.kind === 'room') return `Messages in #${c.name} go to everyone connected in the room right now.`;
  if (c.kind === 'group') return `Messages in ${c.name} reach every member on every device, and wait for those who are away.`;
  return hasStore()
    ? `Messages to ${c.name} reach every device they have connected, or wait until one connects.`
    : `Messages to ${c.name} reach every device they have connected right now.`;
}

function openConv(c, focusComposer) {
  const prev = S.active;
  if (prev !== c) readNow(prev);
  S.active = c;
  showInList(c);
  c.unread = 0;
  if (prev && prev !== c) renderItem(prev);
  renderItem(c);
  renderTitle();
  $('app').dataset.view = 'chat';
  $('chat').removeAttribute('data-empty');
  const box = $('messages');
  box.replaceChildren();
  box.appendChild(h('p', 'intro', introText(c)));
  for (const m of c.msgs) box.appendChild(m.el);
  box.scrollTop = box.scrollHeight;
  $('jump').hidden = true;
  if (prev !== c) showMembers(false);
  renderHeader();
  renderTyping();
  refreshRoom(c);
  clearTimer('room');
  if (c.kind === 'room') S.timers.room = setInterval(() => refreshRoom(S.active), ROOM_REFRESH_MS);
  if (c.kind === 'group') {
    loadMembers(c);
    fetchGroup(c);
  }
  wantRead(c);
  if (focusComposer && !$('composer').disabled) $('composer').focus({ preventScroll: true });
}

function closeConv() {
  const prev = S.active;
  readNow(prev);
  S.active = null;
  showMembers(false);
  clearTimer('room');
  if (prev) renderItem(prev);
  $('chat').dataset.empty = '';
  $('messages').replaceChildren();
  $('app').dataset.view = 'list';
  renderHeader();
  renderTitle();
  refreshCluster();
}

function renderHeader() {
  const c = S.active;
  if (!c) {
    // No conversation open: show the cluster this page talks to.
    $('conv-title').textContent = 'Cluster';
    const sub = $('conv-sub');
    const ms = S.cluster || [];
    sub.textContent = ms.length
      ? `${ms.length} node${ms.length === 1 ? '' : 's'} alive: ${ms.join(', ')}${S.open ? ` · you are on ${S.node}` : ''}`
      : (S.open ? `you are on ${S.node}` : ' ');
    delete sub.dataset.online;
    delete sub.dataset.connections;
    return;
  }
  $('conv-title').textContent = convName(c);
  paintAvatar($('conv-avatar'), c.name, c.kind);
  $('leave').hidden = c.kind !== 'room';
  $('refresh').hidden = c.kind !== 'room';
  $('members-toggle').hidden = c.kind !== 'group' || c.gone;
  if (c.gone) showMembers(false);
  const sub = $('conv-sub');
  sub.replaceChildren();
  delete sub.dataset.members;
  if (c.kind === 'group') {
    if (c.gone) sub.append(h('span', 'warn', 'you are no longer a member'));
    else if (c.members) {
      const names = [...c.members.keys()].sort().map((u) => (u === S.me ? 'you' : u));
      sub.append(`${names.length} member${names.length === 1 ? '' : 's'} · ${names.join(', ')}`);
      sub.dataset.members = String(names.length);
    } else sub.append(c.membersError || ' ');
    delete sub.dataset.online;
    delete sub.dataset.connections;
  } else if (c.kind === 'room') {
    if (!S.open) sub.append(h('span', 'warn', 'offline: waiting for the connection'));
    else if (c.joinError) sub.append(h('span', 'warn', `could not join: ${c.joinError}`));
    else if (!c.joined) sub.append('joining…');
    else if (c.presence) {
      const n = c.presence.connections;
      const parts = Object.entries(c.presence.nodes || {}).sort().map(([node, k]) => `${node} ×${k}`);
      sub.append(`${n} connection${n === 1 ? '' : 's'} here`);
      if (parts.length) sub.append(` · ${parts.join(' · ')}`);
    } else sub.append(c.presenceError ? `who is here: ${c.presenceError}` : 'joined');
    sub.dataset.connections = c.presence ? String(c.presence.connections) : '';
  } else {
    const p = c.presence;
    if (p && p.online) sub.append(h('span', 'on', 'online'));
    else sub.append(p ? presenceText(p) : ' ');
    sub.dataset.online = p ? String(!!p.online) : '';
    sub.dataset.lastSeen = p ? String(p.lastSeen) : '';
    delete sub.dataset.connections;
  }
  renderComposerHint();
}

// presenceText says a person's presence: online, last seen when, offline.
function presenceText(p) {
  if (p.online) return 'online';
  if (!p.lastSeen) return 'offline';
  const d = new Date(p.lastSeen);
  const today = d.toDateString() === new Date().toDateString();
  return `last seen ${today ? clock(p.lastSeen) : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' })}`;
}

// onPresence: a watched person came online, or has been gone for 3 s.
function onPresence(p) {
  const c = S.convs.get(key('dm', p.user));
  if (!c) return;
  c.presence = { online: p.online === true, lastSeen: Number.isSafeInteger(p.last_seen) ? p.last_seen : 0 };
  renderItem(c);
  if (c === S.active) renderHeader();
}

// ---------- typing ----------

// typingTarget is the conversation a typing event is about.
function typingTarget(ev) {
  if (ev.room) return S.convs.get(key('room', ev.room));
  if (ev.group) return S.convs.get(key('group', ev.group));
  return S.convs.get(key('dm', ev.from));
}

// onTyping: someone types to this person, or in one of its groups or
// rooms. (Its own other devices typing elsewhere are not shown here.)
function onTyping(ev) {
  if (typeof ev.from !== 'string' || ev.from === S.me) return;
  const c = typingTarget(ev);
  if (!c || (c.kind === 'room' && !c.wanted) || c.gone) return;
  c.typing.set(ev.from, Date.now() + TYPING_SHOW_MS);
  typingChanged(c);
}

// typingChanged shows who types in c, and forgets them once their time is
// up.
function typingChanged(c) {
  const now = Date.now();
  let next = Infinity;
  for (const [who, until] of c.typing) {
    if (until <= now) c.typing.delete(who);
    else next = Math.min(next, until);
  }
  renderItem(c);
  if (c === S.active) renderTyping();
  clearTimeout(c.typingTimer);
  if (next !== Infinity) c.typingTimer = setTimeout(() => typingChanged(c), next - now);
}

// typingText is "alice is typing…", or shorter for the sidebar.
function typingText(c, short) {
  const who = [...c.typing.keys()];
  if (!who.length) return '';
  if (short) return 'typing…';
  if (who.length === 1) return `${who[0]} is typing…`;
  if (who.length === 2) return `${who[0]} and ${who[1]} are typing…`;
  return 'several people are typing…';
}

function renderTyping() {
  const el = $('typing');
  el.textContent = S.active ? typingText(S.active, false) : '';
}

// typed: the person is typing in the open conversation; say so, at most
// once per TYPING_SEND_MS.
function typed() {
  const c = S.active;
  if (!c || !S.open || !$('composer').value.trim() || (c.kind === 'room' && !c.joined) || c.gone) return;
  const now = Date.now();
  if (now - c.typingSent < TYPING_SEND_MS) return;
  c.typingSent = now;
  S.client.typing(target(c)).catch(() => { /* it is only a hint */ });
}

// target is where a conversation's sends and typing go.
function target(c) {
  if (c.kind === 'room') return { room: c.name };
  if (c.kind === 'group') return { group: c.name };
  return { to: c.name };
}

function renderComposerHint() {
  const c = S.active;
  const t = $('composer');
  if (!c) return;
  const gone = c.kind === 'group' && c.gone;
  t.disabled = gone;
  $('send').disabled = gone;
  const to = convName(c);
  if (gone) t.placeholder = 'You are no longer a member of this group';
  else t.placeholder = S.open ? `Message ${to}` : `Message ${to} (sent once reconnected)`;
}

// refreshRoom asks who is in a room (GET /api/rooms/{room}).
async function refreshRoom(c) {
  if (!c || c.kind !== 'room' || document.hidden) return;
  try {
    c.presence = await getJSON(`api/rooms/${encodeURIComponent(c.name)}`);
    c.presenceError = '';
  } catch (e) {
    c.presenceError = e.name === 'AbortError' ? 'timed out' : e.message;
  }
  renderItem(c);
  if (c === S.active) renderHeader();
}

// refreshCluster reads GET /api/cluster: the nodes for the empty view.
async function refreshCluster() {
  if (document.hidden) return;
  try {
    const v = await getJSON('api/cluster');
    S.cluster = (v.members || []).filter((m) => m.state === 'alive').map((m) => String(m.name)).sort();
  } catch (e) {
    S.cluster = null;
  }
  if (!S.active) renderHeader();
}

// ---------- rooms ----------

function join(c) {
  c.wanted = true;
  saveRooms();
  showInList(c);
  if (!S.open || c.joined || c.joining) return;
  c.joining = true;
  c.joinError = '';
  renderItem(c);
  // With offsets from before, the room's messages since then come first
  // (the client asks with since when the cluster keeps messages).
  S.client.join(c.name).then(() => {
    c.joining = false;
    if (!c.wanted) return; // left meanwhile
    c.joined = true;
    settleOwn((x) => x === c);
    flush();
    refreshRoom(c);
    renderItem(c);
    if (c === S.active) renderHeader();
  }, (err) => {
    c.joining = false;
    if (err instanceof ClosedError) return; // joined again once reconnected
    c.joinError = err.code || 'error';
    // unavailable: the cluster is moving; try again soon.
    if (err.code === 'unavailable') {
      setTimeout(() => { if (c.wanted && S.open) join(c); }, 500 + Math.random() * 1000);
    }
    renderItem(c);
    if (c === S.active) renderHeader();
  });
}

function leave(c) {
  c.wanted = false;
  saveRooms();
  if (c.joined || c.joining || S.client.rooms.includes(c.name)) S.client.leave(c.name).catch(() => {});
  c.joined = false;
  saveOffsets();
  S.outbox = S.outbox.filter((it) => {
    if (it.conv !== c) return true;
    setStatus(it.m, 'error', 'not sent: you left the room');
    return false;
  });
  hideFromList(c);
  if (S.active === c) closeConv();
  $('new-chat').focus();
}

function saveRooms() {
  const rooms = [...S.convs.values()].filter((c) => c.kind === 'room' && c.wanted).map((c) => c.name);
  try { sessionStorage.setItem('shard.rooms', JSON.stringify(rooms)); } catch (e) { /* private mode */ }
}

// ---------- messages ----------

function remember(mid) {
  if (S.seen.has(mid)) return false;
  S.seen.add(mid);
  S.seenOrder.push(mid);
  if (S.seenOrder.length > MAX_SEEN_MIDS) S.seen.delete(S.seenOrder.shift());
  return true;
}

// onMsg: a message or a group event, live or from a sync or a replay. seq
// is its offset in this user's inbox, or in the room's or the group's
// stream; only when the cluster has a store.
function onMsg(f) {
  if (typeof f.from !== 'string' || (typeof f.body !== 'string' && !(f.group && f.event))) return;
  const seq = Number.isSafeInteger(f.seq) && f.seq > 0 ? f.seq : 0;
  let c;
  if (f.room) {
    c = S.convs.get(key('room', f.room));
    if (!c || !c.wanted) return; // left a moment ago
  }
  if (seq) saveOffsetsSoon();
  const old = seenBeforeLoad(f, seq);
  if (f.mid && S.seen.has(String(f.mid))) return; // shown already
  if (f.group) {
    if (!validId(f.group)) return;
    c = ensureConv('group', f.group);
  } else if (!f.room) {
    const other = f.from === S.me ? f.to : f.from;
    if (!validId(other)) return;
    c = ensureConv('dm', other);
  }
  const own = f.from === S.me;
  if (f.event) {
    if (f.mid) remember(String(f.mid));
    groupEvent(c, f, seq, own);
    arrived(c, f, own, old);
    return;
  }
  if (c.typing.delete(f.from)) typingChanged(c); // what they typed has come
  if (own) {
    const mine = ownCopy(c, f);
    if (mine) {
      // The server's copy of a message this page sent: shown already.
      if (f.mid) setMid(mine, String(f.mid));
      if (seq && !mine.seq && c.kind !== 'room') {
        mine.seq = seq;
        seen(c, mine);
        applyRead(c, mine);
      }
      return;
    }
  }
  if (f.mid) remember(String(f.mid));
  // Own messages from a sync or a replay are history, not news from
  // another device.
  const status = own ? (f.history ? 'history' : 'elsewhere') : '';
  const m = { mid: f.mid, from: f.from, body: f.body, ts: Number(f.ts) || Date.now(), own, seq, status, kind: c.kind };
  seen(c, m);
  addMsg(c, m);
  if (own) applyRead(c, m);
  arrived(c, f, own, old);
}

// seen records what a message says of its conversation: the newest offset
// and activity.
function seen(c, m) {
  if (m.seq && c.kind !== 'room') {
    c.hiSeq = Math.max(c.hiSeq, m.seq);
    if (!m.own) c.hiOther = Math.max(c.hiOther, m.seq);
  }
  const before = c.lastTs;
  c.lastTs = Math.max(c.lastTs, m.ts || 0);
  if (c.lastTs !== before) placeInList(c);
}

// arrived: a message or event of f's is on the page. Someone else's counts
// as unread unless its conversation is in view, which is then read. With a
// store, what came from a sync is counted by the server (conversations).
function arrived(c, f, own, old) {
  if (own) return;
  const inView = c === S.active && !document.hidden;
  const counted = c.kind !== 'room' && hasStore() ? !f.history : !old;
  if (!inView && counted) {
    c.unread++;
    renderItem(c);
    renderTitle();
  }
  if (inView) wantRead(c);
}

// groupEvent shows a membership change in the group's timeline and keeps
// what it changes: the members, who is admin, whether this user is in.
function groupEvent(c, f, seq, own) {
  const ev = { event: String(f.event), from: f.from, user: typeof f.user === 'string' ? f.user : '', admin: typeof f.admin === 'string' ? f.admin : '' };
  const m = { note: true, ...ev, mid: f.mid, body: eventText(ev, S.me), ts: Number(f.ts) || Date.now(), own, seq, kind: 'group' };
  seen(c, m);
  addMsg(c, m);
  const named = ev.event === 'left' ? ev.user || ev.from : ev.user;
  if (c.members) {
    if (ev.event === 'added') c.members.set(ev.user, { admin: false, since: m.ts });
    if (ev.event === 'removed' || ev.event === 'left') c.members.delete(named);
    if (ev.admin && c.members.has(ev.admin)) c.members.get(ev.admin).admin = true;
  }
  if (ev.admin === S.me) c.admin = true;
  if (named === S.me && ev.event === 'added') c.gone = false;
  if (ev.event === 'created' || (named === S.me && ev.event === 'added')) c.fetched = true; // its start is here
  if (named === S.me && ev.event === 'removed') markGone(c);
  if (named === S.me && ev.event === 'left') {
    forgetGroup(c); // left on another device
    return;
  }
  if (c === S.active) {
    renderHeader();
    drawMembers(c);
  }
}

function setMid(m, mid) {
  m.mid = mid;
  remember(mid);
  if (m.el) m.el.dataset.mid = mid;
}

// A message opens a run of bubbles unless it follows one from the same
// sender.
function opensRun(prev, m) {
  return !prev || prev.from !== m.from || !!prev.note || m.ts - prev.ts > 5 * 60 * 1000;
}

// markRun marks m as opening a run or not, with the sender's name above
// it in a room or a group.
function markRun(c, m, first) {
  if (m.note || !m.el) return;
  m.el.classList.toggle('first', first);
  const label = m.el.querySelector(':scope > .from');
  const want = first && !m.own && c.kind !== 'dm';
  if (want && !label) {
    const from = h('div', 'from', m.from);
    from.style.color = `hsl(${hue(m.from)} 55% 45%)`;
    m.el.prepend(from);
  } else if (!want && label) {
    label.remove();
  }
}

function msgEl(m) {
  if (m.note) {
    // A group's membership change: a line in the timeline.
    m.el = h('div', 'note event', m.body);
    m.el.dataset.testid = 'note';
    m.el.dataset.event = m.event;
    if (m.mid) m.el.dataset.mid = m.mid;
    return m.el;
  }
  const row = h('div', 'msg' + (m.own ? ' own' : ''));
  row.dataset.testid = 'msg';
  row.dataset.from = m.from;
  if (m.mid) row.dataset.mid = m.mid;
  const bubble = h('div', 'bubble', m.body);
  bubble.dataset.testid = 'msg-body';
  const meta = h('div', 'meta');
  const t = h('time', '', clock(m.ts));
  t.dateTime = new Date(m.ts).toISOString();
  const st = h('span', 'status');
  st.dataset.testid = 'msg-status';
  meta.append(t, st);
  row.append(bubble, meta);
  m.el = row;
  m.statusEl = st;
  paintStatus(m);
  return row;
}

function addMsg(c, m) {
  msgEl(m);
  // A message from the store (it has an offset) may be older than what is
  // shown already, after a sync: it goes in its place by time.
  let i = c.msgs.length;
  if (m.seq) while (i > 0 && c.msgs[i - 1].ts > m.ts) i--;
  const next = c.msgs[i];
  c.msgs.splice(i, 0, m);
  markRun(c, m, opensRun(c.msgs[i - 1], m));
  if (next) markRun(c, next, opensRun(m, next));
  if (c.msgs.length > MAX_MSGS_PER_CONV) {
    const gone = c.msgs.shift();
    gone.el.remove();
    if (c.msgs[0]) markRun(c, c.msgs[0], true);
    if (gone === m) return;
  }
  if (!next) c.last = m;
  showInList(c);
  renderItem(c);
  if (c !== S.active) return;
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  if (next) {
    box.insertBefore(m.el, next.el);
    if (atBottom) box.scrollTop = box.scrollHeight;
    return;
  }
  box.appendChild(m.el);
  if (atBottom || m.own) {
    box.scrollTop = box.scrollHeight;
  } else {
    $('jump').hidden = false;
  }
}

function addNote(c, text) {
  const m = { note: true, from: '', body: text, ts: Date.now() };
  m.el = h('div', 'note', text);
  m.el.dataset.testid = 'note';
  c.msgs.push(m);
  if (c === S.active) {
    const box = $('messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    box.appendChild(m.el);
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
}

// status: queued, sending, delivered, stored, offline, sent, error, lost,
// elsewhere, history, read. One tick: delivered or stored (a group's: sent);
// two: read.
function setStatus(m, status, detail) {
  m.status = status;
  m.detail = detail;
  paintStatus(m);
}

function paintStatus(m) {
  if (!m.el) return;
  m.el.dataset.status = m.status || 'received';
  const st = m.statusEl;
  st.replaceChildren();
  st.removeAttribute('title');
  let text = '';
  let kind = '';
  let retry = false;
  switch (m.status) {
    case 'queued': text = 'waiting for connection'; kind = 'warn'; break;
    case 'sending': text = 'sending…'; break;
    case 'delivered': text = 'delivered ✓'; kind = 'ok'; break;
    case 'stored': text = 'stored ✓ — delivered when they connect'; kind = 'ok'; break;
    case 'offline': text = 'not delivered: offline'; kind = 'warn'; retry = true; break;
    case 'sent':
      // A room's counts who heard it live; a group's message waits for
      // every member.
      if (m.kind === 'group') {
        text = 'sent ✓';
        kind = 'ok';
      } else {
        text = `sent to ${m.detail}`;
        kind = m.detail > 0 ? 'ok' : 'warn';
      }
      break;
    case 'read': text = `${m.detail || 'read'} ✓✓`; kind = 'read'; break;
    case 'error': text = `error: ${m.detail}`; kind = 'err'; retry = m.retryable !== false; break;
    case 'lost': text = 'connection lost, not confirmed'; kind = 'err'; retry = true; break;
    case 'elsewhere': text = 'sent from another device ✓'; break;
    case 'history': text = '✓'; break; // kept by the server; whether it was read is told by the next receipt
    default: text = ''; break;
  }
  if (m.message) st.title = m.message;
  st.dataset.kind = kind;
  st.append(text);
  if (retry && m.conv) {
    const b = h('button', '', 'Retry');
    b.type = 'button';
    b.dataset.testid = 'retry';
    b.addEventListener('click', () => { enqueue(m.conv, m); });
    st.append(' ', b);
  }
}

function enqueue(c, m) {
  m.message = '';
  setStatus(m, 'queued');
  S.outbox.push({ conv: c, m });
  flush();
}

function flush() {
  if (!S.open) return;
  const keep = [];
  for (const it of S.outbox) {
    if (it.conv.kind === 'room' && !it.conv.joined) keep.push(it);
    else sendNow(it);
  }
  S.outbox = keep;
}

function sendNow({ conv: c, m }) {
  // The key is the message's: every attempt at it (Retry, and the
  // client's own resend after a reconnect) carries the same one.
  if (!m.key) m.key = newKey();
  m.tries = (m.tries || 0) + 1;
  m.lastGen = S.gen;
  m.settled = false;
  setStatus(m, 'sending');
  S.inflight.add(m);
  const opts = { key: m.key };
  const sent = { room: () => S.client.sendRoom(c.name, m.body, opts), group: () => S.client.sendGroup(c.name, m.body, opts),
    dm: () => S.client.send(c.name, m.body, opts) }[c.kind]();
  sent.then((ack) => {
    S.inflight.delete(m);
    // The offset receipts name: a room's or a group's in its stream, a
    // direct one's copy in this user's own inbox (sender_seq; ack.seq is
    // the recipient's).
    const seq = c.kind === 'dm' ? ack.sender_seq : ack.seq;
    if (Number.isSafeInteger(seq) && seq > 0) m.seq = seq;
    if (typeof ack.mid === 'string' && ack.mid && !m.mid) setMid(m, ack.mid);
    if (ack.status === 'delivered') setStatus(m, 'delivered');
    else if (ack.status === 'stored') setStatus(m, 'stored');
    else if (ack.status === 'offline') setStatus(m, 'offline');
    else if (ack.status === 'sent') setStatus(m, 'sent', Number(ack.recipients) || 0);
    else setStatus(m, 'error', ack.status || 'unknown');
    seen(c, m);
    applyRead(c, m);
  }, (err) => {
    S.inflight.delete(m);
    if (err instanceof FrameTooLargeError) {
      // Again, on a node that takes less than the first one did: the
      // first attempt's fate is unknown.
      if (m.tries > 1) {
        setStatus(m, 'lost');
        return;
      }
      m.retryable = false;
      setStatus(m, 'error', 'too long');
      return;
    }
    if (!(err instanceof ShardError)) {
      // Closed: lost with its connection and not sent again (no store,
      // or a 1009), or its resend could not go.
      setStatus(m, 'lost');
      return;
    }
    if (err.code === 'not_member' && c.kind === 'group') markGone(c);
    // not_member: the membership went with a connection; join and send again once.
    if (err.code === 'not_member' && c.kind === 'room' && !m.rejoined) {
      m.rejoined = true;
      c.joined = false;
      setStatus(m, 'queued');
      S.outbox.push({ conv: c, m });
      join(c);
      return;
    }
    m.message = err.frame.message || '';
    m.retryable = err.code !== 'bad_request';
    setStatus(m, 'error', err.code || 'error');
  });
}

function sendFromComposer() {
  const c = S.active;
  const t = $('composer');
  const body = t.value;
  if (!c || !body.trim() || (c.kind === 'group' && c.gone)) return;
  t.value = '';
  autosize();
  const m = { from: S.me, body, ts: Date.now(), own: true, status: 'queued', conv: c, kind: c.kind };
  seen(c, m);
  addMsg(c, m);
  S.outbox.push({ conv: c, m });
  if (c.kind === 'room' && !c.wanted) join(c);
  flush();
}

// ---------- read state (with a store) ----------

// wantRead: the conversation in view has something of others' this user
// has not read: it is read here now, and the server is told once the burst
// has settled (READ_BURST_MS), so that every device clears it. What was in
// view is read even if the person moves on before then: readNow sends it
// when the conversation is left or the page goes.
function wantRead(c) {
  if (!c || c !== S.active || c.kind === 'room' || !hasStore() || document.hidden || c.gone) return;
  if (c.unread) {
    c.unread = 0;
    renderItem(c);
    renderTitle();
  }
  if (c.hiOther <= c.readSeq) return;
  // Up to the newest offset of the conversation: this user's own
  // messages among them are read anyway.
  c.readWant = Math.max(c.readWant, c.hiSeq, c.hiOther);
  if (c.readTimer || !S.open) return; // once connected, the conversations refresh asks again
  c.readTimer = setTimeout(() => sendRead(c), READ_BURST_MS);
}

// readNow sends c's read frame that is waiting for its burst to settle, if
// there is one.
function readNow(c) {
  if (!c || !c.readTimer) return;
  clearTimeout(c.readTimer);
  sendRead(c);
}

function sendRead(c) {
  c.readTimer = 0;
  const seq = c.readWant;
  if (c.gone || seq <= c.readSeq) return;
  const before = c.readSeq;
  c.readSeq = seq;
  S.client.read(c.kind === 'group' ? { group: c.name } : { with: c.name }, seq).catch((err) => {
    if (c.readSeq === seq) c.readSeq = before; // asked again once connected
    if (err instanceof ShardError && err.code === 'not_member') markGone(c);
  });
}

// onReceipt: someone read up to an offset. Another person: the ticks of
// this user's messages turn to read. This user, on another device: the
// conversation is read here too.
function onReceipt(r) {
  if (typeof r.by !== 'string' || !Number.isSafeInteger(r.seq)) return;
  const c = S.convs.get(r.group ? key('group', r.group) : key('dm', r.by === S.me ? r.with : r.by));
  if (!c) return;
  if (r.by === S.me) {
    c.readSeq = Math.max(c.readSeq, r.seq);
    if (r.seq >= c.hiOther) {
      c.unread = 0;
      renderItem(c);
      renderTitle();
    } else {
      refreshConversationsSoon(); // read partly: the server knows how much is left
    }
    return;
  }
  if (c.kind === 'group') c.reads.set(r.by, Math.max(c.reads.get(r.by) || 0, r.seq));
  else c.peerRead = Math.max(c.peerRead, r.seq);
  for (const m of c.msgs) if (m.own && !m.note) applyRead(c, m);
}

// Statuses a read receipt may turn into read: the message has reached the
// server, and nothing is wrong with it.
const READABLE = new Set(['delivered', 'stored', 'sent', 'elsewhere', 'history', 'read']);

// applyRead gives one of this user's messages its two ticks once someone
// has read it: the other person, or in a group any other member (who, it
// says).
function applyRead(c, m) {
  if (!m.own || !m.seq || !READABLE.has(m.status)) return;
  if (c.kind === 'dm') {
    if (m.seq <= c.peerRead && m.status !== 'read') setStatus(m, 'read');
    return;
  }
  if (c.kind !== 'group') return;
  const readers = [...c.reads].filter(([u, seq]) => u !== S.me && seq >= m.seq).map(([u]) => u).sort();
  if (!readers.length) return;
  const others = c.members ? [...c.members.keys()].filter((u) => u !== S.me).length : 0;
  const text = readText(readers, others);
  if (m.status !== 'read' || m.detail !== text) setStatus(m, 'read', text);
}

function refreshConversationsSoon() {
  if (!S.convTimer) S.convTimer = setTimeout(refreshConversations, 250);
}

// refreshConversations asks the server for this user's conversations:
// the list (groups and people, newest activity first) and the unread
// counts, which every device of the user agrees on. A group this page has
// not followed yet brings its newest messages.
async function refreshConversations() {
  clearTimeout(S.convTimer);
  S.convTimer = 0;
  if (!hasStore() || !S.open) return;
  let list;
  try {
    list = await S.client.conversations();
  } catch (err) {
    return; // asked again at the next connection
  }
  const following = new Set(S.client.groups);
  const fetch = [];
  for (const v of list) {
    const kind = v.group ? 'group' : 'dm';
    const name = kind === 'group' ? v.group : v.with;
    if (!validId(name) || !Number.isSafeInteger(v.last)) continue;
    const c = ensureConv(kind, name);
    // What came after the server counted is counted here already.
    const after = c.msgs.filter((m) => m.seq > v.last && !m.own).length;
    c.hiSeq = Math.max(c.hiSeq, v.last);
    c.readSeq = Math.max(c.readSeq, v.read);
    if (v.unread > 0) c.hiOther = Math.max(c.hiOther, v.last);
    c.unread = v.unread + after;
    c.lastTs = Math.max(c.lastTs, v.ts || 0);
    if (kind === 'group') {
      c.admin = v.admin === true;
      c.gone = false;
      if (!following.has(name)) fetch.push(c);
    } else if (Number.isSafeInteger(v.peer_read) && v.peer_read > c.peerRead) {
      // The receipts sent while this page was away or before it loaded.
      c.peerRead = v.peer_read;
      for (const m of c.msgs) if (m.own && !m.note) applyRead(c, m);
    }
    showInList(c);
    placeInList(c);
    renderItem(c);
  }
  renderTitle();
  if (S.active) renderHeader();
  wantRead(S.active);
  await fetchInbox(list);
  for (const c of fetch) await fetchGroup(c);
}

// fetchInbox: a reloaded page keeps its offsets (the client syncs only what
// came after them), not its messages. Once, it brings back the inbox's
// newest ones from before, and at least from the oldest unread one, so that
// a conversation counted unread shows what is unread.
async function fetchInbox(list) {
  const saved = S.seenBefore ? S.seenBefore.inbox : 0;
  if (S.inboxFetched || !saved) return; // a new tab synced the whole inbox already
  S.inboxFetched = true;
  let from = Math.max(0, saved - INBOX_HISTORY);
  for (const v of list) if (v.with && v.unread > 0 && Number.isSafeInteger(v.read)) from = Math.min(from, v.read);
  if (from >= saved) return;
  await S.client.sync(from).catch(() => { /* what comes next comes live */ });
}

// fetchGroup brings a group's newest messages, once, when the page has
// none of them: a group it has just learnt of, or one it followed before
// a reload (whose offsets the client kept, but not the messages).
async function fetchGroup(c) {
  if (c.fetched || c.gone || !S.open || c.msgs.some((m) => m.seq)) return;
  c.fetched = true;
  await S.client.syncGroup(c.name, Math.max(0, c.hiSeq - GROUP_HISTORY)).catch(() => { /* its messages come live from now on */ });
}

// ---------- groups ----------

// loadMembers asks who is in the group, and who its admins are.
async function loadMembers(c) {
  if (!hasStore() || !S.open || c.gone) return;
  try {
    const list = await S.client.groupMembers(c.name);
    c.members = new Map(list.filter((m) => validId(m.user)).map((m) => [m.user, { admin: m.admin === true, since: m.since }]));
    c.admin = !!(c.members.get(S.me) || {}).admin;
    c.membersError = '';
  } catch (err) {
    if (err instanceof ShardError && err.code === 'not_member') markGone(c);
    else c.membersError = 'could not load the members';
  }
  for (const m of c.msgs) if (m.own && !m.note) applyRead(c, m);
  if (c === S.active) {
    renderHeader();
    drawMembers(c);
  }
}

function drawMembers(c) {
  if (c !== S.active || $('members').hidden) return;
  renderMembers(c, S.me, { remove: (user) => changeMember(c, 'removed', user) });
}

// showMembers opens or closes the member list of the group in view.
function showMembers(open) {
  const c = S.active;
  const show = open && !!c && c.kind === 'group';
  $('members').hidden = !show;
  $('members-toggle').setAttribute('aria-expanded', String(show));
  $('member-error').textContent = '';
  resetLeave();
  if (show) drawMembers(c);
}

// markGone: this user is no longer a member (removed, or told so by the
// server): the group stays on the page, read-only.
function markGone(c, why) {
  const was = c.gone;
  c.gone = true;
  c.admin = false;
  c.unread = 0;
  clearTimeout(c.readTimer);
  c.readTimer = 0;
  if (!was && why) addNote(c, why);
  renderItem(c);
  renderTitle();
  if (c === S.active) {
    renderHeader();
    drawMembers(c);
  }
}

// forgetGroup: this user left the group: it goes from the page.
function forgetGroup(c) {
  c.gone = true;
  clearTimeout(c.readTimer);
  S.convs.delete(c.key);
  hideFromList(c);
  if (S.active === c) closeConv();
  renderTitle();
}

// ownEvent shows a change this page made, whose event the server sends to
// everyone but this connection.
function ownEvent(c, ev, ack) {
  if (!Number.isSafeInteger(ack.seq)) return; // nothing changed
  const mid = typeof ack.mid === 'string' ? ack.mid : '';
  if (mid && !remember(mid)) return;
  groupEvent(c, { ...ev, from: S.me, mid, ts: Date.now() }, ack.seq, true);
}

async function createGroup(name, users) {
  const ack = await S.client.createGroup(name, users);
  const c = ensureConv('group', name);
  c.gone = false;
  c.admin = true;
  c.fetched = true;
  c.members = new Map([[S.me, { admin: true, since: Date.now() }], ...users.map((u) => [u, { admin: false, since: Date.now() }])]);
  ownEvent(c, { event: 'created' }, ack);
  showInList(c);
  openConv(c, true);
}

// changeMember adds or removes a member, as an admin.
async function changeMember(c, event, user) {
  $('member-error').textContent = '';
  try {
    const ack = await (event === 'added' ? S.client.addToGroup(c.name, user) : S.client.removeFromGroup(c.name, user));
    ownEvent(c, { event, user }, ack);
  } catch (err) {
    const why = {
      forbidden: 'Only an admin can do that.',
      not_member: event === 'added' ? 'You are not a member of this group.' : `${user} is not a member.`,
      bad_request: err.message,
    }[err.code] || `Could not do it now: ${err.message}`;
    $('member-error').textContent = why;
    loadMembers(c);
  }
}

async function leaveGroup(c) {
  try {
    await S.client.leaveGroup(c.name);
  } catch (err) {
    if (!(err instanceof ShardError && err.code === 'not_member')) {
      $('member-error').textContent = `Could not leave now: ${err.message}`;
      return;
    }
  }
  forgetGroup(c);
}

// The Leave button asks once more before it leaves.
function resetLeave() {
  const b = $('group-leave');
  delete b.dataset.confirm;
  b.textContent = 'Leave group';
}

// ---------- sign-in and boot ----------

function showLogin(error) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = error || '';
  const input = $('login-name');
  if (!input.value) {
    try { input.value = localStorage.getItem('shard.lastName') || ''; } catch (e) { /* none */ }
  }
  input.focus();
  input.select();
}

function start() {
  S.stopped = false;
  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = S.me || '…';
  paintAvatar($('me-avatar'), S.me || '?', 'dm');
  document.title = S.me ? `${S.me} · shard` : 'shard';
  let rooms = [];
  try { rooms = JSON.parse(sessionStorage.getItem('shard.rooms') || '[]'); } catch (e) { rooms = []; }
  for (const r of Array.isArray(rooms) ? rooms : []) {
    if (validId(r)) {
      const c = ensureConv('room', r);
      c.wanted = true;
      showInList(c);
    }
  }
  if (!S.active) closeConv();
  renderStoreText();
  S.client = newClient();
  connect();
  S.timers.cluster = setInterval(refreshCluster, CLUSTER_REFRESH_MS);
  $('new-chat').focus();
}

function signOut() {
  S.stopped = true;
  for (const name of Object.keys(S.timers)) clearTimer(name);
  if (S.client) S.client.close();
  S.open = false;
  try { sessionStorage.clear(); } catch (e) { /* none */ }
  history.replaceState(null, '', location.pathname);
  location.reload();
}

function boot() {
  const q = new URLSearchParams(location.search);
  let token = q.get('token');
  // Keep the token out of the address bar and history; this tab keeps it.
  if (token) {
    try { sessionStorage.setItem('shard.token', token); } catch (e) { /* none */ }
    q.delete('token');
    history.replaceState(null, '', location.pathname + (q.toString() ? '?' + q : ''));
  } else {
    try { token = sessionStorage.getItem('shard.token'); } catch (e) { token = null; }
  }
  if (token) {
    S.token = token;
    start();
    return;
  }
  const user = q.get('user');
  if (validId(user)) {
    S.me = user;
    start();
    return;
  }
  showLogin(user ? 'That name is not valid.' : '');
}

// ---------- events ----------

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('login-name').value.trim();
  if (!validId(name)) {
    $('login-error').textContent = 'Use 1–64 letters, digits or _ . @ -';
    $('login-name').setAttribute('aria-invalid', 'true');
    $('login-name').focus();
    return;
  }
  $('login-name').removeAttribute('aria-invalid');
  try { localStorage.setItem('shard.lastName', name); } catch (err) { /* none */ }
  S.me = name;
  history.replaceState(null, '', `${location.pathname}?user=${encodeURIComponent(name)}`);
  start();
});

$('finder').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = $('new-chat');
  const raw = input.value.trim();
  const room = raw.startsWith('#');
  const name = room ? raw.slice(1) : raw.replace(/^@/, '');
  const hint = $('finder-hint');
  if (!validId(name)) {
    input.setAttribute('aria-invalid', 'true');
    hint.classList.add('error');
    hint.textContent = raw ? `“${raw}” is not a valid ${room ? 'room' : 'name'}: use 1–64 letters, digits or _ . @ -` : 'Type a name, or #room.';
    return;
  }
  input.removeAttribute('aria-invalid');
  hint.classList.remove('error');
  hint.textContent = 'Type a name to message someone, #name to join a room.';
  input.value = '';
  const c = ensureConv(room ? 'room' : 'dm', name);
  if (room) join(c);
  openConv(c, true);
});

$('new-chat').addEventListener('input', (e) => {
  e.target.removeAttribute('aria-invalid');
  $('finder-hint').classList.remove('error');
});

$('composer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sendFromComposer();
  $('composer').focus();
});

function autosize() {
  const t = $('composer');
  t.style.height = '44px';
  if (t.scrollHeight > t.clientHeight) t.style.height = Math.min(t.scrollHeight + 2, 160) + 'px';
}

$('composer').addEventListener('input', () => {
  autosize();
  typed();
});
$('composer').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    sendFromComposer();
  } else if (e.key === 'Escape' && $('app').dataset.view === 'chat' && matchMedia('(max-width: 760px)').matches) {
    closeConv();
    $('new-chat').focus();
  }
});

$('back').addEventListener('click', () => {
  const c = S.active;
  closeConv();
  if (c && c.li) c.li.firstChild.focus();
});
$('leave').addEventListener('click', () => { if (S.active) leave(S.active); });

S.groupDialog = new GroupDialog(() => S.me, createGroup);
$('new-group').addEventListener('click', () => S.groupDialog.open());
$('members-toggle').addEventListener('click', () => showMembers($('members').hidden));
$('members-close').addEventListener('click', () => {
  showMembers(false);
  $('members-toggle').focus();
});
$('member-add').addEventListener('submit', (e) => {
  e.preventDefault();
  const c = S.active;
  const input = $('member-add-name');
  const { users, bad } = parseMembers(input.value, S.me);
  if (!c || c.kind !== 'group') return;
  if (bad || users.length !== 1) {
    $('member-error').textContent = bad ? `“${bad}” is not a valid name.` : 'Type one name.';
    return;
  }
  input.value = '';
  changeMember(c, 'added', users[0]);
});
$('group-leave').addEventListener('click', () => {
  const c = S.active;
  const b = $('group-leave');
  if (!c || c.kind !== 'group') return;
  if (!b.dataset.confirm) {
    b.dataset.confirm = 'true';
    b.textContent = `Leave ${c.name}? Click again`;
    return;
  }
  resetLeave();
  leaveGroup(c);
});
$('refresh').addEventListener('click', () => refreshRoom(S.active));
const retryNow = () => { if (!S.stopped && !S.open) S.client.reconnectNow(); };
$('reconnect-now').addEventListener('click', retryNow);
$('banner-retry').addEventListener('click', retryNow);
$('signout').addEventListener('click', signOut);
$('jump').addEventListener('click', () => {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
  $('jump').hidden = true;
});
$('messages').addEventListener('scroll', () => {
  const box = $('messages');
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 80) $('jump').hidden = true;
});

document.addEventListener('keydown', (e) => {
  if ($('app').hidden) return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'k') {
    e.preventDefault();
    if ($('app').dataset.view === 'chat' && matchMedia('(max-width: 760px)').matches) closeConv();
    $('new-chat').focus();
    return;
  }
  // Alt+Up / Alt+Down walk the conversations in sidebar order.
  if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
    const list = [...document.querySelectorAll('.conv')].map((b) => S.convs.get(b.dataset.conv)).filter(Boolean);
    if (!list.length) return;
    e.preventDefault();
    const i = list.indexOf(S.active);
    const next = e.key === 'ArrowUp' ? (i <= 0 ? list.length - 1 : i - 1) : (i + 1) % list.length;
    openConv(list[next], true);
  }
});

document.addEventListener('visibilitychange', () => {
  if (document.hidden || !S.active) return;
  S.active.unread = 0;
  renderItem(S.active);
  renderTitle();
  refreshRoom(S.active);
  wantRead(S.active);
});

// Offsets are saved shortly after they change, and when the tab goes, as
// are read frames still waiting for their burst to settle. A
// page kept in the back/forward cache lets its connection go: frozen, it
// would still count as online, and take messages it cannot show. It
// connects again (and catches up, with a store) when it is shown again.
window.addEventListener('pagehide', (e) => {
  saveOffsets();
  for (const c of S.convs.values()) readNow(c);
  if (!e.persisted || S.stopped) return;
  S.parked = true;
  S.stopped = true;
  clearTimer('countdown');
  S.client.disconnect();
});
window.addEventListener('pageshow', (e) => {
  if (!e.persisted || !S.parked) return;
  S.parked = false;
  S.stopped = false;
  connect();
});

// The network came back: do not wait out the backoff.
window.addEventListener('online', retryNow);

boot();
