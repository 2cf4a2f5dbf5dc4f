//! Rate limiting: a token bucket with the clock as an argument, shared by the edge's beacon and
//! players and the router's clients.

use std::time::Instant;

/// A token bucket; the clock is an argument so it is testable without waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: f64, now: Instant) -> Self {
        TokenBucket { tokens: burst, last: now }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant, per_second: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * per_second).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, t0);
        assert!((0..3).all(|_| b.take(t0, 10.0, 3.0)));
        assert!(!b.take(t0, 10.0, 3.0));
        assert!(b.take(t0 + Duration::from_millis(100), 10.0, 3.0));
        assert!(!b.take(t0 + Duration::from_millis(100), 10.0, 3.0));
        // Long idle never grows the bucket past its burst.
        let later = t0 + Duration::from_secs(100);
        assert!((0..3).all(|_| b.take(later, 10.0, 3.0)));
        assert!(!b.take(later, 10.0, 3.0));
    }
}
