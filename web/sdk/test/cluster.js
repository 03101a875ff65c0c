// Real parts for the client's tests: shard processes built from this
// repository on 127.0.0.x loopback addresses with free ports, PostgreSQL
// through scripts/pg-start.sh, and a TCP proxy that can hold or cut a
// connection at a chosen moment. Everything started here is stopped when
// the test process ends.

import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import WebSocket from 'ws';

import { Client, ShardError } from '../shard.js';

const run = promisify(execFile);
export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const env = { ...process.env, PATH: `${process.env.PATH}:/usr/local/go/bin` };
const verbose = process.env.SHARD_TEST_LOG === 'debug';

const children = new Set();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });

/** until polls cond (truthy, or a promise of it) every 50 ms for at most ms. */
export async function until(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`waited ${ms} ms for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** code resolves with the SPEC error code a request (a promise) was refused with. */
export async function code(p) {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ShardError, `${err}`);
    return err.code;
  }
  return assert.fail('the request was not refused');
}

/** next resolves with the next event of type on client for which pred holds. */
export function next(client, type, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { off(); reject(new Error(`no ${type} event within ${ms} ms`)); }, ms);
    const off = client.on(type, (v) => {
      if (!pred(v)) return;
      clearTimeout(t);
      off();
      resolve(v);
    });
  });
}

/** Received keeps every message a client gets, and waits for some. */
export class Received {
  constructor(client) {
    this.list = [];
    this.waiters = new Set();
    client.on('message', (m) => {
      this.list.push(m);
      for (const w of this.waiters) w();
    });
  }

  bodies() { return this.list.map((m) => m.body); }

  /** until resolves once cond(list) holds, within ms. */
  until(what, cond, ms = 10000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!cond(this.list)) return;
        clearTimeout(t);
        this.waiters.delete(check);
        resolve(this.list);
      };
      const t = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`waited ${ms} ms for ${what}; received: ${JSON.stringify(this.bodies())}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }
}

/** freePort returns a port free on host a moment ago (for UDP too, if udp). */
export async function freePort(host, udp = false) {
  for (let tries = 0; tries < 50; tries++) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', reject);
      srv.listen(0, host, () => {
        const p = srv.address().port;
        srv.close(() => resolve(p));
      });
    });
    if (!udp) return port;
    const ok = await new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      s.once('error', () => resolve(false));
      s.bind(port, host, () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error(`no free port on ${host}`);
}

/** buildShard builds bin/shard from this repository (go's cache makes it quick when nothing changed). */
export async function buildShard() {
  if (process.env.SHARD_BIN) return process.env.SHARD_BIN;
  const bin = path.join(repo, 'bin', 'shard');
  await run('go', ['build', '-o', bin, './cmd/shard'], { cwd: repo, env, maxBuffer: 16 << 20 });
  return bin;
}

/** startPostgres runs a throwaway PostgreSQL (scripts/pg-start.sh) and returns its URL and how to stop it. */
export async function startPostgres() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'shard-sdk-pg-'));
  const port = await freePort('127.0.0.1');
  let out;
  try {
    out = await run(path.join(repo, 'scripts', 'pg-start.sh'), [dir, String(port)], { env });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`PostgreSQL did not start (scripts/deps.sh postgresql installs it): ${err.stderr || err.message}`);
  }
  return {
    url: out.stdout.trim().split('\n').pop(),
    async stop() {
      await run(path.join(repo, 'scripts', 'pg-start.sh'), ['stop', dir], { env }).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Node is one shard process. */
export class Node {
  constructor(bin, name, host) {
    this.bin = bin;
    this.name = name;
    this.host = host;
    this.log = '';
  }

  get url() { return `ws://${this.http}/ws`; }

  async addrs() {
    this.http = `${this.host}:${await freePort(this.host)}`;
    this.gossip = `${this.host}:${await freePort(this.host, true)}`;
    this.link = `${this.host}:${await freePort(this.host)}`;
  }

  start(args) {
    const all = ['--name', this.name, '--http', this.http, '--gossip', this.gossip, '--link', this.link, ...args];
    this.proc = spawn(this.bin, all, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this.proc);
    const keep = (d) => {
      this.log = (this.log + d).slice(-20000);
      if (verbose) process.stderr.write(`[${this.name}] ${d}`);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => {
      children.delete(this.proc);
      resolve(code ?? signal);
    }));
  }

  async get(p) {
    const r = await fetch(`http://${this.http}${p}`);
    return { status: r.status, body: await r.json().catch(() => null) };
  }

  signal(sig) { this.proc.kill(sig); }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/**
 * startCluster starts n shard processes on 127.0.0.6, .7, .8, ..., the
 * later ones joining the first, and waits until each routes by a ring of
 * all of them.
 */
export async function startCluster(n, args) {
  const bin = await buildShard();
  const nodes = [];
  for (let i = 0; i < n; i++) {
    const nd = new Node(bin, `n${i + 1}`, `127.0.0.${6 + i}`);
    await nd.addrs();
    nd.start([...args, ...(i > 0 ? ['--join', nodes[0].gossip] : [])]);
    nodes.push(nd);
  }
  for (const nd of nodes) {
    await until(`${nd.name} to be ready and route by a ring of ${n}`, async () => {
      const ready = await nd.get('/readyz');
      const c = await nd.get('/api/cluster');
      return ready.status === 200 && c.body && c.body.ring.members === n;
    }, 30000).catch((err) => {
      throw new Error(`${err.message}\nlog of ${nd.name}:\n${nd.log}`);
    });
  }
  return nodes;
}

/** dial makes a client of user (ws in Node.js) for urls; clients are closed by closeAll. */
const clients = new Set();
export function dial(urls, user, opts = {}) {
  const c = new Client({ url: urls, user, WebSocket, ...opts });
  clients.add(c);
  return c;
}

export async function closeAll() {
  await Promise.all([...clients].map((c) => c.close()));
  clients.clear();
}

/**
 * Proxy is a TCP proxy on 127.0.0.9 to target (host:port). refuse() makes
 * it drop new connections at once, open() lets them through again; hold()
 * keeps what the node sends (a 'held' wait resolves on it) from the client,
 * and cut() ends every connection through it, as a network failure would.
 */
export class Proxy {
  constructor(target) {
    this.target = target;
    this.refusing = false;
    this.holding = false;
    this.held = '';
    this.heldWaiters = [];
    this.pairs = new Set();
  }

  async start() {
    this.server = net.createServer((down) => this.accept(down));
    await new Promise((resolve) => this.server.listen(0, '127.0.0.9', resolve));
    this.url = `ws://127.0.0.9:${this.server.address().port}/ws`;
    return this;
  }

  accept(down) {
    if (this.refusing) {
      down.destroy();
      return;
    }
    const [host, port] = this.target.split(':');
    const up = net.connect(Number(port), host);
    const pair = { up, down };
    this.pairs.add(pair);
    const end = () => {
      up.destroy();
      down.destroy();
      this.pairs.delete(pair);
    };
    up.on('error', end).on('close', end);
    down.on('error', end).on('close', end);
    down.on('data', (d) => up.write(d));
    up.on('data', (d) => {
      if (!this.holding) {
        down.write(d);
        return;
      }
      this.held += d.toString('latin1');
      for (const w of this.heldWaiters) w();
    });
  }

  refuse() { this.refusing = true; }
  open() { this.refusing = false; }
  hold() { this.holding = true; }

  /** heldMatch resolves with the first match of re in what the node sent while held. */
  heldMatch(re, ms = 10000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.held.match(re);
        if (!m) return;
        clearTimeout(t);
        this.heldWaiters = this.heldWaiters.filter((w) => w !== check);
        resolve(m);
      };
      const t = setTimeout(() => reject(new Error(`the node sent nothing matching ${re} within ${ms} ms`)), ms);
      this.heldWaiters.push(check);
      check();
    });
  }

  cut() {
    this.holding = false;
    for (const { up, down } of this.pairs) {
      up.destroy();
      down.destroy();
    }
    this.pairs.clear();
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(resolve));
  }
}
