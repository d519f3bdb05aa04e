//! The worker: claims due letters, paces them, sends them and records what happened.
//!
//! One `Dispatcher::run` is a pipeline joined by bounded channels: a claimer leasing small
//! batches of due letters (`claimed`); `transport.concurrency()` sending tasks, each owning one
//! connection and waiting on the rate limiters at the moment each letter is handed over (so
//! `rate_per_second` and `burst` hold at the relay's side, however the letters before were
//! delayed, and for every process on the queue together: `throttle.rs`); a journal writing, many letters per transaction, that a letter may now be
//! delivered (`sending`, asked for while the letter before it on the same connection travels,
//! and needed before a byte of the message goes) and each attempt's result; and a heartbeat
//! extending the run's leases. No transaction is open during an SMTP conversation.
//!
//! A fault of the relay's session (`relay.rs`) is never a letter's: the letter goes back to
//! the queue, its attempt uncounted. One turned-away connection backs off while the others go
//! on; when the relay is unusable, a batch (`missive send`) stops at once and says why, and a
//! continuous run (`serve`) stops claiming and tries the relay again with a growing delay.
//!
//! Letters paced per target are claimed only by the worker leading pacing (a lease in the
//! queue, renewed every 2 s, taken over 10 s after its holder stops renewing it, at once when
//! the holder was a process of this machine that no longer runs); the others claim the rest.
//!
//! If the process dies, its leases expire: `claimed` letters go back to the queue (the server
//! never got the message), `sending` ones become `in_doubt` (it may have, or, for the one
//! prepared next on each connection, may not have; they wait for an organiser unless
//! `sending.in_doubt = "resend"`). On stop, sending tasks finish the letters in hand (the one
//! on the wire and the one prepared next), and letters claimed but not started are handed back.

mod pacer;
mod rate;
mod relay;
mod retry;
mod throttle;

pub use retry::RetryPolicy;

use crate::config::{InDoubtPolicy, Settings};
use crate::letters::Registry;
use crate::mailer::{Delivery, Handover, RelayFault, Sender, Transport};
use crate::pacing::GlobalLimits;
use crate::queue::{
    AttemptRecord, ClaimRequest, ClaimedLetter, Millis, NextState, Queue, QueueError, Recovered,
};
use pacer::Pacer;
use rand::SeedableRng;
use relay::{Backoff, Judgement, RelayHealth};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use throttle::FleetLimit;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

/// Errors that stop a run (send failures never do: they are recorded per letter).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("a sending task stopped unexpectedly: {0}")]
    Task(String),
}

/// Live counters of a run, readable while it goes (progress bars, logs).
#[derive(Debug, Default)]
pub struct Counters {
    pub claimed: AtomicU64,
    pub sent: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub in_doubt: AtomicU64,
    pub expired: AtomicU64,
}

impl Counters {
    /// Letters with a recorded outcome so far.
    pub fn finished(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
            + self.deferred.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.in_doubt.load(Ordering::Relaxed)
            + self.expired.load(Ordering::Relaxed)
    }

    fn count(&self, next: NextState) {
        let c = match next {
            NextState::Sent => &self.sent,
            NextState::Deferred { .. } => &self.deferred,
            NextState::Failed => &self.failed,
            NextState::InDoubt => &self.in_doubt,
            NextState::Expired => &self.expired,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunSummary {
    pub sent: u64,
    pub deferred: u64,
    pub failed: u64,
    pub in_doubt: u64,
    pub expired: u64,
    /// Letters claimed but handed back unstarted (on stop).
    pub released: u64,
    /// Letters left by a worker that vanished: queued again, or marked in doubt.
    pub recovered: Recovered,
    pub seconds: f64,
    /// When a batch ends with letters held back by their targets' pacing: the earliest time
    /// one of them may go (milliseconds since the epoch).
    pub next_paced_at: Option<i64>,
    /// When paced letters were left to another process leading pacing (`missive serve`, say):
    /// its name.
    pub paced_by: Option<String>,
    /// Why the relay was unusable when the run ended (a batch stops at once when it is); the
    /// letters it did not take stay queued, their attempts unchanged.
    pub relay_unusable: Option<RelayFault>,
}

impl RunSummary {
    /// Letters attempted.
    pub fn attempted(&self) -> u64 {
        self.sent + self.deferred + self.failed + self.in_doubt + self.expired
    }
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Only this campaign's letters.
    pub campaign: Option<String>,
    /// Stop after claiming this many letters.
    pub limit: Option<u64>,
    /// Keep running and wait for new letters (`serve`), instead of stopping when none are due.
    pub continuous: bool,
}

/// Everything a run needs, built once at start-up.
#[derive(Clone)]
pub struct Dispatcher {
    queue: Queue,
    transport: Transport,
    /// The relay's rate and burst, for every process sharing the queue.
    global: Arc<FleetLimit>,
    /// Campaigns' own rates, for every process sharing the queue.
    per_campaign: Arc<HashMap<String, FleetLimit>>,
    policy: RetryPolicy,
    claim_batch: u32,
    lease_ms: i64,
    throttle_cooldown_ms: i64,
    /// The relay's rate (`[sending] rate_per_second`).
    rate_per_second: f64,
    /// Until when (queue millis) the relay asked us to slow down: no letter starts before.
    cooldown_until: Arc<AtomicI64>,
    /// The relay's health: open connections, and whether it is unusable.
    relay: Arc<RelayHealth>,
    worker_id: String,
    counters: Arc<Counters>,
    registry: Registry,
    pacing_limits: GlobalLimits,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("worker_id", &self.worker_id)
            .finish()
    }
}

/// How long a one-off batch (`missive send`) waits for the next paced letter before it ends.
const BATCH_PACING_WAIT_MS: i64 = 2_000;

/// A request to the journal: a letter id, and where to answer whether it may be transmitted.
type MarkRequest = (i64, oneshot::Sender<bool>);

impl Dispatcher {
    /// A dispatcher over `queue` and `transport` for the campaigns of `registry` (their rate
    /// caps and pacing), with the `[sending]` and `[pacing]` settings.
    pub fn new(
        queue: Queue,
        transport: Transport,
        settings: &Settings,
        registry: &Registry,
    ) -> Result<Dispatcher, crate::config::ConfigError> {
        let s = &settings.sending;
        let per_campaign = registry
            .iter()
            .filter_map(|c| c.rate_per_second.map(|r| (c.slug.as_str().to_owned(), r)))
            .map(|(slug, rate)| {
                let limit = FleetLimit::new(
                    format!("campaign {slug}"),
                    rate,
                    (rate.ceil() as u32).max(1),
                );
                (slug, limit)
            })
            .collect();
        let pacing_limits = settings.pacing_limits()?;
        let worker_id = format!("{}-{}", hostname(), std::process::id());
        let relay = RelayHealth::new(
            queue.clone(),
            transport.relay_key(),
            worker_id.clone(),
            settings.smtp.connect_timeout(),
        );
        let relay_limit = FleetLimit::new(
            format!("relay {}", transport.relay_key()),
            s.rate_per_second,
            s.burst,
        );
        Ok(Dispatcher {
            queue,
            transport,
            global: Arc::new(relay_limit),
            per_campaign: Arc::new(per_campaign),
            policy: RetryPolicy {
                base_ms: s.retry_base_seconds as i64 * 1000,
                max_ms: s.retry_max_seconds as i64 * 1000,
                max_age_ms: s.max_age_hours as i64 * 3_600_000,
                resend_in_doubt: s.in_doubt == InDoubtPolicy::Resend,
            },
            claim_batch: s.claim_batch,
            lease_ms: s.lease_seconds as i64 * 1000,
            throttle_cooldown_ms: s.throttle_cooldown_seconds as i64 * 1000,
            rate_per_second: s.rate_per_second,
            cooldown_until: Arc::new(AtomicI64::new(0)),
            relay: Arc::new(relay),
            worker_id,
            counters: Arc::new(Counters::default()),
            registry: registry.clone(),
            pacing_limits,
        })
    }

    /// The projected schedule of every paced target's waiting letters (of `campaign`, if
    /// given) from `now` to `until`, with the pacing state a run would start from.
    pub async fn plan(
        &self,
        campaign: Option<&str>,
        now: i64,
        until: i64,
    ) -> Result<Vec<crate::pacing::TargetPlan>, WorkerError> {
        let mut pacer =
            Pacer::build(&self.registry, self.pacing_limits, &self.queue, now, false).await?;
        let waiting = self.queue.waiting_per_target(campaign).await?;
        let mut plans = pacer.plan(&waiting, now, until);
        plans.retain(|p| campaign.is_none_or(|c| c == p.campaign));
        Ok(plans)
    }

    /// Campaigns whose letters are not paced per target.
    pub fn unpaced_campaigns(&self) -> Vec<String> {
        self.registry
            .iter()
            .filter(|c| !c.pacing.enabled())
            .map(|c| c.slug.as_str().to_owned())
            .collect()
    }

    /// The live counters of the current run.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// The transport letters go through.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Sends due letters until none are due (or `limit` is reached), or, with `continuous`,
    /// until `stop` is cancelled. Returns what happened.
    #[tracing::instrument(skip_all, fields(campaign = opts.campaign.as_deref(), worker = %self.worker_id), err)]
    pub async fn run(
        &self,
        opts: &RunOptions,
        stop: CancellationToken,
    ) -> Result<RunSummary, WorkerError> {
        let started = Instant::now();
        let mut summary = RunSummary {
            recovered: self.queue.recover_expired(self.queue.now()).await?,
            ..RunSummary::default()
        };
        // One fencing token for this run's leases.
        let token = rand::random::<i64>() & i64::MAX;
        let concurrency = self.transport.concurrency().max(1);
        // Letters claimed and not yet sent: a claim batch, but no more than the relay's rate
        // lets go in about two seconds, so the other workers on the queue get their share and
        // no lease is spent waiting for a token.
        let horizon = (self.rate_per_second * 2.0)
            .ceil()
            .min(self.claim_batch as f64) as usize;
        let capacity = horizon.max(concurrency).max(1);
        let (letters_tx, letters_rx) = mpsc::channel::<ClaimedLetter>(capacity);
        let letters_rx = Arc::new(Mutex::new(letters_rx));
        let (results_tx, results_rx) = mpsc::channel::<AttemptRecord>(capacity * 4);
        let (marks_tx, marks_rx) = mpsc::channel::<MarkRequest>(concurrency * 2);

        let journal = tokio::spawn(journal(
            self.queue.clone(),
            token,
            self.lease_ms,
            marks_rx,
            results_rx,
            self.counters.clone(),
        ));
        // Stopped with `stop`, or by a sending task when the relay is unusable during a batch.
        let halt = stop.child_token();
        let mut senders = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            senders.push(tokio::spawn(send_letters(
                self.clone(),
                self.transport.sender(),
                Task {
                    letters: letters_rx.clone(),
                    results: results_tx.clone(),
                    marks: marks_tx.clone(),
                    halt: halt.clone(),
                    continuous: opts.continuous,
                },
            )));
        }
        drop(results_tx);
        drop(marks_tx);

        // Named for this run: a new run builds its pacer afresh.
        let mut pacing = Pacing {
            me: format!("{}/{token:x}", self.worker_id),
            ..Pacing::default()
        };
        let claim_result = self
            .claim_patiently(opts, token, &mut pacing, &letters_tx, &halt)
            .await;
        match &pacing.pacer {
            Some(pacer) => {
                summary.next_paced_at =
                    pacer.next_opening(self.queue.now(), opts.campaign.as_deref());
                if let Err(e) = self.queue.resign(PACING_ROLE, &pacing.me).await {
                    // Its lease runs out and another worker takes over then.
                    tracing::warn!(error = %e, "cannot hand over pacing");
                }
            }
            None => summary.paced_by = pacing.leader.take(),
        }
        drop(letters_tx);
        let mut task_error = None;
        for s in senders {
            if let Err(e) = s.await {
                task_error = Some(e.to_string());
            }
        }
        // Letters claimed but never started (stop requested): hand them back.
        let mut unstarted = Vec::new();
        {
            let mut rx = letters_rx.lock().await;
            while let Ok(l) = rx.try_recv() {
                unstarted.push((l.id, l.lease_token));
            }
        }
        let recorded = journal
            .await
            .map_err(|e| WorkerError::Task(e.to_string()))?;
        summary.released = self.queue.release(&unstarted, self.queue.now()).await?;
        claim_result?;
        recorded?;
        if let Some(e) = task_error {
            return Err(WorkerError::Task(e));
        }
        let c = &self.counters;
        summary.sent = c.sent.load(Ordering::Relaxed);
        summary.deferred = c.deferred.load(Ordering::Relaxed);
        summary.failed = c.failed.load(Ordering::Relaxed);
        summary.in_doubt = c.in_doubt.load(Ordering::Relaxed);
        summary.expired = c.expired.load(Ordering::Relaxed);
        summary.seconds = started.elapsed().as_secs_f64();
        summary.relay_unusable = self.relay.down().map(|d| d.fault);
        if summary.relay_unusable.is_some() && !opts.continuous {
            self.relay.ends_without_retry().await;
        }
        Ok(summary)
    }

    /// The claim loop, started again after a database error that may pass (a dropped
    /// connection, a restarting server), after a growing wait: a continuous run waits as long as
    /// it takes, a batch up to `BATCH_OUTAGE`.
    async fn claim_patiently(
        &self,
        opts: &RunOptions,
        token: i64,
        pacing: &mut Pacing,
        tx: &mpsc::Sender<ClaimedLetter>,
        stop: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let mut claimed_total: u64 = 0;
        let mut outage = Outage::default();
        loop {
            let result = self
                .claim_loop(opts, token, pacing, tx, stop, &mut claimed_total)
                .await;
            let Err(WorkerError::Queue(e)) = &result else {
                return result;
            };
            if !e.is_transient() || (!opts.continuous && outage.lasted() > BATCH_OUTAGE) {
                return result;
            }
            let wait = outage.next(e, "cannot claim letters");
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            // Whatever this worker knew of the lease on pacing may be stale now.
            if pacing.pacer.is_some() {
                pacing.valid_until = 0;
            }
        }
    }

    async fn claim_loop(
        &self,
        opts: &RunOptions,
        token: i64,
        pacing: &mut Pacing,
        tx: &mpsc::Sender<ClaimedLetter>,
        stop: &CancellationToken,
        claimed_total: &mut u64,
    ) -> Result<(), WorkerError> {
        let mut last_recovery = Instant::now();
        let recovery_every = Duration::from_millis((self.lease_ms / 3).max(1000) as u64);
        let campaign = opts.campaign.as_deref();
        // The paced campaigns do not change during a run; a run needs pacing only for them.
        let paced = Pacer::campaigns(&self.registry);
        let needs_pacing = paced.iter().any(|c| campaign.is_none_or(|want| want == c));
        let exclude = (!paced.is_empty()).then_some(&paced[..]);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // An unusable relay takes no letters: a batch ends, a continuous run tries the
            // relay again when its wait is over (and lets another worker pace meanwhile).
            if let Some(down) = self.relay.down() {
                if !opts.continuous {
                    return Ok(());
                }
                if pacing.pacer.take().is_some() {
                    let _ = self.queue.resign(PACING_ROLE, &pacing.me).await;
                }
                let wait = (down.retry_at - self.queue.now()).max(0) as u64;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                }
                match self.transport.probe().await {
                    Ok(()) => self.relay.usable_again().await,
                    Err(fault) => self.relay.mark_down(fault, true).await,
                }
                continue;
            }
            let remaining = opts.limit.map(|l| l.saturating_sub(*claimed_total));
            if remaining == Some(0) {
                return Ok(());
            }
            // Claim no more than there is room for, so leases are not spent waiting, and only
            // once half the room is free, so each claim takes many letters (the database has
            // one writer, shared with the marks and the results).
            let room = tx.capacity() as u64;
            let low_water = (tx.max_capacity() / 2).max(1);
            if (room as usize) < low_water {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    permits = tx.reserve_many(low_water) => { drop(permits); continue; }
                }
            }
            let want = room
                .min(self.claim_batch as u64)
                .min(remaining.unwrap_or(u64::MAX)) as u32;
            if needs_pacing {
                self.lead_pacing(pacing, !opts.continuous).await?;
            }
            let now = self.queue.now();
            // Letters not paced per target, in bulk.
            let mut batch = self
                .queue
                .claim(&ClaimRequest {
                    owner: &self.worker_id,
                    token,
                    now,
                    lease_ms: self.lease_ms,
                    limit: want,
                    campaign,
                    target: None,
                    exclude_campaigns: exclude,
                })
                .await?;
            // Then, if this worker leads pacing, one letter for each paced target whose limits
            // allow one now.
            if let Some(pacer) = pacing.pacer.as_mut() {
                for (key, c, t) in pacer.ready(now, campaign) {
                    if batch.len() as u32 >= want {
                        break;
                    }
                    if !pacer.may_send(key, now) {
                        continue;
                    }
                    let got = self
                        .queue
                        .claim(&ClaimRequest {
                            owner: &self.worker_id,
                            token,
                            now,
                            lease_ms: self.lease_ms,
                            limit: 1,
                            campaign: Some(&c),
                            target: Some(&t),
                            exclude_campaigns: None,
                        })
                        .await?;
                    if got.is_empty() {
                        pacer.idle(key, now);
                    } else {
                        pacer.record(key, now);
                        batch.extend(got);
                    }
                }
            }
            if batch.is_empty() {
                let opening = pacing
                    .pacer
                    .as_ref()
                    .and_then(|p| p.next_opening(now, campaign));
                // A batch waits out short gaps between paced letters (spacing), not long ones.
                let soon = opening.is_some_and(|at| at - now <= BATCH_PACING_WAIT_MS);
                if !opts.continuous && !soon {
                    return Ok(());
                }
                if last_recovery.elapsed() > recovery_every {
                    let r = self.queue.recover_expired(self.queue.now()).await?;
                    if r.requeued + r.in_doubt > 0 {
                        tracing::warn!(
                            requeued = r.requeued,
                            in_doubt = r.in_doubt,
                            "recovered letters from a worker that stopped"
                        );
                    }
                    if let Some(pacer) = pacing.pacer.as_mut() {
                        pacer.refresh_pauses(&self.queue).await?;
                    }
                    last_recovery = Instant::now();
                }
                // Paced letters come due through the pacer's opening (or another worker's).
                let due = self.queue.next_due(campaign, exclude).await?;
                let mut wake = [due, opening].into_iter().flatten().min();
                if needs_pacing && pacing.pacer.is_none() {
                    // Ask for the lease again when it is next renewed or lapses.
                    let retry = pacing.checked_at + PACING_RENEW_MS;
                    wake = Some(wake.map_or(retry, |w| w.min(retry)));
                }
                let wait = match wake {
                    Some(at) => {
                        Duration::from_millis((at - self.queue.now()).clamp(10, 1000) as u64)
                    }
                    None => Duration::from_secs(1),
                };
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            *claimed_total += batch.len() as u64;
            self.counters
                .claimed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for letter in batch {
                // Capacity was reserved above; a closed channel means senders are gone.
                if tx.send(letter).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Takes, renews or gives up the lease on pacing, as it falls due: a worker that takes it
    /// builds its pacer from the queue (the last hour's attempts and the letters leased now,
    /// whoever sent them); one that loses it stops claiming paced letters before its lease
    /// could have run out. `one_off`: for a batch (`missive send`).
    async fn lead_pacing(&self, pacing: &mut Pacing, one_off: bool) -> Result<(), WorkerError> {
        let now = self.queue.now();
        let leading = pacing.pacer.is_some();
        if leading && now < pacing.valid_until - PACING_LEASE_MS + PACING_RENEW_MS {
            return Ok(());
        }
        if !leading && now < pacing.checked_at + PACING_RENEW_MS {
            return Ok(());
        }
        let id = pacing.me.clone();
        let mut holder = self
            .queue
            .lead(PACING_ROLE, &id, now, PACING_LEASE_MS, None)
            .await?;
        if holder != id && !holder.is_empty() && is_gone(&holder) {
            let gone = holder;
            holder = self
                .queue
                .lead(PACING_ROLE, &id, now, PACING_LEASE_MS, Some(&gone))
                .await?;
            if holder == id {
                tracing::info!(previous = %gone, "took over pacing from a worker of this machine that no longer runs");
            }
        }
        pacing.checked_at = now;
        if holder == id {
            pacing.valid_until = now + PACING_LEASE_MS;
            pacing.leader = None;
            if pacing.pacer.is_none() {
                let limits = self.pacing_limits.without_relay();
                let pacer = Pacer::build(
                    &self.registry,
                    limits,
                    &self.queue,
                    self.queue.now(),
                    one_off,
                )
                .await?;
                pacing.pacer = Some(pacer);
                tracing::info!("this worker now paces the targets' letters");
            }
        } else {
            if pacing.pacer.take().is_some() {
                tracing::warn!(leader = %holder, "another worker took over pacing");
            } else if pacing.leader.as_deref() != Some(holder.as_str()) {
                tracing::info!(leader = %holder, "another worker paces the targets' letters");
            }
            pacing.leader = Some(holder);
        }
        Ok(())
    }
}

/// The lease on pacing (per-target budgets, spacing and windows; per-domain caps): only its
/// holder claims paced letters, so every limit is counted in one place for the whole fleet.
const PACING_ROLE: &str = "pacing";
/// How long the lease lasts unrenewed: how long pacing waits when its leader dies.
const PACING_LEASE_MS: Millis = 10_000;
/// How often the leader renews it, and others ask for it.
const PACING_RENEW_MS: Millis = 2_000;

/// This run's part in pacing.
#[derive(Default)]
struct Pacing {
    /// This run's name as a holder of the lease: `host-pid/token`.
    me: String,
    /// While this worker leads pacing: the pacer.
    pacer: Option<Pacer>,
    /// Until when (queue millis) the lease is surely this worker's.
    valid_until: Millis,
    /// When the lease was last asked for.
    checked_at: Millis,
    /// Who leads pacing, when another worker does.
    leader: Option<String>,
}

/// Whether the run named `holder` (`host-pid/token`) was of a process of this machine that is
/// gone: its lease need not be waited out.
fn is_gone(holder: &str) -> bool {
    let process = holder.split_once('/').map_or(holder, |(p, _)| p);
    let Some((host, pid)) = process.rsplit_once('-') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == hostname()
        && pid != std::process::id()
        && cfg!(target_os = "linux")
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A letter taken from the claimed batch whose `sending` mark the journal has been asked for
/// (`None`: the journal is gone, so it may not be transmitted).
struct Prepared {
    claimed: ClaimedLetter,
    mark: Option<oneshot::Receiver<bool>>,
}

/// One sending task's share of the run.
struct Task {
    letters: Arc<Mutex<mpsc::Receiver<ClaimedLetter>>>,
    results: mpsc::Sender<AttemptRecord>,
    marks: mpsc::Sender<MarkRequest>,
    /// Stops the run: the user's stop, or a batch's unusable relay.
    halt: CancellationToken,
    /// `serve`: the run goes on while the relay is unusable, instead of ending.
    continuous: bool,
}

/// Takes the next claimed letter (`None` once there are no more or the run stops) and asks
/// the journal to mark it `sending`.
async fn prepare(task: &Task) -> Option<Prepared> {
    if task.halt.is_cancelled() {
        return None;
    }
    let claimed = {
        let mut guard = task.letters.lock().await;
        tokio::select! {
            l = guard.recv() => l,
            _ = task.halt.cancelled() => None,
        }
    }?;
    let (tx, rx) = oneshot::channel();
    let mark = task
        .marks
        .send((claimed.id, tx))
        .await
        .is_ok()
        .then_some(rx);
    Some(Prepared { claimed, mark })
}

/// Waits until `claimed` may be handed over to the relay: the cool-down the relay asked for
/// with a throttling reply, then the campaign's own rate and the relay's, shared with every
/// process on the queue, counted now, as it goes, not when it was taken from the batch.
/// `false` if the run stopped while the limits could not be read (the database unreachable).
async fn hand_over(d: &Dispatcher, claimed: &ClaimedLetter, halt: &CancellationToken) -> bool {
    let cooldown = d.cooldown_until.load(Ordering::Relaxed) - d.queue.now();
    if cooldown > 0 {
        tokio::time::sleep(Duration::from_millis(cooldown as u64)).await;
    }
    let limits = d.per_campaign.get(&claimed.campaign).into_iter();
    for limit in limits.chain(std::iter::once(&*d.global)) {
        while let Err(e) = limit.until_ready(&d.queue).await {
            tracing::warn!(error = %e, limit = limit.key(), "cannot read a sending limit; trying again");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = halt.cancelled() => return false,
            }
        }
    }
    true
}

/// Gives letters back to the queue unattempted, their attempts uncounted: the relay's session
/// failed before their envelopes went out.
async fn hand_back(d: &Dispatcher, letters: &[&ClaimedLetter]) {
    let ids: Vec<(i64, i64)> = letters.iter().map(|l| (l.id, l.lease_token)).collect();
    if let Err(e) = d.queue.release(&ids, d.queue.now()).await {
        // Their leases expire and the next run recovers them.
        tracing::error!(error = %e, "cannot hand letters back to the queue");
    }
}

/// What a sending task does with its letter after the relay's session failed.
enum AfterFault {
    /// Try the same letter again (this connection was turned away; the wait is over).
    Retry,
    /// The letter went back to the queue: on to the next one.
    HandedBack,
    /// The letter went back and the batch stops.
    Stop,
}

/// After a fault of the relay's session while `prepared` was to go: back off and retry, or
/// hand it back (and, in a batch, stop the run).
async fn after_fault(
    d: &Dispatcher,
    task: &Task,
    backoff: &mut Backoff,
    fault: RelayFault,
    prepared: &Prepared,
) -> AfterFault {
    match d.relay.judge(fault).await {
        Judgement::BackOff(first) => {
            tokio::select! {
                _ = tokio::time::sleep(backoff.next(first)) => {}
                _ = task.halt.cancelled() => {}
            }
            if task.halt.is_cancelled() {
                hand_back(d, &[&prepared.claimed]).await;
                return AfterFault::Stop;
            }
            AfterFault::Retry
        }
        Judgement::Unusable => {
            hand_back(d, &[&prepared.claimed]).await;
            if task.continuous {
                AfterFault::HandedBack
            } else {
                task.halt.cancel();
                AfterFault::Stop
            }
        }
    }
}

/// One sending task: its letters one after another over its own connection. While a letter is
/// on the wire the next one is prepared (taken, and its `sending` mark asked for), so the mark
/// is written while the previous letter travels and the next envelope does not wait for it.
/// The price: if the process dies, the letter prepared ahead is in doubt with the one on the
/// wire (at most one more per connection); on stop it is sent, as a letter in hand.
async fn send_letters(d: Dispatcher, mut sender: Sender, task: Task) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut link = d.relay.link();
    let mut backoff = Backoff::default();
    let mut next = prepare(&task).await;
    while let Some(prepared) = next.take() {
        // An unusable relay takes nothing: the letter goes back as it was.
        if d.relay.is_down() {
            hand_back(&d, &[&prepared.claimed]).await;
            if !task.continuous {
                break;
            }
            next = prepare(&task).await;
            continue;
        }
        if !hand_over(&d, &prepared.claimed, &task.halt).await {
            hand_back(&d, &[&prepared.claimed]).await;
            break;
        }
        link.connecting();
        let ready = sender.ready().await;
        link.settle(true, sender.is_connected()).await;
        if let Err(fault) = ready {
            match after_fault(&d, &task, &mut backoff, fault, &prepared).await {
                AfterFault::Retry => next = Some(prepared),
                AfterFault::HandedBack => next = prepare(&task).await,
                AfterFault::Stop => break,
            }
            continue;
        }
        backoff.reset();
        let Prepared { claimed, mark } = prepared;
        let started_at = d.queue.now();
        let stem = format!(
            "{}-{:08}-{}",
            claimed.campaign, claimed.id, claimed.letter.target_id
        );
        let gate = async {
            match mark {
                Some(answer) => answer.await.unwrap_or(false),
                None => false,
            }
        };
        let preparing = prepare(&task);
        tokio::pin!(preparing);
        let mut prepared_next = None;
        let handover = {
            let sending = sender.send(&claimed.letter, &claimed.message_id, &stem, gate);
            tokio::pin!(sending);
            loop {
                tokio::select! {
                    biased;
                    handover = &mut sending => break handover,
                    p = &mut preparing, if prepared_next.is_none() => prepared_next = Some(p),
                }
            }
        };
        link.settle(false, sender.is_connected()).await;
        let following = |prepared_next: Option<Option<Prepared>>| async move {
            match prepared_next {
                Some(p) => p,
                None => preparing.await,
            }
        };
        let delivery = match handover {
            Handover::Attempted(delivery) => {
                if delivery.stage == crate::mailer::Stage::EndOfData && delivery.code.is_some() {
                    d.relay.worked();
                }
                delivery
            }
            Handover::Relay(fault) => {
                // The relay closed the reused connection and a new one failed: the letter was
                // not attempted, and goes back to the queue.
                let prepared = Prepared {
                    claimed,
                    mark: None,
                };
                let after = after_fault(&d, &task, &mut backoff, fault, &prepared).await;
                if matches!(after, AfterFault::Retry) {
                    hand_back(&d, &[&prepared.claimed]).await;
                }
                next = following(prepared_next).await;
                if matches!(after, AfterFault::Stop) {
                    if let Some(p) = next.take() {
                        hand_back(&d, &[&p.claimed]).await;
                    }
                    break;
                }
                continue;
            }
        };
        if !record(&d, &task, &claimed, delivery, started_at, &mut rng).await {
            break;
        }
        next = following(prepared_next).await;
    }
    sender.close().await;
    link.settle(false, false).await;
}

/// Records one attempt's result (and a throttling reply's cool-down). `false` once the
/// journal is gone.
async fn record(
    d: &Dispatcher,
    task: &Task,
    claimed: &ClaimedLetter,
    delivery: Delivery,
    started_at: Millis,
    rng: &mut rand::rngs::StdRng,
) -> bool {
    let finished_at = d.queue.now();
    if delivery.throttled {
        let until = finished_at + d.throttle_cooldown_ms;
        d.cooldown_until.fetch_max(until, Ordering::Relaxed);
        // Every process's next letter waits too.
        if let Err(e) = d.global.hold(&d.queue, until * 1000).await {
            tracing::warn!(error = %e, "cannot share the relay's cool-down with other workers");
        }
        tracing::warn!(
            code = delivery.code,
            cooldown_ms = d.throttle_cooldown_ms,
            "the relay asked to slow down; pausing"
        );
    }
    let next_state = d.policy.next(
        &delivery,
        claimed.attempt,
        claimed.queued_at,
        finished_at,
        rng,
    );
    tracing::debug!(letter_id = claimed.id, stage = %delivery.stage, code = delivery.code, next = ?next_state, "attempt finished");
    let record = AttemptRecord {
        letter_id: claimed.id,
        lease_token: claimed.lease_token,
        attempt: claimed.attempt,
        worker: d.worker_id.clone(),
        started_at,
        finished_at,
        next: next_state,
        stage: Some(delivery.stage.as_str().to_owned()),
        code: delivery.code,
        enhanced_code: delivery.enhanced_code,
        reply: Some(delivery.reply),
    };
    task.results.send(record).await.is_ok()
}

/// Extends this run's leases to `lease_ms` from now.
async fn extend_leases(queue: &Queue, token: i64, lease_ms: i64) {
    if let Err(e) = queue.extend_leases(token, queue.now() + lease_ms).await {
        tracing::error!(error = %e, "cannot extend leases");
    }
}

/// A run of database errors that may pass: how long it has lasted, and how long to wait next
/// (250 ms, doubling, at most 5 s). Logs its first error as a warning, then once a minute.
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    wait: Duration,
    logged: Option<Instant>,
}

/// How long a batch (`missive send`) waits for the database to come back before it stops.
const BATCH_OUTAGE: Duration = Duration::from_secs(60);
/// How long the journal tries a write again before the run stops (its letters' leases have
/// long run out by then; the next run recovers them).
const JOURNAL_OUTAGE: Duration = Duration::from_secs(300);

impl Outage {
    fn next(&mut self, error: &QueueError, what: &str) -> Duration {
        let now = Instant::now();
        self.since.get_or_insert(now);
        if self
            .logged
            .is_none_or(|at| now - at > Duration::from_secs(60))
        {
            tracing::warn!(error = %error, "{what}; trying again until the database answers");
            self.logged = Some(now);
        }
        self.wait = (self.wait * 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
        self.wait
    }

    fn lasted(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// The database answered again.
    fn over(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                seconds = since.elapsed().as_secs_f64(),
                "the database answers again"
            );
        }
        self.wait = Duration::ZERO;
        self.logged = None;
    }
}

/// How long results wait for company before they are written on their own.
const RECORD_LINGER: Duration = Duration::from_millis(5);
/// Most marks, and most results, in one write.
const MAX_MARKS: usize = 256;
const MAX_RESULTS: usize = 512;

/// The run's one writer of its letters: letters whose envelope is on its way (`claimed` ->
/// `sending`), finished attempts, many letters per transaction (the database has one writer,
/// shared with the claims), and every third of a lease, the run's leases extended (one writer,
/// so the extension never waits on a journal write holding the same letters, or deadlocks
/// with it). A write that fails for a reason that may pass (a dropped connection) is tried
/// again as it was, the senders waiting for their marks meanwhile; a mark whose answer was lost
/// is found in the queue. A mark is urgent (its sending task waits for the
/// answer, and may transmit only if its lease still holds): it is written at once, with every
/// result waiting at that moment. Results alone are not urgent (their letters are already in
/// `sending`): they linger briefly after the first, to be written many at a time.
async fn journal(
    queue: Queue,
    token: i64,
    lease_ms: i64,
    mut marks_rx: mpsc::Receiver<MarkRequest>,
    mut results_rx: mpsc::Receiver<AttemptRecord>,
    counters: Arc<Counters>,
) -> Result<(), WorkerError> {
    let mut marks: Vec<MarkRequest> = Vec::with_capacity(MAX_MARKS);
    let mut results: Vec<AttemptRecord> = Vec::with_capacity(MAX_RESULTS);
    let (mut marks_open, mut results_open) = (true, true);
    let mut failure = None;
    let every = Duration::from_millis((lease_ms / 3).max(500) as u64);
    let mut extend_at = tokio::time::Instant::now() + every;
    while marks_open || results_open {
        // Wait for the first report, extending the leases when that is due.
        tokio::select! {
            biased;
            n = marks_rx.recv_many(&mut marks, MAX_MARKS), if marks_open => marks_open = n > 0,
            n = results_rx.recv_many(&mut results, MAX_RESULTS), if results_open => {
                results_open = n > 0;
            }
            _ = tokio::time::sleep_until(extend_at) => {}
        }
        if tokio::time::Instant::now() >= extend_at {
            extend_leases(&queue, token, lease_ms).await;
            extend_at = tokio::time::Instant::now() + every;
        }
        // Results alone: give them a moment for company (more results, or a mark).
        if marks.is_empty() && !results.is_empty() {
            let deadline = tokio::time::Instant::now() + RECORD_LINGER;
            while results_open && results.len() < MAX_RESULTS && marks.is_empty() {
                let room = MAX_RESULTS - results.len();
                tokio::select! {
                    biased;
                    n = marks_rx.recv_many(&mut marks, MAX_MARKS), if marks_open => {
                        marks_open = n > 0;
                        if !marks_open { break; }
                    }
                    r = tokio::time::timeout_at(deadline, results_rx.recv_many(&mut results, room)) => {
                        match r {
                            Ok(n) => results_open = n > 0,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        // Whatever else is waiting goes in the same write.
        while marks.len() < MAX_MARKS {
            match marks_rx.try_recv() {
                Ok(m) => marks.push(m),
                Err(_) => break,
            }
        }
        while results.len() < MAX_RESULTS {
            match results_rx.try_recv() {
                Ok(r) => results.push(r),
                Err(_) => break,
            }
        }
        if marks.is_empty() && results.is_empty() {
            continue;
        }
        let ids: Vec<i64> = marks.iter().map(|(id, _)| *id).collect();
        let mut outage = Outage::default();
        let written = loop {
            match queue.journal(token, &ids, &results, queue.now()).await {
                Ok((moved, n)) if outage.since.is_none() => break Ok((moved, n)),
                Ok((mut moved, n)) => {
                    outage.over();
                    // A write tried before may have been committed with its answer lost: its
                    // marks are ours already.
                    let rest: Vec<i64> = ids
                        .iter()
                        .filter(|id| !moved.contains(id))
                        .copied()
                        .collect();
                    match queue.sending_under(token, &rest).await {
                        Ok(marked) => moved.extend(marked),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read back letters marked as sending")
                        }
                    }
                    break Ok((moved, n));
                }
                Err(e) if e.is_transient() && outage.lasted() < JOURNAL_OUTAGE => {
                    let wait = outage.next(&e, "cannot record letters as sending or their results");
                    tokio::time::sleep(wait).await;
                    if tokio::time::Instant::now() >= extend_at {
                        extend_leases(&queue, token, lease_ms).await;
                        extend_at = tokio::time::Instant::now() + every;
                    }
                }
                Err(e) => break Err(e),
            }
        };
        match written {
            Ok((moved, _)) => {
                for (id, reply) in marks.drain(..) {
                    let _ = reply.send(moved.contains(&id));
                }
                for r in &results {
                    counters.count(r.next);
                }
            }
            Err(e) => {
                // Nothing was written: no letter may be transmitted, and the run stops (its
                // letters' leases expire and the next run recovers them).
                tracing::error!(error = %e, "cannot record letters as sending or their results");
                for (_, reply) in marks.drain(..) {
                    let _ = reply.send(false);
                }
                failure = Some(e);
                break;
            }
        }
        results.clear();
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "worker".into())
}
