//! Layered (Sugiyama-style) layout of a step graph, drawn left to right:
//! one column per wave, rows ordered by barycenter sweeps to reduce edge
//! crossings, and edges that skip waves routed through dummy points that sit
//! in the gaps between boxes.
//!
//! Pure geometry: it knows nodes, edges and box sizes, not steps.

/// Horizontal space between two columns, where edges bend.
const COLUMN_GAP: f64 = 96.0;
/// Vertical space between two boxes of a column.
const BOX_GAP: f64 = 22.0;
/// Vertical space between an edge passing through a column and its neighbours.
const LANE_GAP: f64 = 12.0;
/// Barycenter rounds (one sweep down, one up) before keeping the best order.
const ORDER_ROUNDS: usize = 12;
/// Passes of neighbour swaps after each barycenter round, at most.
const TRANSPOSE_ROUNDS: usize = 20;
/// Vertical placement rounds.
const PLACE_ROUNDS: usize = 16;
/// Largest distance between two edge ends on the side of a box.
const PORT_SPACING: f64 = 9.0;

/// A box's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    pub w: f64,
    pub h: f64,
}

/// A placed box, `(x, y)` its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn right(&self) -> f64 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
}

/// The path of edge `from -> to`.
///
/// `points` come in pairs: inside a pair the edge runs straight and
/// horizontal (across a column), between pairs it crosses a gap between
/// columns. The first point is on the right side of `from`'s box, the last on
/// the left side of `to`'s box.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub from: usize,
    pub to: usize,
    pub points: Vec<(f64, f64)>,
}

/// Where everything goes; the drawing spans `(0, 0)` to `(width, height)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Indexed like the nodes.
    pub boxes: Vec<Rect>,
    /// One per edge, in the order of `needs`.
    pub routes: Vec<Route>,
    /// Each layer's `(left, right)`.
    pub columns: Vec<(f64, f64)>,
    pub width: f64,
    pub height: f64,
    /// Edge crossings left after ordering.
    pub crossings: usize,
}

/// Lays out nodes `0..sizes.len()`. `layers` lists each layer's nodes (every
/// node in exactly one layer); `needs[v]` are the nodes with an edge into
/// `v`, each in an earlier layer.
pub fn layout(layers: &[Vec<usize>], needs: &[Vec<usize>], sizes: &[Size]) -> Layout {
    let mut ordering = Ordering::new(layers, needs);
    ordering.reduce_crossings();
    let crossings = ordering.crossings();
    place(&ordering, sizes, crossings)
}

/// The order of every layer, dummy points included.
///
/// Vertices `0..nodes` are the graph's nodes; the ones after are dummy
/// points, one per layer an edge passes through without stopping.
#[derive(Debug, Clone)]
pub struct Ordering {
    pub nodes: usize,
    /// Each layer's vertices, top to bottom.
    pub layers: Vec<Vec<usize>>,
    /// Each edge as the chain of vertices from its need to its step.
    pub chains: Vec<Vec<usize>>,
    rank: Vec<usize>,
    preds: Vec<Vec<usize>>,
    succs: Vec<Vec<usize>>,
}

impl Ordering {
    /// Layers in the given order, each edge's dummy points appended to their
    /// layers in edge order.
    pub fn new(layers: &[Vec<usize>], needs: &[Vec<usize>]) -> Ordering {
        let nodes = needs.len();
        let mut rank = vec![0; nodes];
        for (l, layer) in layers.iter().enumerate() {
            for &v in layer {
                rank[v] = l;
            }
        }
        let mut ordering = Ordering {
            nodes,
            layers: layers.to_vec(),
            chains: Vec::new(),
            rank,
            preds: vec![Vec::new(); nodes],
            succs: vec![Vec::new(); nodes],
        };
        for (to, froms) in needs.iter().enumerate() {
            for &from in froms {
                let mut chain = vec![from];
                // Only edges pointing forwards get dummies; anything else is
                // drawn as a direct line and left out of the ordering.
                if ordering.rank[from] < ordering.rank[to] {
                    for l in ordering.rank[from] + 1..ordering.rank[to] {
                        let dummy = ordering.rank.len();
                        ordering.rank.push(l);
                        ordering.preds.push(Vec::new());
                        ordering.succs.push(Vec::new());
                        ordering.layers[l].push(dummy);
                        chain.push(dummy);
                    }
                    chain.push(to);
                    for pair in chain.windows(2) {
                        ordering.succs[pair[0]].push(pair[1]);
                        ordering.preds[pair[1]].push(pair[0]);
                    }
                } else {
                    chain.push(to);
                }
                ordering.chains.push(chain);
            }
        }
        ordering
    }

    pub fn is_dummy(&self, v: usize) -> bool {
        v >= self.nodes
    }

    /// Each vertex's index inside its layer.
    pub fn positions(&self) -> Vec<usize> {
        let mut pos = vec![0; self.rank.len()];
        for layer in &self.layers {
            for (i, &v) in layer.iter().enumerate() {
                pos[v] = i;
            }
        }
        pos
    }

    /// Pairs of edge segments that cross, over all pairs of adjacent layers.
    pub fn crossings(&self) -> usize {
        let pos = self.positions();
        let mut total = 0;
        for (l, layer) in self.layers.iter().enumerate() {
            let Some(below) = self.layers.get(l + 1) else { break };
            // Segments sorted by upper end, then lower end: two cross exactly
            // when a later one ends strictly above an earlier one, counted
            // with a Fenwick tree over the lower layer's positions.
            let mut segments: Vec<(usize, usize)> = layer
                .iter()
                .flat_map(|&a| self.succs[a].iter().map(move |&b| (a, b)))
                .map(|(a, b)| (pos[a], pos[b]))
                .collect();
            segments.sort_unstable();
            let mut tree = vec![0usize; below.len() + 1];
            for (seen, &(_, b)) in segments.iter().enumerate() {
                // Earlier segments ending at or above b.
                let mut at_or_above = 0;
                let mut i = b + 1;
                while i > 0 {
                    at_or_above += tree[i];
                    i &= i - 1;
                }
                total += seen - at_or_above;
                let mut i = b + 1;
                while i < tree.len() {
                    tree[i] += 1;
                    i += i & i.wrapping_neg();
                }
            }
        }
        total
    }

    /// Barycenter sweeps down and up, then swaps of neighbours that still
    /// help; keeps the best order seen, so it never adds crossings.
    pub fn reduce_crossings(&mut self) {
        let mut best = self.layers.clone();
        let mut best_crossings = self.crossings();
        for _ in 0..ORDER_ROUNDS {
            if best_crossings == 0 {
                break;
            }
            for l in 1..self.layers.len() {
                self.sort_by_barycenter(l, true);
            }
            for l in (0..self.layers.len().saturating_sub(1)).rev() {
                self.sort_by_barycenter(l, false);
            }
            self.transpose();
            let crossings = self.crossings();
            if crossings < best_crossings {
                best_crossings = crossings;
                best = self.layers.clone();
            }
        }
        self.layers = best;
    }

    /// Sorts layer `l` by the mean position of each vertex's neighbours in
    /// the layer above (`from_preds`) or below. A vertex without such
    /// neighbours keeps its own position as its key; ties keep their order.
    fn sort_by_barycenter(&mut self, l: usize, from_preds: bool) {
        let pos = self.positions();
        let mut keyed: Vec<(f64, usize)> = self.layers[l]
            .iter()
            .map(|&v| {
                let nbrs = if from_preds { &self.preds[v] } else { &self.succs[v] };
                let key = if nbrs.is_empty() {
                    pos[v] as f64
                } else {
                    nbrs.iter().map(|&n| pos[n] as f64).sum::<f64>() / nbrs.len() as f64
                };
                (key, v)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.layers[l] = keyed.into_iter().map(|(_, v)| v).collect();
    }

    /// Swaps neighbours in a layer while that removes crossings.
    fn transpose(&mut self) {
        let mut pos = self.positions();
        for _ in 0..TRANSPOSE_ROUNDS {
            let mut improved = false;
            for l in 0..self.layers.len() {
                for i in 0..self.layers[l].len().saturating_sub(1) {
                    let (u, v) = (self.layers[l][i], self.layers[l][i + 1]);
                    if self.pair_crossings(u, v, &pos) > self.pair_crossings(v, u, &pos) {
                        self.layers[l].swap(i, i + 1);
                        pos[u] = i + 1;
                        pos[v] = i;
                        improved = true;
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }

    /// Crossings among the edges of `u` and `v` if `u` is above `v`.
    fn pair_crossings(&self, u: usize, v: usize, pos: &[usize]) -> usize {
        let count = |a: &[usize], b: &[usize]| {
            a.iter().map(|&x| b.iter().filter(|&&y| pos[x] > pos[y]).count()).sum::<usize>()
        };
        count(&self.preds[u], &self.preds[v]) + count(&self.succs[u], &self.succs[v])
    }
}

/// Coordinates for an ordering: columns from box widths, rows by repeatedly
/// pulling each vertex towards its neighbours while keeping the order and
/// the gaps.
fn place(ordering: &Ordering, sizes: &[Size], crossings: usize) -> Layout {
    let count = ordering.rank.len();
    let height = |v: usize| if ordering.is_dummy(v) { 0.0 } else { sizes[v].h };
    let gap = |a: usize, b: usize| {
        if ordering.is_dummy(a) || ordering.is_dummy(b) { LANE_GAP } else { BOX_GAP }
    };

    // Columns.
    let mut columns = Vec::with_capacity(ordering.layers.len());
    let mut x = 0.0;
    for layer in &ordering.layers {
        let w = layer
            .iter()
            .filter(|&&v| !ordering.is_dummy(v))
            .map(|&v| sizes[v].w)
            .fold(0.0, f64::max)
            .max(24.0);
        columns.push((x, x + w));
        x += w + COLUMN_GAP;
    }

    // Rows: centres, starting stacked and centred on 0.
    let mut y = vec![0.0; count];
    for layer in &ordering.layers {
        let desired = vec![0.0; layer.len()];
        let placed = pack(layer, &desired, &height, &gap);
        for (&v, c) in layer.iter().zip(placed) {
            y[v] = c;
        }
    }
    for round in 0..PLACE_ROUNDS {
        let down = round % 2 == 0;
        let last = round + 1 == PLACE_ROUNDS;
        let layer_ids: Vec<usize> = if down {
            (0..ordering.layers.len()).collect()
        } else {
            (0..ordering.layers.len()).rev().collect()
        };
        for l in layer_ids {
            let layer = &ordering.layers[l];
            let desired: Vec<f64> = layer
                .iter()
                .map(|&v| {
                    // The last round balances both sides.
                    let nbrs: Vec<usize> = if last {
                        ordering.preds[v].iter().chain(&ordering.succs[v]).copied().collect()
                    } else if down {
                        ordering.preds[v].clone()
                    } else {
                        ordering.succs[v].clone()
                    };
                    if nbrs.is_empty() {
                        y[v]
                    } else {
                        nbrs.iter().map(|&n| y[n]).sum::<f64>() / nbrs.len() as f64
                    }
                })
                .collect();
            let placed = pack(layer, &desired, &height, &gap);
            for (&v, c) in layer.iter().zip(placed) {
                y[v] = c;
            }
        }
    }

    // Shift so the top is 0.
    let top = (0..count).map(|v| y[v] - height(v) / 2.0).fold(f64::INFINITY, f64::min);
    let top = if top.is_finite() { top } else { 0.0 };
    for c in &mut y {
        *c -= top;
    }

    let boxes: Vec<Rect> = (0..ordering.nodes)
        .map(|v| {
            let (left, right) = columns[ordering.rank[v]];
            let s = sizes[v];
            Rect { x: left + (right - left - s.w) / 2.0, y: y[v] - s.h / 2.0, w: s.w, h: s.h }
        })
        .collect();

    let routes = route(ordering, &boxes, &columns, &y);
    let width = columns.last().map_or(0.0, |c| c.1);
    let height = (0..count).map(|v| y[v] + height(v) / 2.0).fold(0.0, f64::max);
    Layout { boxes, routes, columns, width, height, crossings }
}

/// Centres for `layer`'s vertices as close as possible (least squares) to
/// `desired`, in order and at least their gaps apart: isotonic regression
/// (pool adjacent violators) on the centres minus the cumulated gaps.
fn pack(
    layer: &[usize],
    desired: &[f64],
    height: &impl Fn(usize) -> f64,
    gap: &impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let mut offsets = Vec::with_capacity(layer.len());
    let mut offset = 0.0;
    for (i, &v) in layer.iter().enumerate() {
        if i > 0 {
            let u = layer[i - 1];
            offset += height(u) / 2.0 + gap(u, v) + height(v) / 2.0;
        }
        offsets.push(offset);
    }
    // Blocks of (sum, count) whose means never decrease.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for (d, o) in desired.iter().zip(&offsets) {
        blocks.push((d - o, 1));
        while blocks.len() > 1 {
            let (s2, n2) = blocks[blocks.len() - 1];
            let (s1, n1) = blocks[blocks.len() - 2];
            if s1 / n1 as f64 > s2 / n2 as f64 {
                blocks.pop();
                let last = blocks.len() - 1;
                blocks[last] = (s1 + s2, n1 + n2);
            } else {
                break;
            }
        }
    }
    let mut out = Vec::with_capacity(layer.len());
    for (sum, n) in blocks {
        let mean = sum / n as f64;
        for _ in 0..n {
            out.push(mean + offsets[out.len()]);
        }
    }
    out
}

/// Each edge's points, its ends spread over the sides of its boxes in the
/// order of where the edges go, so they leave without crossing.
fn route(ordering: &Ordering, boxes: &[Rect], columns: &[(f64, f64)], y: &[f64]) -> Vec<Route> {
    let n = ordering.nodes;
    // For each node, (chain index) of the edges leaving and entering it.
    let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut incoming: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (e, chain) in ordering.chains.iter().enumerate() {
        outgoing[chain[0]].push(e);
        incoming[chain[chain.len() - 1]].push(e);
    }
    let mut out_port = vec![0.0; ordering.chains.len()];
    let mut in_port = vec![0.0; ordering.chains.len()];
    let spread =
        |edges: &mut Vec<usize>, next_y: &dyn Fn(usize) -> f64, b: &Rect, ports: &mut [f64]| {
            edges.sort_by(|&a, &c| next_y(a).total_cmp(&next_y(c)).then(a.cmp(&c)));
            let k = edges.len();
            let spacing =
                if k > 1 { PORT_SPACING.min((b.h - 12.0).max(0.0) / (k - 1) as f64) } else { 0.0 };
            let centre = b.y + b.h / 2.0;
            for (i, &e) in edges.iter().enumerate() {
                ports[e] = centre + (i as f64 - (k - 1) as f64 / 2.0) * spacing;
            }
        };
    let centre_y = |v: usize| if v < n { boxes[v].y + boxes[v].h / 2.0 } else { y[v] };
    for v in 0..n {
        let chains = &ordering.chains;
        spread(&mut outgoing[v], &|e| centre_y(chains[e][1]), &boxes[v], &mut out_port);
        spread(
            &mut incoming[v],
            &|e| centre_y(chains[e][chains[e].len() - 2]),
            &boxes[v],
            &mut in_port,
        );
    }

    ordering
        .chains
        .iter()
        .enumerate()
        .map(|(e, chain)| {
            let (from, to) = (chain[0], chain[chain.len() - 1]);
            let mut points = Vec::with_capacity(2 * chain.len());
            points.push((boxes[from].right(), out_port[e]));
            points.push((columns[ordering.rank[from]].1, out_port[e]));
            for &d in &chain[1..chain.len() - 1] {
                let (left, right) = columns[ordering.rank[d]];
                points.push((left, y[d]));
                points.push((right, y[d]));
            }
            points.push((columns[ordering.rank[to]].0, in_port[e]));
            points.push((boxes[to].x, in_port[e]));
            Route { from, to, points }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viz::test_support::{DEMO, compiled, edges, generated};

    fn needs_of(wf: &crate::compile::CompiledWorkflow) -> Vec<Vec<usize>> {
        wf.steps.iter().map(|s| s.needs.clone()).collect()
    }

    fn uniform(n: usize) -> Vec<Size> {
        vec![Size { w: 100.0, h: 40.0 }; n]
    }

    #[test]
    fn every_node_is_right_of_all_its_needs() {
        for yaml in [DEMO.to_string(), generated(30, 7)] {
            let wf = compiled(&yaml);
            let l = layout(&wf.waves, &needs_of(&wf), &uniform(wf.steps.len()));
            for (need, step) in edges(&wf) {
                assert!(
                    l.boxes[need].right() < l.boxes[step].x,
                    "{} is not left of {}",
                    wf.steps[need].id,
                    wf.steps[step].id
                );
            }
        }
    }

    #[test]
    fn boxes_in_a_column_do_not_overlap() {
        let wf = compiled(&generated(30, 7));
        let l = layout(&wf.waves, &needs_of(&wf), &uniform(wf.steps.len()));
        for wave in &wf.waves {
            for (i, &a) in wave.iter().enumerate() {
                for &b in &wave[i + 1..] {
                    let (a, b) = (l.boxes[a], l.boxes[b]);
                    assert!(a.bottom() <= b.y || b.bottom() <= a.y, "{a:?} overlaps {b:?}");
                }
            }
        }
    }

    #[test]
    fn crossing_reduction_never_adds_crossings() {
        for yaml in [DEMO.to_string(), generated(12, 4), generated(30, 7), generated(40, 6)] {
            let wf = compiled(&yaml);
            let mut ordering = Ordering::new(&wf.waves, &needs_of(&wf));
            let before = ordering.crossings();
            ordering.reduce_crossings();
            assert!(ordering.crossings() <= before, "{before} -> {}", ordering.crossings());
        }
    }

    /// Every pair of segments between adjacent layers, checked one by one.
    fn crossings_by_brute_force(o: &Ordering) -> usize {
        let pos = &o.positions();
        let mut total = 0;
        for layer in &o.layers {
            let segs: Vec<(usize, usize)> = layer
                .iter()
                .flat_map(|&a| o.succs[a].iter().map(move |&b| (pos[a], pos[b])))
                .collect();
            for (i, &(a1, b1)) in segs.iter().enumerate() {
                for &(a2, b2) in &segs[i + 1..] {
                    total += usize::from((a1 < a2 && b1 > b2) || (a1 > a2 && b1 < b2));
                }
            }
        }
        total
    }

    #[test]
    fn crossings_are_counted_exactly() {
        for yaml in [DEMO.to_string(), generated(30, 7), generated(60, 5)] {
            let wf = compiled(&yaml);
            let mut ordering = Ordering::new(&wf.waves, &needs_of(&wf));
            assert_eq!(ordering.crossings(), crossings_by_brute_force(&ordering));
            ordering.reduce_crossings();
            assert_eq!(ordering.crossings(), crossings_by_brute_force(&ordering));
        }
    }

    #[test]
    fn crossing_reduction_uncrosses_a_known_crossing() {
        // In file order a, b over c, d: a -> d and b -> c cross.
        let wf = compiled(
            "name: x\nsteps:\n  a: { uses: set }\n  b: { uses: set }\n  c: { uses: set, needs: [b] }\n  d: { uses: set, needs: [a] }\n",
        );
        let mut ordering = Ordering::new(&wf.waves, &needs_of(&wf));
        assert_eq!(ordering.crossings(), 1);
        ordering.reduce_crossings();
        assert_eq!(ordering.crossings(), 0);
        let l = layout(&wf.waves, &needs_of(&wf), &uniform(4));
        assert_eq!(l.crossings, 0);
    }

    #[test]
    fn long_edges_pass_between_boxes() {
        // a -> d skips the column of b and c.
        let wf = compiled(
            "name: x\nsteps:\n  a: { uses: set }\n  b: { uses: set, needs: [a] }\n  c: { uses: set, needs: [b] }\n  e: { uses: set, needs: [a] }\n  d: { uses: set, needs: [a, c] }\n",
        );
        let l = layout(&wf.waves, &needs_of(&wf), &uniform(wf.steps.len()));
        let long = l.routes.iter().find(|r| r.from == 0 && r.to == 4).unwrap();
        assert_eq!(long.points.len(), 8, "one dummy pair per skipped column");
        for pair in long.points[2..6].chunks(2) {
            let y = pair[0].1;
            assert_eq!(pair[0].1, pair[1].1, "straight across a column");
            for b in &l.boxes {
                let inside_x = b.x < pair[1].0 && pair[0].0 < b.right();
                assert!(!(inside_x && b.y < y && y < b.bottom()), "passes through {b:?}");
            }
        }
    }

    #[test]
    fn routes_start_and_end_on_their_boxes() {
        let wf = compiled(DEMO);
        let l = layout(&wf.waves, &needs_of(&wf), &uniform(4));
        assert_eq!(l.routes.len(), 4);
        for r in &l.routes {
            let (first, last) = (r.points[0], r.points[r.points.len() - 1]);
            assert_eq!(first.0, l.boxes[r.from].right());
            assert_eq!(last.0, l.boxes[r.to].x);
            assert!(l.boxes[r.from].y <= first.1 && first.1 <= l.boxes[r.from].bottom());
            assert!(l.boxes[r.to].y <= last.1 && last.1 <= l.boxes[r.to].bottom());
        }
    }

    #[test]
    fn pack_keeps_order_and_gaps() {
        let layer = [0, 1, 2];
        let placed = pack(&layer, &[10.0, 10.0, 10.0], &|_| 20.0, &|_, _| 5.0);
        assert_eq!(placed, vec![-15.0, 10.0, 35.0]);
        let free = pack(&layer, &[0.0, 100.0, 200.0], &|_| 20.0, &|_, _| 5.0);
        assert_eq!(free, vec![0.0, 100.0, 200.0]);
    }
}
