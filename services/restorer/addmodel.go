package restorer

import "github.com/chromadb-rollback/chromadb-rollback/pkg/contract"

// addModelSamples is how many restores the add model is fitted to.
const addModelSamples = 8

// addModel is how long restoring takes: perCollection seconds for each
// collection written plus perRecord seconds for each record of dim
// dimensions, a record of another dimension in proportion to
// recordCostDims plus its dimension (dim 0: records of any dimension take
// perRecord). collectionAssumed says perCollection is
// assumedSecondsPerCollection (or less), not fitted.
type addModel struct {
	perCollection, perRecord float64
	dim                      float64
	collectionAssumed        bool
}

// recordCostDims is what adding a record costs besides its embedding, in
// dimensions' worth: on the reference machine (2 cores), 2,000 records with
// 500-character documents and two metadata keys took 0.27-0.52, 0.42,
// 0.69-0.74 and 1.04 ms each to add at 8, 64, 384 and 768 dimensions (JSON
// embeddings, into new collections), about 0.35 ms plus 0.92 µs a
// dimension. A plan of 768-d records estimated from restores of 384-d ones
// is so 1.5 times as long a record, as measured, rather than as long (the
// records alone) or twice (the dimension alone). make bench's raw adds
// agree: 50,000 768-d records took 2.2-2.3 times as long each as the seed
// workload's 384-d ones, in collections 20 times as large, whose index
// costs about log n, 1.4 times as much, a record.
const recordCostDims = 380

// defaultAddDimension is the dimension of the records a default add rate
// (Config.DefaultAddRate) is for.
const defaultAddDimension = 384

// assumedSecondsPerCollection is what writing one collection is taken to
// cost, besides its records, until restores of different shapes measure it.
// Chroma's first add to a new collection takes about 45 ms on the
// reference machine (2 cores) even for 10 records, and a full rollback of
// 1,100 collections of 3 records took 37 ms each: with no cost for a
// collection, a plan for those estimated under a second after a restore
// of a few large collections, and it took 41 s.
const assumedSecondsPerCollection = 0.05

// seconds is how long writing records into collections takes, values
// being the records' embedding values (each record's dimension, summed; 0
// when not known).
func (m addModel) seconds(collections int, records, values int64) float64 {
	return float64(collections)*m.perCollection + m.recordSeconds(records, values)
}

// recordSeconds is how long writing records of values embedding values in
// all takes.
func (m addModel) recordSeconds(records, values int64) float64 {
	if m.dim <= 0 || values <= 0 {
		return float64(records) * m.perRecord
	}
	return m.perRecord * recordUnits(records, values, m.dim)
}

// recordUnits is how many records of dimension dim cost what records with
// values embedding values in all cost.
func recordUnits(records, values int64, dim float64) float64 {
	return (recordCostDims*float64(records) + float64(values)) / (recordCostDims + dim)
}

// defaultAddModel is the model before anything was restored: recordsPerSec
// for records of defaultAddDimension, and the assumed cost of a collection.
func defaultAddModel(recordsPerSec float64) addModel {
	return addModel{perCollection: assumedSecondsPerCollection, perRecord: 1 / recordsPerSec, dim: defaultAddDimension, collectionAssumed: true}
}

// fitCollectionsMin is the fewest collections one of the samples must have
// written for a collection's cost to be fitted rather than assumed. In
// restores of a few collections, what a collection costs besides its
// records (tens of ms) is lost in how long the records took, which varies
// tenfold with their size: after restores of one collection of 620 records
// with 200 KB documents (30 and 54 s), one of 4,000 records of 4096-d
// (9.6 s) and one of 3 collections (9.8 s), the fit made a collection cost
// 2.85 s, and a plan for 1,200 collections of 400 records estimated 57
// minutes.
const fitCollectionsMin = 10

// fitAddModel fits the model to samples by least squares on the relative
// error, so that a long restore does not drown out short ones. Records are
// counted at the samples' mean dimension (the model's dim; a sample kept
// before samples had values is taken to be of it), each sample's in
// proportion to recordCostDims plus its mean dimension. Both
// parameters stay non-negative and the per-record one positive. When the
// samples cannot tell the two apart (one restore, restores all of one
// shape, or none of at least fitCollectionsMin collections), a collection
// is taken to cost assumedSecondsPerCollection, but at most half of what
// any sample took per collection, and the records carry the rest of the
// time.
func fitAddModel(samples []contract.AddRateSample) (addModel, bool) {
	var records, values int64
	for _, s := range samples {
		if s.Seconds > 0 && s.Records > 0 && s.Values > 0 {
			records += s.Records
			values += s.Values
		}
	}
	var dim float64
	if records > 0 {
		dim = float64(values) / float64(records)
	}
	var a11, a12, a22, b1, b2 float64
	n, most := 0, 0
	assumed := assumedSecondsPerCollection
	for _, s := range samples {
		if s.Seconds <= 0 || s.Records <= 0 {
			continue
		}
		most = max(most, s.Collections)
		w := 1 / (s.Seconds * s.Seconds)
		c, r := float64(s.Collections), float64(s.Records)
		if dim > 0 && s.Values > 0 {
			r = recordUnits(s.Records, s.Values, dim)
		}
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
	fallback := addModel{perCollection: assumed, perRecord: (b2 - assumed*a12) / a22, dim: dim, collectionAssumed: true}
	det := a11*a22 - a12*a12
	// Nearly collinear: the shapes do not tell a collection's cost from
	// its records'.
	if n < 2 || most < fitCollectionsMin || det <= 1e-9*a11*a22 {
		return fallback, true
	}
	m := addModel{perCollection: (b1*a22 - b2*a12) / det, perRecord: (a11*b2 - a12*b1) / det, dim: dim}
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

// writeValues sums the embedding values a plan writes: each collection's
// records written times its dimension (0 when not known).
func writeValues(p *contract.RollbackPlan) int64 {
	if p == nil {
		return 0
	}
	var n int64
	for _, it := range p.Items {
		n += it.WriteRecords * int64(it.Dimension)
	}
	return n
}
