//! Placement: the lowest estimated RTT among healthy nodes that have the module and free capacity.
//! Ties go to the lower load; the next best are the alternates. Pure: the caller brings the
//! candidates and their estimates.

/// How an estimate was made, best first. Serialized as `estimate.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
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

    fn load(&self) -> f64 {
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
}
