// Type declarations of @shard/client (shard.js). Frames follow SPEC.md:
// sections 3-5, the history additions, 8 (groups, read state,
// conversations, receipts) and 9 (typing, presence).

/** A WebSocket constructor: the browser's, or the ws package's in Node.js. */
export type WebSocketConstructor = new (url: string) => {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
};

/** What the client has received of one stream: every offset up to last; the highest, hi. */
export interface StreamOffsets {
  last: number;
  hi: number;
}

/** Offsets to start from, as offsets() returned them (a bare number is {last: n, hi: n}). */
export interface SavedOffsets {
  inbox?: StreamOffsets | number | null;
  rooms?: Record<string, StreamOffsets | number>;
  groups?: Record<string, StreamOffsets | number>;
}

export interface ClientOptions {
  /** The WebSocket endpoint(s), e.g. "ws://127.0.0.1:8080/ws"; reconnects try them in turn. Relative URLs resolve against the page. */
  url: string | string[];
  /** The user id, sent as ?user= to a node in development mode (no --auth-secret). */
  user?: string;
  /** A JWT (HS256, sub = user id), sent as ?token=; wins over user. */
  token?: string;
  /** Default: globalThis.WebSocket. In Node.js 20 pass the ws package's default export. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect after every close not asked for, with backoff, until close(). Default false: one connection. */
  reconnect?: boolean;
  /** Full-jitter backoff in ms: before retry n, a uniform wait in [0, min(backoffMax, backoffMin * 2^n)]. Defaults 100 and 5000. */
  backoffMin?: number;
  backoffMax?: number;
  /** A connection up this long (ms) starts the backoff over. Default 3000. */
  stableAfter?: number;
  /** Longest wait (ms) for the upgrade and the welcome. Default 10000. */
  connectTimeout?: number;
  /** Application ping period (ms); 0 disables. Default 20000, below the node's 25 s --ping-interval. */
  pingInterval?: number;
  /** No pong within this long (ms) gives the connection up. Default 10000. */
  pongTimeout?: number;
  /** Sync the inbox page by page after every welcome from a node that keeps messages, from offsets.inbox (0: all that is kept). Default true. */
  syncInbox?: boolean;
  /** Sync, after every welcome from a node that keeps messages, each group whose stream the client has seen (a message, a change, an ack, a syncGroup), from the last offset seen. Default true. */
  syncGroups?: boolean;
  /** Where the streams start: offsets() of an earlier client, or a function of the user (known at the first welcome). */
  offsets?: SavedOffsets | ((user: string) => SavedOffsets | null | undefined);
  /** Requests waiting for a connection or an answer, at most; past it QueueFullError. Default 1024. */
  maxQueue?: number;
  /** Ask a URL whose upgrade failed once more without the upgrade, to learn a refusal's status and code. Default true. */
  probe?: boolean;
  /** The fetch the probe uses. Default globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
}

export interface Welcome {
  type: 'welcome';
  user: string;
  /** The node's --name. */
  node: string;
  /** The node keeps messages: sync, join since and resends work. */
  store: boolean;
  /** The node's --max-frame in bytes: a larger frame is refused before it is sent. */
  max_frame: number;
}

/** A message: direct (to), room, or group; with a store, seq is its offset in the stream it was read from. */
export interface Message {
  mid: string;
  from: string;
  to?: string;
  room?: string;
  group?: string;
  body?: string;
  /** Milliseconds since the epoch, stamped by the sender's node. */
  ts: number;
  seq?: number;
  /** A group's membership change: created, added, removed, left (SPEC section 8). */
  event?: 'created' | 'added' | 'removed' | 'left';
  /** The member an event names (added, removed, left). */
  user?: string;
  /** On a left event: who became admin because the last admin left. */
  admin?: string;
  /** It came from a sync page or a join's replay, not live. */
  history: boolean;
}

export interface Conversation {
  /** A direct conversation: the peer. */
  with?: string;
  group?: string;
  /** The newest offset in it: of this user's inbox (direct), of the group's stream. */
  last: number;
  /** This user's read offset in it. */
  read: number;
  /** Messages and events of others after read: every device of the user agrees on it. */
  unread: number;
  /** The time of the newest message, ms since the epoch. */
  ts: number;
  /** Direct: how far the peer has read this user's messages, an offset in this user's inbox (the newest receipt it sent); absent while it has read none. */
  peer_read?: number;
  /** A group this user is an admin of. */
  admin?: boolean;
}

export interface GroupMember {
  user: string;
  admin: boolean;
  /** When it was added, ms since the epoch. */
  since: number;
}

/** An ack frame; which fields are set depends on the request. */
export interface Ack {
  type: 'ack';
  id: string;
  status: 'delivered' | 'offline' | 'stored' | 'sent' | 'ok';
  recipients?: number;
  /** The message's offset: the recipient's inbox (direct), the room's or the group's stream; a group change's event. */
  seq?: number;
  /** A direct send: the offset of the sender's own copy in its inbox, which the peer's receipts name. */
  sender_seq?: number;
  mid?: string;
  /** A sync page: the newest offset, and whether more follow. */
  last?: number;
  more?: boolean;
  conversations?: Conversation[];
  members?: GroupMember[];
}

export interface Pong {
  type: 'pong';
  id: string;
}

/**
 * by has read up to seq. Direct, by another user: with is by, and seq an
 * offset in this user's own inbox (an ack's sender_seq). Direct, by this
 * user on another device: with is the peer, seq an offset in this user's
 * inbox. A group: seq is an offset in the group's stream.
 */
export interface Receipt {
  by: string;
  with?: string;
  group?: string;
  seq: number;
}

export interface Typing {
  from: string;
  to?: string;
  room?: string;
  group?: string;
}

export interface Presence {
  user: string;
  online: boolean;
  last_seen: number;
}

export interface Disconnected {
  /** The close code: 1012 from a draining node, 1008 slow consumer, 1009 frame too large, 1006 no close frame, 1000 after disconnect(). */
  code: number;
  reason: string;
  node: string;
}

export interface Reconnecting {
  /** 1 for the first retry since the backoff started over. */
  attempt: number;
  /** The jittered wait (ms) before this attempt. */
  delay: number;
  /** Why the attempt before failed. */
  error?: Error;
}

export interface ClientEvents {
  /** A connection's welcome, before its catch-up. */
  welcome: Welcome;
  /** A connection is ready: rooms joined again, watches sent again, the inbox and the groups synced; waiting requests have gone out. */
  connected: Welcome;
  disconnected: Disconnected;
  reconnecting: Reconnecting;
  message: Message;
  receipt: Receipt;
  typing: Typing;
  presence: Presence;
  /** A room that could not be joined again after a reconnect, for good: it is forgotten. */
  rejoinfailed: { room: string; error: ShardError };
  /** A group that could not be synced after a reconnect, for good (not_member: removed, or gone): it is forgotten. */
  syncfailed: { group: string; error: ShardError };
  /** An error frame that answers nothing this client sent, or a catch-up step that failed for good. */
  error: ShardError;
  /** The client stopped for good: close(), a refusal for good, or the end of its one connection without reconnect. */
  closed: { error?: Error };
}

export interface RequestOptions {
  /** Stops waiting: the promise rejects with signal.reason. A frame already sent stays sent. */
  signal?: AbortSignal;
}

export interface SendOptions extends RequestOptions {
  /** The idempotency key (1 to 64 of A-Z a-z 0-9 _ . @ -); default a random one. The same key within 5 minutes is stored once. */
  key?: string;
}

export interface JoinOptions extends RequestOptions {
  /** The room's messages after this offset come first. Default: the last offset seen of the room, with a store. */
  since?: number;
}

export type Target = { to: string } | { room: string } | { group: string };

export class Client {
  constructor(options: ClientOptions);
  readonly state: 'idle' | 'connecting' | 'connected' | 'closed';
  readonly welcome: Welcome | null;
  readonly user: string | undefined;
  readonly rooms: string[];
  readonly watched: string[];
  /** Groups whose stream the client has seen, which a reconnect syncs. */
  readonly groups: string[];

  on<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(type: K, fn: (ev: ClientEvents[K]) => void): void;

  /** Resolves with the welcome once the connection is ready. With reconnect it retries until then, but for a refusal for good. */
  connect(): Promise<Welcome>;
  /** Closes the connection and stops reconnecting until connect(); rooms, offsets and waiting requests stay. */
  disconnect(): void;
  /** Closes for good: every request waiting or pending rejects with ClosedError. */
  close(): Promise<void>;
  /** Cuts the backoff wait under way short. */
  reconnectNow(): void;

  /** Any client frame; resolves with its ack or pong, rejects with a ShardError. Never sent again. */
  request(frame: { type: string; id?: string; [field: string]: unknown }, opts?: RequestOptions): Promise<Ack | Pong>;
  send(to: string, body: string, opts?: SendOptions): Promise<Ack>;
  sendRoom(room: string, body: string, opts?: SendOptions): Promise<Ack>;
  sendGroup(group: string, body: string, opts?: SendOptions): Promise<Ack>;
  join(room: string, opts?: JoinOptions): Promise<Ack>;
  leave(room: string, opts?: RequestOptions): Promise<Ack>;
  ping(opts?: RequestOptions): Promise<Pong>;
  /** One page (at most 100) of the inbox after offset after; its messages come as events before the ack. */
  sync(after?: number, opts?: RequestOptions): Promise<Ack>;

  /** Creates group with this user as admin; ack ok with the created event's seq. An existing group: ShardError conflict. */
  createGroup(group: string, members?: Iterable<string>, opts?: RequestOptions): Promise<Ack>;
  /** An admin adds user (ok, with the event's seq; a member already: ok without); a non-admin: forbidden. */
  addToGroup(group: string, user: string, opts?: RequestOptions): Promise<Ack>;
  removeFromGroup(group: string, user: string, opts?: RequestOptions): Promise<Ack>;
  /** This user leaves; the client stops syncing the group. */
  leaveGroup(group: string, opts?: RequestOptions): Promise<Ack>;
  /** The group's members and admins, by user id; not_member for anyone else. */
  groupMembers(group: string, opts?: RequestOptions): Promise<GroupMember[]>;
  /** One page of the group's stream after offset after, as sync; the first one is where the client starts following the group. */
  syncGroup(group: string, after?: number, opts?: RequestOptions): Promise<Ack>;
  /** This user has read up to seq: of its inbox (with), of the group's stream (group). A lower seq changes nothing. */
  read(target: { with: string } | { group: string }, seq: number, opts?: RequestOptions): Promise<Ack>;
  conversations(opts?: RequestOptions): Promise<Conversation[]>;

  typing(target: Target, opts?: RequestOptions): Promise<Ack>;
  watch(users: Iterable<string>, opts?: RequestOptions): Promise<Ack>;
  unwatch(users: Iterable<string>, opts?: RequestOptions): Promise<Ack>;

  /** What the client has received of its inbox, rooms and groups, for options.offsets of a later client. */
  offsets(): { inbox: StreamOffsets | null; rooms: Record<string, StreamOffsets>; groups: Record<string, StreamOffsets> };
}

/** The server refused the request; code is SPEC's (bad_request, not_member, rate_limited, unavailable, forbidden, conflict, ...). */
export class ShardError extends Error {
  readonly code: string;
  readonly id?: string;
  readonly frame: { type: 'error'; id?: string; code: string; message: string };
}

/** The connection ended before the answer, or the client is closed: whether the server acted on it is unknown. */
export class ClosedError extends Error {
  readonly code: 'closed';
}

/** Larger than the node's max_frame: not sent; the connection stays. */
export class FrameTooLargeError extends Error {
  readonly code: 'frame_too_large';
  readonly size: number;
  readonly limit: number;
}

export class QueueFullError extends Error {
  readonly code: 'queue_full';
  readonly limit: number;
}

/** A refused upgrade: the HTTP status and the SPEC error of its body. */
export class HandshakeError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  /** 400, 401 or 403: asking again cannot help. */
  readonly final: boolean;
}

/** A random idempotency key, for a send the application may send again itself with the same key. */
export function newKey(): string;

/** Whether s is a well-formed user id, room or group name, or frame id. */
export function validId(s: unknown): s is string;
