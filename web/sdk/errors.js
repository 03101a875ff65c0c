// The errors a shard client's promises reject with: the server's refusals
// (ShardError, HandshakeError, with their SPEC codes) and the client's own
// (ClosedError, FrameTooLargeError, QueueFullError), each with a `code` to
// test rather than its message.

/** An `error` frame: the server refused the request. `code` is SPEC's. */
export class ShardError extends Error {
  constructor(frame) {
    super(`${frame.code}: ${frame.message}`);
    this.name = 'ShardError';
    /** bad_request, not_member, rate_limited, unavailable, forbidden, conflict, ... */
    this.code = String(frame.code);
    /** The id of the refused frame; undefined when its id was malformed. */
    this.id = frame.id;
    this.frame = frame;
  }
}

/**
 * The connection ended before the answer came, or the client is closed.
 * Whether the server acted on the request is unknown: a send that could not
 * be resent, or whose resend was refused, may have been stored.
 */
export class ClosedError extends Error {
  constructor(detail) {
    super(detail ? `connection closed (${detail})` : 'connection closed');
    this.name = 'ClosedError';
    this.code = 'closed';
  }
}

/**
 * A frame larger than the node takes (its welcome's max_frame): it was not
 * sent, and the connection stays, where the node would have closed it (1009).
 */
export class FrameTooLargeError extends Error {
  constructor(size, limit, node) {
    super(`frame too large for the node: ${size} bytes, ${node || 'the node'} takes at most ${limit}`);
    this.name = 'FrameTooLargeError';
    this.code = 'frame_too_large';
    this.size = size;
    this.limit = limit;
  }
}

/** Too many requests wait for a connection or an answer: nothing was sent. */
export class QueueFullError extends Error {
  constructor(limit) {
    super(`too many requests waiting: ${limit} already wait for a connection or an answer`);
    this.name = 'QueueFullError';
    this.code = 'queue_full';
    this.limit = limit;
  }
}

/**
 * A refused upgrade (SPEC section 3): the HTTP status and the SPEC error of
 * its JSON body. A browser does not show a WebSocket's HTTP answer, so the
 * client learns it by asking the same URL once without the upgrade.
 */
export class HandshakeError extends Error {
  constructor(status, code, message) {
    super(`upgrade refused: ${status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}`);
    this.name = 'HandshakeError';
    this.status = status;
    this.code = code || '';
    this.detail = message || '';
  }

  /**
   * Whether asking again cannot help: a malformed user (400), a bad token
   * (401) or a refused origin (403). 503 (draining, not joined, full) passes.
   */
  get final() {
    return this.status === 400 || this.status === 401 || this.status === 403;
  }
}
