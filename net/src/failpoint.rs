//! Crash points for the crash tests: `OUTPOST_FAILPOINTS=name=N[,name=N...]` makes the process
//! kill itself with SIGKILL the Nth time it reaches the point `name`, exactly as `kill -9` from
//! outside would, but at a moment chosen inside a write path (between a write and its fsync,
//! between an ack and a deletion). Release binaries carry them: a cargo feature would build
//! wasmtime a second time. Unset, a point costs one load of an initialised `OnceLock`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Point {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn points() -> &'static [Point] {
    static POINTS: OnceLock<Vec<Point>> = OnceLock::new();
    POINTS.get_or_init(|| parse(&std::env::var("OUTPOST_FAILPOINTS").unwrap_or_default()))
}

fn parse(spec: &str) -> Vec<Point> {
    spec.split(',')
        .filter_map(|p| {
            let (name, at) = p.trim().split_once('=')?;
            Some(Point { name: name.to_string(), at: at.parse().ok()?, hits: AtomicU64::new(0) })
        })
        .collect()
}

/// Marks the point `name`; dies here if the environment says this is the hit to die at.
#[inline]
pub fn hit(name: &str) {
    let points = points();
    if points.is_empty() {
        return;
    }
    for p in points.iter().filter(|p| p.name == name) {
        if p.hits.fetch_add(1, Ordering::Relaxed) + 1 == p.at {
            eprintln!("failpoint {name}: hit {}, killing the process", p.at);
            // SAFETY: kill and getpid have no preconditions; SIGKILL ends the process at once.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_names_points_and_hit_counts() {
        let p = parse("outbox.before_fsync=3, store.before_commit=1,junk,x=y");
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].name.as_str(), p[0].at), ("outbox.before_fsync", 3));
        assert_eq!((p[1].name.as_str(), p[1].at), ("store.before_commit", 1));
        assert!(parse("").is_empty());
    }
}
