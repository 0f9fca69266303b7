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
	needCPU, needMem int64 // reservation to fit; math.MinInt64 when unlimited
	loadCPU, loadMem int64 // load the request adds for scoring
	maxPer           int32 // hard group cap; math.MaxInt32 when soft
	binpack          bool
	g                *group     // nil without a group or with no members yet
	cands            []int32    // ascending node ids to consider
	extra            []*posting // further constraints, tested per candidate
	extraBuf         [4]*posting
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
	q.loadCPU, q.loadMem = loadOf(req.CPUMillis, req.MemoryBytes)
	q.maxPer = math.MaxInt32
	if req.Group != "" {
		q.g = s.groups[req.Group]
		if req.MaxPerNode > 0 {
			q.maxPer = int32(min(req.MaxPerNode, math.MaxInt32))
		}
	}
	q.binpack = strat == Binpack
	q.cands = s.all
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
	q.extra = q.extraBuf[:0]
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

// scan is the placement loop: filters, then the best (group count, key)
// with ties kept on the first, lowest-named, node. It allocates nothing.
func (s *Snapshot) scan(q *query) (best int32, load float64, gcount int32, feasible int) {
	best = -1
	var bestKey float64
	var gids, gcounts []int32
	if q.g != nil {
		gids, gcounts = q.g.ids, q.g.counts
	}
	gi := 0
	hot := s.hot
	for _, i := range q.cands {
		h := &hot[i]
		if !h.eligible || h.freeCPU < q.needCPU || h.freeMem < q.needMem {
			continue
		}
		if len(q.extra) > 0 && !hasAll(q.extra, i) {
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
		if gc >= q.maxPer {
			continue
		}
		feasible++
		f := max(float64(h.loadCPU+q.loadCPU)*h.invCPU, float64(h.loadMem+q.loadMem)*h.invMem)
		key := rankKey(f, q.binpack)
		if best < 0 || gc < gcount || (gc == gcount && key < bestKey) {
			best, bestKey, load, gcount = i, key, f, gc
		}
	}
	return best, load, gcount, feasible
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
	var q query
	if err := s.prepare(&req, strat, &q); err != nil {
		return "", Explanation{Strategy: strat}, err
	}
	best, load, gc, feasible := s.scan(&q)
	if best < 0 {
		ex := Explanation{Strategy: strat, Rejections: s.rejections(&req)}
		return "", ex, &NoFitError{Container: req.Name, Rejections: ex.Rejections}
	}
	name := s.nodes[best].Name
	return name, Explanation{Chosen: name, Strategy: strat, Load: load, GroupCount: int(gc), Feasible: feasible}, nil
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
		f := max(float64(h.loadCPU+q.loadCPU)*h.invCPU, float64(h.loadMem+q.loadMem)*h.invMem)
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
