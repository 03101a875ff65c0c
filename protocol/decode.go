package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Frame is one decoded client frame. Its strings may share memory with the
// payload it was decoded from, which must therefore never be modified.
type Frame struct {
	Type  string
	ID    string
	To    string
	Room  string
	Group string // send, sync, the group frames, read
	User  string // group_add, group_remove: the member
	With  string // read: the peer of a direct conversation
	Body  string
	Key   string // send: idempotency key, optional
	// List is a list of ids as its JSON text (group_create: members),
	// validated: at most MaxListLen well-formed ids. Items decodes it; the
	// frame stays comparable and decoding it allocates nothing.
	List string
	// Users is, the same way, the users of a watch or unwatch: 1 to
	// MaxListLen ids. UserItems decodes it.
	Users string
	// After (sync) and Since (join) are stream offsets; HasSince tells a
	// join that asks for a replay from one that does not.
	After    int64
	Since    int64
	HasSince bool
	Seq      int64 // read: the offset read up to
}

// MaxListLen bounds a list of ids in one frame: the members of one
// group_create (SPEC 8: at most 1000), the users of one watch or unwatch
// (--max-watch's default, so that the default's worth fits one
// frame; a longer list goes in several).
const MaxListLen = 1000

// Items returns the ids of f.List, in order.
func (f *Frame) Items() []string { return listItems(f.List) }

// UserItems returns the ids of f.Users, in order.
func (f *Frame) UserItems() []string { return listItems(f.Users) }

// listItems returns the ids of a list checkList accepted.
func listItems(s string) []string {
	if s == "" {
		return nil
	}
	var items []string
	for i := skipSpace(s, 1); s[i] != ']'; {
		var v string
		v, i = readString(s, i)
		items = append(items, v)
		if i = skipSpace(s, i); s[i] == ',' {
			i = skipSpace(s, i+1)
		}
	}
	return items
}

// FrameError says why a client frame was refused. ID is set when the frame
// carried a well-formed id, so that the error can be matched by the client.
type FrameError struct {
	ID      string
	Code    string
	Message string
}

func (e *FrameError) Error() string { return e.Code + ": " + e.Message }

// field presence bits, so that `"to":""` (malformed) differs from no `to`.
const (
	hasType = 1 << iota
	hasID
	hasTo
	hasRoom
	hasBody
	hasKey
	hasAfter
	hasSince
	hasGroup
	hasUser
	hasWith
	hasList
	hasSeq
	hasUsers
)

const idRule = " must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -"

// DecodeFrame parses and validates one client frame. Validation comes before
// anything else: a frame that decodes is well-formed for its type.
//
// The payload must not be modified afterwards: the returned strings point
// into it, which saves an allocation per field on the hot path.
func DecodeFrame(p []byte) (Frame, *FrameError) {
	var f Frame
	if !json.Valid(p) {
		return f, &FrameError{Code: CodeBadRequest, Message: "frame is not valid JSON"}
	}
	s := unsafe.String(unsafe.SliceData(p), len(p))
	seen, bad := scanObject(s, &f)
	if bad == "" && !utf8.Valid(p) {
		// Checked after the scan, so that a well-formed id is echoed.
		bad = "frame is not valid UTF-8"
	}
	if bad != "" {
		e := &FrameError{Code: CodeBadRequest, Message: bad}
		if seen&hasID != 0 && ValidID(f.ID) {
			e.ID = f.ID
		}
		return f, e
	}
	if seen&hasID != 0 && !ValidID(f.ID) {
		return f, &FrameError{Code: CodeBadRequest, Message: "id" + idRule}
	}
	fail := func(msg string) (Frame, *FrameError) {
		return f, &FrameError{ID: f.ID, Code: CodeBadRequest, Message: msg}
	}
	switch f.Type {
	case TypeSend:
		if msg := oneTarget(&f, seen); msg != "" {
			return fail(msg)
		}
		if f.Body == "" {
			return fail("body must be a non-empty string")
		}
		if seen&hasKey != 0 && !ValidID(f.Key) {
			return fail("key" + idRule)
		}
	case TypeJoin, TypeLeave:
		if seen&hasRoom == 0 || !ValidID(f.Room) {
			return fail("room" + idRule)
		}
		f.HasSince = f.Type == TypeJoin && seen&hasSince != 0
	case TypeSync:
		if seen&hasGroup != 0 && !ValidID(f.Group) {
			return fail("group" + idRule)
		}
	case TypePing, TypeConversations:
	case TypeGroupCreate, TypeGroupAdd, TypeGroupRemove, TypeGroupLeave:
		if seen&hasGroup == 0 || !ValidID(f.Group) {
			return fail("group" + idRule)
		}
		if f.Type == TypeGroupCreate && seen&hasList != 0 {
			if msg := checkList(f.List); msg != "" {
				return fail("members" + msg)
			}
		}
		needUser := f.Type == TypeGroupAdd || f.Type == TypeGroupRemove
		if needUser && (seen&hasUser == 0 || !ValidID(f.User)) {
			return fail("user" + idRule)
		}
	case TypeTyping:
		if msg := oneTarget(&f, seen); msg != "" {
			return fail(msg)
		}
	case TypeWatch, TypeUnwatch:
		if seen&hasUsers == 0 {
			return fail("users must be a non-empty list of ids")
		}
		if msg := checkList(f.Users); msg != "" {
			return fail("users" + msg)
		}
		if f.Users[skipSpace(f.Users, 1)] == ']' { // a list, checked just now
			return fail("users must be a non-empty list of ids")
		}
	case TypeRead:
		switch seen & (hasWith | hasGroup) {
		case hasWith:
			if !ValidID(f.With) {
				return fail("with" + idRule)
			}
		case hasGroup:
			if !ValidID(f.Group) {
				return fail("group" + idRule)
			}
		default:
			return fail("read names exactly one of with and group")
		}
		if seen&hasSeq == 0 {
			return fail("seq must be a non-negative integer")
		}
	case "":
		return fail("type is missing")
	default:
		return fail("unknown type " + strconv.Quote(f.Type))
	}
	if f.Type != TypeGroupCreate {
		f.List = "" // an unknown field of this type, skipped like any other
	}
	if f.Type != TypeWatch && f.Type != TypeUnwatch {
		f.Users = ""
	}
	return f, nil
}

// oneTarget says why f, a send or a typing, does not name exactly one
// well-formed recipient of to, room and group, or "" when it does.
func oneTarget(f *Frame, seen int) string {
	var name, v string
	switch seen & (hasTo | hasRoom | hasGroup) {
	case hasTo:
		name, v = "to", f.To
	case hasRoom:
		name, v = "room", f.Room
	case hasGroup:
		name, v = "group", f.Group
	default:
		return f.Type + " names exactly one of to, room and group"
	}
	if !ValidID(v) {
		return name + idRule
	}
	return ""
}

// scanObject reads the known string fields of a JSON object that json.Valid
// has already accepted, so it only has to find boundaries, not check syntax.
// Unknown fields are skipped: clients may send more than this server knows.
func scanObject(s string, f *Frame) (seen int, bad string) {
	i := skipSpace(s, 0)
	if s[i] != '{' {
		return 0, "frame must be a JSON object"
	}
	i++
	for {
		i = skipSpace(s, i)
		if s[i] == '}' {
			return seen, bad
		}
		if s[i] == ',' {
			i = skipSpace(s, i+1)
		}
		key, next := readString(s, i)
		i = skipSpace(s, next)
		i = skipSpace(s, i+1) // the colon
		var dst *string
		var bit int
		switch key {
		case "type":
			dst, bit = &f.Type, hasType
		case "id":
			dst, bit = &f.ID, hasID
		case "to":
			dst, bit = &f.To, hasTo
		case "room":
			dst, bit = &f.Room, hasRoom
		case "body":
			dst, bit = &f.Body, hasBody
		case "key":
			dst, bit = &f.Key, hasKey
		case "group":
			dst, bit = &f.Group, hasGroup
		case "user":
			dst, bit = &f.User, hasUser
		case "with":
			dst, bit = &f.With, hasWith
		case "members":
			end := skipValue(s, i)
			f.List, seen = s[i:end], seen|hasList
			i = end
			continue
		case "users":
			end := skipValue(s, i)
			f.Users, seen = s[i:end], seen|hasUsers
			i = end
			continue
		case "after", "since", "seq":
			n, next, ok := readOffset(s, i)
			i = next
			if !ok {
				if bad == "" {
					bad = key + " must be a non-negative integer"
				}
				continue
			}
			switch key {
			case "after":
				f.After, seen = n, seen|hasAfter
			case "since":
				f.Since, seen = n, seen|hasSince
			default:
				f.Seq, seen = n, seen|hasSeq
			}
			continue
		}
		if dst == nil {
			i = skipValue(s, i)
			continue
		}
		if s[i] != '"' {
			// Keep scanning so that a well-formed id can still be echoed.
			if bad == "" {
				bad = key + " must be a string"
			}
			i = skipValue(s, i)
			continue
		}
		*dst, i = readString(s, i)
		seen |= bit
	}
}

// checkList says why the JSON value s (valid JSON already) is not a list of
// at most MaxListLen well-formed ids, or "" when it is one.
func checkList(s string) string {
	if s[0] != '[' {
		return " must be a list of ids"
	}
	n := 0
	for j := skipSpace(s, 1); s[j] != ']'; {
		if s[j] != '"' {
			return " must be a list of ids"
		}
		var v string
		v, j = readString(s, j)
		if !ValidID(v) {
			return " must be ids of 1 to 64 characters of A-Z a-z 0-9 _ . @ -"
		}
		if n++; n > MaxListLen {
			return " lists more than " + strconv.Itoa(MaxListLen) + " ids"
		}
		if j = skipSpace(s, j); s[j] == ',' {
			j = skipSpace(s, j+1)
		}
	}
	return ""
}

// readOffset reads a non-negative integer at s[i]; anything else (a
// string, a fraction, an exponent, a sign) is refused but skipped.
func readOffset(s string, i int) (int64, int, bool) {
	end := skipValue(s, i)
	n, ok := ParseOffset(s[i:end])
	return n, end, ok
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at s[i].
func skipValue(s string, i int) int {
	switch s[i] {
	case '"':
		_, i = readString(s, i)
		return i
	case '{', '[':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				_, i = readString(s, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(s) && s[i] != ',' && s[i] != '}' && s[i] != ']' &&
			s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
			i++
		}
		return i
	}
}

// readString decodes the JSON string starting at s[i] (a quote) and returns
// it with the index past its closing quote. Without escapes it returns a
// substring of s and allocates nothing.
func readString(s string, i int) (string, int) {
	start := i + 1
	j := start
	for j < len(s) && s[j] != '"' && s[j] != '\\' {
		j++
	}
	if j < len(s) && s[j] == '"' {
		return s[start:j], j + 1
	}
	buf := make([]byte, 0, j-start+16)
	buf = append(buf, s[start:j]...)
	for j < len(s) {
		c := s[j]
		if c == '"' {
			return string(buf), j + 1
		}
		if c != '\\' {
			buf = append(buf, c)
			j++
			continue
		}
		j++
		switch s[j] {
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r := hex4(s[j+1 : j+5])
			j += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if j+6 < len(s) && s[j+1] == '\\' && s[j+2] == 'u' {
					r2 = hex4(s[j+3 : j+7])
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
					j += 6
				} else {
					r = utf8.RuneError
				}
			}
			buf = utf8.AppendRune(buf, r)
		default: // '"', '\\', '/'
			buf = append(buf, s[j])
		}
		j++
	}
	return string(buf), j
}

func hex4(s string) rune {
	var r rune
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		default:
			c = c - 'A' + 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
