// SPEC sections 8 and 9 against the real cluster of cluster.test.js: groups
// (create, add, remove, leave, members, messages, sync, and the client's own
// sync of its groups after a reconnect), read offsets, receipts and
// conversations, typing, and watch and unwatch across nodes. Each test has
// users of its own, so that they do not see each other's traffic.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { Received, code, dial, next, until } from './cluster.js';

/**
 * quiet checks that nothing more of type reached client: every frame the
 * node wrote it before the pong of a ping came before it.
 */
async function quiet(client, type, what) {
  let got = null;
  const off = client.on(type, (v) => { got = v; });
  await client.ping();
  off();
  assert.equal(got, null, `${what}: ${JSON.stringify(got)}`);
}

/** received returns what r holds of a group, messages and events, by seq. */
function inGroup(r, group) {
  return r.list.filter((m) => m.group === group).sort((a, b) => a.seq - b.seq);
}

/** registerConversationTests adds the tests to the suite under way; c.nodes() are its nodes. */
export function registerConversationTests(c) {
  describe('SPEC 8: groups', () => {
    test('create, add, remove, leave: each change is an event to the members on every node; members, admins and every refusal\'s code', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const alice = dial(nodes[0].url, 'g-alice');
      const alice2 = dial(nodes[1].url, 'g-alice');
      const bob = dial(nodes[1].url, 'g-bob');
      const carol = dial(nodes[2].url, 'g-carol');
      const at = new Map([alice, alice2, bob, carol].map((x) => [x, new Received(x)]));
      await Promise.all([alice, alice2, bob, carol].map((x) => x.connect()));

      const created = await alice.createGroup('g-team', ['g-bob', 'g-bob', 'g-alice']);
      assert.equal(created.status, 'ok');
      assert.ok(created.seq >= 1, JSON.stringify(created));
      for (const x of [bob, alice2]) {
        const [ev] = await at.get(x).until('the created event', (l) => l.length === 1);
        assert.equal(ev.event, 'created');
        assert.equal(ev.from, 'g-alice');
        assert.equal(ev.group, 'g-team');
        assert.equal(ev.seq, created.seq);
        assert.equal(ev.body, undefined, 'an event has no body');
      }
      assert.deepEqual(alice.groups, ['g-team'], 'the creator follows the group it made');
      assert.deepEqual(bob.groups, ['g-team'], 'a member follows a group it heard of');
      const members = (await bob.groupMembers('g-team')).map(({ user, admin }) => ({ user, admin }));
      assert.deepEqual(members, [{ user: 'g-alice', admin: true }, { user: 'g-bob', admin: false }]);

      assert.equal(await code(bob.createGroup('g-team')), 'conflict');
      assert.equal(await code(bob.addToGroup('g-team', 'g-carol')), 'forbidden');
      assert.equal(await code(carol.sendGroup('g-team', 'let me in')), 'not_member');
      assert.equal(await code(carol.syncGroup('g-team', 0)), 'not_member');
      assert.equal(await code(carol.groupMembers('g-team')), 'not_member');
      assert.equal(await code(carol.groupMembers('g-no-such-group')), 'not_member', 'a group one is not in is told apart from none');
      assert.equal(await code(carol.read({ group: 'g-team' }, 1)), 'not_member');
      assert.equal(await code(carol.leaveGroup('g-team')), 'not_member');
      assert.equal(await code(alice.createGroup('not a name')), 'bad_request');
      assert.equal(await code(alice.addToGroup('g-team', 'not a name')), 'bad_request');
      assert.equal(await code(alice.removeFromGroup('g-team', 'g-alice')), 'bad_request', 'removing oneself is leaving');
      assert.equal(await code(alice.removeFromGroup('g-team', 'g-carol')), 'not_member');
      assert.equal(await code(alice.createGroup('g-other', ['g-bob', 'not a name'])), 'bad_request', 'a malformed member');
      assert.equal(await code(alice.request({ type: 'group_add', group: 'g-team' })), 'bad_request', 'group_add without user');

      const added = await alice.addToGroup('g-team', 'g-carol');
      assert.equal(added.seq, created.seq + 1, 'the refusals took no offset');
      for (const x of [bob, carol, alice2]) {
        await at.get(x).until('the added event', (l) => l.some((m) => m.event === 'added' && m.user === 'g-carol' && m.seq === added.seq));
      }
      const again = await alice.addToGroup('g-team', 'g-carol');
      assert.equal(again.status, 'ok');
      assert.equal(again.seq, undefined, 'adding a member twice changes nothing');

      const hello = await bob.sendGroup('g-team', 'hello team');
      assert.equal(hello.status, 'sent');
      assert.equal(hello.seq, added.seq + 1);
      assert.equal(hello.recipients, 3, 'alice on two nodes and carol');
      for (const x of [alice, alice2, carol]) {
        const m = await at.get(x).until('the group message', (l) => l.some((y) => y.body === 'hello team'))
          .then((l) => l.find((y) => y.body === 'hello team'));
        assert.equal(m.from, 'g-bob');
        assert.equal(m.seq, hello.seq);
        assert.equal(m.history, false);
      }
      await quiet(bob, 'message', 'the sender got its own group message');

      const removed = await alice.removeFromGroup('g-team', 'g-carol');
      await at.get(carol).until('carol to hear of her removal', (l) => l.some((m) => m.event === 'removed' && m.seq === removed.seq));
      assert.deepEqual(carol.groups, [], 'a removed member stops following the group');
      const after = await bob.sendGroup('g-team', 'after the removal');
      assert.equal(after.recipients, 2);
      await quiet(carol, 'message', 'a removed member got a message sent after the removal');

      // The last admin leaves: the longest-standing member left is admin.
      const left = await alice.leaveGroup('g-team');
      assert.equal(left.status, 'ok');
      const ev = await at.get(bob).until('the left event', (l) => l.some((m) => m.event === 'left'))
        .then((l) => l.find((m) => m.event === 'left'));
      assert.deepEqual([ev.from, ev.user, ev.admin, ev.seq], ['g-alice', 'g-alice', 'g-bob', left.seq]);
      await at.get(alice2).until('alice\'s other device to hear she left', (l) => l.some((m) => m.event === 'left'));
      assert.deepEqual(alice.groups, []);
      assert.deepEqual(alice2.groups, [], 'the leaver\'s other device stops following the group too');
      assert.deepEqual((await bob.groupMembers('g-team')).map(({ user, admin }) => ({ user, admin })), [{ user: 'g-bob', admin: true }]);
    });

    test('a member who was away syncs the group page by page, in order; the client syncs its groups itself after a reconnect', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const proxy = await c.proxyTo(nodes[1]);
      const dave = dial(proxy.url, 's-dave', { reconnect: true, backoffMin: 20, backoffMax: 100 });
      const erin = dial(nodes[0].url, 's-erin');
      const atDave = new Received(dave);
      await Promise.all([dave.connect(), erin.connect()]);
      const created = await erin.createGroup('s-club', ['s-dave', 's-frank']);
      const one = await erin.sendGroup('s-club', 'one');
      await atDave.until('the event and the first message, live', (l) => l.length === 2);
      assert.deepEqual(dave.offsets().groups, { 's-club': { last: one.seq, hi: one.seq } });

      // Cut off, and kept away until erin has sent five more.
      proxy.refuse();
      const connected = next(dave, 'connected', () => true, 20000);
      proxy.cut();
      const sent = [];
      for (let i = 1; i <= 5; i++) sent.push(await erin.sendGroup('s-club', `while away ${i}`));
      let atConnected = -1;
      dave.on('connected', () => { atConnected = atDave.list.length; });
      proxy.open();
      await connected;
      assert.equal(atConnected, 7, 'the group\'s messages came with the catch-up, before connected');
      const caught = atDave.list.slice(2);
      assert.deepEqual(caught.map((m) => m.body), ['while away 1', 'while away 2', 'while away 3', 'while away 4', 'while away 5']);
      assert.deepEqual(caught.map((m) => m.seq), sent.map((a) => a.seq), 'out of order, or a gap');
      for (const m of caught) assert.equal(m.history, true, `${m.body} came live, not from the store`);
      const syncs = dave.offsets().groups['s-club'];
      assert.equal(syncs.last, sent[4].seq);

      // frank never connected: a sync from 0 brings the group from the
      // event that added him, page by page (at most 100 a page).
      const frank = dial(nodes[2].url, 's-frank');
      const atFrank = new Received(frank);
      await frank.connect();
      const page = await frank.syncGroup('s-club', 0);
      assert.equal(page.status, 'ok');
      assert.equal(page.last, sent[4].seq);
      assert.equal(page.more, false);
      const got = inGroup(atFrank, 's-club');
      assert.deepEqual(got.map((m) => m.seq), Array.from({ length: 7 }, (_, i) => created.seq + i), 'a gap in frank\'s sync');
      assert.equal(got[0].event, 'created');
      for (const m of got) assert.equal(m.history, true);
      const rest = await frank.syncGroup('s-club', page.last);
      assert.equal(rest.more, false);
      assert.equal(inGroup(atFrank, 's-club').length, 7, 'a sync after the last offset brought more');
      assert.deepEqual(frank.groups, ['s-club'], 'a synced group is followed');
    });

    test('a group the user was removed from while away is dropped at the catch-up (syncfailed), and the rest of it goes on', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const proxy = await c.proxyTo(nodes[2]);
      const gina = dial(proxy.url, 'x-gina', { reconnect: true, backoffMin: 20, backoffMax: 100 });
      const hal = dial(nodes[0].url, 'x-hal');
      const atGina = new Received(gina);
      await Promise.all([gina.connect(), hal.connect()]);
      await hal.createGroup('x-kept', ['x-gina']);
      await hal.createGroup('x-gone', ['x-gina']);
      await atGina.until('both created events', (l) => l.length === 2);
      proxy.refuse();
      const failed = next(gina, 'syncfailed', () => true, 20000);
      const connected = next(gina, 'connected', () => true, 20000);
      proxy.cut();
      await hal.removeFromGroup('x-gone', 'x-gina');
      const kept = await hal.sendGroup('x-kept', 'still here');
      proxy.open();
      const f = await failed;
      assert.equal(f.group, 'x-gone');
      assert.equal(f.error.code, 'not_member');
      await connected;
      assert.deepEqual(gina.groups, ['x-kept']);
      assert.ok(atGina.list.some((m) => m.body === 'still here' && m.seq === kept.seq && m.history));
    });
  });

  describe('SPEC 8: read state, receipts, conversations', () => {
    test('a direct read: the peer\'s receipt names its own copy (sender_seq), the reader\'s other device hears it too, and every device\'s unread count agrees', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const alice = dial(nodes[0].url, 'rd-alice');
      const bob = dial(nodes[1].url, 'rd-bob');
      const bob2 = dial(nodes[2].url, 'rd-bob');
      const carol = dial(nodes[2].url, 'rd-carol');
      const atBob = new Received(bob);
      await Promise.all([alice, bob, bob2, carol].map((x) => x.connect()));
      // Alice's inbox holds carol's message first: her offsets and bob's differ.
      await carol.send('rd-alice', 'hi alice');
      const acks = [await alice.send('rd-bob', 'one'), await alice.send('rd-bob', 'two')];
      for (const a of acks) {
        assert.ok(a.sender_seq > 0, `no sender_seq in ${JSON.stringify(a)}`);
        assert.notEqual(a.sender_seq, a.seq);
      }
      const got = await atBob.until('both messages', (l) => l.length === 2);
      for (const x of [bob, bob2]) {
        const [conv] = (await x.conversations()).filter((v) => v.with === 'rd-alice');
        assert.equal(conv.unread, 2, `${JSON.stringify(conv)}`);
        assert.equal(conv.last, got[1].seq);
        assert.equal(conv.read, 0);
      }
      const toAlice = next(alice, 'receipt');
      const toBob2 = next(bob2, 'receipt');
      assert.equal((await bob.read({ with: 'rd-alice' }, got[1].seq)).status, 'ok');
      assert.deepEqual(await toAlice, { by: 'rd-bob', with: 'rd-bob', seq: acks[1].sender_seq });
      assert.deepEqual(await toBob2, { by: 'rd-bob', with: 'rd-alice', seq: got[1].seq });
      const [conv] = (await bob2.conversations()).filter((v) => v.with === 'rd-alice');
      assert.deepEqual([conv.unread, conv.read], [0, got[1].seq], 'the other device\'s count did not clear');
      // Alice's own messages are never unread to her; carol's is.
      const mine = await alice.conversations();
      assert.deepEqual(mine.map((v) => [v.with, v.unread]), [['rd-bob', 0], ['rd-carol', 1]], 'newest activity first');
      assert.equal(mine[0].peer_read, acks[1].sender_seq, 'her list says how far bob read her messages, for a device that was away');
      // A lower offset is acked and changes nothing: no receipt.
      assert.equal((await bob.read({ with: 'rd-alice' }, 1)).status, 'ok');
      await quiet(alice, 'receipt', 'a read that moved nothing sent a receipt');
      assert.equal(await code(bob.request({ type: 'read', with: 'rd-alice' })), 'bad_request', 'read without seq');
      assert.equal(await code(bob.request({ type: 'read', with: 'rd-alice', group: 'g', seq: 1 })), 'bad_request', 'read naming both');
    });

    test('a group read: every member hears it, the reader\'s other device included; conversations list groups with their counts', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const alice = dial(nodes[0].url, 'rg-alice');
      const bob = dial(nodes[1].url, 'rg-bob');
      const bob2 = dial(nodes[2].url, 'rg-bob');
      const carol = dial(nodes[2].url, 'rg-carol');
      const atBob = new Received(bob);
      await Promise.all([alice, bob, bob2, carol].map((x) => x.connect()));
      await alice.createGroup('rg-team', ['rg-bob', 'rg-carol']);
      await alice.sendGroup('rg-team', 'one');
      const two = await alice.sendGroup('rg-team', 'two');
      await atBob.until('the event and both messages', (l) => l.length === 3);
      const [before] = (await bob2.conversations()).filter((v) => v.group === 'rg-team');
      assert.equal(before.unread, 3, `the created event and two messages of alice's: ${JSON.stringify(before)}`);
      assert.equal(before.last, two.seq);
      assert.equal(before.admin, undefined, 'admin is written only for a group one is an admin of (§12.6)');
      const [hers] = (await alice.conversations()).filter((v) => v.group === 'rg-team');
      assert.deepEqual([hers.unread, hers.read, hers.admin], [0, two.seq, true], 'sending is reading; alice is admin');

      const heard = [alice, bob2, carol].map((x) => next(x, 'receipt'));
      await bob.read({ group: 'rg-team' }, two.seq);
      for (const r of await Promise.all(heard)) assert.deepEqual(r, { by: 'rg-bob', group: 'rg-team', seq: two.seq });
      await quiet(bob, 'receipt', 'the reading connection got its own receipt');
      const [after] = (await bob2.conversations()).filter((v) => v.group === 'rg-team');
      assert.equal(after.unread, 0);
    });
  });

  describe('SPEC 9: typing and presence', () => {
    test('typing reaches a user, a room\'s and a group\'s other connections across nodes, once per 2 s per conversation', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const alice = dial(nodes[0].url, 't-alice');
      const alice2 = dial(nodes[1].url, 't-alice');
      const bob = dial(nodes[2].url, 't-bob');
      await Promise.all([alice, alice2, bob].map((x) => x.connect()));
      const typings = new Map([alice, alice2, bob].map((x) => [x, []]));
      for (const [x, l] of typings) x.on('typing', (t) => l.push(t));

      // Twice at once to bob: the second is dropped, without an error. The
      // message after them is the fence: bob gets it after any typing.
      assert.equal((await alice.typing({ to: 't-bob' })).status, 'ok');
      assert.equal((await alice.typing({ to: 't-bob' })).status, 'ok');
      const msg = next(bob, 'message');
      await alice.send('t-bob', 'typed');
      await msg;
      assert.deepEqual(typings.get(bob), [{ from: 't-alice', to: 't-bob' }]);

      await alice.createGroup('t-team', ['t-bob']);
      await alice.typing({ group: 't-team' });
      await until('bob and alice\'s other device to hear her type in the group',
        () => typings.get(bob).length === 2 && typings.get(alice2).length === 1);
      for (const x of [bob, alice2]) assert.deepEqual(typings.get(x).at(-1), { from: 't-alice', group: 't-team' });

      await Promise.all([alice.join('t-room'), bob.join('t-room')]);
      const inRoom = next(bob, 'typing', (t) => t.room === 't-room');
      await alice.typing({ room: 't-room' });
      assert.deepEqual(await inRoom, { from: 't-alice', room: 't-room' });
      await quiet(alice, 'typing', 'the typing connection heard itself');
      assert.equal(typings.get(alice).length, 0);

      assert.equal(await code(alice.typing({ room: 't-not-joined' })), 'not_member');
      assert.equal(await code(bob.typing({ group: 't-not-mine' })), 'not_member');
      assert.equal(await code(alice.request({ type: 'typing' })), 'bad_request');
      assert.equal(await code(alice.typing({ to: 'not an id' })), 'bad_request');
    });

    test('presence across nodes: several users in one watch, unwatch stops the events, and a reconnect watches again', { timeout: 30000 }, async () => {
      const nodes = c.nodes();
      const proxy = await c.proxyTo(nodes[0]);
      const carol = dial(proxy.url, 'w-carol', { reconnect: true, backoffMin: 20, backoffMax: 100 });
      const dave = dial(nodes[0].url, 'w-dave');
      await Promise.all([carol.connect(), dave.connect()]);
      const first = [];
      const got = new Promise((resolve) => carol.on('presence', (p) => { first.push(p); if (first.length === 2) resolve(); }));
      assert.equal((await carol.watch(['w-bob', 'w-erin'])).status, 'ok');
      await got;
      assert.deepEqual(first.map((p) => [p.user, p.online]).sort(), [['w-bob', false], ['w-erin', false]]);
      assert.deepEqual(carol.watched.sort(), ['w-bob', 'w-erin']);

      // carol stops watching bob; dave, on the same node, still does: once
      // he hears bob come online, carol would have heard it too.
      await dave.watch(['w-bob']);
      assert.equal((await carol.unwatch(['w-bob'])).status, 'ok');
      assert.deepEqual(carol.watched, ['w-erin']);
      const daveHears = next(dave, 'presence', (p) => p.user === 'w-bob' && p.online);
      const bob = dial(nodes[1].url, 'w-bob');
      await bob.connect();
      await daveHears;
      await quiet(carol, 'presence', 'an unwatched user\'s presence still came');

      // A new connection watches erin again by itself.
      const connected = next(carol, 'connected', () => true, 20000);
      proxy.cut();
      await connected;
      const erinOnline = next(carol, 'presence', (p) => p.user === 'w-erin' && p.online);
      const erin = dial(nodes[2].url, 'w-erin');
      await erin.connect();
      assert.equal((await erinOnline).online, true);

      assert.equal(await code(carol.watch([])), 'bad_request');
      assert.equal(await code(carol.watch(['not an id'])), 'bad_request');
    });
  });
}
