//! The relay's health as one run of the worker sees it, shared by its sending tasks: how many
//! of them hold an open connection and how many are opening one, and whether the relay is
//! unusable, since when, why, and when it is tried again.
//!
//! A fault of the relay's session never touches a letter (the sending task hands its letters
//! back, their attempts uncounted). What the fault means for the run is decided here:
//! - a fault that makes the relay unusable at once (a refused password, a 5xx at the greeting
//!   or EHLO, a TLS failure, a configuration the relay cannot satisfy) makes it unusable;
//! - a relay that cannot be reached, or that turned one connection away (a 4xx at the
//!   greeting, as relays that cap their sessions do), is unusable only when no connection to
//!   it is open once the others being opened have got their answer, and none has worked for
//!   `WORKED_RECENTLY` (the others may just have finished their letters); otherwise only that
//!   connection backs off, with a growing delay, while the others go on.
//!
//! Each change (unusable, a different fault, usable again) is logged once and written to the
//! queue's relay-health record, which `missive status` shows.

use crate::mailer::RelayFault;
use crate::queue::{Millis, Queue, RelayHealthRecord};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// The first wait before an unusable relay is tried again; each failed try doubles it.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// The first wait of one connection turned away while others are open, doubling up to
/// `BACKOFF_MAX`.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A relay that carried a letter or opened a connection this recently is not judged unusable
/// for one connection turned away or refused.
const WORKED_RECENTLY: Duration = Duration::from_secs(30);

/// What a sending task does after a fault of the relay's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judgement {
    /// Other connections work: wait this long, then try this connection again.
    BackOff(Duration),
    /// The relay is unusable: hand the letters back.
    Unusable,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Sending tasks holding an open connection.
    open: usize,
    /// Sending tasks opening one now.
    connecting: usize,
}

/// Why and since when the relay is unusable.
#[derive(Debug, Clone)]
pub(super) struct Down {
    pub(super) fault: RelayFault,
    pub(super) since: Millis,
    pub(super) retry_at: Millis,
    delay: Duration,
}

/// The relay's health for one run.
pub(super) struct RelayHealth {
    counts: watch::Sender<Counts>,
    down: Mutex<Option<Down>>,
    /// When a connection last opened or a letter's data got the relay's reply.
    worked_at: Mutex<Option<tokio::time::Instant>>,
    queue: Queue,
    relay: String,
    worker: String,
    /// How long a connection may take to open: the longest a judgement waits for the others.
    connect_timeout: Duration,
}

impl std::fmt::Debug for RelayHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHealth")
            .field("relay", &self.relay)
            .field("down", &self.is_down())
            .finish()
    }
}

impl RelayHealth {
    pub(super) fn new(
        queue: Queue,
        relay: String,
        worker: String,
        connect_timeout: Duration,
    ) -> RelayHealth {
        RelayHealth {
            counts: watch::channel(Counts::default()).0,
            down: Mutex::new(None),
            worked_at: Mutex::new(None),
            queue,
            relay,
            worker,
            connect_timeout,
        }
    }

    fn lock_down(&self) -> std::sync::MutexGuard<'_, Option<Down>> {
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the relay is unusable now.
    pub(super) fn is_down(&self) -> bool {
        self.lock_down().is_some()
    }

    /// Why the relay is unusable, if it is.
    pub(super) fn down(&self) -> Option<Down> {
        self.lock_down().clone()
    }

    /// A sending task's standing with the relay: counted as opening a connection from now
    /// until `settle`, and as holding one while it does.
    pub(super) fn link(&self) -> Link<'_> {
        Link {
            health: self,
            open: false,
        }
    }

    /// A fault of the relay's session met by a sending task: what it does next.
    pub(super) async fn judge(&self, fault: RelayFault) -> Judgement {
        use crate::mailer::FaultKind;
        if fault.kind != FaultKind::Unusable {
            // Wait for the connections being opened to get their answer: a relay capping its
            // sessions turns some away while it greets the others.
            let mut counts = self.counts.subscribe();
            let _ =
                tokio::time::timeout(self.connect_timeout, counts.wait_for(|c| c.connecting == 0))
                    .await;
            let worked_recently = self
                .worked_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .is_some_and(|at| at.elapsed() < WORKED_RECENTLY);
            if self.counts.borrow().open > 0 || worked_recently {
                tracing::debug!(
                    stage = %fault.stage,
                    reply = %fault.reply,
                    "the relay turned one connection away; backing it off"
                );
                return Judgement::BackOff(BACKOFF_FIRST);
            }
        }
        self.mark_down(fault, false).await;
        Judgement::Unusable
    }

    /// The relay is unusable because of `fault`: logged and recorded when that is news (it
    /// was usable, or failed differently). The next try is a second away the first time; a
    /// sending task finding it unusable again keeps that time, a failed try doubles the wait.
    pub(super) async fn mark_down(&self, fault: RelayFault, after_try: bool) {
        let now = self.queue.now();
        let (record, news) = {
            let mut down = self.lock_down();
            let (since, delay, news) = match down.as_ref() {
                None => (now, RETRY_FIRST, true),
                Some(d) if after_try => (
                    d.since,
                    (d.delay * 2).min(RETRY_MAX),
                    d.fault.reply != fault.reply,
                ),
                Some(d) => (d.since, d.delay, d.fault.reply != fault.reply),
            };
            let retry_at = match down.as_ref() {
                Some(d) if !after_try => d.retry_at,
                _ => now + delay.as_millis() as Millis,
            };
            let record = self.record(false, since, Some(&fault), Some(retry_at), now);
            *down = Some(Down {
                fault: fault.clone(),
                since,
                retry_at,
                delay,
            });
            (record, news)
        };
        if news {
            tracing::error!(
                relay = %self.relay,
                stage = %fault.stage,
                hint = fault.hint.as_deref(),
                "the relay is unusable: {}; letters stay queued, their attempts unchanged",
                fault.reply
            );
        }
        self.save(record).await;
    }

    /// The relay just worked: a connection opened, or it replied to a letter's data.
    pub(super) fn worked(&self) {
        *self
            .worked_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(tokio::time::Instant::now());
    }

    /// A batch ends with the relay unusable: no worker of it tries again, so the record says
    /// no time for the next try.
    pub(super) async fn ends_without_retry(&self) {
        let record = {
            let down = self.lock_down();
            let Some(d) = down.as_ref() else { return };
            self.record(false, d.since, Some(&d.fault), None, self.queue.now())
        };
        self.save(record).await;
    }

    /// A connection to the relay opened: if the relay was unusable, it is usable again.
    pub(super) async fn usable_again(&self) {
        let Some(was) = self.lock_down().take() else {
            return;
        };
        let now = self.queue.now();
        tracing::warn!(
            relay = %self.relay,
            unusable_for_s = (now - was.since) / 1000,
            "the relay accepts connections again"
        );
        self.save(self.record(true, now, Some(&was.fault), None, now))
            .await;
    }

    fn record(
        &self,
        usable: bool,
        since: Millis,
        fault: Option<&RelayFault>,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> RelayHealthRecord {
        RelayHealthRecord {
            relay: self.relay.clone(),
            usable,
            since,
            stage: fault.map(|f| f.stage.as_str().to_owned()),
            code: fault.and_then(|f| f.code),
            enhanced_code: fault.and_then(|f| f.enhanced_code.clone()),
            reply: fault.map(|f| f.reply.clone()),
            hint: fault.and_then(|f| f.hint.clone()),
            retry_at,
            worker: self.worker.clone(),
            updated_at: now,
        }
    }

    async fn save(&self, record: RelayHealthRecord) {
        if let Err(e) = self.queue.save_relay_health(&record).await {
            tracing::error!(error = %e, "cannot record the relay's health");
        }
    }
}

/// One sending task's standing with the relay; dropping it takes back what it counted.
pub(super) struct Link<'a> {
    health: &'a RelayHealth,
    open: bool,
}

impl Link<'_> {
    /// The task starts opening a connection.
    pub(super) fn connecting(&mut self) {
        self.health.counts.send_modify(|c| c.connecting += 1);
    }

    /// The task has finished opening a connection (or was never opening one) and now holds an
    /// open connection, or not.
    pub(super) async fn settle(&mut self, was_connecting: bool, open: bool) {
        let opened = open && !self.open;
        let before = self.open;
        self.open = open;
        self.health.counts.send_modify(|c| {
            if was_connecting {
                c.connecting -= 1;
            }
            match (before, open) {
                (false, true) => c.open += 1,
                (true, false) => c.open -= 1,
                _ => {}
            }
        });
        if opened {
            self.health.worked();
            self.health.usable_again().await;
        }
    }
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        if self.open {
            self.health.counts.send_modify(|c| c.open -= 1);
        }
    }
}

/// One connection's growing wait after it was turned away while others work.
#[derive(Debug, Default)]
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    /// The next wait: the first, then twice the one before, up to the most.
    pub(super) fn next(&mut self, first: Duration) -> Duration {
        let next = self.0.map_or(first, |d| (d * 2).min(BACKOFF_MAX));
        self.0 = Some(next);
        next
    }

    pub(super) fn reset(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turned_away_connection_waits_longer_each_time_up_to_a_minute() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next(BACKOFF_FIRST).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.next(BACKOFF_FIRST), BACKOFF_FIRST);
    }
}
