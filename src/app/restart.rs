//! When a [`WorkerPool`](super::WorkerPool) restarts a crashed worker, and when it gives up:
//! a backoff that doubles while replacements keep crashing soon after they start, and a restart
//! intensity limit, as Erlang/OTP supervisors and systemd's start limits have.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a pool restarts a crashed worker, and when it gives up: the settings of
/// [`PoolBuilder::backoff`] and [`PoolBuilder::max_restarts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RestartPolicy {
    /// At most this many restarts within `window`; one more fails the pool.
    pub(super) max_restarts: usize,
    pub(super) window: Duration,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
}

impl RestartPolicy {
    /// The wait before restarting a slot whose workers crashed `crashes_in_a_row` times:
    /// `backoff_min` after the first crash, doubling with each, at most `backoff_max`.
    pub(super) fn backoff(&self, crashes_in_a_row: u32) -> Duration {
        let factor = 2u32.saturating_pow(crashes_in_a_row.saturating_sub(1));
        self.backoff_min
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// The crashes of one slot's workers, which set the backoff before its next replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CrashStreak {
    /// When the slot's current worker started.
    started_at: Instant,
    crashes_in_a_row: u32,
    /// When its last worker crashed, or its last replacement failed to start.
    crashed_at: Option<Instant>,
}

impl CrashStreak {
    /// A slot whose worker started at `now`.
    pub(super) fn new(now: Instant) -> CrashStreak {
        CrashStreak {
            started_at: now,
            crashes_in_a_row: 0,
            crashed_at: None,
        }
    }

    /// The slot's worker crashed at `now`. One that crashed within the restart window of its
    /// start makes the streak, and the next backoff, longer; one that lived past it starts over.
    pub(super) fn crashed(&mut self, policy: &RestartPolicy, now: Instant) {
        if now.duration_since(self.started_at) < policy.window {
            self.crashes_in_a_row = self.crashes_in_a_row.saturating_add(1);
        } else {
            self.crashes_in_a_row = 1;
        }
        self.crashed_at = Some(now);
    }

    /// Starting a replacement failed at `now`: one more crash in a row.
    pub(super) fn start_failed(&mut self, now: Instant) {
        self.crashes_in_a_row = self.crashes_in_a_row.saturating_add(1);
        self.crashed_at = Some(now);
    }

    /// A replacement started at `now`.
    pub(super) fn restarted(&mut self, now: Instant) {
        self.started_at = now;
    }

    /// When a replacement is due, once the slot's worker is gone: its backoff after the last
    /// crash. `None` before any crash.
    pub(super) fn restart_due(&self, policy: &RestartPolicy) -> Option<Instant> {
        Some(self.crashed_at? + policy.backoff(self.crashes_in_a_row))
    }
}

/// The restarts of a pool's workers, against its restart intensity limit.
#[derive(Clone, Debug, Default)]
pub(super) struct RestartHistory {
    /// When the restarts within the window happened, oldest first (and perhaps some older ones,
    /// forgotten at the next restart).
    recent: VecDeque<Instant>,
    /// Every restart since the pool started.
    pub(super) total: usize,
}

impl RestartHistory {
    /// Whether restarting a worker at `now` would be one restart too many: the window ending at
    /// `now` already holds `max_restarts` restarts.
    pub(super) fn exceeded(&self, policy: &RestartPolicy, now: Instant) -> bool {
        let within = self
            .recent
            .iter()
            .filter(|at| now.duration_since(**at) <= policy.window)
            .count();
        within >= policy.max_restarts
    }

    /// Records a restart at `now`, forgetting those older than the window.
    pub(super) fn record_restart(&mut self, policy: &RestartPolicy, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) > policy.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.total += 1;
    }
}

impl Default for RestartPolicy {
    /// 5 restarts in 60 s, a backoff from 50 ms to 5 s.
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    /// The defaults: 5 restarts in 60 s, a backoff from 50 ms to 5 s.
    fn policy() -> RestartPolicy {
        RestartPolicy::default()
    }

    #[test]
    fn the_backoff_doubles_with_each_crash_in_a_row_up_to_its_cap() {
        let policy = policy();
        let cases = [
            (0, 50 * MS),
            (1, 50 * MS),
            (2, 100 * MS),
            (3, 200 * MS),
            (4, 400 * MS),
            (5, 800 * MS),
            (6, 1600 * MS),
            (7, 3200 * MS),
            (8, 5 * SECOND),
            (9, 5 * SECOND),
            (40, 5 * SECOND),
            (u32::MAX, 5 * SECOND),
        ];
        for (crashes_in_a_row, expected) in cases {
            assert_eq!(
                policy.backoff(crashes_in_a_row),
                expected,
                "{crashes_in_a_row} in a row"
            );
        }
        let flat = RestartPolicy {
            backoff_min: SECOND,
            backoff_max: SECOND,
            ..policy
        };
        assert_eq!(flat.backoff(1), SECOND);
        assert_eq!(flat.backoff(10), SECOND);
        let huge = RestartPolicy {
            backoff_min: Duration::MAX / 2,
            backoff_max: Duration::MAX,
            ..policy
        };
        assert_eq!(huge.backoff(3), Duration::MAX, "saturates, never overflows");
    }

    #[test]
    fn a_replacement_that_crashes_within_the_window_lengthens_the_streak() {
        let policy = policy();
        let t0 = Instant::now();
        let mut streak = CrashStreak::new(t0);
        assert_eq!(streak.restart_due(&policy), None, "no crash yet");

        streak.crashed(&policy, t0 + SECOND);
        assert_eq!(streak.crashes_in_a_row, 1);
        assert_eq!(streak.restart_due(&policy), Some(t0 + SECOND + 50 * MS));

        streak.restarted(t0 + 2 * SECOND);
        streak.crashed(&policy, t0 + 3 * SECOND);
        assert_eq!(streak.crashes_in_a_row, 2);
        assert_eq!(
            streak.restart_due(&policy),
            Some(t0 + 3 * SECOND + 100 * MS)
        );

        // A replacement that fails to start counts as a crash in a row.
        streak.start_failed(t0 + 4 * SECOND);
        assert_eq!(streak.crashes_in_a_row, 3);
        assert_eq!(
            streak.restart_due(&policy),
            Some(t0 + 4 * SECOND + 200 * MS)
        );

        // Just inside the window of its start.
        streak.restarted(t0 + 5 * SECOND);
        streak.crashed(&policy, t0 + 5 * SECOND + policy.window - MS);
        assert_eq!(streak.crashes_in_a_row, 4);
    }

    #[test]
    fn a_replacement_that_lived_past_the_window_starts_the_streak_over() {
        let policy = policy();
        let t0 = Instant::now();
        let mut streak = CrashStreak::new(t0);
        for crash in 1..=5 {
            streak.crashed(&policy, t0);
            streak.restarted(t0);
            assert_eq!(streak.crashes_in_a_row, crash);
        }
        let late = t0 + policy.window;
        streak.crashed(&policy, late);
        assert_eq!(streak.crashes_in_a_row, 1);
        assert_eq!(streak.restart_due(&policy), Some(late + policy.backoff_min));

        // So does the first worker of a slot, whatever its age.
        let mut first = CrashStreak::new(t0);
        first.crashed(&policy, t0 + 2 * policy.window);
        assert_eq!(first.crashes_in_a_row, 1);
    }

    #[test]
    fn more_than_max_restarts_within_the_window_is_exceeded() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: 10 * SECOND,
            ..policy()
        };
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        for restart in 0..3 {
            let at = t0 + restart * SECOND;
            assert!(!history.exceeded(&policy, at), "restart {restart}");
            history.record_restart(&policy, at);
        }
        assert!(
            history.exceeded(&policy, t0 + 3 * SECOND),
            "a fourth within 10 s"
        );
        // The first restart is exactly one window old: still within it.
        assert!(history.exceeded(&policy, t0 + 10 * SECOND));
        assert_eq!(history.total, 3);

        let none = RestartPolicy {
            max_restarts: 0,
            ..policy
        };
        assert!(
            RestartHistory::default().exceeded(&none, t0),
            "no restart allowed"
        );
    }

    #[test]
    fn restarts_older_than_the_window_are_forgotten() {
        let policy = RestartPolicy {
            max_restarts: 3,
            window: 10 * SECOND,
            ..policy()
        };
        let t0 = Instant::now();
        let mut history = RestartHistory::default();
        for at in [t0, t0 + SECOND, t0 + 2 * SECOND] {
            history.record_restart(&policy, at);
        }
        // The first has left the window; the other two are in it.
        let later = t0 + 10 * SECOND + MS;
        assert!(!history.exceeded(&policy, later));
        history.record_restart(&policy, later);
        assert_eq!(history.recent, [t0 + SECOND, t0 + 2 * SECOND, later]);
        assert!(history.exceeded(&policy, later));

        // Long after, all is forgotten; the total is not.
        let much_later = later + 60 * SECOND;
        assert!(!history.exceeded(&policy, much_later));
        history.record_restart(&policy, much_later);
        assert_eq!(history.recent, [much_later]);
        assert_eq!(history.total, 5);
    }

    /// The supervisor's arithmetic for a worker that crashes the moment it starts: the pool
    /// restarts it after 50, 100, 200, 400 and 800 ms, then fails instead of a sixth restart.
    #[test]
    fn a_crash_loop_backs_off_then_fails_the_pool() {
        let policy = policy();
        let t0 = Instant::now();
        let mut streak = CrashStreak::new(t0);
        let mut history = RestartHistory::default();
        let mut now = t0;
        let mut waits = Vec::new();
        loop {
            streak.crashed(&policy, now);
            let due = streak.restart_due(&policy).expect("crashed");
            waits.push(due - now);
            now = due;
            if history.exceeded(&policy, now) {
                break;
            }
            history.record_restart(&policy, now);
            streak.restarted(now);
        }
        assert_eq!(
            waits,
            [50 * MS, 100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS]
        );
        assert_eq!(history.total, 5);
    }
}
