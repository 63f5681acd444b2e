package restorer

import (
	"math"
	"testing"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// TestFitAddModel: the estimate's model is fitted to restores of
// different shapes, so that a database of many small collections and one
// of a few large ones are both estimated from what restores measured.
func TestFitAddModel(t *testing.T) {
	// Measured on the bench machine: 300 collections of 10 records in 24 s,
	// 2 collections of 10,000 in 16 s.
	many := contract.AddRateSample{Collections: 300, Records: 3000, Seconds: 24}
	big := contract.AddRateSample{Collections: 2, Records: 20000, Seconds: 16}
	near := func(got, want float64) bool { return math.Abs(got-want) <= 0.02*want }

	m, ok := fitAddModel([]contract.AddRateSample{many, big})
	if !ok || !near(m.perCollection, 0.0722) || !near(1/m.perRecord, 1261) {
		t.Errorf("two shapes: %+v; want about 0.072 s a collection and 1,261 records/s", m)
	}
	for _, s := range []contract.AddRateSample{many, big} {
		if got := m.seconds(s.Collections, s.Records, s.Values); !near(got, s.Seconds) {
			t.Errorf("model estimates %.1fs for %+v", got, s)
		}
	}
	// A sample that cannot be used is skipped.
	if m2, _ := fitAddModel([]contract.AddRateSample{many, {Collections: 1}, big, {Records: 10, Seconds: -1}}); m2 != m {
		t.Errorf("with unusable samples: %+v, want %+v", m2, m)
	}

	// One restore, or restores of one shape, cannot tell a collection's
	// cost from its records': a collection is assumed to cost
	// assumedSecondsPerCollection, and the records carry the rest.
	for name, ss := range map[string][]contract.AddRateSample{
		"one":       {big},
		"one shape": {big, {Collections: 4, Records: 40000, Seconds: 32}},
	} {
		m, ok := fitAddModel(ss)
		if !ok || m.perCollection != assumedSecondsPerCollection || !m.collectionAssumed || !near(1/m.perRecord, 1257.9) {
			t.Errorf("%s: %+v; want 1,258 records/s and an assumed %gs a collection", name, m, assumedSecondsPerCollection)
		}
		for _, s := range ss {
			if got := m.seconds(s.Collections, s.Records, s.Values); !near(got, s.Seconds) {
				t.Errorf("%s: model estimates %.2fs for %+v", name, got, s)
			}
		}
	}
	if m.collectionAssumed {
		t.Errorf("two shapes: %+v says the collection cost is assumed", m)
	}
	// A collection never takes more than half of what a sample took for
	// each: 3 collections of 200 records in 0.144 s say at most 24 ms.
	// Found by hand: after that restore, a plan for 1,100 collections of 3
	// records estimated 0.8 s (4,168 records/s and nothing a collection),
	// and it took 41 s.
	small := contract.AddRateSample{Collections: 3, Records: 600, Seconds: 0.144}
	m, ok = fitAddModel([]contract.AddRateSample{small})
	if !ok || !near(m.perCollection, 0.024) || !m.collectionAssumed || !near(m.seconds(3, 600, 0), 0.144) {
		t.Errorf("small restore: %+v; want 24 ms a collection and the sample's 0.144 s", m)
	}
	if got := m.seconds(1100, 3300, 0); got < 20 {
		t.Errorf("small restore: estimates %.1fs for 1,100 collections of 3 records; it took 41 s", got)
	}
	// A fit that would make a collection cost negative time falls back too.
	m, ok = fitAddModel([]contract.AddRateSample{{Collections: 100, Records: 1000, Seconds: 1}, {Collections: 1, Records: 1000, Seconds: 2}})
	if !ok || !m.collectionAssumed || !near(m.perCollection, 0.005) || m.perRecord <= 0 {
		t.Errorf("negative collection cost: %+v; want an assumed 5 ms a collection (half the first sample's)", m)
	}
	// Restores of a few collections each, of records of very different
	// sizes (measured by hand, 2026-11-29): the fit made a collection cost
	// 2.85 s, and a plan for 1,200 collections of 400 records in all
	// estimated 57 minutes; its rollback took about a minute. None wrote
	// enough collections to tell what one costs: it is assumed.
	few := []contract.AddRateSample{
		{Collections: 1, Records: 620, Seconds: 30.2}, // 200 KB documents
		{Collections: 3, Records: 1560, Seconds: 9.8},
		{Collections: 1, Records: 620, Seconds: 53.7},
		{Collections: 1, Records: 4000, Seconds: 9.6}, // 4096-d
	}
	m, ok = fitAddModel(few)
	if !ok || !m.collectionAssumed || m.perCollection != assumedSecondsPerCollection || m.perRecord <= 0 {
		t.Errorf("restores of few collections: %+v; want an assumed %gs a collection", m, assumedSecondsPerCollection)
	}
	if got := m.seconds(1200, 400, 0); got > 5*60 {
		t.Errorf("restores of few collections: estimates %.0fs for 1,200 collections of 400 records in all; want a few minutes at most", got)
	}
	// Nothing restored yet: the default rate and the assumed collection.
	if d := defaultAddModel(1000); d.perCollection != assumedSecondsPerCollection || !d.collectionAssumed || d.seconds(300, 3000, 0) != 18 {
		t.Errorf("default model %+v estimates %.1fs for 300 collections of 10 records, want 18 s", d, d.seconds(300, 3000, 0))
	}
	if _, ok := fitAddModel(nil); ok {
		t.Error("no samples: a model")
	}
}

// TestAddModelDimensions: a record's cost grows with its dimension, by
// recordCostDims plus it, so that a plan of records of another dimension
// than the restores measured is estimated by what they cost there.
func TestAddModelDimensions(t *testing.T) {
	near := func(got, want, tol float64) bool { return math.Abs(got-want) <= tol*want }
	// Measured on the reference machine: 2,000 records with 500-character
	// documents added in 1.42 s at 384 dimensions, 2.08 s at 768 and
	// 0.54-1.05 s at 8.
	d384 := contract.AddRateSample{Collections: 1, Records: 2000, Values: 2000 * 384, Seconds: 1.42}
	d768 := contract.AddRateSample{Collections: 1, Records: 2000, Values: 2000 * 768, Seconds: 2.08}
	m, ok := fitAddModel([]contract.AddRateSample{d384})
	if !ok || m.dim != 384 {
		t.Fatalf("fitted to 384-d records: %+v, want dim 384", m)
	}
	if got := m.seconds(1, 2000, 2000*384); !near(got, 1.42, 1e-9) {
		t.Errorf("estimate %.3fs for the sample itself, want 1.42 s", got)
	}
	if got := m.seconds(1, 2000, 2000*768); !near(got, 2.08, 0.05) {
		t.Errorf("estimate %.3fs for 2,000 768-d records from 384-d ones; they took 2.08 s", got)
	}
	if got := m.seconds(1, 2000, 2000*8); got < 0.54 || got > 1.05 {
		t.Errorf("estimate %.3fs for 2,000 8-d records from 384-d ones; they took 0.54-1.05 s", got)
	}
	// Unknown dimensions: records cost what the samples' did.
	if got, want := m.recordSeconds(2000, 0), 2000*m.perRecord; got != want {
		t.Errorf("records of unknown dimension: %.3fs, want %.3fs", got, want)
	}
	// Restores of both dimensions: the model is at their mean dimension
	// and estimates each as it took.
	m, ok = fitAddModel([]contract.AddRateSample{d384, d768})
	if !ok || m.dim != 576 {
		t.Fatalf("fitted to 384-d and 768-d records: %+v, want dim 576", m)
	}
	for _, s := range []contract.AddRateSample{d384, d768} {
		if got := m.seconds(s.Collections, s.Records, s.Values); !near(got, s.Seconds, 0.05) {
			t.Errorf("both dimensions: estimate %.3fs for %+v", got, s)
		}
	}
	// A sample kept before samples had values counts at the others' mean
	// dimension; with none that has values, dimensions are not scaled.
	old := contract.AddRateSample{Collections: 1, Records: 2000, Seconds: 1.42}
	if m, _ := fitAddModel([]contract.AddRateSample{old, d384}); m.dim != 384 || !near(m.seconds(1, 2000, 2000*384), 1.42, 1e-9) {
		t.Errorf("with a sample without values: %+v, estimate %.3fs", m, m.seconds(1, 2000, 2000*384))
	}
	if m, _ := fitAddModel([]contract.AddRateSample{old}); m.dim != 0 || m.seconds(1, 2000, 2000*768) != m.seconds(1, 2000, 0) {
		t.Errorf("only a sample without values: %+v scales by dimension", m)
	}
	// The default rate is for 384-d records.
	d := defaultAddModel(1000)
	if got := d.recordSeconds(1000, 1000*384); !near(got, 1, 1e-9) {
		t.Errorf("default model: %.3fs for 1,000 384-d records, want 1 s", got)
	}
	if got := d.recordSeconds(1000, 1000*768); !near(got, (380+768)/(380+384.0), 1e-9) {
		t.Errorf("default model: %.3fs for 1,000 768-d records", got)
	}
}

// TestWriteValues sums the embedding values a plan writes.
func TestWriteValues(t *testing.T) {
	p := &contract.RollbackPlan{Items: []contract.PlanItem{
		{Action: contract.PlanReplace, WriteRecords: 10, Dimension: 384},
		{Action: contract.PlanUpsert, WriteRecords: 5, Dimension: 768},
		{Action: contract.PlanUntouched, SnapshotRecords: 7, Dimension: 16},
		{Action: contract.PlanCreate, Dimension: 0},
	}}
	if n := writeValues(p); n != 10*384+5*768 {
		t.Errorf("%d values, want %d", n, 10*384+5*768)
	}
	if writeValues(nil) != 0 {
		t.Error("nil plan")
	}
}

// TestWriteCollections counts the collections a plan writes.
func TestWriteCollections(t *testing.T) {
	p := &contract.RollbackPlan{Items: []contract.PlanItem{
		{Action: contract.PlanCreate}, {Action: contract.PlanReplace}, {Action: contract.PlanUpsert},
		{Action: contract.PlanUntouched}, {Action: contract.PlanExtra}, {Action: contract.PlanDrop},
	}}
	if n := writeCollections(p); n != 3 {
		t.Errorf("%d collections written, want 3 (create, replace, upsert)", n)
	}
	if writeCollections(nil) != 0 {
		t.Error("nil plan")
	}
}
