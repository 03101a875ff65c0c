package protocol

import (
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "Bob_1.x@y-z", strings.Repeat("a", 64)} {
		if !ValidID(ok) {
			t.Errorf("ValidID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", 65), "a b", "é", "a/b", "a\x00"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}
