// Package protocol holds what both ends of a client connection must agree on
// byte for byte: the syntax of ids. It imports nothing and does nothing else.
package protocol

// MaxIDLen bounds user ids, room names and client frame ids (SPEC section 3).
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
