//! Placement: the lowest estimated RTT among healthy nodes that have the module and free capacity.
//! Ties go to the lower load; the next best are the alternates. Pure: the caller brings the
//! candidates and their estimates.

/// How an estimate was made, best first. Serialized as `estimate.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// Measured by this client just now (`POST /v1/route` with results).
    MeasuredSelf,
    /// Measured by clients in the same network prefix.
    MeasuredPrefix,
    /// Measured by clients in the same geo cell.
    MeasuredCell,
    /// Great-circle model from GeoIP.
    Geo,
    /// Nothing known: order by load only.
    None,
}

impl Method {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::MeasuredSelf => "measured-self",
            Method::MeasuredPrefix => "measured-prefix",
            Method::MeasuredCell => "measured-cell",
            Method::Geo => "geo",
            Method::None => "none",
        }
    }
}

/// A node as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// Where the caller keeps the node (registry slot); carried through to the answer.
    pub index: usize,
    /// Node id, the last tie-breaker so the choice is deterministic.
    pub id: &'a str,
    /// Heartbeats current.
    pub healthy: bool,
    /// Taking joins.
    pub accepting: bool,
    /// Has the module asked for.
    pub has_module: bool,
    /// Player capacity.
    pub capacity: u32,
    /// Players now.
    pub players: u32,
    /// Estimated RTT from this client, ms, and how it was made.
    pub estimate: Option<(f64, Method)>,
}

impl Candidate<'_> {
    /// Healthy, accepting, has the module and below capacity.
    pub fn eligible(&self) -> bool {
        self.healthy && self.accepting && self.has_module && self.players < self.capacity
    }

    /// Players over capacity.
    pub fn load(&self) -> f64 {
        self.players as f64 / self.capacity.max(1) as f64
    }

    /// Nodes with an estimate come before nodes without; then lower RTT; then lower load; then id.
    fn better_than(&self, other: &Candidate<'_>) -> bool {
        let key = |c: &Candidate<'_>| c.estimate.map_or(f64::INFINITY, |e| e.0);
        key(self).total_cmp(&key(other)).then(self.load().total_cmp(&other.load())).then(self.id.cmp(other.id)).is_lt()
    }
}

/// Why no node was chosen; the router answers 503 with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNode {
    /// No node at all has the module.
    NoModule,
    /// Nodes have it, but none is healthy, accepting and below capacity.
    NoneAvailable,
}

impl NoNode {
    /// The reason in the 503 body.
    pub fn reason(&self, module: &str) -> String {
        match self {
            NoNode::NoModule => format!("no registered node has module {module:?}"),
            NoNode::NoneAvailable => {
                format!("every node with module {module:?} is down, not accepting or full")
            }
        }
    }
}

/// The chosen node, then up to `alternates` next best, best first.
///
/// One pass that keeps only the best `1 + alternates`, so the cost is linear in the candidates
/// with no allocation beyond the answer: the router calls this on every route.
pub fn place<'a>(
    candidates: impl IntoIterator<Item = Candidate<'a>>,
    alternates: usize,
) -> Result<Vec<Candidate<'a>>, NoNode> {
    let keep = alternates + 1;
    let mut top: Vec<Candidate<'a>> = Vec::with_capacity(keep + 1);
    let mut any_module = false;
    for c in candidates {
        any_module |= c.has_module;
        if !c.eligible() {
            continue;
        }
        if top.len() == keep && !c.better_than(&top[keep - 1]) {
            continue;
        }
        let at = top.iter().position(|t| c.better_than(t)).unwrap_or(top.len());
        top.insert(at, c);
        top.truncate(keep);
    }
    if !any_module {
        return Err(NoNode::NoModule);
    }
    if top.is_empty() {
        return Err(NoNode::NoneAvailable);
    }
    Ok(top)
}

/// The nodes a client should measure: walks `ordered` (eligible nodes, lowest estimate first)
/// and takes up to `n`, at most `per_region` from any one region, so that the list reaches into
/// the neighbouring regions where the estimate may be wrong.
pub fn pick_candidates<'a, T>(ordered: impl IntoIterator<Item = (&'a str, T)>, n: usize, per_region: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    let mut regions: Vec<(&str, usize)> = Vec::new();
    for (region, item) in ordered {
        if out.len() >= n {
            break;
        }
        match regions.iter_mut().find(|r| r.0 == region) {
            Some(r) if r.1 >= per_region => continue,
            Some(r) => r.1 += 1,
            None => regions.push((region, 1)),
        }
        out.push(item);
    }
    out
}

/// A node as match placement sees it: eligible, with room for the whole match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchNode<'a> {
    /// Carried through to the answer.
    pub index: usize,
    /// Node id, the last tie-breaker.
    pub id: &'a str,
    /// Players over capacity, the tie-breaker after the mean.
    pub load: f64,
}

/// A node's score for one match: players it has no estimate for (fewest first), then the worst
/// player's estimate, then the mean, then load, then id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchScore {
    /// Players with no estimate to the node.
    pub unknown: usize,
    /// The worst known estimate, ms (0 when none is known).
    pub worst: f64,
    /// The mean known estimate, ms.
    pub mean: f64,
}

impl MatchScore {
    fn key_cmp(&self, o: &MatchScore) -> std::cmp::Ordering {
        self.unknown.cmp(&o.unknown).then(self.worst.total_cmp(&o.worst)).then(self.mean.total_cmp(&o.mean))
    }
}

/// Why no node was chosen for a match.
#[derive(Debug, Clone, PartialEq)]
pub enum NoMatch {
    /// No node has the module, supports match tickets and has room for every player.
    NoNode,
    /// The best node's worst estimate is above `max_rtt_ms`; each player's best reachable
    /// estimate (over every node that could take the match) is given, in player order.
    TooFar {
        /// The best node's worst estimate, ms (`None` when some player has no estimate).
        worst: Option<f64>,
        /// Each player's lowest estimate to any node that could take the match.
        best_per_player: Vec<Option<f64>>,
    },
}

/// Places a whole match: the node minimising the worst player's estimate (ties: the lower mean,
/// then the lower load, then the id). `estimate(player, node)` gives one player's estimate to
/// one node. Returns the node and its score; with `max_rtt_ms`, refuses a worst estimate above it.
pub fn place_match<'a>(
    nodes: &[MatchNode<'a>],
    players: usize,
    estimate: impl Fn(usize, usize) -> Option<f64>,
    max_rtt_ms: Option<f64>,
) -> Result<(MatchNode<'a>, MatchScore), NoMatch> {
    // A node's score, or `None` as soon as it cannot beat `bound`: the players' unknown count
    // and worst estimate only grow as more are counted, so once both reach past the bound's the
    // node has lost, and most of a fleet is far from someone.
    let score = |n: &MatchNode<'_>, bound: Option<&MatchScore>| {
        let (mut unknown, mut worst, mut sum, mut known) = (0, 0.0f64, 0.0, 0usize);
        for p in 0..players {
            match estimate(p, n.index) {
                Some(e) => {
                    worst = worst.max(e);
                    sum += e;
                    known += 1;
                }
                None => unknown += 1,
            }
            if let Some(b) = bound
                && (unknown > b.unknown || (unknown == b.unknown && worst > b.worst))
            {
                return None;
            }
        }
        Some(MatchScore { unknown, worst, mean: if known == 0 { 0.0 } else { sum / known as f64 } })
    };
    // Seed the bound with the node nearest the first player: usually a fair answer, so the
    // full pass below drops most nodes after a player or two.
    let seed = nodes
        .iter()
        .filter_map(|n| Some((n, estimate(0, n.index)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .and_then(|(n, _)| Some((*n, score(n, None)?)));
    let mut best: Option<(MatchNode<'a>, MatchScore)> = seed;
    for n in nodes {
        let Some(s) = score(n, best.as_ref().map(|b| &b.1)) else { continue };
        let better = match &best {
            None => true,
            Some((b, bs)) => {
                s.key_cmp(bs).then(n.load.total_cmp(&b.load)).then(n.id.cmp(b.id)) == std::cmp::Ordering::Less
            }
        };
        if better {
            best = Some((*n, s));
        }
    }
    let (node, s) = best.ok_or(NoMatch::NoNode)?;
    if let Some(max) = max_rtt_ms
        && (s.unknown > 0 || s.worst > max)
    {
        let best_per_player =
            (0..players).map(|p| nodes.iter().filter_map(|n| estimate(p, n.index)).min_by(f64::total_cmp)).collect();
        return Err(NoMatch::TooFar { worst: (s.unknown == 0).then_some(s.worst), best_per_player });
    }
    Ok((node, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &'static str, rtt: Option<f64>, players: u32) -> Candidate<'static> {
        Candidate {
            index: 0,
            id,
            healthy: true,
            accepting: true,
            has_module: true,
            capacity: 100,
            players,
            estimate: rtt.map(|r| (r, Method::Geo)),
        }
    }

    #[test]
    fn table_of_placements() {
        type Want = Result<(&'static str, Vec<&'static str>), NoNode>;
        let cases: Vec<(&str, Vec<Candidate>, Want)> = vec![
            ("lowest rtt wins", vec![node("a", Some(80.0), 0), node("b", Some(20.0), 90)], Ok(("b", vec!["a"]))),
            (
                "tie goes to lower load",
                vec![node("a", Some(20.0), 50), node("b", Some(20.0), 10)],
                Ok(("b", vec!["a"])),
            ),
            ("estimates beat none", vec![node("a", None, 0), node("b", Some(300.0), 99)], Ok(("b", vec!["a"]))),
            ("no estimates: by load", vec![node("a", None, 60), node("b", None, 5)], Ok(("b", vec!["a"]))),
            (
                "full, down, draining and missing module are skipped",
                vec![
                    Candidate { players: 100, ..node("full", Some(1.0), 0) },
                    Candidate { healthy: false, ..node("down", Some(1.0), 0) },
                    Candidate { accepting: false, ..node("draining", Some(1.0), 0) },
                    Candidate { has_module: false, ..node("other", Some(1.0), 0) },
                    node("far", Some(200.0), 0),
                ],
                Ok(("far", vec![])),
            ),
            (
                "nobody has the module",
                vec![Candidate { has_module: false, ..node("a", Some(1.0), 0) }],
                Err(NoNode::NoModule),
            ),
            (
                "all unavailable",
                vec![Candidate { healthy: false, ..node("a", Some(1.0), 0) }],
                Err(NoNode::NoneAvailable),
            ),
            ("empty fleet", vec![], Err(NoNode::NoModule)),
        ];
        for (name, nodes, want) in cases {
            let got = place(nodes.iter().copied(), 2)
                .map(|top| (top[0].id, top[1..].iter().map(|c| c.id).collect::<Vec<_>>()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn alternates_are_bounded_and_ordered() {
        let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let nodes: Vec<Candidate> =
            ids.iter().enumerate().map(|(i, id)| Candidate { id, ..node("", Some(100.0 - i as f64), 0) }).collect();
        let top = place(nodes.iter().copied(), 3).unwrap();
        assert_eq!(top.iter().map(|c| c.id).collect::<Vec<_>>(), vec!["n9", "n8", "n7", "n6"]);
        assert_eq!(Method::MeasuredCell.as_str(), "measured-cell");
        assert!(Method::MeasuredPrefix < Method::Geo);
    }

    #[test]
    fn candidates_are_capped_per_region_in_estimate_order() {
        let ordered = [("eu", 1), ("eu", 2), ("eu", 3), ("af", 4), ("eu", 5), ("me", 6), ("af", 7), ("af", 8)];
        assert_eq!(pick_candidates(ordered, 3, 2), vec![1, 2, 4]);
        assert_eq!(pick_candidates(ordered, 5, 1), vec![1, 4, 6]);
        assert_eq!(pick_candidates(ordered, 10, 2), vec![1, 2, 4, 6, 7]);
        assert_eq!(pick_candidates(ordered, 0, 2), Vec::<i32>::new());
    }

    #[test]
    fn table_of_match_placements() {
        let n = |index, id, load| MatchNode { index, id, load };
        let nodes = [n(0, "a", 0.5), n(1, "b", 0.1), n(2, "c", 0.0)];
        // est[player][node]
        type Table = Vec<Vec<Option<f64>>>;
        let run = |est: &Table, max: Option<f64>| {
            place_match(&nodes, est.len(), |p, i| est[p][i], max).map(|(node, s)| (node.id, s.worst, s.mean))
        };
        let some = |v: &[f64]| v.iter().map(|&x| Some(x)).collect::<Vec<_>>();
        type Want = Result<(&'static str, f64, f64), NoMatch>;
        let cases: Vec<(&str, Table, Option<f64>, Want)> = vec![
            (
                "the worst player decides, not the mean",
                vec![some(&[10.0, 40.0, 30.0]), some(&[90.0, 45.0, 50.0])],
                None,
                Ok(("b", 45.0, 42.5)),
            ),
            (
                "equal worst: the lower mean",
                vec![some(&[50.0, 50.0, 50.0]), some(&[10.0, 40.0, 20.0])],
                None,
                Ok(("a", 50.0, 30.0)),
            ),
            (
                "equal worst and mean: the lower load",
                vec![some(&[50.0, 50.0, 50.0]), some(&[20.0, 20.0, 20.0])],
                None,
                Ok(("c", 50.0, 35.0)),
            ),
            (
                "a node some player has no estimate for comes last",
                vec![vec![Some(10.0), Some(200.0), None], some(&[10.0, 200.0, 1.0])],
                None,
                Ok(("a", 10.0, 10.0)),
            ),
            ("max_rtt_ms met", vec![some(&[30.0, 60.0, 90.0])], Some(30.0), Ok(("a", 30.0, 30.0))),
            (
                "max_rtt_ms missed: each player's best reachable",
                vec![some(&[30.0, 60.0, 90.0]), some(&[80.0, 70.0, 75.0])],
                Some(50.0),
                Err(NoMatch::TooFar { worst: Some(70.0), best_per_player: vec![Some(30.0), Some(70.0)] }),
            ),
        ];
        for (name, est, max, want) in cases {
            assert_eq!(run(&est, max), want, "{name}");
        }
        assert_eq!(place_match(&[], 3, |_, _| Some(1.0), None).unwrap_err(), NoMatch::NoNode);
    }
}
