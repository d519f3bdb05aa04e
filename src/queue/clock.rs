//! The database's clock, read from this process: many processes on many machines share one
//! PostgreSQL queue, and their leases, due times and limits must agree on what time it is, so
//! they all use the database server's clock. Reading it in every statement would make the
//! queue's API (which takes `now`, so tests and the scheduler control time) depend on the
//! store; instead each process measures the difference between its clock and the server's
//! (half a round trip's precision) when it connects and every minute after, and `now()` is its
//! own clock plus that offset. On SQLite the database is a file on this machine: the offset is
//! zero.
//!
//! Depends on sqlx only.

use super::{now_millis, Millis, QueueError};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the offset is measured again (clocks drift; NTP steps them).
const REMEASURE_EVERY: Duration = Duration::from_secs(60);

/// This process's reading of the database's clock.
#[derive(Debug, Clone)]
pub(super) struct Clock {
    /// The database's clock minus this process's, in milliseconds.
    offset: Arc<AtomicI64>,
}

impl Clock {
    /// The database's clock is this machine's.
    pub(super) fn local() -> Clock {
        Clock {
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The clock of the PostgreSQL server behind `pool`, measured now and every minute
    /// while the pool is open.
    pub(super) async fn of_database(pool: sqlx::PgPool) -> Result<Clock, QueueError> {
        let clock = Clock::local();
        clock.offset.store(offset(&pool).await?, Ordering::Relaxed);
        let shared = clock.offset.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut every = tokio::time::interval(REMEASURE_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    if pool.is_closed() {
                        return;
                    }
                    match offset(&pool).await {
                        Ok(o) => shared.store(o, Ordering::Relaxed),
                        Err(e) => tracing::debug!(error = %e, "cannot read the database's clock"),
                    }
                }
            });
        }
        Ok(clock)
    }

    /// Now, on the database's clock.
    pub(super) fn now(&self) -> Millis {
        now_millis() + self.offset.load(Ordering::Relaxed)
    }

    /// Now, on the database's clock, in microseconds (the limits' unit).
    pub(super) fn now_us(&self) -> i64 {
        chrono::Utc::now().timestamp_micros() + self.offset.load(Ordering::Relaxed) * 1000
    }
}

/// The server's clock minus ours, from three readings.
async fn offset(pool: &sqlx::PgPool) -> Result<Millis, QueueError> {
    let mut readings = Vec::with_capacity(3);
    for _ in 0..3 {
        let before = now_millis();
        let server: i64 =
            sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
                .fetch_one(pool)
                .await?;
        readings.push(Reading {
            before,
            server,
            after: now_millis(),
        });
    }
    Ok(offset_from(&readings))
}

/// One look at the server's clock: ours before asking, the server's answer, ours after.
#[derive(Debug, Clone, Copy)]
struct Reading {
    before: Millis,
    server: Millis,
    after: Millis,
}

/// The server's clock minus ours, from the quickest reading (the one whose round trip leaves
/// the least doubt), the server taken to have read its clock halfway through the round trip.
fn offset_from(readings: &[Reading]) -> Millis {
    readings
        .iter()
        .min_by_key(|r| r.after - r.before)
        .map_or(0, |r| r.server - (r.before + r.after) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_servers_clock_minus_ours_from_the_quickest_reading() {
        let readings = [
            // A slow round trip: 40 ms of doubt.
            Reading {
                before: 1_000,
                server: 6_000,
                after: 1_040,
            },
            // The quickest: the server is 5 s ahead.
            Reading {
                before: 2_000,
                server: 7_001,
                after: 2_002,
            },
            Reading {
                before: 3_000,
                server: 8_010,
                after: 3_020,
            },
        ];
        assert_eq!(offset_from(&readings), 5_000);
        let behind = [Reading {
            before: 10_000,
            server: 7_000,
            after: 10_000,
        }];
        assert_eq!(offset_from(&behind), -3_000);
        assert_eq!(offset_from(&[]), 0);
    }
}
