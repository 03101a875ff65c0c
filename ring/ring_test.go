package ring

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/buraksezer/consistent"
)

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%d", i)
	}
	return ks
}

func mustNew(t testing.TB, members ...string) *Ring {
	t.Helper()
	r, err := New(members)
	if err != nil {
		t.Fatalf("New(%q): %v", members, err)
	}
	return r
}

func TestSameMembersGiveSameOwnersInAnyOrder(t *testing.T) {
	a := mustNew(t, "n1", "n2", "n3", "n4", "n5")
	b := mustNew(t, "n4", "n2", "n5", "n1", "n3")
	if a.Version() != b.Version() {
		t.Fatalf("versions differ for the same set: %s vs %s", a.Version(), b.Version())
	}
	for _, k := range keys(10_000) {
		if oa, ob := a.Owner(k), b.Owner(k); oa != ob {
			t.Fatalf("key %q: owner %q on one node, %q on another: messages would be misrouted", k, oa, ob)
		}
	}
}

func TestVersionChangesWithMembers(t *testing.T) {
	base := mustNew(t, "a", "b", "c")
	for _, other := range [][]string{
		{"a", "b"},           // one left
		{"a", "b", "c", "d"}, // one joined
		{"a", "b", "x"},      // one replaced
		{},                   // all left
		{"A", "B", "C"},      // names are case-sensitive
		{"ab", "c"},          // the same bytes split differently
		{"a", "bc"},
		{"a\x01b", "c"},    // a byte that looks like a length prefix
		{"a/", "b/", "c/"}, // the "/" consistent sees is not part of the name
	} {
		r := mustNew(t, other...)
		if r.Version() == base.Version() {
			t.Errorf("Version of %q equals Version of [a b c] (%s): a membership change would go unnoticed", other, r.Version())
		}
	}
	if v := base.Version(); len(v) != 16 {
		t.Errorf("Version %q: want 16 hex digits", v)
	}
	if e1, e2 := mustNew(t), mustNew(t, []string{}...); e1.Version() != e2.Version() || e1.Version() == "" {
		t.Errorf("empty ring versions %q and %q: want one fixed, non-empty value", e1.Version(), e2.Version())
	}
}

func TestFourthMemberTakesAFairShareAndLittleElse(t *testing.T) {
	before := mustNew(t, "n1", "n2", "n3")
	after := mustNew(t, "n1", "n2", "n3", "n4")
	ks := keys(100_000)
	var toNew, collateral int
	for _, k := range ks {
		ob, oa := before.Owner(k), after.Owner(k)
		switch {
		case ob == oa:
		case oa == "n4":
			toNew++
		default:
			collateral++
		}
	}
	moved := float64(toNew+collateral) / float64(len(ks))
	coll := float64(collateral) / float64(len(ks))
	t.Logf("3->4 members: %.1f%% of keys moved, %.1f%% between surviving members", 100*moved, 100*coll)
	if moved < 0.15 || moved > 0.35 {
		t.Errorf("%.1f%% of keys changed owner when a 4th member joined, want 15-35%% (ideal 25%%)", 100*moved)
	}
	if coll > 0.05 {
		t.Errorf("%.1f%% of keys moved between members that both stayed, want at most 5%%", 100*coll)
	}
}

// Names that end in digits made consistent v0.10.0 collide its virtual nodes ("n1"+"10" ==
// "n11"+"0") and then panic on Remove; the "/" in member.String prevents it.
func TestNamesEndingInDigitsBuildAndShrink(t *testing.T) {
	names := []string{"n1", "n11", "n2", "127.0.0.1-8081", "node-1", "node-11"}
	full := mustNew(t, names...)
	for i, gone := range names {
		rest := slices.Delete(slices.Clone(names), i, i+1)
		r := mustNew(t, rest...)
		if r.Has(gone) || r.Len() != len(rest) {
			t.Fatalf("ring without %q: Has=%v Len=%d", gone, r.Has(gone), r.Len())
		}
		for _, k := range keys(1000) {
			if o := r.Owner(k); o == gone || !slices.Contains(rest, o) {
				t.Fatalf("without %q, key %q is owned by %q", gone, k, o)
			}
		}
	}
	if full.Len() != len(names) {
		t.Fatalf("Len = %d, want %d", full.Len(), len(names))
	}

	// The same names through consistent's own Remove, which is where v0.10.0 crashed.
	ms := make([]consistent.Member, len(names))
	for i, n := range names {
		ms[i] = newMember(n)
	}
	c := consistent.New(ms, schemes[Latest].config())
	for _, n := range names[:len(names)-1] {
		c.Remove(newMember(n).String())
	}
	if got := c.LocateKey([]byte("k")); got == nil || got.(member).name() != names[len(names)-1] {
		t.Fatalf("after removing all but %q, LocateKey = %v", names[len(names)-1], got)
	}
}

func TestInvalidMembersAreErrorsNotPanics(t *testing.T) {
	tooMany := make([]string, schemes[Latest].partitions+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("n%d", i)
	}
	for name, members := range map[string][]string{
		"empty name":                   {"a", ""},
		"duplicate":                    {"a", "b", "a"},
		"more members than partitions": tooMany,
	} {
		if r, err := New(members); err == nil {
			t.Errorf("%s: New returned a ring of %d members, want an error", name, r.Len())
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// New allows up to a scheme's partitions members. consistent agrees (Load 1.25 always leaves
// room for P partitions when members <= P) and panics beyond, which must come back as an
// error. Small partition counts stand in for the schemes', whose full rings would take minutes
// to build.
func TestMemberLimitMatchesConsistent(t *testing.T) {
	for _, p := range []int{1, 3, 7, 31} {
		cfg := schemes[Latest].config()
		cfg.PartitionCount = p
		names := make([]string, p+1)
		for i := range names {
			names[i] = fmt.Sprintf("n%d", i)
		}
		for m := 1; m <= p; m++ {
			if _, err := partitionOwners(names[:m], cfg); err != nil {
				t.Fatalf("%d members, %d partitions: %v", m, p, err)
			}
		}
		if owners, err := partitionOwners(names, cfg); err == nil {
			t.Fatalf("%d members, %d partitions: got owners %v, want an error", p+1, p, owners)
		}
	}
}

func TestEmptyRingOwnsNothing(t *testing.T) {
	for _, r := range []*Ring{mustNew(t), mustNew(t, []string{}...)} {
		if o := r.Owner("user-1"); o != "" {
			t.Errorf("empty ring: Owner = %q, want \"\"", o)
		}
		if r.Len() != 0 || len(r.Members()) != 0 || r.Has("") {
			t.Errorf("empty ring: Len=%d Members=%q", r.Len(), r.Members())
		}
	}
}

func TestSingleMemberOwnsEverything(t *testing.T) {
	r := mustNew(t, "only")
	for _, k := range append(keys(10_000), "") {
		if o := r.Owner(k); o != "only" {
			t.Fatalf("key %q owned by %q, want \"only\"", k, o)
		}
	}
}

func TestMembersIsASortedCopy(t *testing.T) {
	r := mustNew(t, "c", "a", "b")
	m := r.Members()
	if !slices.Equal(m, []string{"a", "b", "c"}) {
		t.Fatalf("Members = %q, want [a b c]", m)
	}
	m[0] = "zzz"
	if got := r.Members(); got[0] != "a" || !r.Has("a") || r.Has("zzz") {
		t.Fatalf("changing the slice from Members changed the ring: %q", got)
	}
}

// Owner must agree with consistent.LocateKey, since Owner reimplements its hash % P lookup.
func TestOwnerMatchesConsistent(t *testing.T) {
	names := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"}
	for s, p := range schemes {
		r, err := NewScheme(s, names)
		if err != nil {
			t.Fatal(err)
		}
		ms := make([]consistent.Member, len(names))
		for i, n := range names {
			ms[i] = newMember(n)
		}
		c := consistent.New(ms, p.config())
		for _, k := range keys(10_000) {
			if want := c.LocateKey([]byte(k)).(member).name(); r.Owner(k) != want {
				t.Fatalf("scheme %d, key %q: Owner = %q, consistent.LocateKey = %q", s, k, r.Owner(k), want)
			}
		}
	}
}

// Builds before schemes route by Original; this one must agree with them on owners and
// versions while the cluster does, or an upgrade one node at a time would misroute. The
// values are what those builds computed.
func TestOriginalSchemeRoutesAsBuildsBeforeSchemes(t *testing.T) {
	r, err := NewScheme(Original, []string{"node-1", "node-2", "node-3"})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := NewScheme(Original, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version() != "d4a4b5836ab649c3" || empty.Version() != "61ed79940af00c3b" || r.Owner("user-1") != "node-2" || r.Owner("alice") != "node-2" {
		t.Fatalf("Original: versions %s and %s, owners %s and %s; builds before schemes had d4a4b5836ab649c3 and 61ed79940af00c3b, node-2 and node-2",
			r.Version(), empty.Version(), r.Owner("user-1"), r.Owner("alice"))
	}
	if fine := mustNew(t, "node-1", "node-2", "node-3"); fine.Version() == r.Version() {
		t.Fatal("the same members give the same version on two schemes: nodes on different schemes would think they route alike")
	}
}

func TestOwnerAllocatesNothing(t *testing.T) {
	r := mustNew(t, "n1", "n2", "n3")
	if n := testing.AllocsPerRun(1000, func() { _ = r.Owner("user-12345") }); n != 0 {
		t.Fatalf("Owner allocates %.1f times per call, want 0", n)
	}
}

func TestConcurrentOwner(t *testing.T) {
	r := mustNew(t, "n1", "n2", "n3", "n4")
	ks := keys(2000)
	want := make([]string, len(ks))
	for i, k := range ks {
		want[i] = r.Owner(k)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i, k := range ks {
				o := r.Owner(k)
				if o != want[i] || !r.Has(o) {
					errs <- fmt.Sprintf("goroutine %d: key %q owned by %q, want %q", g, k, o, want[i])
					return
				}
				_ = r.Version()
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func BenchmarkOwner(b *testing.B) {
	ks := keys(1024)
	for _, n := range []int{3, 8} {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("node-%d", i+1)
		}
		r := mustNew(b, names...)
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = r.Owner(ks[i&1023])
				i++
			}
		})
	}
}

func BenchmarkOwnerParallel(b *testing.B) {
	r := mustNew(b, "node-1", "node-2", "node-3")
	ks := keys(1024)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = r.Owner(ks[i&1023])
			i++
		}
	})
}

func BenchmarkNew(b *testing.B) {
	names := []string{"node-1", "node-2", "node-3", "node-4", "node-5"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(names); err != nil {
			b.Fatal(err)
		}
	}
}

// partitionOwners is consistent's bounded loads built faster: every partition has the owner
// consistent gives it, at small and large member counts and with names that end in digits.
// consistent builds Fine's ring of 256 members in minutes, so Fine stops at 64.
func TestOwnersMatchConsistent(t *testing.T) {
	for s, p := range schemes {
		for _, n := range []int{1, 2, 3, 7, 16, 64, 256} {
			if s != Original && n > 64 {
				continue
			}
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("node-%d", i+1)
			}
			got, err := partitionOwners(names, p.config())
			if err != nil {
				t.Fatalf("scheme %d, %d members: %v", s, n, err)
			}
			ms := make([]consistent.Member, n)
			for i, name := range names {
				ms[i] = newMember(name)
			}
			c := consistent.New(ms, p.config())
			for id, owner := range got {
				if want := c.GetPartitionOwner(id).(member).name(); names[owner] != want {
					t.Fatalf("scheme %d, %d members: partition %d owned by %q, consistent says %q", s, n, id, names[owner], want)
				}
			}
		}
	}
}

// A member that announces no ring scheme is of a build before schemes and
// routes by the original one; one that announces a scheme newer than this
// build knows counts as this build's newest, since the cluster routes by
// the oldest.
func TestAnnouncedSchemeIsReadAsTheMemberRoutes(t *testing.T) {
	for announced, want := range map[int]Scheme{0: Original, -1: Original, 1: Original,
		int(Latest): Latest, int(Latest) + 1: Latest, 1 << 20: Latest} {
		if got := Announced(announced); got != want {
			t.Errorf("announced %d: read as scheme %d, want %d", announced, got, want)
		}
	}
}
