//! Group commit for web and API signatures: concurrent requests hand their signature (with its
//! rendered letters) to one task, which writes whatever has arrived in a single transaction and
//! answers each request with its own result. SQLite takes one writer at a time, so one commit
//! per request caps intake at the commit rate; sharing commits lifts that cap while each
//! request still returns only once its signature and letters are durable.

use crate::queue::{IntakeDetails, Millis, NewSignature, Queue, Recorded};
use tokio::sync::{mpsc, oneshot};

/// Signatures written per transaction at most.
const MAX_BATCH: usize = 256;

type Job = (
    NewSignature,
    IntakeDetails,
    oneshot::Sender<Result<Recorded, String>>,
);

/// The handle requests use; the writing task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    tx: Option<mpsc::Sender<Job>>,
    queue: Queue,
}

impl GroupCommit {
    /// Starts the writing task on the current tokio runtime (without one, every signature is
    /// written on its own).
    pub(super) fn start(queue: Queue) -> GroupCommit {
        let tx = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
            rt.spawn(write_batches(queue.clone(), rx));
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
            .map_err(|e| anyhow::anyhow!("recording the signature: {e}"))
    }
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
        match queue
            .record_signatures_with_details(&batch, &details, crate::queue::now_millis())
            .await
        {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, signatures = batch.len(), "cannot record signatures");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
