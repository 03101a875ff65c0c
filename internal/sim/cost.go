package sim

import (
	"fmt"
	"strconv"

	"github.com/shardchat/shard/protocol"
	"github.com/shardchat/shard/router"
)

// Cost is what one kind of chat message costs the cluster in node-to-node
// traffic, per message sent.
type Cost struct {
	Messages float64            `json:"messages"` // node-to-node requests per chat message
	Bytes    float64            `json:"bytes"`    // requests and replies, with frame headers
	ByKind   map[string]float64 `json:"by_kind"`  // requests per chat message, by kind
}

// Costs is the traffic per direct and per room message of one routing mode.
type Costs struct {
	DirectCold Cost `json:"direct_cold"` // no location cached at the sender's node
	DirectWarm Cost `json:"direct_warm"` // every location cached
	RoomCold   Cost `json:"room_cold"`
	RoomWarm   Cost `json:"room_warm"`
	RoomNodes  int  `json:"room_nodes"` // the nodes a room's members are on
}

// usersPerNode is how many users the cost and ring change scenarios put
// on each node: enough keys that a ring change moves a measurable share.
const usersPerNode = 16

// MeasureCosts starts n nodes routing by mode, connects users to them and
// sends each user one direct message from a user on another node (twice:
// the second time every location is cached) and one message to each room,
// whose members are on roomNodes nodes.
func MeasureCosts(n int, mode router.Mode, roomNodes int, seed uint64) (Costs, error) {
	c := NewCluster(n, mode, seed)
	defer c.Close()
	members := c.Members()
	roomNodes = min(roomNodes, n)
	rooms := n // one room per node, its members on roomNodes consecutive nodes
	for i := range n * usersPerNode {
		node := members[i%n]
		var joined []string
		for r := range rooms {
			// user i is on node i%n; room r spans nodes r .. r+roomNodes-1,
			// one member on each.
			if i/n == 0 && (i%n-r+n)%n < roomNodes {
				joined = append(joined, "room-"+strconv.Itoa(r))
			}
		}
		if err := c.Connect(userName(i), node, joined...); err != nil {
			return Costs{}, err
		}
	}
	out := Costs{RoomNodes: roomNodes}
	users := n * usersPerNode
	direct := func() (Cost, error) {
		return c.measure(users, func(i int) (string, *protocol.Frame) {
			// from the user on the next node to user i
			return userName((i + 1) % users), &protocol.Frame{Type: protocol.TypeSend, To: userName(i), Body: "hello"}
		})
	}
	room := func() (Cost, error) {
		return c.measure(rooms, func(r int) (string, *protocol.Frame) {
			return userName(r), &protocol.Frame{Type: protocol.TypeSend, Room: "room-" + strconv.Itoa(r), Body: "hello"}
		})
	}
	var err error
	if out.DirectCold, err = direct(); err != nil {
		return out, err
	}
	if out.DirectWarm, err = direct(); err != nil {
		return out, err
	}
	if out.RoomCold, err = room(); err != nil {
		return out, err
	}
	if out.RoomWarm, err = room(); err != nil {
		return out, err
	}
	return out, nil
}

func userName(i int) string { return "user-" + strconv.Itoa(i) }

// measure sends count frames one after the other, frame(i) from its user,
// and returns the traffic per frame.
func (c *Cluster) measure(count int, frame func(i int) (string, *protocol.Frame)) (Cost, error) {
	before := c.Net.Traffic()
	for i := range count {
		from, f := frame(i)
		f.ID = "m" + strconv.Itoa(i)
		c.mu.Lock()
		u := c.users[from]
		nd := c.nodes[u.node]
		c.mu.Unlock()
		st := <-u.conn.handle(nd.Router, f)
		if st != protocol.StatusDelivered && st != protocol.StatusSent {
			return Cost{}, fmt.Errorf("%s from %s on %s: answered %s", f.Type, from, u.node, st)
		}
	}
	after := c.Net.Traffic()
	cost := Cost{ByKind: make(map[string]float64)}
	for k, t := range after {
		reqs := float64(t.Requests - before[k].Requests)
		if reqs == 0 {
			continue
		}
		cost.ByKind[k] = reqs / float64(count)
		cost.Messages += reqs / float64(count)
		cost.Bytes += float64(t.Bytes-before[k].Bytes) / float64(count)
	}
	return cost, nil
}
