// @shard/client: the JavaScript client of shard, for browsers and Node.js
// (with the ws package). It speaks every frame of SPEC, matches each answer
// to its request by id, reconnects with full-jitter backoff over several
// URLs, joins its rooms again with since and syncs its inbox and its
// groups after each reconnect, and resends with its key a send lost with its connection, where
// the node keeps messages; it syncs each group it is in from the last
// offset it saw, too. The promises are the Go client's (client/): a
// request is answered once, with its ack, its error, or "connection closed".
//
// It never invents a frame, never sends one larger than the node takes, and
// never resends anything but a keyed send to a node that keeps messages.

import { Connection, CLOSE_NORMAL, CLOSE_TOO_BIG, CLOSE_ABNORMAL } from './connection.js';
import { Offsets } from './offsets.js';
import { ClosedError, HandshakeError, QueueFullError, ShardError } from './errors.js';

export { ClosedError, FrameTooLargeError, HandshakeError, QueueFullError, ShardError } from './errors.js';

const ID_RE = /^[A-Za-z0-9_.@-]{1,64}$/;

/** validId reports whether s is a well-formed user id, room or group name, or frame id (SPEC section 3). */
export function validId(s) {
  return typeof s === 'string' && ID_RE.test(s);
}

// Defaults of the options; README "JavaScript client" lists them.
const DEFAULTS = {
  reconnect: false,
  // The first retry after a drain comes within 100 ms, spread over that by
  // the jitter; a cluster that stays down is asked at most every 5 s.
  backoffMin: 100,
  backoffMax: 5000,
  // A connection that stayed up this long starts the backoff over.
  stableAfter: 3000,
  // Open plus welcome; the welcome waits for the owner's registration.
  connectTimeout: 10000,
  pingInterval: 20000,
  pongTimeout: 10000,
  syncInbox: true,
  syncGroups: true,
  // Requests waiting for a connection or an answer: the node's default
  // --send-queue, far above what --rate (200/s, burst 400) lets through.
  maxQueue: 1024,
  probe: true,
};

// The node recognises a key for 5 minutes; a resend goes within 4 of the
// first attempt, so that it is never taken for a new message.
const RESEND_WINDOW_MS = 4 * 60 * 1000;
// A node drained while it held the message, then maybe the next one too.
const MAX_RESENDS = 3;
// SPEC promises every frame an answer: silence this long while catching up
// means the new connection is broken.
const CATCH_UP_TIMEOUT_MS = 10000;
// Users per watch frame when watching again: 200 ids stay far below any
// sensible --max-frame.
const WATCH_CHUNK = 200;
// Group syncs under way at once while catching up: a user may be in 1000
// groups, and the node takes 200 frames a second (a burst of 400).
const GROUP_SYNCS = 8;

/**
 * newKey returns a random idempotency key ('k' and 24 hex digits), for a
 * send that the application may send again itself (a Retry button): the
 * same key within 5 minutes is stored once.
 */
export function newKey() {
  const b = new Uint8Array(12);
  if (globalThis.crypto && typeof globalThis.crypto.getRandomValues === 'function') {
    globalThis.crypto.getRandomValues(b);
  } else {
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  }
  return 'k' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function isOffset(n) {
  return Number.isSafeInteger(n) && n >= 0;
}

/** endpoint is raw as a WebSocket URL with the user or the token in its query. */
function endpoint(raw, o) {
  const u = new URL(raw, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (o.token) {
    u.searchParams.set('token', o.token);
    u.searchParams.delete('user');
  } else if (o.user) {
    u.searchParams.set('user', o.user);
  }
  return u.toString();
}

/**
 * probe asks url once without the upgrade, since neither a browser nor the
 * WebSocket API shows why an upgrade was refused: it returns the refusal as
 * a HandshakeError, or null when nothing was refused (an outage, a node that
 * is fine with this user).
 */
async function probe(fetchFn, url) {
  const u = new URL(url);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), 5000);
  try {
    const r = await fetchFn(u.toString(), { cache: 'no-store', signal: ctl.signal });
    const body = await r.json().catch(() => null);
    const e = (body && body.error) || {};
    // The node answers a request that is no upgrade with 400 only once it
    // has accepted the user: then the upgrade itself failed.
    if (r.ok || (r.status === 400 && /upgrade/i.test(String(e.message || '')))) return null;
    if (!e.code && r.status !== 401 && r.status !== 403) return null; // not the node's answer
    return new HandshakeError(r.status, e.code, e.message);
  } catch (err) {
    return null; // the outage itself
  } finally {
    clearTimeout(t);
  }
}

/** Request is one frame sent and its answer: settled exactly once. */
class Request {
  /**
   * build(conn) returns the frame, without id unless the caller chose one;
   * it runs when the frame is written. hooks: onAck(ack, conn) runs with a
   * successful answer (even after an abort); onError(err, conn) with a
   * refusal; resend marks a keyed send, which may go again.
   */
  constructor(build, hooks = {}) {
    this.build = typeof build === 'function' ? build : () => build;
    this.onAck = hooks.onAck;
    this.onError = hooks.onError;
    this.resend = !!hooks.resend;
    this.signal = hooks.signal;
    this.first = Date.now(); // no later than the server first saw the key
    this.resends = 0;
    this.stopWindow = null; // a resend's deadline, while it waits for a connection
    this.conn = null;
    this.done = false;
    this.cleanups = [];
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  sent(conn) {
    this.conn = conn;
    if (this.stopWindow) this.stopWindow();
    this.stopWindow = null;
  }

  answer(f) {
    if (f.type === 'error') {
      const err = new ShardError(f);
      if (this.onError) this.onError(err, this.conn);
      this.refused(err);
      return;
    }
    if (this.onAck) this.onAck(f, this.conn);
    this.settle(f);
  }

  /**
   * refused: the node refused the frame (an error frame, or it is larger
   * than the node takes). After a resend that says nothing of the first
   * attempt, which may have been stored: a new send would store it twice.
   */
  refused(err) {
    this.fail(this.resends ? new ClosedError(`the resend: ${err.message}`) : err);
  }

  tooLarge(err) {
    this.refused(err);
  }

  settle(v) {
    if (this.done) return;
    this.finish();
    this.resolve(v);
  }

  fail(err) {
    if (this.done) return;
    this.finish();
    this.reject(err);
  }

  finish() {
    this.done = true;
    if (this.stopWindow) this.stopWindow();
    for (const f of this.cleanups) f();
    this.cleanups = [];
  }
}

/**
 * Client is one user's connection to a shard cluster, replaced by a new one
 * after a disconnect when options.reconnect is set. See shard.d.ts.
 */
export class Client {
  constructor(options) {
    const o = { ...DEFAULTS, ...options };
    if (!o.url || (Array.isArray(o.url) && o.url.length === 0)) throw new TypeError('options.url is required');
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') {
      throw new TypeError('no WebSocket: in Node.js pass the ws package, new Client({ WebSocket, ... })');
    }
    this._fetch = o.fetch || (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : null);
    this._o = o;
    this._urls = (Array.isArray(o.url) ? o.url : [o.url]).map((u) => endpoint(u, o));
    this._dials = 0; // picks the next URL
    this._attempt = 0; // failed attempts since the last stable connection: the backoff's exponent
    this._state = 'idle';
    this._gen = 0; // bumped by disconnect and close: ends the reconnect loop of before
    this._conn = null; // welcomed; ready once it has caught up
    this._dialing = null;
    this._waiting = []; // requests waiting for a ready connection, resends first
    this._rooms = new Set(); // joined (acked), joined again after a reconnect
    this._watched = new Set(); // watched (acked), watched again after a reconnect
    this._inbox = null; // Offsets, from the first welcome on
    this._roomOffsets = new Map();
    this._groupOffsets = new Map(); // group -> Offsets: the groups synced again after a reconnect
    this._leaves = new Map(); // room -> leave() calls so far: a join's late ok must not undo one
    this._listeners = new Map();
    this._connectWaiters = [];
    this._wake = null; // ends the backoff wait under way
    this._welcome = null;
  }

  /** "idle", "connecting", "connected" or "closed". */
  get state() { return this._state; }
  /** The welcome of the current connection, of the last one while reconnecting. */
  get welcome() { return this._welcome; }
  get user() { return this._welcome ? this._welcome.user : (this._o.token ? undefined : this._o.user); }
  /** Rooms joined, which a reconnect joins again. */
  get rooms() { return [...this._rooms]; }
  /** Users watched, which a reconnect watches again. */
  get watched() { return [...this._watched]; }
  /** Groups whose stream this client has seen, which a reconnect syncs from the last offset seen. */
  get groups() { return [...this._groupOffsets.keys()]; }

  /** on calls fn for every event of type; it returns a function that stops that. */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  _emit(type, arg) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        queueMicrotask(() => { throw err; }); // the application's bug: report it, keep going
      }
    }
  }

  // ---------- lifetime ----------

  /**
   * connect starts connecting and resolves with the welcome once the
   * connection is ready: rooms joined again and the inbox synced. Without
   * reconnect it makes one attempt; with it, it retries until it connects,
   * except after a refusal for good (HandshakeError: 400, 401, 403).
   */
  connect() {
    if (this._state === 'closed') return Promise.reject(new ClosedError());
    if (this._state === 'connected') return Promise.resolve(this._welcome);
    const p = new Promise((resolve, reject) => this._connectWaiters.push({ resolve, reject }));
    if (this._state === 'idle') {
      this._state = 'connecting';
      this._run(++this._gen);
    }
    return p;
  }

  /**
   * disconnect closes the connection (1000) and stops reconnecting until
   * connect is called again. Rooms, watches, offsets and the requests
   * waiting stay; a send lost with the connection goes again then.
   */
  disconnect() {
    if (this._state === 'idle' || this._state === 'closed') return;
    this._gen++;
    this._state = 'idle';
    if (this._wake) this._wake();
    const cn = this._conn || this._dialing;
    if (cn) cn.close(CLOSE_NORMAL, 'disconnect');
    this._rejectConnect(new ClosedError('disconnected'));
  }

  /**
   * close closes the connection (1000) for good: every request waiting or
   * pending gets ClosedError. It resolves once the socket has closed (at
   * most a second later).
   */
  close() {
    const cn = this._conn || this._dialing;
    this._shut();
    if (!cn || cn.ended) return Promise.resolve();
    cn.close(CLOSE_NORMAL);
    return cn.socketClosed;
  }

  /** reconnectNow cuts the backoff wait under way short, and starts the backoff over. */
  reconnectNow() {
    this._attempt = 0;
    if (this._wake) this._wake();
  }

  _rejectConnect(err) {
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  /** _shut stops the client for good. */
  _shut(err) {
    if (this._state === 'closed') return;
    this._gen++;
    this._state = 'closed';
    if (this._wake) this._wake();
    const waiting = this._waiting;
    this._waiting = [];
    for (const req of waiting) req.fail(new ClosedError());
    this._rejectConnect(err || new ClosedError());
    this._emit('closed', { error: err });
  }

  /** _run is the reconnect loop of generation gen: it dials, catches up, waits for the end, and again. */
  async _run(gen) {
    const live = () => this._gen === gen;
    let error;
    for (let first = true; live(); first = false) {
      if (!first) {
        const delay = this._backoff(this._attempt++);
        this._emit('reconnecting', { attempt: this._attempt, delay, error });
        await this._pause(delay);
        if (!live()) return;
      }
      let cn;
      try {
        cn = await this._dial();
      } catch (err) {
        if (!live()) return;
        error = err;
        if (!this._o.reconnect || (err instanceof HandshakeError && err.final)) this._shut(err);
        continue;
      }
      if (cn.ended || !live()) {
        error = new ClosedError(`closed with ${cn.code} before it was ready`);
        continue;
      }
      let ready = false;
      try {
        await this._catchUp(cn);
        ready = !cn.ended && live();
      } catch (err) {
        if (!cn.ended) cn.end(CLOSE_ABNORMAL, `catching up: ${err.message}`);
      }
      if (ready) this._publish(cn);
      const upSince = Date.now();
      const { code, reason } = await cn.done;
      if (!live()) return;
      if (ready && Date.now() - upSince >= this._o.stableAfter) this._attempt = 0;
      error = new ClosedError(`${cn.welcome.node || 'the node'} closed it: ${code}${reason ? ` ${reason}` : ''}`);
      if (!this._o.reconnect) this._shut(error);
    }
  }

  /**
   * _backoff is the wait before retry n (from 0): full jitter, uniform in
   * [0, min(backoffMax, backoffMin * 2^n)], so that the clients of a
   * drained node spread out instead of arriving together.
   */
  _backoff(n) {
    const ceil = Math.min(this._o.backoffMax, this._o.backoffMin * 2 ** Math.min(n, 30));
    return Math.random() * ceil;
  }

  _pause(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(t);
        if (self._wake === done) self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }

  /** _dial opens the next URL and resolves with the connection at its welcome. */
  _dial() {
    const url = this._urls[this._dials++ % this._urls.length];
    let cn;
    try {
      cn = new Connection(this._WS, url, this._o.connectTimeout, {
        welcome: (c) => this._welcomed(c),
        frame: (c, f) => this._frame(c, f),
        end: (c, code, reason, reqs) => this._ended(c, code, reason, reqs),
      });
    } catch (err) {
      return Promise.reject(err);
    }
    this._dialing = cn;
    return cn.welcomed.catch(async (err) => {
      // (Not for an attempt that disconnect or close cut short.)
      if (!cn.opened && this._o.probe && this._fetch && this._state === 'connecting') {
        const refusal = await probe(this._fetch, url);
        if (refusal) throw refusal;
      }
      throw err;
    });
  }

  /**
   * _welcomed runs at the welcome, before any later frame of the
   * connection is read: it becomes the current connection (not ready yet).
   */
  _welcomed(cn) {
    if (this._dialing === cn) this._dialing = null;
    if (this._state !== 'connecting') {
      cn.close(CLOSE_NORMAL); // disconnect or close came first
      return;
    }
    if (!this._inbox) this._loadOffsets(cn.welcome.user);
    this._conn = cn;
    this._welcome = cn.welcome;
    cn.keepalive(this._o.pingInterval, (c) => this._call(c, { type: 'ping' }, {}, this._o.pongTimeout));
    this._emit('welcome', cn.welcome);
  }

  _loadOffsets(user) {
    const saved = typeof this._o.offsets === 'function' ? this._o.offsets(user) : this._o.offsets;
    // The inbox is synced from its start: its base is known, 0.
    this._inbox = new Offsets(saved && saved.inbox != null ? saved.inbox : 0);
    const load = (field, into) => {
      const m = saved && saved[field] && typeof saved[field] === 'object' ? saved[field] : {};
      for (const [name, v] of Object.entries(m)) {
        if (validId(name) && v != null && !into.has(name)) into.set(name, new Offsets(v));
      }
    };
    load('rooms', this._roomOffsets);
    load('groups', this._groupOffsets);
  }

  /**
   * _catchUp brings a new connection to where the last one was, before any
   * request waiting goes: the rooms joined again (with since: what came
   * meanwhile first), the users watched again, the inbox and the groups
   * synced page by page.
   */
  async _catchUp(cn) {
    const jobs = [];
    for (const room of this._rooms) jobs.push(this._rejoin(cn, room));
    const users = [...this._watched];
    for (let i = 0; i < users.length; i += WATCH_CHUNK) jobs.push(this._rewatch(cn, users.slice(i, i + WATCH_CHUNK)));
    if (cn.welcome.store === true && this._o.syncInbox) jobs.push(this._syncStream(cn, undefined));
    if (cn.welcome.store === true && this._o.syncGroups) {
      const groups = [...this._groupOffsets].filter(([, st]) => st.based).map(([g]) => g);
      const worker = async () => {
        while (groups.length) await this._syncStream(cn, groups.shift());
      };
      for (let i = 0; i < Math.min(GROUP_SYNCS, groups.length); i++) jobs.push(worker());
    }
    await Promise.all(jobs);
  }

  _publish(cn) {
    cn.ready = true;
    this._state = 'connected';
    this._flush(cn);
    const waiters = this._connectWaiters;
    this._connectWaiters = [];
    this._emit('connected', cn.welcome);
    for (const w of waiters) w.resolve(cn.welcome);
  }

  /** _flush writes the requests waiting, in order, on the ready connection cn. */
  _flush(cn) {
    const list = this._waiting;
    this._waiting = [];
    for (let i = 0; i < list.length; i++) {
      const req = list[i];
      if (req.done) continue;
      if (req.resends && cn.welcome.store !== true) {
        req.fail(new ClosedError('the resend: the new node keeps no messages'));
        continue;
      }
      if (!cn.write(req)) {
        this._waiting = list.slice(i).concat(this._waiting);
        return;
      }
    }
  }

  /**
   * _ended runs when a connection ends. A keyed send it leaves unanswered
   * goes again, first, on the next connection, if the node kept messages
   * and the frame itself did not cause the close (1009); anything else
   * unanswered gets ClosedError.
   */
  _ended(cn, code, reason, reqs) {
    if (this._dialing === cn) this._dialing = null;
    const current = this._conn === cn;
    if (current) {
      this._conn = null;
      if (this._state === 'connected') this._state = 'connecting';
    }
    const again = [];
    for (const req of reqs) {
      if (this._resendable(req, cn, code)) {
        req.resends++;
        this._expireResend(req);
        again.push(req);
      } else {
        req.fail(new ClosedError());
      }
    }
    if (again.length) this._waiting = again.concat(this._waiting);
    if (current) this._emit('disconnected', { code, reason, node: cn.welcome.node });
  }

  _resendable(req, cn, code) {
    return req.resend && !req.done && this._o.reconnect && this._state !== 'closed' &&
      cn.welcome && cn.welcome.store === true && code !== CLOSE_TOO_BIG &&
      req.resends < MAX_RESENDS && Date.now() < req.first + RESEND_WINDOW_MS;
  }

  /** _expireResend answers a resend that found no connection within the window. */
  _expireResend(req) {
    const t = setTimeout(() => {
      this._drop(req);
      req.fail(new ClosedError('the resend: no connection within 4 minutes of the first attempt'));
    }, Math.max(0, req.first + RESEND_WINDOW_MS - Date.now()));
    req.stopWindow = () => clearTimeout(t);
  }

  _drop(req) {
    const i = this._waiting.indexOf(req);
    if (i >= 0) this._waiting.splice(i, 1);
  }

  // ---------- frames from the server ----------

  _frame(cn, f) {
    switch (f.type) {
      case 'msg': this._msg(cn, f); break;
      case 'error': this._emit('error', new ShardError(f)); break; // answers nothing this client sent
      case 'receipt':
      case 'typing':
      case 'presence': this._emit(f.type, strip(f)); break;
      default: break; // frames added to SPEC later are not this client's business
    }
  }

  /**
   * _msg hands a message to the application, once: a message of the inbox
   * or of a room that the client received already, brought again by the
   * catch-up after a reconnect, is dropped. `history` marks one that came
   * from a sync page or a join's replay rather than live.
   */
  _msg(cn, f) {
    const seq = Number.isSafeInteger(f.seq) && f.seq > 0 ? f.seq : 0;
    let history = false;
    let st = null;
    for (const s of cn.syncs) {
      if (s.group === f.group && !f.room && seq > s.after) {
        s.min = Math.min(s.min, seq);
        history = true;
      }
    }
    if (seq && f.room) {
      st = this._roomOffsets.get(f.room) || null;
      const r = cn.replays.get(f.room);
      if (r && seq > r.since) {
        r.min = Math.min(r.min, seq);
        history = true;
      }
    } else if (seq && f.group) {
      st = this._groupOffsets.get(f.group) || null;
      if (!st && validId(f.group)) this._groupOffsets.set(f.group, (st = new Offsets()));
    } else if (seq) {
      st = this._inbox;
    }
    if (st) {
      // Only while catching up: after that, a replay was asked for by the
      // application, which gets all of it.
      if (!cn.ready && st.has(seq)) return;
      st.add(seq);
    }
    // This user is out of the group (removed, or left on another device):
    // there is nothing more to sync of it.
    if (f.group && (f.event === 'removed' || f.event === 'left') && f.user === cn.welcome.user) {
      this._groupOffsets.delete(f.group);
    }
    const m = strip(f);
    m.history = history;
    this._emit('message', m);
  }

  // ---------- catching up ----------

  /**
   * _call writes frame on cn itself, ready or not, and resolves with its
   * answer. Silence for timeout ms gives the connection up.
   */
  _call(cn, frame, hooks, timeout = CATCH_UP_TIMEOUT_MS) {
    const req = new Request(frame, hooks);
    if (!cn.write(req)) req.fail(new ClosedError());
    else if (!req.done) req.cleanups.push(cn.expire(timeout, `no answer within ${timeout} ms`));
    return req.promise;
  }

  /**
   * _retrying is _call, asked again on the same connection after a backoff
   * while the node says to retry later (rate_limited, unavailable).
   */
  async _retrying(cn, frame, hooks) {
    let wait = this._o.backoffMin;
    for (;;) {
      try {
        return await this._call(cn, frame, hooks);
      } catch (err) {
        if (!(err instanceof ShardError) || (err.code !== 'rate_limited' && err.code !== 'unavailable')) throw err;
      }
      if (!(await cn.after(wait))) throw new ClosedError();
      wait = Math.min(2 * wait, this._o.backoffMax);
    }
  }

  /** _rejoin joins room again on cn; a refusal for good forgets the room. */
  async _rejoin(cn, room) {
    try {
      await this._retrying(cn, (c) => this._joinFrame(c, room), {
        onAck: (_, c) => this._joined(c, room, false),
        onError: (_, c) => c.replays.delete(room),
      });
    } catch (err) {
      if (!(err instanceof ShardError)) throw err;
      this._rooms.delete(room);
      this._emit('rejoinfailed', { room, error: err });
    }
  }

  async _rewatch(cn, users) {
    try {
      await this._retrying(cn, { type: 'watch', users });
    } catch (err) {
      if (!(err instanceof ShardError)) throw err;
      for (const u of users) this._watched.delete(u);
      this._emit('error', err);
    }
  }

  /** _stream is the offsets of the inbox (group undefined) or of a group. */
  _stream(group) {
    return group === undefined ? this._inbox : this._groupOffsets.get(group);
  }

  /**
   * _syncStream asks for the inbox (group undefined) or a group's stream
   * after the last offset received, page after page while the node says
   * there are more. A group this user is no longer in (not_member) is
   * forgotten.
   */
  async _syncStream(cn, group) {
    let restarted = false;
    for (;;) {
      const st = this._stream(group);
      if (!st) return; // left or removed meanwhile
      const s = { group, after: st.last, min: Infinity };
      cn.syncs.add(s);
      let ack;
      try {
        ack = await this._retrying(cn, { type: 'sync', group, after: s.after });
      } catch (err) {
        if (!(err instanceof ShardError)) throw err;
        if (group !== undefined && err.code === 'not_member') {
          this._groupOffsets.delete(group);
          this._emit('syncfailed', { group, error: err });
        } else {
          this._emit('error', err); // live messages go on; the next connection syncs again
        }
        return;
      } finally {
        cn.syncs.delete(s);
      }
      if (this._stream(group) !== st) return; // forgotten, or started over, meanwhile
      const last = isOffset(ack.last) ? ack.last : 0;
      if (last < s.after && !restarted) {
        // The store does not go as far as this client has seen: it is not
        // the one these offsets came from. Start over from its beginning.
        restarted = true;
        if (group === undefined) this._inbox = new Offsets(0);
        else this._groupOffsets.set(group, new Offsets(0));
        continue;
      }
      st.replayed(s.min);
      if (ack.more) {
        if (st.last > s.after) continue;
        return; // no progress: the rest is left to the next connection
      }
      st.moveTo(last);
      return;
    }
  }

  // ---------- requests ----------

  /** _submit sends req on the ready connection, or queues it until there is one. */
  _submit(req) {
    if (this._state === 'closed') {
      req.fail(new ClosedError());
      return req.promise;
    }
    const sig = req.signal;
    if (sig) {
      if (sig.aborted) {
        req.fail(sig.reason);
        return req.promise;
      }
      const abort = () => {
        this._drop(req);
        req.fail(sig.reason);
      };
      sig.addEventListener('abort', abort, { once: true });
      req.cleanups.push(() => sig.removeEventListener('abort', abort));
    }
    const cn = this._conn;
    if (this._waiting.length + (cn ? cn.pending.size : 0) >= this._o.maxQueue) {
      req.fail(new QueueFullError(this._o.maxQueue));
      return req.promise;
    }
    if (!(cn && cn.ready && cn.write(req))) this._waiting.push(req);
    return req.promise;
  }

  /**
   * request sends any client frame ({type, ...}; an id is chosen unless it
   * has one) and resolves with its answer (the ack, or the pong), or
   * rejects with a ShardError. It never sends a frame again.
   */
  request(frame, opts = {}) {
    if (!frame || typeof frame.type !== 'string') throw new TypeError('a frame needs a type');
    if (frame.id !== undefined && !validId(frame.id)) throw new TypeError(`frame id ${frame.id} is not 1 to 64 characters of A-Z a-z 0-9 _ . @ -`);
    return this._submit(new Request({ ...frame }, { signal: opts.signal }));
  }

  _send(frame, opts, onAck) {
    frame.key = opts.key || newKey();
    return this._submit(new Request(frame, { signal: opts.signal, onAck, resend: true }));
  }

  /** send sends body to user to: ack delivered, offline, or stored (with a store). */
  send(to, body, opts = {}) {
    return this._send({ type: 'send', to, body }, opts);
  }

  /** sendRoom sends body to a room this client has joined: ack sent, with recipients. */
  sendRoom(room, body, opts = {}) {
    return this._send({ type: 'send', room, body }, opts, (ack) => {
      // The offset in the room's stream, which this client now holds.
      const st = this._roomOffsets.get(room);
      if (st && Number.isSafeInteger(ack.seq) && ack.seq > 0) st.add(ack.seq);
    });
  }

  /** sendGroup sends body to a group (SPEC section 8): ack sent, with seq and recipients. */
  sendGroup(group, body, opts = {}) {
    return this._send({ type: 'send', group, body }, opts, (ack) => this._groupSeq(group, ack));
  }

  /** _groupSeq records that this client holds the group offset of ack (its own message or change). */
  _groupSeq(group, ack) {
    if (!Number.isSafeInteger(ack.seq) || ack.seq <= 0 || !validId(group)) return;
    let st = this._groupOffsets.get(group);
    if (!st) this._groupOffsets.set(group, (st = new Offsets()));
    st.add(ack.seq);
  }

  /**
   * join joins room and resolves once its owner recorded it. With since,
   * the room's messages after that offset come first; without, the client
   * asks from the last offset it saw of the room, if it saw one and the
   * node keeps messages. A joined room is joined again after each
   * reconnect, with since, until leave.
   */
  join(room, opts = {}) {
    if (opts.since !== undefined && !isOffset(opts.since)) throw new TypeError('since must be a non-negative integer');
    // A leave called before the ok comes wins: the room is not remembered.
    const leaves = this._leaves.get(room) || 0;
    return this._submit(new Request((cn) => this._joinFrame(cn, room, opts.since), {
      signal: opts.signal,
      onAck: (_, cn) => this._joined(cn, room, (this._leaves.get(room) || 0) === leaves),
      onError: (_, cn) => cn.replays.delete(room),
    }));
  }

  _joinFrame(cn, room, since) {
    const frame = { type: 'join', room };
    let st = this._roomOffsets.get(room);
    if (since !== undefined || !st) {
      st = since !== undefined ? new Offsets(since) : new Offsets();
      this._roomOffsets.set(room, st);
    }
    if (since !== undefined || (cn.welcome.store === true && st.based)) {
      frame.since = st.last;
      cn.replays.set(room, { since: st.last, min: Infinity });
    }
    return frame;
  }

  _joined(cn, room, remember) {
    if (remember) this._rooms.add(room);
    let st = this._roomOffsets.get(room);
    if (!st) this._roomOffsets.set(room, (st = new Offsets()));
    const r = cn.replays.get(room);
    if (r) {
      cn.replays.delete(room);
      st.replayed(r.min);
    }
  }

  /** leave leaves room: forgotten at once (not joined again), whatever the answer. */
  leave(room, opts = {}) {
    this._rooms.delete(room);
    this._roomOffsets.delete(room);
    this._leaves.set(room, (this._leaves.get(room) || 0) + 1);
    return this._submit(new Request({ type: 'leave', room }, { signal: opts.signal }));
  }

  /** ping resolves with the pong. */
  ping(opts = {}) {
    return this._submit(new Request({ type: 'ping' }, { signal: opts.signal }));
  }

  /**
   * sync asks for one page (at most 100) of this user's inbox after offset
   * after: the messages come as events before the ack, whose last is the
   * newest offset and more whether another page follows.
   */
  sync(after = 0, opts = {}) {
    return this._syncRequest({ type: 'sync', after }, opts);
  }

  _syncRequest(frame, opts) {
    if (!isOffset(frame.after)) throw new TypeError('after must be a non-negative integer');
    // Its messages are marked history while it is under way.
    const s = { group: frame.group, after: frame.after, min: Infinity };
    const group = frame.group;
    const req = new Request((cn) => {
      // A group's first sync is where this client starts following it.
      if (group !== undefined && validId(group) && !this._groupOffsets.has(group)) {
        this._groupOffsets.set(group, new Offsets(frame.after));
      }
      cn.syncs.add(s);
      req.cleanups.push(() => cn.syncs.delete(s));
      return frame;
    }, {
      signal: opts.signal,
      onAck: (ack) => {
        const st = group !== undefined && this._groupOffsets.get(group);
        if (!st) return;
        st.replayed(s.min);
        if (ack.more === false && isOffset(ack.last) && st.last >= frame.after) st.moveTo(ack.last);
      },
      onError: (err) => {
        if (group !== undefined && err.code === 'not_member') this._groupOffsets.delete(group);
      },
    });
    return this._submit(req);
  }

  // ---------- SPEC section 8: groups, read state, conversations ----------

  /**
   * _groupChange sends a membership change; its ack's seq (the event's
   * offset) is recorded, as this connection gets no copy of the event.
   */
  _groupChange(frame, opts, then) {
    return this._submit(new Request(frame, {
      signal: opts.signal,
      onAck: (ack) => {
        this._groupSeq(frame.group, ack);
        if (then) then();
      },
    }));
  }

  /** createGroup creates group with members; the sender is its admin. From then on the client syncs it after each reconnect. */
  createGroup(group, members = [], opts = {}) {
    return this._groupChange({ type: 'group_create', group, members: [...members] }, opts, () => {
      // A name created again goes on from the old stream's offsets: the
      // created event is where this group starts.
      const st = this._groupOffsets.get(group);
      if (st) st.moveTo(st.hi);
    });
  }

  addToGroup(group, user, opts = {}) {
    return this._groupChange({ type: 'group_add', group, user }, opts);
  }

  removeFromGroup(group, user, opts = {}) {
    return this._groupChange({ type: 'group_remove', group, user }, opts);
  }

  /** leaveGroup takes this user out of group; the client stops syncing it. */
  leaveGroup(group, opts = {}) {
    return this._groupChange({ type: 'group_leave', group }, opts, () => this._groupOffsets.delete(group));
  }

  /** groupMembers resolves with group's members ({user, admin, since}, by user id); for a member only. */
  groupMembers(group, opts = {}) {
    return this.request({ type: 'group_members', group }, opts).then((ack) => ack.members || []);
  }

  /** syncGroup asks for one page of group's stream after offset after, as sync. */
  syncGroup(group, after = 0, opts = {}) {
    return this._syncRequest({ type: 'sync', group, after }, opts);
  }

  /** read says this user has read up to seq: target is {with: user} or {group}. */
  read(target, seq, opts = {}) {
    return this.request({ type: 'read', ...target, seq }, opts);
  }

  /** conversations resolves with this user's conversations, newest activity first. */
  conversations(opts = {}) {
    return this.request({ type: 'conversations' }, opts).then((ack) => ack.conversations || []);
  }

  // ---------- SPEC section 9: typing and presence ----------

  /** typing tells target ({to}, {room} or {group}) that this user types. */
  typing(target, opts = {}) {
    return this.request({ type: 'typing', ...target }, opts);
  }

  /**
   * watch asks for the presence of users: a presence event for each at
   * once, then one per change. Watched users are watched again after a
   * reconnect, until unwatch.
   */
  watch(users, opts = {}) {
    const list = [...users];
    return this._submit(new Request({ type: 'watch', users: list }, {
      signal: opts.signal,
      onAck: () => { for (const u of list) this._watched.add(u); },
    }));
  }

  unwatch(users, opts = {}) {
    const list = [...users];
    for (const u of list) this._watched.delete(u);
    return this.request({ type: 'unwatch', users: list }, opts);
  }

  // ---------- offsets ----------

  /**
   * offsets returns what the client has received of its streams, to give
   * back as options.offsets to a later client (after a page reload): the
   * inbox, and each room and group whose offsets are known.
   */
  offsets() {
    const known = (m) => {
      const out = {};
      for (const [name, st] of m) if (st.based) out[name] = st.toJSON();
      return out;
    };
    return { inbox: this._inbox ? this._inbox.toJSON() : null, rooms: known(this._roomOffsets), groups: known(this._groupOffsets) };
  }
}

/** strip returns a server frame's fields without its type. */
function strip(f) {
  const m = { ...f };
  delete m.type;
  return m;
}
