// The client's rules where a real node cannot be made to misbehave on cue:
// against a scripted WebSocket server (ws), which decides what each
// connection's welcome says, answers frame by frame, and cuts or closes
// connections with the code a test needs.

import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';

import { Client, ClosedError } from '../shard.js';
import { next } from './cluster.js';

/** Script is a WebSocket server whose connections a test drives. */
class Script {
  constructor() {
    this.store = true;
    this.maxFrame = 65536;
    this.refuse = 0; // an HTTP status to refuse upgrades with
    this.conns = [];
    this.connWaiters = [];
  }

  async start() {
    this.wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      verifyClient: (info, done) => (this.refuse ? done(false, this.refuse) : done(true)),
    });
    await new Promise((resolve) => this.wss.once('listening', resolve));
    this.url = `ws://127.0.0.1:${this.wss.address().port}/ws`;
    this.wss.on('connection', (ws, req) => {
      const user = new URL(req.url, 'http://x').searchParams.get('user');
      const c = new ScriptConn(ws, this.store);
      ws.send(JSON.stringify({ type: 'welcome', user, node: `s${this.conns.length + 1}`, store: this.store, max_frame: this.maxFrame }));
      this.conns.push(c);
      for (const w of this.connWaiters.splice(0)) w();
    });
    return this;
  }

  /** conn resolves with connection i (from 0) once it is there. */
  conn(i, ms = 5000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no connection ${i + 1} within ${ms} ms`)), ms);
      const check = () => {
        if (this.conns[i]) {
          clearTimeout(t);
          resolve(this.conns[i]);
        } else this.connWaiters.push(check);
      };
      check();
    });
  }

  close() {
    for (const c of this.wss.clients) c.terminate();
    return new Promise((resolve) => this.wss.close(resolve));
  }
}

class ScriptConn {
  constructor(ws, store) {
    this.ws = ws;
    this.catchUp = store ? 1 : 0; // frames the client sends first: its inbox sync
    this.frames = [];
    this.waiters = [];
    ws.on('message', (d) => {
      this.frames.push(JSON.parse(d.toString()));
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** frame resolves with the client frame number i (from 0) on this connection. */
  frame(i, ms = 5000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no frame ${i + 1} within ${ms} ms; got ${JSON.stringify(this.frames)}`)), ms);
      const check = () => {
        if (this.frames[i]) {
          clearTimeout(t);
          resolve(this.frames[i]);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  send(f) { this.ws.send(JSON.stringify(f)); }
  ack(f, extra = {}) { this.send({ type: 'ack', id: f.id, status: 'ok', ...extra }); }
}

// Each test takes milliseconds; a broken rule shows as one that waits.
const bounded = { timeout: 5000 };

let script;
const clients = [];

function client(opts = {}) {
  const c = new Client({ url: script.url, user: 'alice', WebSocket, reconnect: true, backoffMin: 1, backoffMax: 10, ...opts });
  clients.push(c);
  return c;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  if (script) await script.close();
  script = null;
});

/** connected dials and answers the catch-up of connection i (an empty inbox). */
async function connected(c, i) {
  let up;
  if (c.state === 'idle') up = c.connect();
  else if (c.state === 'connected' && c.welcome.node === `s${i + 1}`) up = Promise.resolve();
  else up = next(c, 'connected');
  const sc = await script.conn(i);
  if (script.store) {
    const sync = await sc.frame(0);
    assert.equal(sync.type, 'sync');
    sc.ack(sync, { last: sync.after, more: false });
  }
  await up;
  return sc;
}

/**
 * startSend connects a client to a new scripted server, which keeps
 * messages or not, and sends one message: it returns the client, its first
 * connection, the send as the server got it, and the send's answer.
 */
async function startSend(store) {
  script = await new Script().start();
  script.store = store;
  const c = client();
  const sc1 = await connected(c, 0);
  const answer = c.send('bob', 'hi');
  const sent = await sc1.frame(sc1.catchUp);
  return { c, sc1, sent, answer };
}

/** nothingResent asserts that the first frame on sc after its catch-up is a ping sent now. */
async function nothingResent(c, sc) {
  const ping = c.ping();
  const f = await sc.frame(sc.catchUp);
  assert.equal(f.type, 'ping', `the new connection got ${JSON.stringify(f)} after its catch-up: a resend`);
  sc.send({ type: 'pong', id: f.id });
  await ping;
}

describe('resending a send lost with its connection', () => {
  test('lost on a node without a store it is not resent, even to one with a store: connection closed', bounded, async () => {
    const { c, sc1, answer } = await startSend(false);
    script.store = true; // the first attempt may have been delivered: a resend would deliver it twice
    sc1.ws.terminate();
    await assert.rejects(answer, ClosedError);
    await nothingResent(c, await connected(c, 1));
  });

  test('with a store it goes again with its key on the next connection, first, and answers with the second ack', bounded, async () => {
    const { c, sc1, sent, answer } = await startSend(true);
    assert.match(sent.key, /^[A-Za-z0-9_.@-]{1,64}$/);
    const gone = next(c, 'disconnected');
    sc1.ws.terminate();
    assert.equal((await gone).code, 1006);
    const later = c.send('bob', 'sent while reconnecting');
    const sc2 = await connected(c, 1);
    const again = await sc2.frame(1);
    assert.deepEqual({ ...again, id: undefined }, { ...sent, id: undefined }, 'the resend differs from the first attempt');
    const newer = await sc2.frame(2);
    assert.equal(newer.body, 'sent while reconnecting');
    assert.notEqual(newer.key, sent.key);
    sc2.send({ type: 'ack', id: again.id, status: 'delivered', seq: 9 });
    sc2.send({ type: 'ack', id: newer.id, status: 'delivered', seq: 10 });
    assert.deepEqual(await answer, { type: 'ack', id: again.id, status: 'delivered', seq: 9 });
    assert.equal((await later).seq, 10);
  });

  test('not after a 1009 close, which the frame itself caused', bounded, async () => {
    const { c, sc1, answer } = await startSend(true);
    sc1.ws.close(1009, 'frame too large');
    await assert.rejects(answer, ClosedError);
    await nothingResent(c, await connected(c, 1));
  });

  test('a resend refused by the new node answers connection closed: the first attempt may be stored', bounded, async () => {
    const { c, sc1, answer } = await startSend(true);
    sc1.ws.close(1012, 'service restart');
    const sc2 = await connected(c, 1);
    const again = await sc2.frame(1);
    sc2.send({ type: 'error', id: again.id, code: 'rate_limited', message: 'slow down' });
    await assert.rejects(answer, (err) => {
      assert.ok(err instanceof ClosedError, `${err}: a caller would send it again, and it could be stored twice`);
      assert.match(err.message, /the resend: rate_limited/);
      return true;
    });
  });

  test('a resend to a node that keeps no messages does not go: connection closed', bounded, async () => {
    const { c, sc1, answer } = await startSend(true);
    script.store = false;
    sc1.ws.terminate();
    await assert.rejects(answer, /the resend: the new node keeps no messages/);
    await nothingResent(c, await connected(c, 1));
  });
});

describe('catching up after a reconnect', () => {
  test('rooms are joined again with since, the inbox and the groups synced after the last offsets, before waiting requests; a replayed message comes once', bounded, async () => {
    script = await new Script().start();
    const c = client();
    const got = [];
    c.on('message', (m) => got.push(m));
    const sc1 = await connected(c, 0);
    const joining = c.join('lobby');
    const join = await sc1.frame(1);
    assert.equal(join.since, undefined, 'a first join asks for no history');
    sc1.ack(join);
    await joining;
    const r7 = next(c, 'message', (m) => m.body === 'r7');
    for (let seq = 1; seq <= 3; seq++) sc1.send({ type: 'msg', mid: `d${seq}`, from: 'bob', to: 'alice', body: `d${seq}`, ts: 1, seq });
    sc1.send({ type: 'msg', mid: 'g4', from: 'bob', group: 'team', body: 'g4', ts: 1, seq: 4 });
    sc1.send({ type: 'msg', mid: 'r7', from: 'bob', room: 'lobby', body: 'r7', ts: 1, seq: 7 });
    await r7;
    assert.deepEqual(c.groups, ['team'], 'a group message makes the client follow the group');
    const gone = next(c, 'disconnected');
    sc1.ws.terminate();
    await gone;
    const waiting = c.ping();
    const back = next(c, 'connected');
    const sc2 = await script.conn(1);
    const first = [await sc2.frame(0), await sc2.frame(1), await sc2.frame(2)];
    const rejoin = first.find((f) => f.type === 'join');
    const sync = first.find((f) => f.type === 'sync' && f.group === undefined);
    const syncGroup = first.find((f) => f.type === 'sync' && f.group === 'team');
    assert.deepEqual({ room: rejoin.room, since: rejoin.since }, { room: 'lobby', since: 7 });
    assert.equal(sync.after, 3);
    assert.equal(syncGroup.after, 4);
    // The replay and the group's page each hold one message the client
    // has, and one it has not.
    sc2.send({ type: 'msg', mid: 'r7', from: 'bob', room: 'lobby', body: 'r7', ts: 1, seq: 7 });
    sc2.send({ type: 'msg', mid: 'r8', from: 'bob', room: 'lobby', body: 'r8', ts: 1, seq: 8 });
    sc2.send({ type: 'msg', mid: 'g4', from: 'bob', group: 'team', body: 'g4', ts: 1, seq: 4 });
    sc2.send({ type: 'msg', mid: 'g5', from: 'bob', group: 'team', body: 'g5', ts: 1, seq: 5 });
    sc2.ack(rejoin);
    sc2.ack(sync, { last: 3, more: false });
    sc2.ack(syncGroup, { last: 5, more: false });
    await back;
    const ping = await sc2.frame(3);
    assert.equal(ping.type, 'ping', 'the waiting request went before the catch-up was done');
    sc2.send({ type: 'pong', id: ping.id });
    await waiting;
    assert.deepEqual(got.map((m) => m.body), ['d1', 'd2', 'd3', 'g4', 'r7', 'r8', 'g5']);
    assert.equal(got[5].history, true);
    assert.equal(got[6].history, true);
    assert.deepEqual(c.offsets(), { inbox: { last: 3, hi: 3 }, rooms: { lobby: { last: 8, hi: 8 } }, groups: { team: { last: 5, hi: 5 } } });
  });

  test('a room left before its join was acked is not joined again', bounded, async () => {
    script = await new Script().start();
    script.store = false;
    const c = client();
    const sc1 = await connected(c, 0);
    const joining = c.join('lobby');
    const leaving = c.leave('lobby');
    const [join, leave] = [await sc1.frame(0), await sc1.frame(1)];
    sc1.ack(join);
    sc1.ack(leave);
    await Promise.all([joining, leaving]);
    assert.deepEqual(c.rooms, [], 'the late ok of the join undid the leave');
    sc1.ws.terminate();
    await nothingResent(c, await connected(c, 1)); // nor joined again
  });

  test('disconnect holds the client until connect: what waits goes then, close refuses it', bounded, async () => {
    script = await new Script().start();
    script.store = false;
    const c = client();
    await connected(c, 0);
    const gone = next(c, 'disconnected');
    c.disconnect();
    assert.equal((await gone).code, 1000);
    assert.equal(c.state, 'idle');
    const waiting = c.ping();
    const sc2 = await connected(c, 1);
    const f = await sc2.frame(0);
    assert.equal(f.type, 'ping');
    sc2.send({ type: 'pong', id: f.id });
    await waiting;
    c.disconnect();
    const refused = c.ping();
    await c.close();
    await assert.rejects(refused, ClosedError);
    await assert.rejects(c.ping(), ClosedError);
    assert.equal(script.conns.length, 2, 'the client connected by itself while held');
  });

  test('a connection whose pongs stop is given up and replaced', bounded, async () => {
    script = await new Script().start();
    script.store = false;
    const c = client({ pingInterval: 50, pongTimeout: 200 });
    const sc1 = await connected(c, 0);
    const gone = next(c, 'disconnected');
    const ping = await sc1.frame(0);
    assert.equal(ping.type, 'ping', 'the keepalive did not ping');
    assert.equal((await gone).code, 1006);
    await connected(c, 1);
  });

  test('answers reach their requests by id, whatever their order', bounded, async () => {
    script = await new Script().start();
    script.store = false;
    const c = client();
    const sc = await connected(c, 0);
    const a = c.ping();
    const b = c.join('lobby');
    const [fa, fb] = [await sc.frame(0), await sc.frame(1)];
    sc.ack(fb);
    sc.send({ type: 'pong', id: fa.id });
    assert.equal((await a).type, 'pong');
    assert.equal((await b).status, 'ok');
  });

  test('retries back off with full jitter, up to backoffMax', bounded, async () => {
    script = await new Script().start();
    script.refuse = 503;
    const c = client({ backoffMin: 5, backoffMax: 40 });
    const delays = [];
    const seen = new Promise((resolve) => c.on('reconnecting', (r) => {
      delays.push(r);
      if (delays.length === 6) resolve();
    }));
    c.connect().catch(() => {});
    await seen;
    delays.forEach((r, i) => {
      assert.equal(r.attempt, i + 1);
      assert.ok(r.delay >= 0 && r.delay <= Math.min(40, 5 * 2 ** i), `attempt ${r.attempt} waited ${r.delay} ms`);
      assert.ok(r.error, 'a retry says why the attempt before failed');
    });
  });
});
