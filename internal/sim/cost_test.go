package sim

import (
	"testing"
	"time"

	"github.com/shardchat/shard/router"
)

// simNodes is the cluster size of the tests: issue 14 asks for 64 in
// make test; the sweep to 256 is bench's.
const simNodes = 64

// TestOwnerSendsOneMessagePerDirectMessage: at 64 nodes, a direct message
// whose recipient's location is cached costs at most 1.05 node-to-node
// messages (one forward), where broadcast sends one to every other node.
func TestOwnerSendsOneMessagePerDirectMessage(t *testing.T) {
	owner, err := MeasureCosts(simNodes, router.Owner, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := owner.DirectWarm.Messages; got > 1.05 {
		t.Errorf("owner, warm cache: %.3f node-to-node messages per direct message, want at most 1.05 (%+v)", got, owner.DirectWarm)
	}
	if got := owner.RoomWarm.Messages; got > float64(owner.RoomNodes) {
		t.Errorf("owner, warm cache: %.3f messages per room message, want at most one per node holding a member (%d)", got, owner.RoomNodes)
	}
	broadcast, err := MeasureCosts(simNodes, router.Broadcast, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := broadcast.DirectWarm.Messages; got != simNodes-1 {
		t.Errorf("broadcast: %.3f messages per direct message, want %d (every other node)", got, simNodes-1)
	}
	t.Logf("owner %+v; broadcast direct %.0f", owner, broadcast.DirectWarm.Messages)
}

// TestJoinAndLeaveMoveAboutOneNthAndDirectoriesComeRight: after a join and
// after a leave every directory lists exactly the connections that exist,
// and the change moved the share of the keys consistent hashing promises,
// 1/N, within 20 % (issue 14's goal), and each node reported that it
// re-registered only to the owners given partitions (and, at a join, the
// newcomer to every node), once.
func TestJoinAndLeaveMoveAboutOneNthAndDirectoriesComeRight(t *testing.T) {
	join, leave, err := RingChanges(simNodes, 1)
	if err != nil {
		t.Fatal(err) // RingChanges fails when the directories are not right within its deadline
	}
	// At 64 nodes a join gives partitions to the newcomer alone (about 250
	// reports with the resyncs' answers), a leave to every member (4,096):
	// there the bound is every node telling every other, and only the join
	// checks that the others are not told.
	for name, ch := range map[string]Change{"join": join, "leave": leave} {
		// The members of the larger view, each telling each gainer; at a
		// join the newcomer telling every member; and one report for each
		// resync asked (the newcomer and each member ask the other).
		members := int64(simNodes + 1)
		most := members*int64(ch.Gainers) + members + ch.ByKind["resync"]
		if ch.RingMoved > 1.2*ch.Promise || ch.RingMoved < 0.8*ch.Promise {
			t.Errorf("%s moved %.4f of the keys, want 1/N = %.4f within 20%%", name, ch.RingMoved, ch.Promise)
		}
		if ch.Registers == 0 {
			t.Errorf("%s: no register message sent: %+v", name, ch)
		}
		if n := ch.ByKind["synced"]; n > most || ch.Gainers == 0 {
			t.Errorf("%s: %d synced reports among %d nodes, %d given partitions; want at most %d", name, n, simNodes, ch.Gainers, most)
		}
		t.Logf("%s: %+v", name, ch)
	}
	// One join is one draw: joiners of 32 other names each move 1/N within
	// 20 % too.
	sp, err := JoinSpread(simNodes, 32)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Min < 0.8 || sp.Max > 1.2 {
		t.Errorf("32 joins moved %.2f to %.2f x 1/N of the keys, want each within 20%%", sp.Min, sp.Max)
	}
	t.Logf("32 joins: %+v", sp)
}

// A node that joins and dies before half of the 64 nodes heard of it
// leaves the owners that saw it without the entries of the keys it took
// for a moment; the holders that never saw it must still register those
// with them again, and the directories be right within 2 s (issue 14's
// goal for a change).
func TestJoinSeenByHalfThenCrashLeavesEveryDirectoryRight(t *testing.T) {
	ch, err := Flap(simNodes, 1)
	if err != nil {
		t.Fatal(err) // Flap fails when the directories are not right within its deadline
	}
	if ch.RightMS > 2000 {
		t.Errorf("directories right %.0f ms after the flap, want within 2 s", ch.RightMS)
	}
	t.Logf("flap: %+v", ch)
}

// TestChurnAnswersEverySendOnce: at 64 nodes, nodes join and leave while
// sends flow; every send is answered exactly once, none offline while its
// recipient stayed connected, and the directories are right within 5 s of
// the last change.
func TestChurnAnswersEverySendOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("churn: not in -short")
	}
	ch, err := RunChurn(ChurnConfig{Nodes: simNodes, Changes: 4, Every: 250 * time.Millisecond, Senders: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Sends == 0 || ch.Unanswered != 0 || ch.Twice != 0 || ch.Error != "" {
		t.Errorf("churn: %+v; want every send answered once", ch)
	}
	if ch.OfflineConnected != 0 {
		t.Errorf("%d of %d sends answered offline while their recipient was connected, want none", ch.OfflineConnected, ch.Sends)
	}
	if ch.RightMS > 5000 {
		t.Errorf("directories right %.0f ms after the last change, want within 5 s", ch.RightMS)
	}
	t.Logf("%+v", ch)
}
