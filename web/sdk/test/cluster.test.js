// The client against a real cluster: 3 shard processes on loopback sharing
// one PostgreSQL store, so that what one node stored another can sync.
// SPEC sections 8 and 9 (groups, read state, typing, presence) are in
// conversations.js, on the same cluster. The drain test runs last: it takes
// the first node away.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { FrameTooLargeError, HandshakeError } from '../shard.js';
import { Proxy, Received, closeAll, code, dial, next, startCluster, startPostgres } from './cluster.js';
import { registerConversationTests } from './conversations.js';

// --max-frame small enough to build a larger frame cheaply; --rate low
// enough to reach in a burst, high enough for the other tests' traffic.
const MAX_FRAME = 4096;
const RATE = 50;

describe('a 3-node cluster with PostgreSQL', { timeout: 240000 }, () => {
  let pg;
  let nodes;
  const proxies = [];

  before(async () => {
    pg = await startPostgres();
    nodes = await startCluster(3, ['--store', pg.url, '--max-frame', String(MAX_FRAME),
      '--rate', String(RATE), '--drain-timeout', '5s', '--log-level', 'warn']);
  }, { timeout: 120000 });

  after(async () => {
    await closeAll();
    for (const p of proxies) await p.close();
    if (nodes) for (const n of nodes) await n.stop();
    if (pg) await pg.stop();
  });

  async function proxyTo(node) {
    const p = await new Proxy(node.http).start();
    proxies.push(p);
    return p;
  }

  test('connect resolves with the welcome: user, node, store, max_frame', { timeout: 20000 }, async () => {
    const c = dial(nodes[0].url, 'w-alice');
    const w = await c.connect();
    assert.equal(w.user, 'w-alice');
    assert.equal(w.node, nodes[0].name);
    assert.equal(w.store, true, 'the nodes keep messages (--store)');
    assert.equal(w.max_frame, MAX_FRAME);
    assert.equal(c.state, 'connected');
  });

  test('a refused upgrade rejects connect with the status and the SPEC code, and stops', { timeout: 20000 }, async () => {
    const c = dial(nodes[1].url, 'not a user id', { reconnect: true });
    const closed = next(c, 'closed');
    await assert.rejects(c.connect(), (err) => {
      assert.ok(err instanceof HandshakeError, `${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.code, 'bad_request');
      assert.equal(err.final, true);
      return true;
    });
    assert.equal(c.state, 'closed', 'a malformed user is refused for good: no retry');
    assert.ok((await closed).error instanceof HandshakeError);
  });

  test('direct messages cross nodes in order, acked delivered with their offsets; the sender\'s other device gets a copy', { timeout: 20000 }, async () => {
    const alice = dial(nodes[0].url, 'd-alice');
    const alice2 = dial(nodes[2].url, 'd-alice');
    const bob = dial(nodes[1].url, 'd-bob');
    const atBob = new Received(bob);
    const atAlice2 = new Received(alice2);
    await Promise.all([alice.connect(), alice2.connect(), bob.connect()]);
    // Pipelined: five requests in flight at once, answered each by its id.
    const bodies = ['one', 'two', 'three', 'four', 'five'];
    const acks = await Promise.all(bodies.map((b) => alice.send('d-bob', b)));
    for (const a of acks) assert.equal(a.status, 'delivered', JSON.stringify(a));
    for (let i = 1; i < acks.length; i++) assert.ok(acks[i].seq > acks[i - 1].seq, `offsets ${acks.map((a) => a.seq)} not increasing`);
    const got = await atBob.until('bob to get five messages', (l) => l.length === 5);
    assert.deepEqual(got.map((m) => m.body), bodies, 'bob got them out of order');
    got.forEach((m, i) => {
      assert.equal(m.from, 'd-alice');
      assert.equal(m.to, 'd-bob');
      assert.equal(m.seq, acks[i].seq);
      assert.equal(m.mid, acks[i].mid);
      assert.ok(Number.isSafeInteger(m.ts) && m.ts > 0);
      assert.equal(m.history, false, 'a live message is not history');
    });
    await atAlice2.until('alice\'s other device to get her five copies', (l) => l.length === 5);
    assert.deepEqual(atAlice2.bodies(), bodies);
  });

  test('a room message reaches every joined connection but the sender, with recipients counted', { timeout: 20000 }, async () => {
    const [alice, bob, carol] = ['r-alice', 'r-bob', 'r-carol'].map((u, i) => dial(nodes[i].url, u));
    const got = [bob, carol].map((c) => new Received(c));
    const atAlice = new Received(alice);
    await Promise.all([alice, bob, carol].map((c) => c.connect()));
    for (const c of [alice, bob, carol]) {
      assert.equal((await c.join('r-lobby')).status, 'ok');
    }
    assert.deepEqual(alice.rooms, ['r-lobby']);
    const ack = await alice.sendRoom('r-lobby', 'morning, lobby');
    assert.equal(ack.status, 'sent');
    assert.equal(ack.recipients, 2, 'bob and carol, on the two other nodes');
    for (const r of got) {
      const [m] = await r.until('the room message', (l) => l.length === 1);
      assert.equal(m.room, 'r-lobby');
      assert.equal(m.from, 'r-alice');
      assert.equal(m.seq, ack.seq);
    }
    await carol.leave('r-lobby');
    assert.deepEqual(carol.rooms, []);
    const ack2 = await alice.sendRoom('r-lobby', 'carol left');
    assert.equal(ack2.recipients, 1);
    await got[0].until('bob to get the second', (l) => l.length === 2);
    // Every answer above came before this ping's: nothing more is on its way to alice.
    await alice.ping();
    assert.equal(atAlice.list.length, 0, 'the sender got her own room message');
  });

  test('ping is answered by a pong; refusals reject with their SPEC codes and the connection stays', { timeout: 30000 }, async () => {
    const c = dial(nodes[1].url, 'e-alice');
    await c.connect();
    let disconnects = 0;
    c.on('disconnected', () => disconnects++);
    const pong = await c.ping();
    assert.equal(pong.type, 'pong');
    assert.equal(await code(c.send('not an id', 'hi')), 'bad_request');
    assert.equal(await code(c.request({ type: 'no_such_frame' })), 'bad_request');
    assert.equal(await code(c.sendRoom('e-never-joined', 'hi')), 'not_member');
    // A burst past the bucket (twice --rate): the extra frames are refused
    // with rate_limited, each answered once, and the connection stays.
    const burst = await Promise.allSettled(Array.from({ length: 3 * RATE }, () => c.ping()));
    const limited = burst.filter((r) => r.status === 'rejected' && r.reason.code === 'rate_limited').length;
    const pongs = burst.filter((r) => r.status === 'fulfilled').length;
    assert.ok(limited > 0, `no rate_limited among ${burst.length} pings at once`);
    assert.equal(limited + pongs, burst.length, 'a ping got something else than a pong or rate_limited');
    assert.ok(pongs >= RATE, `only ${pongs} pongs: the bucket holds twice --rate`);
    assert.equal(disconnects, 0);
    assert.equal(c.state, 'connected');
  });

  test('watch is answered ok, then each user\'s presence, then every change, across nodes; typing reaches the recipient', { timeout: 30000 }, async () => {
    const carol = dial(nodes[0].url, 'p-carol');
    await carol.connect();
    const first = next(carol, 'presence', (p) => p.user === 'p-bob');
    await carol.watch(['p-bob']);
    assert.deepEqual(await first, { user: 'p-bob', online: false, last_seen: 0 }, 'never seen: offline, last seen not known');
    const online = next(carol, 'presence', (p) => p.user === 'p-bob');
    const bob = dial(nodes[1].url, 'p-bob');
    await bob.connect();
    assert.equal((await online).online, true);

    const typed = next(bob, 'typing');
    const ack = await carol.typing({ to: 'p-bob' });
    assert.equal(ack.status, 'ok');
    assert.deepEqual(await typed, { from: 'p-carol', to: 'p-bob' });

    const left = Date.now();
    const offline = next(carol, 'presence', (p) => p.user === 'p-bob', 10000);
    await bob.close();
    const p = await offline;
    assert.equal(p.online, false);
    assert.ok(p.last_seen >= left, `last_seen ${p.last_seen} is before bob left (${left})`);
    assert.ok(Date.now() - left >= 2900, 'offline came before bob had been gone 3 s');
    assert.deepEqual(carol.watched, ['p-bob']);
  });

  test('a frame larger than the node takes is refused before it is sent; the connection stays', { timeout: 20000 }, async () => {
    const alice = dial(nodes[0].url, 'f-alice');
    const bob = dial(nodes[0].url, 'f-bob');
    const atBob = new Received(bob);
    await Promise.all([alice.connect(), bob.connect()]);
    let disconnects = 0;
    alice.on('disconnected', () => disconnects++);
    await assert.rejects(alice.send('f-bob', 'x'.repeat(MAX_FRAME)), (err) => {
      assert.ok(err instanceof FrameTooLargeError, `${err}`);
      assert.equal(err.limit, MAX_FRAME);
      assert.ok(err.size > MAX_FRAME);
      return true;
    });
    // Multi-byte text counts in bytes: 1500 × 3 bytes is over 4096.
    await assert.rejects(alice.send('f-bob', '€'.repeat(1500)), FrameTooLargeError);
    assert.equal((await alice.send('f-bob', 'short enough')).status, 'delivered');
    await atBob.until('the short message', (l) => l.length === 1);
    assert.deepEqual(atBob.bodies(), ['short enough'], 'a refused frame reached bob');
    assert.equal(disconnects, 0, 'the node closed the connection (1009): the frame went out');
  });

  test('a send whose answer was lost with its connection is resent with its key and stored once', { timeout: 30000 }, async () => {
    const proxy = await proxyTo(nodes[1]);
    const bob = dial(nodes[2].url, 'k-bob');
    const atBob = new Received(bob);
    await bob.connect();
    const alice = dial([proxy.url, nodes[0].url], 'k-alice', { reconnect: true, backoffMin: 10, backoffMax: 50 });
    assert.equal((await alice.connect()).node, nodes[1].name);
    const disconnected = next(alice, 'disconnected');
    proxy.hold(); // from now on nothing from the node reaches alice
    const answer = alice.send('k-bob', 'exactly once');
    const [, first] = await proxy.heldMatch(/(\{"type":"ack"[^}]*\})/);
    await atBob.until('bob to get it live', (l) => l.length === 1);
    proxy.cut(); // alice's connection ends before she read the ack
    const ack = await answer;
    const firstAck = JSON.parse(first);
    assert.equal((await disconnected).code, 1006);
    assert.equal(alice.welcome.node, nodes[0].name, 'alice should have reconnected to the next URL');
    // The first answer, or, when the node had not recorded it yet, stored:
    // either says it was kept once (docs/protocol.md §7.6).
    assert.ok(ack.status === 'delivered' || ack.status === 'stored', `the resend was answered ${ack.status}`);
    assert.equal(ack.seq, firstAck.seq, 'the resend was not answered like the first attempt');
    assert.equal(ack.mid, firstAck.mid);
    // Stored once: bob's inbox holds it once, and it was delivered once.
    await alice.send('k-bob', 'after it');
    await atBob.until('the next message', (l) => l.some((m) => m.body === 'after it'));
    const synced = new Received(bob);
    for (let after = 0, more = true; more;) {
      const page = await bob.sync(after);
      more = page.more;
      after = page.last;
    }
    const stored = synced.list.filter((m) => m.body === 'exactly once');
    assert.equal(stored.length, 1, `bob's inbox holds it ${stored.length} times`);
    assert.equal(stored[0].history, true);
    assert.equal(atBob.list.filter((m) => m.body === 'exactly once' && !m.history).length, 1, 'delivered live more than once');
  });

  registerConversationTests({ nodes: () => nodes, proxyTo });

  test('a drained node\'s client reconnects to another URL by itself, joins its room since, syncs its inbox, and misses nothing', { timeout: 60000 }, async () => {
    const proxy = await proxyTo(nodes[1]);
    const bob = dial([nodes[0].url, proxy.url], 'dr-bob', { reconnect: true, backoffMin: 20, backoffMax: 200 });
    const alice = dial(nodes[2].url, 'dr-alice');
    const atBob = new Received(bob);
    const reconnecting = [];
    bob.on('reconnecting', (r) => reconnecting.push(r));
    assert.equal((await bob.connect()).node, nodes[0].name);
    await alice.connect();
    await bob.join('dr-room');
    await alice.join('dr-room');
    await alice.sendRoom('dr-room', 'room before');
    await alice.send('dr-bob', 'direct before');
    await atBob.until('what came before the drain', (l) => l.length === 2);

    // Bob's node drains; his way to the next URL stays shut until alice
    // has sent what he must catch up on.
    proxy.refuse();
    const disconnected = next(bob, 'disconnected');
    const connected = next(bob, 'connected', () => true, 30000);
    nodes[0].signal('SIGTERM');
    assert.equal((await disconnected).code, 1012, 'a draining node closes with 1012 (service restart)');
    const sent = [];
    for (let i = 1; i <= 5; i++) {
      sent.push(await alice.sendRoom('dr-room', `room ${i}`));
      sent.push(await alice.send('dr-bob', `direct ${i}`));
    }
    assert.equal(await nodes[0].exited, 0, 'the drained node exits 0');
    proxy.open();
    const w = await connected;
    assert.equal(w.node, nodes[1].name, 'bob came back through the next URL');
    assert.ok(reconnecting.length >= 1);

    // Everything alice sent meanwhile came with the catch-up, before
    // 'connected', from the store: once each, in order, marked history.
    const expect = ['room before', 'direct before'];
    for (let i = 1; i <= 5; i++) expect.push(`room ${i}`, `direct ${i}`);
    const got = atBob.bodies();
    assert.deepEqual([...got].sort(), [...expect].sort(), 'bob missed a message or got one twice');
    const rooms = atBob.list.filter((m) => m.room).map((m) => m.body);
    const directs = atBob.list.filter((m) => !m.room).map((m) => m.body);
    assert.deepEqual(rooms, ['room before', 'room 1', 'room 2', 'room 3', 'room 4', 'room 5']);
    assert.deepEqual(directs, ['direct before', 'direct 1', 'direct 2', 'direct 3', 'direct 4', 'direct 5']);
    for (const m of atBob.list.slice(2)) assert.equal(m.history, true, `${m.body} should have come from the store`);
    const off = bob.offsets();
    assert.equal(off.rooms['dr-room'].last, sent[sent.length - 2].seq, 'the room offset is the last room message');
    assert.deepEqual(bob.rooms, ['dr-room']);

    // And live again: the room was joined on the new node.
    const ack = await alice.sendRoom('dr-room', 'room after');
    assert.equal(ack.recipients, 1);
    const [m] = (await atBob.until('the live room message', (l) => l.some((x) => x.body === 'room after'))).slice(-1);
    assert.equal(m.history, false);
  });
});
