//! What `GET /healthz` reports: ok, or the problems the server noticed recently.
//!
//! Parts of the server that find something wrong they cannot fix silently (the embedded
//! database file deleted under the running server, say) report it here with how long it
//! should be shown. While any report is current, `/healthz` answers `503` and names them,
//! so a health checker that polls every few seconds sees the event even when the server
//! has already recovered from it; the matching counter in `/metrics` keeps the total.

use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// Problems reported, and until when each is shown.
#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<Vec<Problem>>,
}

#[derive(Debug, Clone)]
struct Problem {
    message: String,
    until: Instant,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports a problem, shown for `hold` (stamped with the time it was reported).
    pub fn report(&self, message: &str, hold: Duration) {
        let stamp = httpdate::fmt_http_date(SystemTime::now());
        let mut problems = self.problems.lock();
        problems.retain(|problem| problem.until > Instant::now());
        problems.push(Problem {
            message: format!("{message} ({stamp})"),
            until: Instant::now() + hold,
        });
    }

    /// The problems still current, oldest first.
    pub fn problems(&self) -> Vec<String> {
        let now = Instant::now();
        self.problems
            .lock()
            .iter()
            .filter(|problem| problem.until > now)
            .map(|problem| problem.message.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_shown_for_their_hold_then_forgotten() {
        let health = Health::new();
        assert!(health.problems().is_empty());
        health.report("the database file was deleted", Duration::from_millis(50));
        let shown = health.problems();
        assert_eq!(shown.len(), 1);
        assert!(
            shown[0].starts_with("the database file was deleted ("),
            "{shown:?}"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(health.problems().is_empty());
    }
}
