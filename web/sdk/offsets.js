// Offsets: what a client has received of one stream (its inbox, or a room's
// stream), so that after a reconnect it asks only for what came after
// (sync after, join since) and knows a message it already has.

// Offsets received above a gap that has not filled; past this many the gap
// is given up on. A gap that stays is normal: the copy of a direct message
// this connection sent lands in its own inbox but is not delivered to it,
// and the next sync fills it.
export const MAX_GAP = 1000;

export class Offsets {
  /**
   * saved: {last, hi} from an earlier client, or a bare offset; omitted, the
   * stream has no base yet: the first offset received sets it (a room joined
   * without since: its history before that is not this client's).
   */
  constructor(saved) {
    const v = typeof saved === 'number' ? { last: saved, hi: saved } : saved;
    const ok = (n) => Number.isSafeInteger(n) && n >= 0;
    /** Every offset up to last was received, or is gone from the store. */
    this.last = v && ok(v.last) ? v.last : 0;
    /** The highest offset received. */
    this.hi = v && ok(v.hi) && v.hi >= this.last ? v.hi : this.last;
    this.based = !!v;
    this.above = new Set(); // received beyond a gap
  }

  /** has reports whether offset seq was received already. */
  has(seq) {
    return this.based && (seq <= this.last || this.above.has(seq));
  }

  /** add records that offset seq was received. */
  add(seq) {
    if (seq > this.hi) this.hi = seq;
    if (!this.based) {
      this.based = true;
      this.last = seq - 1;
    }
    if (seq <= this.last) return;
    this.above.add(seq);
    this.advance();
  }

  advance() {
    while (this.above.has(this.last + 1)) this.above.delete(++this.last);
    if (this.above.size > MAX_GAP) {
      this.last = Math.min(...this.above) - 1;
      this.advance();
    }
  }

  /**
   * replayed: a sync page or a join's replay began at offset min and held
   * every message kept from there on, so a gap below min is retention.
   */
  replayed(min) {
    if (min !== Infinity && min > this.last + 1) this.moveTo(min - 1);
  }

  /** moveTo: every offset up to last is accounted for. */
  moveTo(last) {
    if (last <= this.last) return;
    this.last = last;
    if (last > this.hi) this.hi = last;
    for (const seq of this.above) if (seq <= last) this.above.delete(seq);
    this.advance();
  }

  toJSON() {
    return { last: this.last, hi: this.hi };
  }
}
