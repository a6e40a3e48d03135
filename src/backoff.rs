//! Capped exponential backoff with jitter: every "try again later" in the server.
//!
//! The batch writer retrying a failed batch, the resilient store retrying a flush and
//! pacing its outbox replay, and the accept loop after an accept error all wait the same
//! way: each failure doubles a ceiling, up to a cap, and the pause is drawn at random under
//! that ceiling, so that servers which failed together (a database restart) do not retry in
//! lockstep. A success [`reset`](Backoff::reset)s it.
//!
//! Two kinds of jitter, after "Exponential Backoff And Jitter" (AWS Architecture Blog):
//! [`Jitter::Full`] draws from the whole range below the ceiling and spreads retries best;
//! [`Jitter::Equal`] keeps the upper half, for waits that must not collapse to nothing
//! (pacing a replay, an accept loop that must not spin).

use std::time::Duration;

/// How the pause is drawn under the current ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
}

/// A capped, jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    jitter: Jitter,
    /// The ceiling of the next pause: `first`, doubled after each pause, at most `cap`.
    ceiling: Duration,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff {
            first,
            cap,
            jitter,
            ceiling: first.min(cap),
        }
    }

    /// The pause before the next attempt; each call doubles the ceiling (up to the cap).
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(self.cap);
        match self.jitter {
            Jitter::Full => ceiling.mul_f64(fastrand::f64()),
            Jitter::Equal => ceiling.mul_f64(0.5 + fastrand::f64() / 2.0),
        }
    }

    /// The ceiling the next pause is drawn under.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// Back to the first pause, after a success.
    pub fn reset(&mut self) {
        self.ceiling = self.first.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(10);
    const CAP: Duration = Duration::from_millis(70);

    #[test]
    fn pauses_stay_under_a_doubling_ceiling_that_stops_at_the_cap() {
        for jitter in [Jitter::Full, Jitter::Equal] {
            let mut backoff = Backoff::new(FIRST, CAP, jitter);
            let ceilings = [10, 20, 40, 70, 70, 70].map(Duration::from_millis);
            for ceiling in ceilings {
                assert_eq!(backoff.ceiling(), ceiling);
                let pause = backoff.next_pause();
                assert!(pause <= ceiling, "{jitter:?}: {pause:?} over {ceiling:?}");
                if jitter == Jitter::Equal {
                    assert!(pause >= ceiling / 2, "equal jitter keeps half: {pause:?}");
                }
            }
            backoff.reset();
            assert_eq!(backoff.ceiling(), FIRST);
        }
    }

    #[test]
    fn full_jitter_spreads_pauses_over_the_whole_range() {
        let pauses: Vec<Duration> = (0..200)
            .map(|_| Backoff::new(CAP, CAP, Jitter::Full).next_pause())
            .collect();
        // 200 uniform draws all landing in one half has probability 2^-199.
        assert!(pauses.iter().any(|pause| *pause < CAP / 2));
        assert!(pauses.iter().any(|pause| *pause > CAP / 2));
    }
}
