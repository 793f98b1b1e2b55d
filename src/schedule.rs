//! When each account is polled next. Pure functions over timestamps so the
//! scheduling rules (spread over the interval, overdue at once after a
//! restart, cron no more often than the minimum) are unit-tested without a
//! clock.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// How often an account is polled.
#[derive(Clone)]
pub enum Schedule {
    /// Every `interval`, on a per-account phase so that many accounts with the
    /// same interval do not all fire at the top of the hour.
    Every(Duration),
    /// On a cron expression (seconds field first, as the `cron` crate reads it).
    Cron(Box<cron::Schedule>),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Schedule::Cron(c) => write!(f, "cron {}", c.source()),
        }
    }
}

impl Schedule {
    /// Parses a cron expression and rejects one that fires more often than
    /// `min_gap` anywhere in the next few weeks of firings.
    pub fn cron(expr: &str, min_gap: Duration) -> Result<Schedule, String> {
        let schedule = cron::Schedule::from_str(expr).map_err(|e| {
            // A syntax error draws a caret under the input over several
            // lines; a config error is one line.
            let e = e.to_string();
            let why = if e.trim().contains('\n') { "bad syntax".into() } else { e };
            format!("{expr:?} is not a cron expression ({why}); use six fields with seconds first, e.g. \"0 */15 * * * *\"")
        })?;
        // A fixed start keeps the check deterministic; 2000 firings cover
        // every minute/hour/day pattern of a 5-minute-or-slower schedule.
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("valid constant")
            .with_timezone(&Utc);
        let mut prev: Option<DateTime<Utc>> = None;
        let mut count = 0;
        for t in schedule.after(&start).take(2000) {
            count += 1;
            if let Some(p) = prev {
                let gap = (t - p).to_std().unwrap_or_default();
                if gap < min_gap {
                    return Err(format!(
                        "{expr:?} fires every {} at {}, more often than the {} minimum",
                        humantime::format_duration(gap),
                        p.format("%H:%M:%S"),
                        humantime::format_duration(min_gap)
                    ));
                }
            }
            prev = Some(t);
        }
        if count == 0 {
            return Err(format!("{expr:?} never fires"));
        }
        Ok(Schedule::Cron(Box::new(schedule)))
    }

    /// The nominal gap between polls, for status output and incremental-poll
    /// warnings. For cron, the gap between its next two firings.
    pub fn nominal_interval(&self, now: DateTime<Utc>) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron(c) => {
                let mut it = c.after(&now);
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
                    _ => Duration::MAX,
                }
            }
        }
    }

    /// When a never-polled account is first due: within `window` (capped
    /// at a tenth of its interval and at a minute) on a per-account phase,
    /// so ten thousand new accounts do not all start in the same instant.
    pub fn first_due(
        &self,
        account_id: &str,
        now: DateTime<Utc>,
        window: Duration,
    ) -> DateTime<Utc> {
        let window = window
            .min(self.nominal_interval(now) / 10)
            .min(STARTUP_WINDOW);
        if window.is_zero() {
            return now;
        }
        let offset = phase(account_id, window);
        chrono::Duration::from_std(offset)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(now)
    }

    /// When `account_id` is next due, given when its last poll started.
    /// Never polled, or overdue: `now`. A last start in the future (stored
    /// by a clock that was wrong) counts as `now`, so a wrong clock never
    /// postpones polling by more than one interval.
    pub fn next_due(
        &self,
        account_id: &str,
        last_started: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let Some(last) = last_started else {
            return now;
        };
        let last = last.min(now);
        let next = match self {
            Schedule::Every(interval) => next_slot(*interval, phase(account_id, *interval), last),
            Schedule::Cron(c) => c.after(&last).next().unwrap_or(DateTime::<Utc>::MAX_UTC),
        };
        next.max(now)
    }
}

/// The longest a never-polled account waits for its first poll.
const STARTUP_WINDOW: Duration = Duration::from_secs(60);

/// A stable offset in `[0, interval)` derived from the account id.
fn phase(account_id: &str, interval: Duration) -> Duration {
    let digest = Sha256::digest(account_id.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let millis = interval.as_millis().max(1) as u64;
    Duration::from_millis(n % millis)
}

/// The first slot of the grid `phase + k * interval` that is later than
/// `last + interval / 2`. Right after a poll the gap is between half and one
/// and a half intervals; once on the grid it is exactly one interval.
fn next_slot(interval: Duration, phase: Duration, last: DateTime<Utc>) -> DateTime<Utc> {
    let interval_ms = interval.as_millis().max(1) as i64;
    let phase_ms = phase.as_millis() as i64;
    let earliest = last.timestamp_millis() + interval_ms / 2;
    let k = (earliest - phase_ms).div_euclid(interval_ms) + 1;
    let slot = phase_ms + k * interval_ms;
    DateTime::from_timestamp_millis(slot).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn never_polled_is_due_now() {
        let now = t("2026-11-23T10:17:00Z");
        assert_eq!(Schedule::Every(HOUR).next_due("a", None, now), now);
    }

    #[test]
    fn never_polled_accounts_start_within_a_short_spread_window() {
        let now = t("2026-11-23T10:17:00Z");
        let s = Schedule::Every(HOUR);
        let mut seconds = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let due = s.first_due(&format!("acct-{i}"), now, Duration::from_secs(600));
            assert!(
                due >= now && due < now + chrono::Duration::seconds(60),
                "{due}"
            );
            seconds.insert(due.timestamp());
        }
        assert!(
            seconds.len() > 50,
            "only {} distinct seconds",
            seconds.len()
        );
        // A short interval (the demo's) keeps the wait short too.
        let quick = Schedule::Every(Duration::from_secs(3));
        assert!(
            quick.first_due("a", now, Duration::from_secs(60))
                < now + chrono::Duration::milliseconds(300)
        );
        assert_eq!(s.first_due("a", now, Duration::ZERO), now);
    }

    #[test]
    fn overdue_after_restart_is_due_now() {
        let now = t("2026-11-23T13:00:00Z");
        let last = t("2026-11-23T10:00:00Z");
        assert_eq!(Schedule::Every(HOUR).next_due("a", Some(last), now), now);
    }

    #[test]
    fn a_last_poll_in_the_future_counts_as_now() {
        let now = t("2026-11-23T10:00:00Z");
        let a_year_ahead = t("2027-11-23T10:00:00Z");
        for s in [
            Schedule::Every(HOUR),
            Schedule::cron("0 */15 * * * *", Duration::from_secs(300)).unwrap(),
        ] {
            let due = s.next_due("acme", Some(a_year_ahead), now);
            assert!(
                due > now && due <= now + chrono::Duration::hours(2),
                "{s}: {due}"
            );
        }
    }

    #[test]
    fn consecutive_polls_are_one_interval_apart_once_on_the_grid() {
        let s = Schedule::Every(HOUR);
        let first = t("2026-11-23T10:00:00Z");
        let second = s.next_due("acme", Some(first), first);
        let gap = (second - first).to_std().unwrap();
        assert!(gap > HOUR / 2 && gap <= HOUR * 3 / 2, "{gap:?}");
        let third = s.next_due("acme", Some(second), second);
        assert_eq!((third - second).to_std().unwrap(), HOUR);
    }

    #[test]
    fn accounts_spread_over_the_interval() {
        let s = Schedule::Every(HOUR);
        let start = t("2026-11-23T10:00:00Z");
        let mut minutes = std::collections::BTreeSet::new();
        for i in 0..200 {
            let due = s.next_due(&format!("acct-{i}"), Some(start), start);
            minutes.insert(due.timestamp() / 60);
        }
        // 200 accounts land in many distinct minutes, not one.
        assert!(
            minutes.len() > 40,
            "only {} distinct minutes",
            minutes.len()
        );
    }

    #[test]
    fn cron_next_due_follows_expression() {
        let s = Schedule::cron("0 */15 * * * *", Duration::from_secs(300)).unwrap();
        let last = t("2026-11-23T10:00:00Z");
        let due = s.next_due("a", Some(last), t("2026-11-23T10:01:00Z"));
        assert_eq!(due, t("2026-11-23T10:15:00Z"));
    }

    #[test]
    fn cron_faster_than_minimum_is_rejected() {
        let err = Schedule::cron("0 * * * * *", Duration::from_secs(300)).unwrap_err();
        assert!(err.contains("more often than"), "{err}");
        let err = Schedule::cron("0 0,1 * * * *", Duration::from_secs(300)).unwrap_err();
        assert!(err.contains("1m"), "{err}");
        assert!(Schedule::cron("not cron", Duration::from_secs(300)).is_err());
    }
    #[test]
    fn a_cron_exactly_at_the_minimum_is_allowed_and_one_below_is_not() {
        let five = Duration::from_secs(300);
        assert!(Schedule::cron("0 */5 * * * *", five).is_ok());
        let err = Schedule::cron("0 */4 * * * *", five).unwrap_err();
        assert!(err.contains("more often than"), "{err}");
        let err = Schedule::cron("0 0 0 31 2 *", five).unwrap_err();
        assert!(err.contains("never fires"), "{err}");
    }

    #[test]
    fn nominal_interval_is_the_interval_or_the_gap_between_the_next_two_firings() {
        let now = t("2026-11-23T10:01:00Z");
        assert_eq!(Schedule::Every(HOUR).nominal_interval(now), HOUR);
        let quarter = Schedule::cron("0 */15 * * * *", Duration::from_secs(300)).unwrap();
        assert_eq!(quarter.nominal_interval(now), Duration::from_secs(900));
        // 17:00, then 09:00 the next day.
        let twice = Schedule::cron("0 0 9,17 * * *", Duration::from_secs(300)).unwrap();
        assert_eq!(twice.nominal_interval(now), 16 * HOUR);
    }

    #[test]
    fn an_accounts_phase_is_stable_across_restarts_and_versions() {
        // Hourly polls land on the same minute and second of every hour,
        // derived from the account id alone, so a restart or an upgrade
        // does not move them. These are the phases synthd has always given.
        let last = t("2026-11-23T10:00:00Z");
        let s = Schedule::Every(HOUR);
        for (id, due) in [
            ("acme", "2026-11-23T11:12:19.872Z"),
            ("globex", "2026-11-23T11:04:26.599Z"),
            ("initech", "2026-11-23T11:14:45.763Z"),
            ("umbrella", "2026-11-23T10:48:38.432Z"),
            ("hooli", "2026-11-23T10:59:39.083Z"),
            ("a1", "2026-11-23T11:20:00.480Z"),
        ] {
            assert_eq!(s.next_due(id, Some(last), last), t(due), "{id}");
        }
    }

    #[test]
    fn every_account_polls_half_to_one_and_a_half_intervals_later_then_on_its_grid() {
        let lasts = [t("2026-11-23T10:00:00Z"), t("2026-11-23T10:17:31.250Z")];
        for interval in [Duration::from_secs(300), HOUR, 24 * HOUR] {
            let s = Schedule::Every(interval);
            let i = chrono::Duration::from_std(interval).unwrap();
            for n in 0..200 {
                let id = format!("acct-{n}");
                let dues = lasts.map(|last| {
                    let due = s.next_due(&id, Some(last), last);
                    let gap = due - last;
                    assert!(gap > i / 2 && gap <= i * 3 / 2, "{id} every {i}: {gap}");
                    // On the grid: exactly one interval to the next poll.
                    assert_eq!(s.next_due(&id, Some(due), due), due + i, "{id}");
                    due
                });
                // One grid per account, whenever its last poll was.
                let apart = (dues[1] - dues[0]).num_milliseconds();
                assert_eq!(apart % i.num_milliseconds(), 0, "{id} every {i}");
            }
        }
    }
}
