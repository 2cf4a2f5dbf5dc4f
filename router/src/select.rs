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
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Node id.
    pub id: String,
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

impl Candidate {
    fn eligible(&self) -> bool {
        self.healthy && self.accepting && self.has_module && self.players < self.capacity
    }

    fn load(&self) -> f64 {
        self.players as f64 / self.capacity.max(1) as f64
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

/// The chosen node and up to `alternates` next best, by index into `candidates`.
pub fn place(candidates: &[Candidate], alternates: usize) -> Result<(usize, Vec<usize>), NoNode> {
    if !candidates.iter().any(|c| c.has_module) {
        return Err(NoNode::NoModule);
    }
    let mut ok: Vec<usize> = (0..candidates.len()).filter(|&i| candidates[i].eligible()).collect();
    if ok.is_empty() {
        return Err(NoNode::NoneAvailable);
    }
    // Nodes with an estimate come before nodes without; then lower RTT; then lower load; then id,
    // so the choice is deterministic.
    ok.sort_by(|&a, &b| {
        let (ca, cb) = (&candidates[a], &candidates[b]);
        let key = |c: &Candidate| c.estimate.map_or(f64::INFINITY, |e| e.0);
        key(ca).total_cmp(&key(cb)).then(ca.load().total_cmp(&cb.load())).then(ca.id.cmp(&cb.id))
    });
    let best = ok[0];
    Ok((best, ok.into_iter().skip(1).take(alternates).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, rtt: Option<f64>, players: u32) -> Candidate {
        Candidate {
            id: id.into(),
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
            let got = place(&nodes, 2).map(|(b, alts)| {
                (nodes[b].id.as_str(), alts.into_iter().map(|i| nodes[i].id.as_str()).collect::<Vec<_>>())
            });
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn alternates_are_bounded_and_ordered() {
        let nodes: Vec<Candidate> = (0..10).map(|i| node(&format!("n{i}"), Some(100.0 - i as f64), 0)).collect();
        let (best, alts) = place(&nodes, 3).unwrap();
        assert_eq!(nodes[best].id, "n9");
        assert_eq!(alts.iter().map(|&i| nodes[i].id.as_str()).collect::<Vec<_>>(), vec!["n8", "n7", "n6"]);
        assert_eq!(Method::MeasuredCell.as_str(), "measured-cell");
        assert!(Method::MeasuredPrefix < Method::Geo);
    }
}
