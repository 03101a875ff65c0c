// shard chat page: one WebSocket to whichever node nginx picks, the frames of
// SPEC section 4, and a reconnect loop that survives a node draining (1012) or
// dying. User text only ever reaches the page through textContent.
(() => {
  'use strict';

  // SPEC section 3: user ids, room names and frame ids.
  const ID_RE = /^[A-Za-z0-9_.@-]{1,64}$/;

  // Reconnect: full-jitter exponential backoff, a random delay in
  // [0, min(cap, base * 2^attempt)). The first retry after a drain comes
  // within 250 ms; a cluster that stays down is asked at most every 8 s.
  const BACKOFF_BASE_MS = 250;
  const BACKOFF_CAP_MS = 8000;
  // A connection that stayed up this long resets the backoff.
  const STABLE_MS = 3000;

  // Application keepalive: browsers cannot send ping frames. 20 s is below
  // the node's 25 s --ping-interval and far below nginx's 120 s read timeout.
  const PING_EVERY_MS = 20000;
  // No pong within this long: the node or the path to it is dead.
  const PONG_WAIT_MS = 10000;

  // Presence: the open conversation is refreshed often, the sidebar rarely.
  const PRESENCE_ACTIVE_MS = 5000;
  const PRESENCE_LIST_MS = 30000;
  const API_TIMEOUT_MS = 5000;

  // Bounds on what a long-open tab keeps in memory.
  const MAX_MSGS_PER_CONV = 500;
  const MAX_SEEN_MIDS = 10000;
  // Stream offsets received above a gap that has not filled; past this many
  // the gap is given up on (the next sync or join since refills it anyway).
  const MAX_GAP_SEQS = 1000;
  // A send lost with its connection is sent again by itself, with the same
  // key, while the server still deduplicates that key (5 minutes).
  const AUTO_RESEND_MS = 4 * 60 * 1000;
  // The default --max-frame, for a node whose welcome does not say its own;
  // a larger frame would close the socket (1009).
  const DEFAULT_MAX_FRAME_BYTES = 65536;

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

  const $ = (id) => document.getElementById(id);
  const h = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  const S = {
    me: '',           // user id; from the welcome when signed in with a token
    token: '',        // JWT when the page was opened with ?token=
    ws: null,
    open: false,      // a welcome arrived on the current socket
    node: '',
    connects: 0,      // welcomes received: the test reads it
    attempt: 0,
    seq: 0,
    pending: new Map(), // frame id -> {answer(frame), lost()}
    outbox: [],         // {conv, m} waiting for a connection or a room join
    convs: new Map(),   // '@bob' or '#lobby' -> conversation
    active: null,
    seen: new Set(),
    seenOrder: [],
    timers: {},
    stopped: true,
    cluster: null,      // names of the alive nodes, for the empty view
    lost: '',           // why the last connection ended, until the next welcome
    gen: 0,             // welcomes on this page: the socket a frame went out on
    store: null,        // 'kept' or 'none' from the welcome, else GET /api/cluster's store
    maxFrame: DEFAULT_MAX_FRAME_BYTES, // the current node's --max-frame, from its welcome
    storeAsked: false,  // that question is under way
    hold: false,        // the outbox waits: store check or inbox sync under way
    syncing: null,      // {after, min} while an inbox sync is under way
    syncFails: 0,
    streams: null,      // {inbox, rooms: Map} offsets received, for sync and join since
    streamsUser: '',
    saveTimer: 0,
    parked: false,      // in the back/forward cache: no connection until shown again
  };

  // ---------- small helpers ----------

  function hue(name) {
    let x = 0;
    for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
    return x % 360;
  }

  function paintAvatar(el, name, room) {
    el.textContent = room ? '#' : (name || '?').slice(0, 1);
    el.classList.toggle('room', !!room);
    el.style.background = `hsl(${hue(name || '?')} 55% ${room ? 42 : 48}%)`;
  }

  function clock(ts) {
    return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function bytes(s) { return new TextEncoder().encode(s).length; }

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
    if (S.token) u.searchParams.set('token', S.token);
    else u.searchParams.set('user', S.me);
    return u;
  }

  function connect() {
    clearTimer('retry');
    clearTimer('countdown');
    if (S.stopped) return;
    if (S.lost) setConn('connecting', 'Reconnecting…', `${S.lost}: reconnecting…`);
    else setConn('connecting', 'Connecting…');
    let ws;
    try {
      ws = new WebSocket(wsURL());
    } catch (e) {
      scheduleReconnect(0, false);
      return;
    }
    S.ws = ws;
    let welcomed = false;
    ws.onmessage = (ev) => {
      if (ws !== S.ws || typeof ev.data !== 'string') return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (!f || typeof f !== 'object') return;
      if (f.type === 'welcome') welcomed = true;
      onFrame(f);
    };
    ws.onclose = (ev) => {
      if (ws !== S.ws) return;
      dropped(ev.code, welcomed);
    };
    ws.onerror = () => { /* onclose follows with the code */ };
  }

  // dropped runs once per socket, when it closes or is given up on.
  function dropped(code, welcomed) {
    const ws = S.ws;
    S.ws = null;
    S.open = false;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch (e) { /* already closing */ }
    }
    for (const name of ['ping', 'pong', 'stable', 'sync']) clearTimer(name);
    S.syncing = null;
    $('conn').dataset.lastClose = String(code);
    // Keep the first reason through the failed attempts that follow it.
    if (welcomed || !S.lost) S.lost = lostText(code, S.node, welcomed);
    // Frames in flight will never be answered on this socket.
    const lost = [...S.pending.values()];
    S.pending.clear();
    const waiting = S.outbox.length;
    for (const p of lost) p.lost(code);
    // Sends queued again by their lost() go first, in the order they were sent.
    if (S.outbox.length > waiting) S.outbox = S.outbox.slice(waiting).concat(S.outbox.slice(0, waiting));
    for (const c of S.convs.values()) if (c.kind === 'room') { c.joined = false; c.joining = false; c.replay = null; }
    saveStreams();
    renderHeader();
    if (S.stopped) return;
    if (!welcomed) {
      // A browser does not tell why an upgrade was refused. Ask once,
      // without the upgrade, to tell a bad name or token from an outage.
      diagnose().then((fatal) => {
        if (S.stopped || S.ws) return;
        if (fatal) fail(fatal);
        else scheduleReconnect(code, welcomed);
      });
      return;
    }
    scheduleReconnect(code, welcomed);
  }

  async function diagnose() {
    const u = wsURL();
    u.protocol = location.protocol;
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), API_TIMEOUT_MS);
    try {
      const r = await fetch(u, { cache: 'no-store', signal: ctl.signal });
      if (r.status === 403) {
        // (The probe is no upgrade, so it never reaches the node's origin
        // check: a page refused for its origin keeps retrying, and only the
        // node's answer to the upgrade, 403 forbidden, says why.)
        const b = await r.json().catch(() => null);
        return (b && b.error && b.error.message) || 'the server refused this page';
      }
      if (r.status === 401) {
        if (!S.token) return 'This server needs you to sign in: open the link you were given, the one that ends in ?token=…';
        const b = await r.json().catch(() => null);
        try { sessionStorage.removeItem('shard.token'); } catch (e) { /* none */ }
        return `Your sign-in token was refused (${(b && b.error && b.error.message) || 'unauthorized'}). Open the page again with a fresh one.`;
      }
      if (r.status === 400) {
        const b = await r.json().catch(() => null);
        const msg = (b && b.error && b.error.message) || '';
        if (!/upgrade/i.test(msg)) return msg || 'the server refused this name';
      }
    } catch (e) {
      /* the outage itself: retry */
    } finally {
      clearTimeout(t);
    }
    return '';
  }

  function scheduleReconnect(code, welcomed) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** S.attempt);
    S.attempt = Math.min(S.attempt + 1, 16);
    const delay = Math.random() * ceiling;
    const due = Date.now() + delay;
    const show = () => {
      const left = `${(Math.max(0, due - Date.now()) / 1000).toFixed(1)} s`;
      setConn('reconnecting', `Reconnecting in ${left}`, `${S.lost}: reconnecting in ${left}`);
    };
    show();
    S.timers.countdown = setInterval(show, 100);
    S.timers.retry = setTimeout(connect, delay);
  }

  function fail(message) {
    S.stopped = true;
    for (const name of Object.keys(S.timers)) clearTimer(name);
    setConn('failed', 'Not connected');
    showLogin(message);
  }

  // Send a frame with a fresh id; its answer (ack, pong or error) is matched
  // by that id. Returns false when there is no connection to send on. A
  // frame with a tooBig handler that is larger than the node takes goes to
  // that handler instead of closing the socket (1009), and null is returned.
  function transmit(frame, handlers) {
    if (!S.open || !S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    const id = 'c' + (++S.seq).toString(36);
    const text = JSON.stringify(Object.assign({ type: frame.type, id }, frame));
    if (handlers.tooBig && bytes(text) > S.maxFrame) {
      handlers.tooBig();
      return null;
    }
    S.pending.set(id, handlers);
    S.ws.send(text);
    return true;
  }

  function onFrame(f) {
    switch (f.type) {
      case 'welcome': onWelcome(f); break;
      case 'msg': onMsg(f); break;
      case 'ack':
      case 'pong':
      case 'error': {
        const p = f.id !== undefined ? S.pending.get(f.id) : undefined;
        if (p) {
          S.pending.delete(f.id);
          p.answer(f);
        } else if (f.type === 'error') {
          console.warn('shard: unmatched error', f);
        }
        break;
      }
      default: break; // a newer server may add frame types
    }
  }

  function onWelcome(f) {
    const before = S.node;
    S.open = true;
    S.gen++;
    S.node = String(f.node || '');
    if (f.user) S.me = String(f.user);
    S.maxFrame = Number.isInteger(f.max_frame) && f.max_frame > 0 ? f.max_frame : DEFAULT_MAX_FRAME_BYTES;
    // A node says in its welcome whether it keeps messages; one from before
    // that field is asked through /api/cluster (see afterWelcome).
    if (typeof f.store === 'boolean') {
      S.store = f.store ? 'kept' : 'none';
      renderStoreText();
    }
    if (S.streamsUser !== S.me) loadStreams();
    S.connects++;
    S.lost = '';
    $('conn').dataset.connects = String(S.connects);
    $('me').textContent = S.me;
    paintAvatar($('me-avatar'), S.me, false);
    setConn('open', 'Connected');
    if (before && before !== S.node && S.active) {
      addNote(S.active, `Reconnected through ${S.node} (was ${before})`);
    }
    S.timers.stable = setTimeout(() => { S.attempt = 0; }, STABLE_MS);
    S.timers.ping = setInterval(ping, PING_EVERY_MS);
    for (const c of S.convs.values()) if (c.kind === 'room' && c.wanted) join(c);
    // The outbox waits until the inbox is synced, so that a sync never
    // brings back the copy of a message this page has just sent.
    S.hold = true;
    S.syncFails = 0;
    afterWelcome();
    refreshPresence(S.active);
    refreshListPresence();
  }

  // ---------- history: the store, inbox sync, room offsets ----------

  function hasStore() { return !!S.store && S.store !== 'none'; }

  // afterWelcome learns once whether the cluster keeps messages, then syncs
  // the inbox (with a store) and lets the outbox go.
  function afterWelcome() {
    if (!S.open) return;
    if (S.store === null) {
      if (S.storeAsked) return;
      S.storeAsked = true;
      refreshCluster(true).finally(() => {
        S.storeAsked = false;
        // (A welcome that came meanwhile found the question under way and
        // left its socket to this answer.)
        if (!S.open) return;
        if (S.store === null) release(); // unknown: live messages only, this time
        else afterWelcome();
      });
      return;
    }
    if (hasStore()) syncInbox();
    else release();
  }

  // release lets the outbox go on the current socket.
  function release() {
    S.hold = false;
    flush();
  }

  // A stream's offsets as this page received them. last: every offset up to
  // it was received (or is gone from the store); above: those received
  // beyond a gap; hi: the highest; seenBefore: hi when the page loaded, so
  // that what is fetched again after a reload is not counted as unread.
  function newStream(saved) {
    const last = saved && Number.isSafeInteger(saved.last) && saved.last >= 0 ? saved.last : 0;
    const hi = saved && Number.isSafeInteger(saved.hi) && saved.hi >= last ? saved.hi : last;
    return { last, hi, seenBefore: hi, above: new Set(), based: !!saved };
  }

  function loadStreams() {
    let saved = null;
    try { saved = JSON.parse(sessionStorage.getItem('shard.seq.' + S.me) || 'null'); } catch (e) { saved = null; }
    if (!saved || typeof saved !== 'object') saved = {};
    // The inbox is synced from its start: its base is known, 0.
    const inbox = newStream(saved.inbox || { last: 0, hi: 0 });
    const rooms = new Map();
    for (const [name, v] of Object.entries(saved.rooms && typeof saved.rooms === 'object' ? saved.rooms : {})) {
      if (ID_RE.test(name) && v && typeof v === 'object') rooms.set(name, newStream(v));
    }
    S.streams = { inbox, rooms };
    S.streamsUser = S.me;
  }

  function saveStreams() {
    clearTimeout(S.saveTimer);
    S.saveTimer = 0;
    if (!S.streams || !S.streamsUser) return;
    const rooms = {};
    for (const [name, st] of S.streams.rooms) if (st.based) rooms[name] = { last: st.last, hi: st.hi };
    const v = { inbox: { last: S.streams.inbox.last, hi: S.streams.inbox.hi }, rooms };
    try { sessionStorage.setItem('shard.seq.' + S.streamsUser, JSON.stringify(v)); } catch (e) { /* private mode */ }
  }

  function saveStreamsSoon() {
    if (!S.saveTimer) S.saveTimer = setTimeout(saveStreams, 250);
  }

  function roomStream(name, create) {
    if (!S.streams) return null;
    let st = S.streams.rooms.get(name);
    if (!st && create) {
      st = newStream(null);
      S.streams.rooms.set(name, st);
    }
    return st || null;
  }

  // received records offset seq of st.
  function received(st, seq) {
    if (seq > st.hi) st.hi = seq;
    if (!st.based) {
      // A room joined without since: its history before this is not ours.
      st.based = true;
      st.last = seq - 1;
    }
    if (seq <= st.last) return;
    st.above.add(seq);
    advance(st);
  }

  function advance(st) {
    while (st.above.has(st.last + 1)) st.above.delete(++st.last);
    if (st.above.size > MAX_GAP_SEQS) {
      st.last = Math.min(...st.above) - 1;
      advance(st);
    }
    saveStreamsSoon();
  }

  // replayed: a sync page or a join's replay began at offset min and held
  // every message kept from there on; a gap below min is retention.
  function replayed(st, min) {
    if (min !== Infinity && min > st.last + 1) moveTo(st, min - 1);
  }

  function moveTo(st, last) {
    if (last <= st.last) return;
    st.last = last;
    if (last > st.hi) st.hi = last;
    for (const seq of st.above) if (seq <= last) st.above.delete(seq);
    advance(st);
  }

  // syncInbox asks for one page of the inbox after the last offset received,
  // and for the next page while the server says there are more.
  function syncInbox() {
    if (!S.open || S.syncing || !S.streams) return;
    clearTimer('sync');
    const st = S.streams.inbox;
    const sync = { after: st.last, min: Infinity };
    const ok = transmit({ type: 'sync', after: sync.after }, {
      answer: (f) => {
        if (S.syncing !== sync) return;
        S.syncing = null;
        if (f.type !== 'ack') {
          // Not now: live messages go on, the outbox too; ask again soon.
          release();
          if (f.code === 'unavailable' && ++S.syncFails < 5) {
            S.timers.sync = setTimeout(syncInbox, 1000 + Math.random() * 1000 * S.syncFails);
          }
          return;
        }
        const last = Number(f.last) || 0;
        if (last < sync.after) {
          // The store does not go as far as this page has seen: it is not
          // the one these offsets came from. Start over from its beginning.
          S.streams.inbox = newStream({ last: 0, hi: 0 });
          saveStreams();
          syncInbox();
          return;
        }
        replayed(st, sync.min);
        if (f.more) {
          if (st.last > sync.after) syncInbox();
          else release(); // no progress: leave the rest to the next connection
          return;
        }
        moveTo(st, last);
        settleOwn((c) => c.kind === 'dm');
        release();
      },
      lost: () => { if (S.syncing === sync) S.syncing = null; },
    });
    if (ok) S.syncing = sync;
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
  }

  function ping() {
    if (S.timers.pong) return;
    const sent = transmit({ type: 'ping' }, {
      answer: () => clearTimer('pong'),
      lost: () => clearTimer('pong'),
    });
    if (!sent) return;
    S.timers.pong = setTimeout(() => {
      // Silence: give up on this socket without waiting for a close
      // handshake that a dead node will never finish.
      delete S.timers.pong;
      if (S.ws) dropped(1006, true);
    }, PONG_WAIT_MS);
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

  function key(kind, name) { return (kind === 'room' ? '#' : '@') + name; }

  function ensureConv(kind, name) {
    const k = key(kind, name);
    let c = S.convs.get(k);
    if (c) return c;
    c = {
      key: k, kind, name, msgs: [], unread: 0, last: null,
      wanted: kind === 'dm', joined: false, joining: false, joinError: '',
      presence: null, presenceError: '', li: null,
    };
    S.convs.set(k, c);
    return c;
  }

  function showInList(c) {
    if (c.li) return;
    const li = h('li');
    const b = h('button', 'conv');
    b.type = 'button';
    b.dataset.testid = 'conv';
    b.dataset.conv = c.key;
    const av = h('span', 'avatar');
    paintAvatar(av, c.name, c.kind === 'room');
    if (c.kind === 'dm') {
      const dot = h('span', 'presence');
      dot.dataset.online = 'unknown';
      av.appendChild(dot);
    }
    const main = h('span', 'conv-main');
    main.append(h('span', 'conv-name', c.kind === 'room' ? '#' + c.name : c.name), h('span', 'conv-last'));
    const side = h('span', 'conv-side');
    const badge = h('span', 'badge');
    badge.dataset.testid = 'unread';
    side.append(h('time'), badge);
    b.append(av, main, side);
    b.addEventListener('click', () => openConv(c, true));
    li.appendChild(b);
    c.li = li;
    $(c.kind === 'room' ? 'rooms-list' : 'dms-list').appendChild(li);
    renderItem(c);
  }

  function hideFromList(c) {
    if (!c.li) return;
    c.li.remove();
    c.li = null;
  }

  function renderItem(c) {
    if (!c.li) return;
    const b = c.li.firstChild;
    b.setAttribute('aria-current', String(c === S.active));
    b.dataset.joined = String(c.kind === 'room' ? c.joined : true);
    const lastEl = b.querySelector('.conv-last');
    if (c.last) {
      const who = c.last.own ? 'You' : (c.kind === 'room' ? c.last.from : '');
      lastEl.textContent = (who ? who + ': ' : '') + c.last.body.replace(/\s+/g, ' ');
      b.querySelector('time').textContent = clock(c.last.ts);
    } else {
      lastEl.textContent = c.kind === 'room' ? (c.joined ? 'joined' : c.joinError ? 'not joined' : 'joining…') : 'no messages yet';
    }
    const badge = b.querySelector('.badge');
    badge.textContent = c.unread ? (c.unread > 99 ? '99+' : String(c.unread)) : '';
    if (c.unread) b.dataset.unread = String(c.unread); else delete b.dataset.unread;
    b.setAttribute('aria-label', `${c.kind === 'room' ? 'room ' + c.name : c.name}${c.unread ? `, ${c.unread} unread` : ''}`);
    const dot = b.querySelector('.presence');
    if (dot && c.presence) dot.dataset.online = String(!!c.presence.online);
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

  function openConv(c, focusComposer) {
    const prev = S.active;
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
    box.appendChild(h('p', 'intro', c.kind === 'room'
      ? `Messages in #${c.name} go to everyone connected in the room right now.`
      : hasStore()
        ? `Messages to ${c.name} reach every device they have connected, or wait until one connects.`
        : `Messages to ${c.name} reach every device they have connected right now.`));
    for (const m of c.msgs) box.appendChild(m.el);
    box.scrollTop = box.scrollHeight;
    $('jump').hidden = true;
    renderHeader();
    refreshPresence(c);
    clearTimer('presence');
    S.timers.presence = setInterval(() => refreshPresence(S.active), PRESENCE_ACTIVE_MS);
    if (focusComposer) $('composer').focus({ preventScroll: true });
  }

  function closeConv() {
    const prev = S.active;
    S.active = null;
    clearTimer('presence');
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
    $('conv-title').textContent = c.kind === 'room' ? '#' + c.name : c.name;
    paintAvatar($('conv-avatar'), c.name, c.kind === 'room');
    $('leave').hidden = c.kind !== 'room';
    const sub = $('conv-sub');
    sub.replaceChildren();
    if (c.kind === 'room') {
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
      if (p && p.online) {
        sub.append(h('span', 'on', 'online'));
        const n = p.connections;
        if (typeof n === 'number' && n > 0) {
          sub.append(` · ${n} device${n === 1 ? '' : 's'}${p.nodes && p.nodes.length ? ' on ' + p.nodes.join(', ') : ''}`);
        }
      } else if (p) {
        sub.append('offline');
      } else {
        sub.append(c.presenceError ? `presence: ${c.presenceError}` : ' ');
      }
      sub.dataset.online = p ? String(!!p.online) : '';
      sub.dataset.connections = p ? String(p.connections) : '';
    }
    renderComposerHint();
  }

  function renderComposerHint() {
    const c = S.active;
    const t = $('composer');
    if (!c) return;
    const to = c.kind === 'room' ? '#' + c.name : c.name;
    t.placeholder = S.open ? `Message ${to}` : `Message ${to} (sent once reconnected)`;
  }

  async function refreshPresence(c) {
    if (!c || document.hidden) return;
    const path = c.kind === 'room' ? `api/rooms/${encodeURIComponent(c.name)}` : `api/users/${encodeURIComponent(c.name)}`;
    try {
      c.presence = await getJSON(path);
      c.presenceError = '';
    } catch (e) {
      c.presenceError = e.name === 'AbortError' ? 'timed out' : e.message;
    }
    renderItem(c);
    if (c === S.active) renderHeader();
  }

  // refreshCluster reads GET /api/cluster: the nodes for the empty view,
  // and once whether the cluster keeps messages (see afterWelcome).
  async function refreshCluster(force) {
    if (document.hidden && !force) return;
    try {
      const v = await getJSON('api/cluster');
      S.cluster = (v.members || []).filter((m) => m.state === 'alive').map((m) => String(m.name)).sort();
      if (S.store === null) {
        S.store = typeof v.store === 'string' ? v.store : 'none';
        renderStoreText();
      }
    } catch (e) {
      S.cluster = null;
    }
    if (!S.active) renderHeader();
  }

  function refreshListPresence() {
    if (!S.storeAsked) refreshCluster(); // (else under way already)
    for (const c of S.convs.values()) if (c.kind === 'dm' && c.li && c !== S.active) refreshPresence(c);
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
    // (a cluster without a store ignores since).
    const st = roomStream(c.name, false);
    const frame = { type: 'join', room: c.name };
    if (st && st.based) {
      frame.since = st.last;
      c.replay = { min: Infinity };
    } else {
      c.replay = null;
    }
    transmit(frame, {
      answer: (f) => {
        c.joining = false;
        const replay = c.replay;
        c.replay = null;
        if (f.type === 'ack') {
          c.joined = true;
          if (replay && st === roomStream(c.name, false)) {
            replayed(st, replay.min);
            settleOwn((x) => x === c);
          }
          flush();
          refreshPresence(c);
        } else {
          c.joinError = f.code || 'error';
          // unavailable: the cluster is moving; try again soon on this socket.
          if (f.code === 'unavailable') {
            setTimeout(() => { if (c.wanted && S.open) join(c); }, 500 + Math.random() * 1000);
          }
        }
        renderItem(c);
        if (c === S.active) renderHeader();
      },
      lost: () => { c.joining = false; c.replay = null; },
    });
  }

  function leave(c) {
    c.wanted = false;
    saveRooms();
    if (S.streams && S.streams.rooms.delete(c.name)) saveStreams();
    if (c.joined) transmit({ type: 'leave', room: c.name }, { answer: () => {}, lost: () => {} });
    c.joined = false;
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

  function onMsg(f) {
    if (typeof f.body !== 'string' || typeof f.from !== 'string') return;
    // seq: the offset in this user's inbox, or in the room's stream; only
    // when the cluster has a store.
    const seq = Number.isSafeInteger(f.seq) && f.seq > 0 ? f.seq : 0;
    let c;
    let st = null;
    if (f.room) {
      c = S.convs.get(key('room', f.room));
      if (!c || !c.wanted) return; // left a moment ago
      st = seq ? roomStream(c.name, true) : null;
      if (st && c.replay && seq > st.last) c.replay.min = Math.min(c.replay.min, seq);
    } else if (seq && S.streams) {
      st = S.streams.inbox;
      if (S.syncing && seq > S.syncing.after) S.syncing.min = Math.min(S.syncing.min, seq);
    }
    const old = !!st && seq <= st.seenBefore; // seen before a reload
    if (st) received(st, seq);
    if (f.mid && S.seen.has(String(f.mid))) return; // shown already
    if (!f.room) {
      const other = f.from === S.me ? f.to : f.from;
      if (typeof other !== 'string' || !ID_RE.test(other)) return;
      c = ensureConv('dm', other);
      if (f.from !== S.me && !old) c.presence = Object.assign({}, c.presence, { online: true });
    }
    const own = f.from === S.me;
    if (own) {
      const mine = ownCopy(c, f);
      if (mine) {
        // The server's copy of a message this page sent: shown already.
        if (f.mid) setMid(mine, String(f.mid));
        return;
      }
    }
    if (f.mid) remember(String(f.mid));
    // Own messages from a sync or a replay are history, not news from
    // another device.
    const history = !!seq && (f.room ? !!c.replay : !!S.syncing);
    const status = own ? (history ? 'history' : 'elsewhere') : '';
    const m = { mid: f.mid, from: f.from, body: f.body, ts: Number(f.ts) || Date.now(), own, seq, status };
    addMsg(c, m);
    if (!own && !old && (c !== S.active || document.hidden)) {
      c.unread++;
      renderItem(c);
      renderTitle();
    }
  }

  function setMid(m, mid) {
    m.mid = mid;
    remember(mid);
    if (m.el) m.el.dataset.mid = mid;
  }

  // A message opens a group unless it follows one from the same sender.
  function opensGroup(prev, m) {
    return !prev || prev.from !== m.from || !!prev.note || m.ts - prev.ts > 5 * 60 * 1000;
  }

  // group marks m as opening a group or not, with the sender's name above
  // it in a room.
  function group(c, m, first) {
    if (m.note || !m.el) return;
    m.el.classList.toggle('first', first);
    const label = m.el.querySelector(':scope > .from');
    const want = first && !m.own && c.kind === 'room';
    if (want && !label) {
      const from = h('div', 'from', m.from);
      from.style.color = `hsl(${hue(m.from)} 55% 45%)`;
      m.el.prepend(from);
    } else if (!want && label) {
      label.remove();
    }
  }

  function msgEl(m) {
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
    group(c, m, opensGroup(c.msgs[i - 1], m));
    if (next) group(c, next, opensGroup(m, next));
    if (c.msgs.length > MAX_MSGS_PER_CONV) {
      const gone = c.msgs.shift();
      gone.el.remove();
      if (c.msgs[0]) group(c, c.msgs[0], true);
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

  // status: queued, sending, delivered, stored, offline, sent, error, lost, elsewhere
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
      case 'sent': text = `sent to ${m.detail}`; kind = m.detail > 0 ? 'ok' : 'warn'; break;
      case 'error': text = `error: ${m.detail}`; kind = 'err'; retry = m.retryable !== false; break;
      case 'lost': text = 'connection lost, not confirmed'; kind = 'err'; retry = true; break;
      case 'elsewhere': text = 'sent from another device'; break;
      case 'history': text = ''; break;
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
    if (!S.open || S.hold) return;
    const keep = [];
    for (const it of S.outbox) {
      if (it.conv.kind === 'room' && !it.conv.joined) { keep.push(it); continue; }
      if (!sendNow(it)) keep.push(it);
    }
    S.outbox = keep;
  }

  // A random idempotency key: a resend with it within 5 minutes is answered
  // like the first and stored once.
  function newKey() {
    const b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return 'k' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function sendNow({ conv: c, m }) {
    // The key is the message's: every attempt at it (Retry, the resend
    // after a reconnect) carries the same one.
    if (!m.key) m.key = newKey();
    const frame = c.kind === 'room'
      ? { type: 'send', room: c.name, body: m.body, key: m.key }
      : { type: 'send', to: c.name, body: m.body, key: m.key };
    setStatus(m, 'sending');
    const ok = transmit(frame, {
      answer: (f) => {
        if (f.type === 'ack') {
          const seq = Number.isSafeInteger(f.seq) && f.seq > 0 ? f.seq : 0;
          // A room send's seq is its offset in the room's stream, which
          // this page now holds; a direct one's is in the recipient's inbox.
          if (seq && c.kind === 'room') {
            m.seq = seq;
            const rs = c.wanted ? roomStream(c.name, true) : null;
            if (rs) received(rs, seq);
          }
          if (typeof f.mid === 'string' && f.mid && !m.mid) setMid(m, f.mid);
          if (f.status === 'delivered') setStatus(m, 'delivered');
          else if (f.status === 'stored') setStatus(m, 'stored');
          else if (f.status === 'offline') setStatus(m, 'offline');
          else if (f.status === 'sent') setStatus(m, 'sent', Number(f.recipients) || 0);
          else setStatus(m, 'error', f.status || 'unknown');
          if (c.kind === 'dm') {
            c.presence = Object.assign({}, c.presence, { online: f.status === 'delivered' });
            if (f.status === 'offline' || f.status === 'stored') c.presence.connections = 0;
            renderItem(c);
            if (c === S.active) refreshPresence(c);
          }
          return;
        }
        // not_member: the membership went with a socket; join and send again once.
        if (f.code === 'not_member' && c.kind === 'room' && !m.rejoined) {
          m.rejoined = true;
          c.joined = false;
          setStatus(m, 'queued');
          S.outbox.push({ conv: c, m });
          join(c);
          return;
        }
        m.message = f.message || '';
        m.retryable = f.code !== 'bad_request';
        setStatus(m, 'error', f.code || 'error');
      },
      lost: (code) => {
        // With a store the key makes a resend safe: the server answers it
        // like the first attempt and stores the message once. Not after a
        // 1009 (a node whose welcome did not say its --max-frame): the same
        // frame would close the next socket too.
        if (code !== 1009 && hasStore() && Date.now() - m.firstSent < AUTO_RESEND_MS && (c.kind === 'dm' || c.wanted)) {
          setStatus(m, 'queued');
          S.outbox.push({ conv: c, m });
          return;
        }
        setStatus(m, 'lost');
      },
      tooBig: () => {
        // A resend (on a node that takes less than the first one did)
        // leaves the first attempt's fate unknown.
        if (m.firstSent) {
          setStatus(m, 'lost');
          return;
        }
        m.retryable = false;
        setStatus(m, 'error', 'too long');
      },
    });
    if (ok === false) {
      setStatus(m, 'queued');
    } else if (ok) {
      if (!m.firstSent) m.firstSent = Date.now();
      m.lastGen = S.gen;
      m.settled = false;
    }
    return ok !== false; // a frame refused as too large is done with too
  }

  function sendFromComposer() {
    const c = S.active;
    const t = $('composer');
    const body = t.value;
    if (!c || !body.trim()) return;
    t.value = '';
    autosize();
    const m = { from: S.me, body, ts: Date.now(), own: true, status: 'queued', conv: c };
    addMsg(c, m);
    S.outbox.push({ conv: c, m });
    if (c.kind === 'room' && !c.wanted) join(c);
    flush();
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
    paintAvatar($('me-avatar'), S.me || '?', false);
    document.title = S.me ? `${S.me} · shard` : 'shard';
    let rooms = [];
    try { rooms = JSON.parse(sessionStorage.getItem('shard.rooms') || '[]'); } catch (e) { rooms = []; }
    for (const r of Array.isArray(rooms) ? rooms : []) {
      if (typeof r === 'string' && ID_RE.test(r)) {
        const c = ensureConv('room', r);
        c.wanted = true;
        showInList(c);
      }
    }
    if (!S.active) closeConv();
    renderStoreText();
    connect();
    S.timers.listPresence = setInterval(refreshListPresence, PRESENCE_LIST_MS);
    $('new-chat').focus();
  }

  function signOut() {
    S.stopped = true;
    for (const name of Object.keys(S.timers)) clearTimer(name);
    if (S.ws) {
      const ws = S.ws;
      S.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = null;
      ws.close(1000, 'sign out');
    }
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
    if (user && ID_RE.test(user)) {
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
    if (!ID_RE.test(name)) {
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
    if (!ID_RE.test(name)) {
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

  $('composer').addEventListener('input', autosize);
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
  $('refresh').addEventListener('click', () => refreshPresence(S.active));
  const retryNow = () => { if (!S.stopped && !S.ws) { S.attempt = 0; connect(); } };
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
    refreshPresence(S.active);
  });

  // Offsets are saved shortly after they change, and when the tab goes. A
  // page kept in the back/forward cache lets its connection go: frozen, it
  // would still count as online, and take messages it cannot show. It
  // connects again (and catches up, with a store) when it is shown again.
  window.addEventListener('pagehide', (e) => {
    saveStreams();
    if (!e.persisted || S.stopped) return;
    S.parked = true;
    S.stopped = true;
    clearTimer('retry');
    clearTimer('countdown');
    if (S.ws) dropped(1001, S.open);
  });
  window.addEventListener('pageshow', (e) => {
    if (!e.persisted || !S.parked) return;
    S.parked = false;
    S.stopped = false;
    S.attempt = 0;
    connect();
  });

  // The network came back: do not wait out the backoff.
  window.addEventListener('online', retryNow);

  boot();
})();
