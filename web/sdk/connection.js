// Connection: one WebSocket of a shard client. It waits for the welcome,
// numbers the requests it writes and hands each answer to its request by
// id, refuses a frame larger than the node takes before writing it, and
// pings so that a dead path is noticed. What happens to requests left
// unanswered when it ends is the client's business (shard.js).

import { ClosedError, FrameTooLargeError } from './errors.js';

const OPEN = 1; // WebSocket.OPEN and CLOSED, the same in browsers and in ws
const CLOSED = 3;

// The default --max-frame, for a node whose welcome does not say its own.
export const DEFAULT_MAX_FRAME = 65536;

// Close codes (SPEC sections 4 and 6, RFC 6455).
export const CLOSE_NORMAL = 1000;
export const CLOSE_ABNORMAL = 1006; // no close frame: the socket just ended
export const CLOSE_TOO_BIG = 1009; // the frame itself caused it: it would again

const encoder = new TextEncoder();

// utf8Length is the size of text on the wire, or a smaller number when it
// cannot exceed limit: a UTF-16 unit is at most 3 bytes of UTF-8, so most
// frames need no encoding to be measured.
function utf8Length(text, limit) {
  return text.length * 3 <= limit ? text.length : encoder.encode(text).length;
}

function unref(timer) {
  if (timer && typeof timer.unref === 'function') timer.unref(); // Node: do not hold the process
  return timer;
}

export class Connection {
  /**
   * Opens url with the WebSocket constructor WS; without a welcome within
   * timeout ms it gives up. hooks.welcome(conn) runs at the welcome, before
   * any later frame is read; hooks.frame(conn, frame) gets every later
   * server frame that answers nothing; hooks.end(conn, code, reason,
   * requests) runs once when it ends, with the requests still awaiting an
   * answer, in the order they were written.
   */
  constructor(WS, url, timeout, hooks) {
    this.url = url;
    this.hooks = hooks;
    this.welcome = null;
    this.maxFrame = DEFAULT_MAX_FRAME;
    this.pending = new Map(); // frame id -> request
    this.seq = 0;
    this.opened = false; // the upgrade went through
    this.ended = false;
    this.code = 0;
    this.reason = '';
    this.ready = false; // set by the client once rooms and inbox are caught up
    this.syncs = new Set(); // syncs under way: {group, after, min}
    this.replays = new Map(); // room -> {since, min}: joins since under way
    this.timers = new Set();
    this.welcomed = new Promise((resolve, reject) => {
      this.resolveWelcome = resolve;
      this.rejectWelcome = reject;
    });
    // done resolves once the connection has ended, socketClosed once its
    // socket has (at most a second after the end, see close).
    this.done = new Promise((resolve) => { this.resolveDone = resolve; });
    this.socketClosed = new Promise((resolve) => { this.resolveSocket = resolve; });
    this.ws = new WS(url);
    this.ws.onopen = () => { this.opened = true; };
    this.ws.onmessage = (ev) => this.receive(ev.data);
    this.ws.onerror = () => {}; // a close event follows, with the code
    this.ws.onclose = (ev) => {
      this.resolveSocket();
      this.end(ev.code || CLOSE_ABNORMAL, ev.reason || '');
    };
    this.stopExpiry = this.expire(timeout, `no welcome within ${timeout} ms`);
  }

  receive(data) {
    if (this.ended || typeof data !== 'string') return; // SPEC: text frames only
    let f;
    try { f = JSON.parse(data); } catch (e) { return; } // a server bug; nobody to tell
    if (!f || typeof f !== 'object') return;
    if (!this.welcome) {
      if (f.type !== 'welcome') {
        this.end(CLOSE_ABNORMAL, `first frame is not a welcome: ${data.slice(0, 100)}`);
        return;
      }
      this.welcome = f;
      if (Number.isSafeInteger(f.max_frame) && f.max_frame > 0) this.maxFrame = f.max_frame;
      this.stopExpiry();
      this.hooks.welcome(this);
      this.resolveWelcome(this);
      return;
    }
    switch (f.type) {
      case 'ack':
      case 'pong':
      case 'error': {
        const req = f.id !== undefined ? this.pending.get(f.id) : undefined;
        if (req) {
          this.pending.delete(f.id);
          req.answer(f);
          return;
        }
        break; // an error without an id answers nothing this client sent
      }
      default:
        break;
    }
    this.hooks.frame(this, f);
  }

  /**
   * write sends request req on this connection, with a fresh id unless its
   * frame has one. It returns false when the connection is no longer open:
   * nothing was sent, and req may go on the next one.
   */
  write(req) {
    if (this.ended || this.ws.readyState !== OPEN) return false;
    const frame = req.build(this);
    let id = frame.id;
    if (id === undefined) {
      do id = 'c' + (++this.seq).toString(36); while (this.pending.has(id));
    } else if (this.pending.has(id)) {
      req.fail(new TypeError(`frame id ${id} already awaits an answer`));
      return true;
    }
    const out = { type: frame.type, id };
    for (const k of Object.keys(frame)) if (k !== 'id' && frame[k] !== undefined) out[k] = frame[k];
    const text = JSON.stringify(out);
    const size = utf8Length(text, this.maxFrame);
    if (size > this.maxFrame) {
      req.tooLarge(new FrameTooLargeError(size, this.maxFrame, this.welcome && this.welcome.node));
      return true;
    }
    this.pending.set(id, req);
    req.sent(this, id);
    this.ws.send(text);
    return true;
  }

  /** after waits ms on this connection: false if it ended first. */
  after(ms) {
    if (this.ended) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.timers.delete(t); resolve(true); }, ms);
      this.timers.add(t);
      this.done.then(() => { clearTimeout(t); resolve(false); });
    });
  }

  /**
   * keepalive calls ping(conn) every interval ms, one at a time: browsers
   * cannot send ping frames, and a dead node never finishes a close, so
   * only a missing pong tells. ping's own timeout gives the connection up.
   */
  keepalive(interval, ping) {
    if (!(interval > 0)) return;
    let waiting = false;
    const settled = () => { waiting = false; };
    const t = unref(setInterval(() => {
      if (waiting || this.ended) return;
      waiting = true;
      ping(this).then(settled, settled);
    }, interval));
    this.timers.add(t);
  }

  /** expire ends the connection after ms unless it has ended by then. */
  expire(ms, why) {
    const t = setTimeout(() => this.end(CLOSE_ABNORMAL, why), ms);
    this.timers.add(t);
    return () => { clearTimeout(t); this.timers.delete(t); };
  }

  /** close sends a close frame and ends the connection at once. */
  close(code = CLOSE_NORMAL, reason = '') {
    try { this.ws.close(code, reason); } catch (e) { /* closing already */ }
    this.end(code, reason);
  }

  /** end runs once: later events of the socket are ignored. */
  end(code, reason) {
    if (this.ended) return;
    this.ended = true;
    this.code = code;
    this.reason = reason;
    this.ready = false;
    for (const t of this.timers) { clearTimeout(t); clearInterval(t); }
    this.timers.clear();
    this.ws.onopen = this.ws.onmessage = null;
    if (this.ws.readyState <= OPEN) {
      // Given up without a close from the server (no pong, no welcome).
      try { this.ws.close(CLOSE_NORMAL); } catch (e) { /* closing already */ }
    }
    if (this.ws.readyState !== CLOSED) {
      // The server has a second to answer the close; then the socket is
      // dropped (ws in Node.js can; a browser drops it by itself).
      const t = setTimeout(() => {
        if (typeof this.ws.terminate === 'function') this.ws.terminate();
        this.resolveSocket();
      }, 1000);
      this.socketClosed.then(() => clearTimeout(t));
    }
    const reqs = [...this.pending.values()];
    this.pending.clear();
    this.syncs.clear();
    this.replays.clear();
    if (!this.welcome) this.rejectWelcome(new ClosedError(`${this.url.replace(/\?.*/, '')}: ${reason || `closed with ${code}`}`));
    this.hooks.end(this, code, reason, reqs);
    this.resolveDone({ code, reason });
  }
}
