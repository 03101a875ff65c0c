package protocol

// MaxIDLen bounds user ids, room names, client frame ids and idempotency
// keys (docs/protocol.md §2.2).
const MaxIDLen = 64

// ValidID reports whether s is a well-formed user id, room name or frame id:
// 1 to 64 characters of A-Z a-z 0-9 _ . @ -.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '_', c == '.', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// MaxOffset bounds stream offsets (seq, after, since) to what a JavaScript
// number holds exactly.
const MaxOffset = 1<<53 - 1

// ParseOffset reads an offset written as decimal digits only (no sign,
// fraction or exponent), at most MaxOffset.
func ParseOffset(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' || n > (MaxOffset-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
