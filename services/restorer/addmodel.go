package restorer

import "github.com/chromadb-rollback/chromadb-rollback/pkg/contract"

// addModelSamples is how many restores the add model is fitted to.
const addModelSamples = 8

// addModel is how long restoring takes: perCollection seconds for each
// collection written plus perRecord seconds for each record.
// collectionAssumed says perCollection is assumedSecondsPerCollection (or
// less), not fitted.
type addModel struct {
	perCollection, perRecord float64
	collectionAssumed        bool
}

// assumedSecondsPerCollection is what writing one collection is taken to
// cost, besides its records, until restores of different shapes measure it.
// Chroma's first add to a new collection takes about 45 ms on the
// reference machine (2 cores) even for 10 records, and a full rollback of
// 1,100 collections of 3 records took 37 ms each: with no cost for a
// collection, a plan for those estimated under a second after a restore
// of a few large collections, and it took 41 s.
const assumedSecondsPerCollection = 0.05

func (m addModel) seconds(collections int, records int64) float64 {
	return float64(collections)*m.perCollection + float64(records)*m.perRecord
}

// defaultAddModel is the model before anything was restored: recordsPerSec
// and the assumed cost of a collection.
func defaultAddModel(recordsPerSec float64) addModel {
	return addModel{perCollection: assumedSecondsPerCollection, perRecord: 1 / recordsPerSec, collectionAssumed: true}
}

// fitAddModel fits the model to samples by least squares on the relative
// error, so that a long restore does not drown out short ones. Both
// parameters stay non-negative and the per-record one positive. When the
// samples cannot tell the two apart (one restore, or restores all of one
// shape), a collection is taken to cost assumedSecondsPerCollection, but at
// most half of what any sample took per collection, and the records carry
// the rest of the time.
func fitAddModel(samples []contract.AddRateSample) (addModel, bool) {
	var a11, a12, a22, b1, b2 float64
	n := 0
	assumed := assumedSecondsPerCollection
	for _, s := range samples {
		if s.Seconds <= 0 || s.Records <= 0 {
			continue
		}
		w := 1 / (s.Seconds * s.Seconds)
		c, r := float64(s.Collections), float64(s.Records)
		a11 += w * c * c
		a12 += w * c * r
		a22 += w * r * r
		b1 += w * c * s.Seconds
		b2 += w * r * s.Seconds
		n++
		if s.Collections > 0 {
			assumed = min(assumed, s.Seconds/c/2)
		}
	}
	if n == 0 {
		return addModel{}, false
	}
	// With perCollection fixed at assumed, the least-squares perRecord; the
	// cap keeps it positive.
	fallback := addModel{perCollection: assumed, perRecord: (b2 - assumed*a12) / a22, collectionAssumed: true}
	det := a11*a22 - a12*a12
	// Nearly collinear: the shapes do not tell a collection's cost from
	// its records'.
	if n < 2 || det <= 1e-9*a11*a22 {
		return fallback, true
	}
	m := addModel{perCollection: (b1*a22 - b2*a12) / det, perRecord: (a11*b2 - a12*b1) / det}
	if m.perCollection < 0 || m.perRecord <= 0 {
		return fallback, true
	}
	return m, true
}

// writeCollections counts the collections a plan writes.
func writeCollections(p *contract.RollbackPlan) int {
	if p == nil {
		return 0
	}
	n := 0
	for _, it := range p.Items {
		switch it.Action {
		case contract.PlanCreate, contract.PlanReplace, contract.PlanUpsert:
			n++
		}
	}
	return n
}
