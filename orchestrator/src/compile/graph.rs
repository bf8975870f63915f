//! The step graph: edges from `needs`, cycle detection that names every
//! step on a cycle, a stable topological order, waves and ancestor sets.
//!
//! Every algorithm here is iterative and linear in steps + edges (ancestor
//! sets: steps × (steps + edges) / 64 bit operations), so the largest file
//! the compiler accepts costs milliseconds and no stack, whichever thread
//! compiles it (`serve`'s workers have 2 MiB stacks).

use fixedbitset::FixedBitSet;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// The dependency graph of a workflow; node `i` is step `i` in file order,
/// and an edge `a -> b` means `b` needs `a`.
#[derive(Debug, Clone, Default)]
pub struct StepGraph {
    pub graph: DiGraph<usize, ()>,
}

impl StepGraph {
    /// `needs[i]` lists the steps step `i` needs (already resolved, no self edges).
    pub fn new(needs: &[Vec<usize>]) -> Self {
        let mut graph = DiGraph::with_capacity(needs.len(), needs.iter().map(Vec::len).sum());
        for i in 0..needs.len() {
            graph.add_node(i);
        }
        for (step, deps) in needs.iter().enumerate() {
            for &dep in deps {
                graph.update_edge(NodeIndex::new(dep), NodeIndex::new(step), ());
            }
        }
        StepGraph { graph }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn needs(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .edges_directed(NodeIndex::new(step), petgraph::Direction::Incoming)
            .map(|e| e.source().index())
    }

    pub fn dependents(&self, step: usize) -> impl Iterator<Item = usize> + '_ {
        self.graph
            .edges_directed(NodeIndex::new(step), petgraph::Direction::Outgoing)
            .map(|e| e.target().index())
    }

    /// Every cycle as the list of its steps in dependency order, the first
    /// repeated at the end (`a -> b -> a`). One cycle per strongly connected
    /// component.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut cycles = Vec::new();
        // Kosaraju, not Tarjan: petgraph's Tarjan recurses once per step of a
        // chain and overflows a worker's stack on a long `needs` chain.
        for scc in petgraph::algo::kosaraju_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            let members: std::collections::HashSet<usize> = scc.iter().map(|n| n.index()).collect();
            let start = *members.iter().min().expect("non-empty");
            cycles.push(self.cycle_through(start, &members));
        }
        cycles.sort();
        cycles
    }

    /// A simple cycle from `start` back to itself inside `members` (BFS, so
    /// the shortest one).
    fn cycle_through(
        &self,
        start: usize,
        members: &std::collections::HashSet<usize>,
    ) -> Vec<usize> {
        let mut previous = vec![usize::MAX; self.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<usize> =
                self.dependents(node).filter(|d| members.contains(d)).collect();
            next.sort_unstable();
            for d in next {
                if d == start {
                    // Walk back from `node` to `start`, then read forwards.
                    let mut path = vec![node];
                    let mut cur = node;
                    while cur != start {
                        cur = previous[cur];
                        path.push(cur);
                    }
                    path.reverse();
                    path.push(start);
                    return path;
                }
                if previous[d] == usize::MAX && d != start {
                    previous[d] = node;
                    queue.push_back(d);
                }
            }
        }
        vec![start, start]
    }

    /// Topological order; among ready steps, file order first. `None` on a cycle.
    pub fn topological_order(&self) -> Option<Vec<usize>> {
        let mut indegree: Vec<usize> = (0..self.len()).map(|i| self.needs(i).count()).collect();
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
            (0..self.len()).filter(|&i| indegree[i] == 0).map(std::cmp::Reverse).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(std::cmp::Reverse(step)) = ready.pop() {
            order.push(step);
            for d in self.dependents(step) {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.push(std::cmp::Reverse(d));
                }
            }
        }
        (order.len() == self.len()).then_some(order)
    }

    /// Steps grouped by depth: wave 0 needs nothing, wave n needs something in wave n-1.
    pub fn waves(&self, order: &[usize]) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.len()];
        for &step in order {
            depth[step] = self.needs(step).map(|n| depth[n] + 1).max().unwrap_or(0);
        }
        let mut waves: Vec<Vec<usize>> = vec![Vec::new(); depth.iter().max().map_or(0, |d| d + 1)];
        for &step in order {
            waves[depth[step]].push(step);
        }
        for wave in &mut waves {
            wave.sort_unstable();
        }
        waves
    }

    /// For each step, the set of steps that finish before it starts. Works on
    /// cyclic graphs too (cycle members see each other), so checks that use it
    /// still run when a cycle is also reported.
    ///
    /// Computed over the strongly connected components in topological
    /// order, each component's set the union of its predecessors' sets:
    /// one bit set per step, no recursion.
    pub fn ancestors(&self) -> Ancestors {
        let n = self.len();
        // Kosaraju yields components in reverse topological order.
        let mut components = petgraph::algo::kosaraju_scc(&self.graph);
        components.reverse();
        let mut component_of = vec![0usize; n];
        for (c, members) in components.iter().enumerate() {
            for m in members {
                component_of[m.index()] = c;
            }
        }
        let mut sets: Vec<FixedBitSet> = Vec::with_capacity(components.len());
        for (c, members) in components.iter().enumerate() {
            let mut set = FixedBitSet::with_capacity(n);
            let cyclic = members.len() > 1;
            for m in members {
                for need in self.needs(m.index()) {
                    let pc = component_of[need];
                    if pc != c {
                        set.union_with(&sets[pc]);
                    }
                    set.insert(need);
                }
            }
            if cyclic {
                for m in members {
                    set.insert(m.index());
                }
            }
            sets.push(set);
        }
        Ancestors { of: (0..n).map(|i| component_of[i]).collect(), sets }
    }
}

/// `contains(i, j)`: step `j` always finishes before step `i` starts. One
/// bit set per strongly connected component (a chain of 2,000 steps is
/// 2,000 × 2,000 bits, half a megabyte).
#[derive(Debug, Clone, Default)]
pub struct Ancestors {
    /// Step -> its component.
    of: Vec<usize>,
    sets: Vec<FixedBitSet>,
}

impl Ancestors {
    pub fn contains(&self, step: usize, ancestor: usize) -> bool {
        self.sets[self.of[step]].contains(ancestor)
    }

    /// The ancestors of `step`, as a set of step indexes.
    pub fn of(&self, step: usize) -> &FixedBitSet {
        &self.sets[self.of[step]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orders_and_waves() {
        // 0 <- 1, 0 <- 2, {1,2} <- 3
        let g = StepGraph::new(&[vec![], vec![0], vec![0], vec![1, 2]]);
        let order = g.topological_order().unwrap();
        assert_eq!(order, vec![0, 1, 2, 3]);
        assert_eq!(g.waves(&order), vec![vec![0], vec![1, 2], vec![3]]);
        let anc = g.ancestors();
        assert_eq!(anc.of(3).ones().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(anc.of(1).ones().collect::<Vec<_>>(), vec![0]);
        assert!(anc.contains(3, 0) && !anc.contains(0, 3));
    }

    #[test]
    fn names_every_step_on_a_cycle() {
        // 0 needs 2, 1 needs 0, 2 needs 1: 0 -> 1 -> 2 -> 0
        let g = StepGraph::new(&[vec![2], vec![0], vec![1], vec![]]);
        assert_eq!(g.cycles(), vec![vec![0, 1, 2, 0]]);
        assert!(g.topological_order().is_none());
    }

    /// A 100,000-step chain: no recursion anywhere, so no stack overflow
    /// on a 256 KiB thread (far below a tokio worker's 2 MiB).
    #[test]
    fn a_long_chain_needs_no_stack() {
        let n = 100_000;
        let needs: Vec<Vec<usize>> =
            (0..n).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let g = StepGraph::new(&needs);
                assert!(g.cycles().is_empty());
                let order = g.topological_order().unwrap();
                assert_eq!(g.waves(&order).len(), n);
            })
            .unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn cycle_members_see_each_other_and_what_feeds_the_cycle() {
        // 0 <- 1 <-> 2 <- 3
        let g = StepGraph::new(&[vec![], vec![0, 2], vec![1], vec![2]]);
        let anc = g.ancestors();
        assert_eq!(anc.of(1).ones().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(anc.of(3).ones().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(anc.of(0).is_clear());
    }

    proptest! {
        /// Bit-set ancestors equal plain reachability over `needs`.
        #[test]
        fn ancestors_are_reachability(edges in proptest::collection::vec((0usize..15, 0usize..15), 0..50)) {
            let mut needs = vec![Vec::new(); 15];
            for (a, b) in edges {
                if a != b && !needs[b].contains(&a) { needs[b].push(a); }
            }
            let g = StepGraph::new(&needs);
            let anc = g.ancestors();
            for step in 0..15 {
                let mut seen = [false; 15];
                let mut stack: Vec<usize> = needs[step].clone();
                while let Some(a) = stack.pop() {
                    if !seen[a] { seen[a] = true; stack.extend(needs[a].iter().copied()); }
                }
                for (j, &s) in seen.iter().enumerate() {
                    prop_assert_eq!(anc.contains(step, j), s, "step {} ancestor {}", step, j);
                }
            }
        }

        /// Edges only from lower to higher index: always acyclic, and the
        /// order respects every edge.
        #[test]
        fn acyclic_graphs_sort(edges in proptest::collection::vec((0usize..30, 0usize..30), 0..120)) {
            let mut needs = vec![Vec::new(); 30];
            for (a, b) in edges {
                if a < b { needs[b].push(a); }
            }
            let g = StepGraph::new(&needs);
            prop_assert!(g.cycles().is_empty());
            let order = g.topological_order().unwrap();
            let pos: Vec<usize> = { let mut p = vec![0; 30]; for (i, s) in order.iter().enumerate() { p[*s] = i; } p };
            for (b, deps) in needs.iter().enumerate() {
                for a in deps { prop_assert!(pos[*a] < pos[b]); }
            }
        }

        /// Any graph: reported cycles are real cycles, and a topological order
        /// exists exactly when none is reported.
        #[test]
        fn cycles_are_real(edges in proptest::collection::vec((0usize..12, 0usize..12), 0..40)) {
            let mut needs = vec![Vec::new(); 12];
            for (a, b) in edges {
                if a != b { needs[b].push(a); }
            }
            let g = StepGraph::new(&needs);
            let cycles = g.cycles();
            prop_assert_eq!(cycles.is_empty(), g.topological_order().is_some());
            for cycle in cycles {
                prop_assert_eq!(cycle.first(), cycle.last());
                for w in cycle.windows(2) {
                    prop_assert!(needs[w[1]].contains(&w[0]), "{:?}", w);
                }
            }
        }
    }
}
