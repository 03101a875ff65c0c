package main

import (
	"fmt"
	"strconv"
)

// A workload is split across client processes by users: process k of K owns
// a contiguous slice of the users, of the rooms and of the groups, and its
// rooms and groups hold only its own users. Every message a process sends
// therefore has all its recipients in the same process, which can then
// tell, alone, whether each one arrived. The server cannot tell the
// difference.

// slice is the part of the workload one client process owns.
type slice struct {
	Users     [2]int // global user indexes [from, to)
	Rooms     [2]int // global room indexes [from, to)
	Groups    [2]int // global group indexes [from, to)
	ConnsFrom int    // global index of the first connection
}

// split returns the slice of process k of procs.
func split(users, rooms, groups, connsPerUser, k, procs int) slice {
	part := func(n int) [2]int { return [2]int{k * n / procs, (k + 1) * n / procs} }
	u := part(users)
	return slice{Users: u, Rooms: part(rooms), Groups: part(groups), ConnsFrom: u[0] * connsPerUser}
}

// plan is the static shape of one process's workload: its users, their
// connections, the rooms and which connections joined them, the groups and
// their members, and how each message of the schedule picks its sender and
// its target.
type plan struct {
	runID     string
	seed      uint64
	mix       float64 // fraction of direct messages
	groupMix  float64 // fraction of group messages; the rest go to rooms
	users     []string
	userConns [][]int32 // local connection indexes of each local user
	connUser  []int32   // local user of each local connection
	connFrom  int       // global index of local connection 0
	// nodes is the number of targets, connection g on target g%nodes;
	// remote asks pick for a direct recipient on another target.
	nodes     int
	remote    bool
	rooms     []string
	roomConns [][]int32 // connections that join each room
	connRooms [][]int32 // rooms each connection joins
	groups    []string
	// groupUsers are each group's members (local users), its creator
	// first; groupConns every connection of them.
	groupUsers [][]int32
	groupConns [][]int32
}

func userName(runID string, global int) string  { return "b" + runID + "-u" + strconv.Itoa(global) }
func roomName(runID string, global int) string  { return "b" + runID + "-r" + strconv.Itoa(global) }
func groupName(runID string, global int) string { return "b" + runID + "-g" + strconv.Itoa(global) }

// newPlan lays out slice s of the workload cfg describes: every user has
// cfg.ConnsPerUser connections, and local room j holds cfg.RoomSize
// consecutive local users starting at j*RoomSize (wrapping), with all their
// connections, as a page in each tab would join. Local group j holds
// cfg.GroupSize consecutive local users the same way; every connection of
// a member gets its messages.
func newPlan(cfg workerConfig, s slice) *plan {
	connsPerUser := cfg.ConnsPerUser
	p := &plan{runID: cfg.RunID, seed: cfg.Seed, mix: cfg.Mix, groupMix: cfg.GroupMix, connFrom: s.ConnsFrom, nodes: len(cfg.URLs), remote: cfg.Remote}
	nu := s.Users[1] - s.Users[0]
	for u := 0; u < nu; u++ {
		p.users = append(p.users, userName(cfg.RunID, s.Users[0]+u))
		var cs []int32
		for k := 0; k < connsPerUser; k++ {
			c := int32(len(p.connUser))
			p.connUser = append(p.connUser, int32(u))
			cs = append(cs, c)
		}
		p.userConns = append(p.userConns, cs)
	}
	p.connRooms = make([][]int32, len(p.connUser))
	size := min(cfg.RoomSize, nu)
	for j := 0; j < s.Rooms[1]-s.Rooms[0]; j++ {
		p.rooms = append(p.rooms, roomName(cfg.RunID, s.Rooms[0]+j))
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
	size = min(cfg.GroupSize, nu)
	for j := 0; j < s.Groups[1]-s.Groups[0]; j++ {
		p.groups = append(p.groups, groupName(cfg.RunID, s.Groups[0]+j))
		var us, cs []int32
		for k := 0; k < size; k++ {
			u := (j*size + k) % nu
			us = append(us, int32(u))
			cs = append(cs, p.userConns[u]...)
		}
		p.groupUsers = append(p.groupUsers, us)
		p.groupConns = append(p.groupConns, cs)
	}
	return p
}

// pick is the sender and target of one message: direct, room or group.
type pick struct {
	room  bool
	group bool
	from  int32 // local connection that sends
	to    int32 // local user (direct), local room or local group
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
// uniformly random connection to another uniformly random user; to a group
// with probability groupMix, from a random connection of a random member;
// else to a random room from a random connection that joined it.
func (p *plan) pick(phase uint32, seq int64) pick {
	h := splitmix64(p.seed ^ uint64(phase)<<40 ^ uint64(seq))
	a, b := splitmix64(h), splitmix64(h+1)
	u := float64(h>>11) / (1 << 53)
	direct := (len(p.rooms) == 0 && len(p.groups) == 0) || u < p.mix
	if !direct && len(p.groups) > 0 && (u < p.mix+p.groupMix || len(p.rooms) == 0) {
		g := int32(a % uint64(len(p.groups)))
		members := p.groupConns[g]
		return pick{group: true, from: members[b%uint64(len(members))], to: g}
	}
	if direct {
		from := int32(a % uint64(len(p.connUser)))
		to := int32(b % uint64(len(p.users)))
		if len(p.users) > 1 && to == p.connUser[from] {
			to = (to + 1 + int32(b>>32%uint64(len(p.users)-1))) % int32(len(p.users))
		}
		// With one connection per user (--remote), user u's is connection u.
		for k := 0; p.remote && p.nodes > 1 && k < p.nodes && p.node(to) == p.node(from); k++ {
			to = (to + 1) % int32(len(p.users))
		}
		return pick{from: from, to: to}
	}
	r := int32(a % uint64(len(p.rooms)))
	members := p.roomConns[r]
	return pick{room: true, from: members[b%uint64(len(members))], to: r}
}

// node is the target local connection c is connected to.
func (p *plan) node(c int32) int { return (p.connFrom + int(c)) % p.nodes }

// recipients appends to dst the connections that should receive pk
// (docs/protocol.md §6.3, §12): for a direct message every connection of
// the recipient and the sender's other connections; for a room every joined
// connection but the sending one; for a group every connection of every
// member but the sending one.
func (p *plan) recipients(pk pick, dst []int32) []int32 {
	if pk.group {
		for _, c := range p.groupConns[pk.to] {
			if c != pk.from {
				dst = append(dst, c)
			}
		}
		return dst
	}
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
func checkWorkload(users, connsPerUser, rooms, roomSize, groups, groupSize int, mix, groupMix float64, procs int) error {
	switch {
	case users < 2*procs:
		return fmt.Errorf("--users %d: need at least 2 users per client process (%d processes)", users, procs)
	case connsPerUser < 1:
		return fmt.Errorf("--conns-per-user must be at least 1")
	case mix < 0 || groupMix < 0 || mix+groupMix > 1+1e-9:
		return fmt.Errorf("--mix: %v direct and %v to groups: want fractions that add up to at most 1", mix, groupMix)
	case mix+groupMix < 1-1e-9 && rooms < procs:
		return fmt.Errorf("--rooms %d: room messages (--mix) need at least one room per client process (%d)", rooms, procs)
	case mix+groupMix < 1-1e-9 && roomSize < 2:
		return fmt.Errorf("--room-size %d: a room message needs at least 2 members", roomSize)
	case groupMix > 0 && groups < procs:
		return fmt.Errorf("--groups %d: group messages (--mix) need at least one group per client process (%d)", groups, procs)
	case groupMix > 0 && groupSize < 2:
		return fmt.Errorf("--group-size %d: a group message needs at least 2 members", groupSize)
	}
	return nil
}
