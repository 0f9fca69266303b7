package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Explanation says how a placement was decided.
type Explanation struct {
	Chosen     string   // the node picked; "" when nothing fits
	Strategy   Strategy // the strategy used
	Load       float64  // Chosen's dominant load fraction after the placement
	GroupCount int      // members of Request.Group already on Chosen
	Feasible   int      // nodes that passed every filter
	// Rejections lists, by node name, every node considered and rejected.
	// Place fills it only when nothing fits (it is what the error prints);
	// Explain always fills it.
	Rejections []Rejection
	// Scores ranks every feasible node, best first. Only Explain fills it.
	Scores []Score
}

// Score is one feasible node's rank: fewer group members first, then the
// strategy's preference for Load, then the node name.
type Score struct {
	Node       string
	Load       float64 // dominant load fraction after placing the request
	GroupCount int     // members of Request.Group already on the node
}

// query is a Request prepared for the placement loop.
type query struct {
	needCPU, needMem int64   // reservation to fit; math.MinInt64 when unlimited
	loadCPU, loadMem float64 // load the request adds for scoring
	maxPer           int32   // hard group cap; math.MaxInt32 when soft
	binpack          bool
	g                *group     // nil without a group or with no members yet
	cands            []int32    // ascending node ids to consider
	extra            []*posting // further constraints, tested per candidate
	exclude          []*posting // nodes that cannot enforce a key the request sets
}

// prepare turns a request into a query. A constraint no node carries leaves
// no candidates; an unknown target is an error.
func (s *Snapshot) prepare(req *Request, strat Strategy, q *query) error {
	if err := req.validate(); err != nil {
		return err
	}
	if strat != Spread && strat != Binpack {
		return fmt.Errorf("%w %v", ErrUnknownStrategy, strat)
	}
	q.needCPU, q.needMem = req.CPUMillis, req.MemoryBytes
	if q.needCPU == 0 {
		q.needCPU = math.MinInt64
	}
	if q.needMem == 0 {
		q.needMem = math.MinInt64
	}
	lc, lm := loadOf(req.CPUMillis, req.MemoryBytes)
	q.loadCPU, q.loadMem = float64(lc), float64(lm)
	q.maxPer = math.MaxInt32
	if req.Group != "" {
		q.g = s.groups[req.Group]
		if req.MaxPerNode > 0 {
			q.maxPer = int32(min(req.MaxPerNode, math.MaxInt32))
		}
	}
	q.binpack = strat == Binpack
	q.cands = s.all
	for _, k := range req.Keys {
		if p := s.unenforceable[k]; p != nil {
			q.exclude = append(q.exclude, p)
		}
	}
	if req.Target != "" {
		id, ok := s.ids[req.Target]
		if !ok {
			return fmt.Errorf("%w %q (--target)", ErrUnknownNode, req.Target)
		}
		q.cands = s.all[id : id+1]
	}
	if len(req.Constraints) == 0 {
		return nil
	}
	// Iterate the smallest posting list (unless --target already narrowed
	// the candidates) and test the others by bit.
	var drive *posting
	q.extra = make([]*posting, 0, len(req.Constraints))
	for k, v := range req.Constraints {
		p := s.labels[label{k, v}]
		if p == nil {
			q.cands = nil
			q.extra = q.extra[:0]
			return nil
		}
		q.extra = append(q.extra, p)
		if drive == nil || len(p.ids) < len(drive.ids) {
			drive = p
		}
	}
	if req.Target == "" {
		q.cands = drive.ids
		q.extra = slices.DeleteFunc(q.extra, func(p *posting) bool { return p == drive })
	}
	return nil
}

// pick is a candidate node; better orders candidates by (group count,
// rank key, node id).
type pick struct {
	id   int32 // -1: none
	gc   int32
	key  float64
	load float64
}

func (p pick) better(o pick) bool {
	switch {
	case o.id < 0:
		return p.id >= 0
	case p.id < 0:
		return false
	case p.gc != o.gc:
		return p.gc < o.gc
	case p.key != o.key:
		return p.key < o.key
	}
	return p.id < o.id
}

// scan is the placement loop: filters, then the best (group count, key),
// ties to the lowest node id (= name). It allocates nothing.
func (s *Snapshot) scan(q *query) (pick, int) {
	if len(q.extra) == 0 && len(q.exclude) == 0 && len(q.cands) == len(s.hot) {
		if q.g == nil {
			return s.scanRange(q, 0, int32(len(s.hot)))
		}
		if len(q.g.ids) < len(s.hot)/8 { // a sparse group: mostly gaps
			return s.scanAroundGroup(q)
		}
	}
	best := pick{id: -1}
	feasible := 0
	var gids, gcounts []int32
	if q.g != nil {
		gids, gcounts = q.g.ids, q.g.counts
	}
	gi := 0
	hot := s.hot
	needCPU, needMem, qc, qm, maxPer, binpack := q.needCPU, q.needMem, q.loadCPU, q.loadMem, q.maxPer, q.binpack
	for _, i := range q.cands {
		h := &hot[i]
		if !h.eligible || h.freeCPU < needCPU || h.freeMem < needMem {
			continue
		}
		if len(q.extra) > 0 && !hasAll(q.extra, i) {
			continue
		}
		if len(q.exclude) > 0 && hasAny(q.exclude, i) {
			continue
		}
		var gc int32
		if gids != nil {
			for gi < len(gids) && gids[gi] < i {
				gi++
			}
			if gi < len(gids) && gids[gi] == i {
				gc = gcounts[gi]
			}
		}
		if gc >= maxPer {
			continue
		}
		feasible++
		f := h.load(qc, qm)
		key := rankKey(f, binpack)
		if best.id < 0 || gc < best.gc || (gc == best.gc && key < best.key) {
			best = pick{i, gc, key, f}
		}
	}
	return best, feasible
}

// scanAroundGroup is scan over every node for a request with a group: the
// gaps between the group's member nodes hold no member (group count 0) and
// go through the tight scanRange; the few member nodes are checked one by
// one.
func (s *Snapshot) scanAroundGroup(q *query) (pick, int) {
	best, feasible := pick{id: -1}, 0
	lo := int32(0)
	for k, id := range q.g.ids {
		p, n := s.scanRange(q, lo, id)
		if p.better(best) {
			best = p
		}
		feasible += n
		lo = id + 1
		h := &s.hot[id]
		gc := q.g.counts[k]
		if !h.eligible || h.freeCPU < q.needCPU || h.freeMem < q.needMem || gc >= q.maxPer {
			continue
		}
		feasible++
		f := h.load(q.loadCPU, q.loadMem)
		if p := (pick{id, gc, rankKey(f, q.binpack), f}); p.better(best) {
			best = p
		}
	}
	p, n := s.scanRange(q, lo, int32(len(s.hot)))
	if p.better(best) {
		best = p
	}
	return best, feasible + n
}

// scanRange is the tight loop over nodes lo..hi-1 for a request without
// constraints, on nodes without members of its group.
func (s *Snapshot) scanRange(q *query, lo, hi int32) (pick, int) {
	best, bestKey, load, feasible := int32(-1), math.Inf(1), 0.0, 0
	needCPU, needMem, qc, qm, binpack := q.needCPU, q.needMem, q.loadCPU, q.loadMem, q.binpack
	hot := s.hot[lo:hi]
	for i := range hot {
		h := &hot[i]
		if !h.eligible || h.freeCPU < needCPU || h.freeMem < needMem {
			continue
		}
		feasible++
		f := h.load(qc, qm)
		if key := rankKey(f, binpack); key < bestKey || best < 0 {
			best, bestKey, load = int32(i), key, f
		}
	}
	if best < 0 {
		return pick{id: -1}, feasible
	}
	return pick{id: lo + best, key: bestKey, load: load}, feasible
}

// rankKey orders load fractions: lower is better.
func rankKey(f float64, binpack bool) float64 {
	if !binpack {
		return f // spread: least loaded
	}
	if f > 1 {
		return f // overloaded: after every node within 1, least overloaded first
	}
	return -f // most loaded first
}

func hasAny(ps []*posting, i int32) bool {
	for _, p := range ps {
		if p.has(i) {
			return true
		}
	}
	return false
}

func hasAll(ps []*posting, i int32) bool {
	for _, p := range ps {
		if !p.has(i) {
			return false
		}
	}
	return true
}

// Place picks a node for req. It returns the node's name and a short
// explanation; when no node fits, the error is a *NoFitError (wrapping
// ErrNoFit) that lists every node considered and why it was rejected. An
// unknown --target wraps ErrUnknownNode; a malformed request ErrInvalid.
//
// Place does not record the placement: commit it, then Snapshot.Add it.
func Place(s *Snapshot, req Request, strat Strategy) (string, Explanation, error) {
	return PlaceAvoiding(s, req, strat, nil)
}

// PlaceAvoiding is Place with the nodes named in down treated as not
// online, each rejected by the status filter with its reason (down maps a
// node name to why, such as "not answering"): a member's own, unreplicated
// view of who is gone, laid over the snapshot without changing it, so
// that it can run beside other readers of a shared snapshot. Names the
// snapshot does not hold are ignored.
func PlaceAvoiding(s *Snapshot, req Request, strat Strategy, down map[string]string) (string, Explanation, error) {
	var q query
	if err := s.prepare(&req, strat, &q); err != nil {
		return "", Explanation{Strategy: strat}, err
	}
	if len(down) > 0 {
		p := &posting{bits: make([]uint64, (len(s.nodes)+63)/64)}
		for name := range down {
			if id, ok := s.ids[name]; ok {
				p.bits[id>>6] |= 1 << (uint(id) & 63)
			}
		}
		q.exclude = append(q.exclude, p)
	}
	best, feasible := s.scan(&q)
	if best.id < 0 {
		ex := Explanation{Strategy: strat, Rejections: s.rejectionsAvoiding(&req, down)}
		return "", ex, &NoFitError{Container: req.Name, Rejections: ex.Rejections}
	}
	name := s.nodes[best.id].Name
	return name, Explanation{Chosen: name, Strategy: strat, Load: best.load, GroupCount: int(best.gc), Feasible: feasible}, nil
}

// Check re-checks placing req on node against the snapshot as it is now
// (nomad's plan applier): the FSM calls it before applying a create so
// that two launches decided on the same state never oversubscribe a node.
// It returns nil, a *NoFitError (wrapping ErrNoFit) with the node's reason,
// or an error wrapping ErrUnknownNode or ErrInvalid. It uses no floating
// point, so every replica reaches the same verdict.
func Check(s *Snapshot, node string, req Request) error {
	if err := req.validate(); err != nil {
		return err
	}
	id, ok := s.ids[node]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownNode, node)
	}
	if r, bad := s.reject(id, &req); bad {
		return &NoFitError{Container: req.Name, Node: node, Rejections: []Rejection{r}}
	}
	return nil
}

// Explain is the slow, complete form of Place: it returns the same choice
// and error, and an Explanation with every rejected node and the rank of
// every feasible one. The CLI uses it for --explain; tests use it to check
// Place.
func Explain(s *Snapshot, req Request, strat Strategy) (Explanation, error) {
	ex := Explanation{Strategy: strat}
	var q query
	if err := s.prepare(&req, strat, &q); err != nil {
		return ex, err
	}
	type ranked struct {
		Score
		key float64
	}
	var rs []ranked
	for i := range s.nodes {
		id := int32(i)
		if r, bad := s.reject(id, &req); bad {
			ex.Rejections = append(ex.Rejections, r)
			continue
		}
		h := &s.hot[id]
		f := h.load(q.loadCPU, q.loadMem)
		gc := 0
		if q.g != nil {
			gc = int(q.g.count(id))
		}
		rs = append(rs, ranked{Score{s.nodes[i].Name, f, gc}, rankKey(f, q.binpack)})
	}
	slices.SortStableFunc(rs, func(a, b ranked) int { // stable: names already ascending
		return cmp.Or(cmp.Compare(a.GroupCount, b.GroupCount), cmp.Compare(a.key, b.key))
	})
	ex.Feasible = len(rs)
	for _, r := range rs {
		ex.Scores = append(ex.Scores, r.Score)
	}
	if len(rs) == 0 {
		return ex, &NoFitError{Container: req.Name, Rejections: s.rejections(&req)}
	}
	ex.Chosen, ex.Load, ex.GroupCount = rs[0].Node, rs[0].Load, rs[0].GroupCount
	return ex, nil
}
