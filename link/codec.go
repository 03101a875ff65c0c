package link

import "encoding/binary"

// Payload fields are uvarints and uvarint-length-prefixed byte strings. The
// link's hello uses them, and so do the router's payloads.

// Decoder reads fields from a payload; the first error sticks, so a caller
// checks once, at the end, with Done.
type Decoder struct {
	b   []byte
	err error
}

// NewDecoder reads p.
func NewDecoder(p []byte) Decoder { return Decoder{b: p} }

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = ErrMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = ErrMalformed
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// Bytes reads a length-prefixed byte string. It shares memory with the
// payload.
func (d *Decoder) Bytes() []byte {
	n := d.Uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = ErrMalformed
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// String reads a length-prefixed string.
func (d *Decoder) String() string { return string(d.Bytes()) }

// Count reads a list length and refuses one that cannot fit in what is
// left (every element takes at least a byte), so that a hostile peer cannot
// make us allocate for a huge list.
func (d *Decoder) Count() int {
	n := d.Uvarint()
	if n > uint64(len(d.b)) {
		d.err = ErrMalformed
		return 0
	}
	return int(n)
}

// More reports whether bytes are left: a field added at the end of a
// payload is optional, so a node can read what an older one sends.
func (d *Decoder) More() bool { return len(d.b) != 0 }

// Err is the first error so far, without the check for bytes left over.
func (d *Decoder) Err() error { return d.err }

// Fail marks the payload malformed, for a field the caller found wrong.
func (d *Decoder) Fail() { d.err = ErrMalformed }

// Done reports the first error, or ErrMalformed when bytes are left over.
func (d *Decoder) Done() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = ErrMalformed
	}
	return d.err
}

// AppendBytes appends a length-prefixed byte string.
func AppendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// AppendString appends a length-prefixed string.
func AppendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
