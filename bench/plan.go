package main

import (
	"fmt"
	"strconv"
)

// A workload is split across client processes by users: process k of K owns
// a contiguous slice of the users and of the rooms, and its rooms hold only
// its own users. Every message a process sends therefore has all its
// recipients in the same process, which can then tell, alone, whether each
// one arrived. The server cannot tell the difference.

// slice is the part of the workload one client process owns.
type slice struct {
	Users     [2]int // global user indexes [from, to)
	Rooms     [2]int // global room indexes [from, to)
	ConnsFrom int    // global index of the first connection
}

// split returns the slice of process k of procs.
func split(users, rooms, connsPerUser, k, procs int) slice {
	u0, u1 := k*users/procs, (k+1)*users/procs
	r0, r1 := k*rooms/procs, (k+1)*rooms/procs
	return slice{Users: [2]int{u0, u1}, Rooms: [2]int{r0, r1}, ConnsFrom: u0 * connsPerUser}
}

// plan is the static shape of one process's workload: its users, their
// connections, the rooms and which connections joined them, and how each
// message of the schedule picks its sender and its target.
type plan struct {
	runID     string
	seed      uint64
	mix       float64 // fraction of direct messages
	users     []string
	userConns [][]int32 // local connection indexes of each local user
	connUser  []int32   // local user of each local connection
	connFrom  int       // global index of local connection 0
	rooms     []string
	roomConns [][]int32 // connections that join each room
	connRooms [][]int32 // rooms each connection joins
}

func userName(runID string, global int) string { return "b" + runID + "-u" + strconv.Itoa(global) }
func roomName(runID string, global int) string { return "b" + runID + "-r" + strconv.Itoa(global) }

// newPlan lays out slice s: every user has connsPerUser connections, and
// local room j holds roomSize consecutive local users starting at
// j*roomSize (wrapping), with all their connections, as a page in each tab
// would join.
func newPlan(runID string, seed uint64, mix float64, s slice, connsPerUser, roomSize int) *plan {
	p := &plan{runID: runID, seed: seed, mix: mix, connFrom: s.ConnsFrom}
	nu := s.Users[1] - s.Users[0]
	for u := 0; u < nu; u++ {
		p.users = append(p.users, userName(runID, s.Users[0]+u))
		var cs []int32
		for k := 0; k < connsPerUser; k++ {
			c := int32(len(p.connUser))
			p.connUser = append(p.connUser, int32(u))
			cs = append(cs, c)
		}
		p.userConns = append(p.userConns, cs)
	}
	p.connRooms = make([][]int32, len(p.connUser))
	size := min(roomSize, nu)
	for j := 0; j < s.Rooms[1]-s.Rooms[0]; j++ {
		p.rooms = append(p.rooms, roomName(runID, s.Rooms[0]+j))
		var cs []int32
		for k := 0; k < size; k++ {
			u := (j*size + k) % nu
			for _, c := range p.userConns[u] {
				cs = append(cs, c)
				p.connRooms[c] = append(p.connRooms[c], int32(j))
			}
		}
		p.roomConns = append(p.roomConns, cs)
	}
	return p
}

// pick is the sender and target of one message.
type pick struct {
	room bool
	from int32 // local connection that sends
	to   int32 // local user (direct) or local room
}

// splitmix64 is a fast, well-mixed hash: it turns (seed, phase, seq) into
// the random choices of one message, so that a message's pick is a pure
// function of its number and needs no shared generator.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// pick chooses message seq of phase: direct with probability mix, from a
// uniformly random connection to another uniformly random user; else to a
// random room from a random connection that joined it.
func (p *plan) pick(phase uint32, seq int64) pick {
	h := splitmix64(p.seed ^ uint64(phase)<<40 ^ uint64(seq))
	a, b := splitmix64(h), splitmix64(h+1)
	direct := len(p.rooms) == 0 || float64(h>>11)/(1<<53) < p.mix
	if direct {
		from := int32(a % uint64(len(p.connUser)))
		to := int32(b % uint64(len(p.users)))
		if len(p.users) > 1 && to == p.connUser[from] {
			to = (to + 1 + int32(b>>32%uint64(len(p.users)-1))) % int32(len(p.users))
		}
		return pick{from: from, to: to}
	}
	r := int32(a % uint64(len(p.rooms)))
	members := p.roomConns[r]
	return pick{room: true, from: members[b%uint64(len(members))], to: r}
}

// recipients appends to dst the connections that should receive pk
// (docs/protocol.md §6.3): for a direct message every connection of the
// recipient and the sender's other connections; for a room every joined
// connection but the sending one.
func (p *plan) recipients(pk pick, dst []int32) []int32 {
	if pk.room {
		for _, c := range p.roomConns[pk.to] {
			if c != pk.from {
				dst = append(dst, c)
			}
		}
		return dst
	}
	dst = append(dst, p.userConns[pk.to]...)
	// pick never makes a user write to itself (there are always 2 users).
	for _, c := range p.userConns[p.connUser[pk.from]] {
		if c != pk.from {
			dst = append(dst, c)
		}
	}
	return dst
}

// The body of every message carries what the receiver needs to account for
// it without asking anyone: "<phase>.<seq>.<intended send time in ns>." and
// padding up to the requested size. The intended time is an offset from the
// phase's start on the sending process's monotonic clock; sender and
// receivers live in the same process (see slice).

// bodyHeaderMax bounds the header: three uint64s in decimal and three dots.
const bodyHeaderMax = 3*20 + 3

// appendBody appends the body of message seq, padded with 'x' to size bytes
// (longer when the header alone is longer).
func appendBody(b []byte, phase uint32, seq int64, intendedNs int64, size int) []byte {
	start := len(b)
	b = strconv.AppendUint(b, uint64(phase), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, intendedNs, 10)
	b = append(b, '.')
	for len(b)-start < size {
		b = append(b, 'x')
	}
	return b
}

// parseBody reads the header of a body made by appendBody; ok is false for
// any other body (a message not sent by this bench).
func parseBody(s string) (phase uint32, seq int64, intendedNs int64, ok bool) {
	var v [3]uint64
	i := 0
	for f := 0; f < 3; f++ {
		start := i
		var n uint64
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			if i-start >= 19 {
				return 0, 0, 0, false
			}
			n = n*10 + uint64(s[i]-'0')
			i++
		}
		if i == start || i >= len(s) || s[i] != '.' {
			return 0, 0, 0, false
		}
		i++
		v[f] = n
	}
	if v[0] > 1<<32-1 {
		return 0, 0, 0, false
	}
	return uint32(v[0]), int64(v[1]), int64(v[2]), true
}

// checkWorkload validates the global workload shape for procs processes.
func checkWorkload(users, connsPerUser, rooms, roomSize int, mix float64, procs int) error {
	switch {
	case users < 2*procs:
		return fmt.Errorf("--users %d: need at least 2 users per client process (%d processes)", users, procs)
	case connsPerUser < 1:
		return fmt.Errorf("--conns-per-user must be at least 1")
	case mix < 0 || mix > 1:
		return fmt.Errorf("--mix %v: want a fraction of direct messages in [0, 1]", mix)
	case mix < 1 && rooms < procs:
		return fmt.Errorf("--rooms %d: room messages (--mix %v) need at least one room per client process (%d)", rooms, mix, procs)
	case mix < 1 && roomSize < 2:
		return fmt.Errorf("--room-size %d: a room message needs at least 2 members", roomSize)
	}
	return nil
}
