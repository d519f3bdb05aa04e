//! Group commit for web and API signatures: concurrent requests hand their signature (with its
//! rendered letters) to one task, which writes whatever has arrived in a single transaction and
//! answers each request with its own result. SQLite takes one writer at a time, so one commit
//! per request caps intake at the commit rate; sharing commits lifts that cap while each
//! request still returns only once its signature and letters are durable.
//!
//! The writing task runs on a thread of its own (a single-threaded tokio runtime that lives as
//! long as the process). It drives each transaction a statement at a time through SQLite's
//! writer; on the shared runtime every statement's answer woke it behind the request handlers
//! queued there (each rendering letters), and the writer sat idle meanwhile. On its own thread
//! it is polled as soon as an answer arrives: about 4,500 -> 5,800 durable signatures a second
//! on two cores (`BENCHMARKS.md`, session 5). The worker's journal stays on the shared
//! runtime: there the senders it serves are light, and the extra thread measured slower.

use crate::queue::{IntakeDetails, Millis, NewSignature, Queue, Recorded};
use std::sync::OnceLock;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Signatures written per transaction at most.
const MAX_BATCH: usize = 256;

type Job = (
    NewSignature,
    IntakeDetails,
    oneshot::Sender<Result<Recorded, RecordFailed>>,
);

/// A batch that could not be written, as each of its requests is told.
#[derive(Debug, Clone, thiserror::Error)]
#[error("recording the signature: {message}")]
pub(crate) struct RecordFailed {
    message: String,
    /// The database may answer in a moment (a dropped connection, a restarting server): the
    /// supporter is asked to try again.
    pub(crate) transient: bool,
}

/// Tries of one batch when the database's error may pass, and the wait before the second.
const TRIES: u32 = 3;
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The handle requests use; the writing task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    tx: Option<mpsc::Sender<Job>>,
    queue: Queue,
}

impl GroupCommit {
    /// Starts the writing task on the writer's own thread (see above). Outside a tokio
    /// runtime, every signature is written on its own.
    pub(super) fn start(queue: Queue) -> GroupCommit {
        let tx = Handle::try_current().is_ok().then(|| {
            let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
            let task = write_batches(queue.clone(), rx);
            match writer_runtime() {
                Some(own) => own.spawn(task),
                None => tokio::spawn(task),
            };
            tx
        });
        GroupCommit { tx, queue }
    }

    /// Records one signature; returns once it is committed.
    pub(super) async fn record(
        &self,
        sig: NewSignature,
        details: IntakeDetails,
        now: Millis,
    ) -> anyhow::Result<Recorded> {
        let Some(tx) = &self.tx else {
            let mut out = self
                .queue
                .record_signatures_with_details(&[sig], &[details], now)
                .await?;
            return Ok(out.pop().expect("one signature in, one result out"));
        };
        let (reply, answer) = oneshot::channel();
        tx.send((sig, details, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the signature writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the signature writer has stopped"))?
            .map_err(anyhow::Error::new)
    }
}

static WRITER: OnceLock<Option<Handle>> = OnceLock::new();

/// The writing tasks' runtime on its own thread, started on first use; `None` if it could not
/// be started (the task then runs on the shared runtime, as before).
fn writer_runtime() -> Option<&'static Handle> {
    WRITER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name("missive-intake-writer".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot start the intake writer's runtime");
                            let _ = tx.send(None);
                        }
                    }
                });
            match started {
                Ok(_) => rx.recv().ok().flatten(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the intake writer's thread");
                    None
                }
            }
        })
        .as_ref()
}

async fn write_batches(queue: Queue, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let mut batch = Vec::with_capacity(jobs.len());
        let mut details = Vec::with_capacity(jobs.len());
        let mut replies = Vec::with_capacity(jobs.len());
        for (sig, detail, reply) in jobs.drain(..) {
            batch.push(sig);
            details.push(detail);
            replies.push(reply);
        }
        // A dropped connection or a restarting server: the pool opens a new connection, so
        // the batch is tried again before anyone is told to try again.
        let mut tries = 0;
        let mut wait = FIRST_WAIT;
        let written = loop {
            tries += 1;
            match queue
                .record_signatures_with_details(&batch, &details, queue.now())
                .await
            {
                Err(e) if e.is_transient() && tries < TRIES => {
                    tracing::warn!(error = %e, "cannot record signatures; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => break other,
            }
        };
        match written {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, signatures = batch.len(), "cannot record signatures");
                let failed = RecordFailed {
                    message: e.to_string(),
                    transient: e.is_transient(),
                };
                for reply in replies {
                    let _ = reply.send(Err(failed.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_writing_task_runs_on_a_thread_of_its_own() {
        let own = super::writer_runtime().expect("the writer's runtime starts");
        let name = own
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("the task ran to its end");
        assert_eq!(name.as_deref(), Some("missive-intake-writer"));
    }
}
