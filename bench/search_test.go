package main

import (
	"slices"
	"testing"
)

// runSearch drives a rateSearch against a "cluster" that sustains every rate
// up to capacity, except the runs listed in blips (by run number), which fail.
func runSearch(s rateSearch, capacity float64, blips ...int) (tried []float64, best float64) {
	for run := 0; run < 50; run++ {
		rate := s.rate
		tried = append(tried, rate)
		pass := rate <= capacity && !slices.Contains(blips, run)
		if pass && rate > best {
			best = rate
		}
		if !s.next(pass) {
			return tried, best
		}
	}
	return tried, best
}

func TestMaxSearchFindsTheCapacityBetweenSteps(t *testing.T) {
	tried, best := runSearch(rateSearch{rate: 1000, step: 2}, 5000)
	// 1000, 2000, 4000 pass, 8000 fails, then 6000 and 5000 bisect.
	if want := []float64{1000, 2000, 4000, 8000, 6000, 5000}; !slices.Equal(tried, want) {
		t.Fatalf("tried %v, want %v", tried, want)
	}
	if best != 5000 {
		t.Fatalf("highest sustained %v, want 5000", best)
	}
}

func TestMaxSearchRunsAFailedRateAgainBeforeGivingUpOnIt(t *testing.T) {
	// Run 2 (4000) fails on a blip: without a retry the search stops rising
	// there and bisects below it.
	_, best := runSearch(rateSearch{rate: 1000, step: 2}, 5000, 2)
	if best != 3500 {
		t.Fatalf("without retries: highest %v, want 3500 (the blip counts)", best)
	}
	tried, best := runSearch(rateSearch{rate: 1000, step: 2, retries: 1}, 5000, 2)
	if want := []float64{1000, 2000, 4000, 4000, 8000, 8000, 6000, 6000, 5000}; !slices.Equal(tried, want) {
		t.Fatalf("tried %v, want %v", tried, want)
	}
	if best != 5000 {
		t.Fatalf("with one retry: highest %v, want 5000", best)
	}
}

func TestMaxSearchGoesDownWhenTheFirstRateFails(t *testing.T) {
	tried, best := runSearch(rateSearch{rate: 8000, step: 2}, 3000)
	if want := []float64{8000, 4000, 2000, 3000, 3500}; !slices.Equal(tried, want) {
		t.Fatalf("tried %v, want %v", tried, want)
	}
	if best != 3000 {
		t.Fatalf("highest %v, want 3000", best)
	}
}
