//! A task that serves requests in batches: callers queue a request and
//! wait; the task takes every request waiting (up to [`MAX_BATCH`]),
//! serves them with one call and answers each, while the next batch
//! gathers. Code checks read and record (`code_checks`) this way,
//! so one statement or one commit serves many requests.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{Result, StoreError};

/// Requests served at once at most: a bound on one query or transaction,
/// far above the requests a server runs at once.
pub(crate) const MAX_BATCH: usize = 512;

/// Requests waiting at most; more wait to be queued, which is
/// back-pressure, not memory growth.
const QUEUE: usize = 1024;

struct Job<Q, A> {
    request: Q,
    reply: oneshot::Sender<Result<A>>,
}

/// Hands requests to the task; cheap to clone. The task ends when every
/// handle is gone.
pub(crate) struct Batcher<Q, A> {
    jobs: mpsc::Sender<Job<Q, A>>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Batcher {
            jobs: self.jobs.clone(),
        }
    }
}

impl<Q, A> std::fmt::Debug for Batcher<Q, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the task on a thread of its own named `name`, with a runtime
    /// of its own. Every statement of a batch is a round trip (to SQLite's
    /// connection thread, or to PostgreSQL); on the service's runtime each
    /// would wait its turn behind the requests' work (verifying and signing
    /// tokens), and the connection would wait with it. Connections the task
    /// opens are driven by its own runtime too. `serve` answers a batch in
    /// order, one answer per request; on an error every request of the
    /// batch gets it.
    pub fn spawn<F, Fut>(name: &str, mut serve: F) -> Self
    where
        F: FnMut(Vec<Q>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<A>>> + Send,
    {
        let (jobs, mut queue) = mpsc::channel::<Job<Q, A>>(QUEUE);
        let task = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (requests, replies): (Vec<_>, Vec<_>) =
                    batch.drain(..).map(|j| (j.request, j.reply)).unzip();
                // A caller that gave up is not waiting for its answer; its
                // request was served all the same.
                match serve(requests).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let started = runtime.and_then(|runtime| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || runtime.block_on(task))
        });
        // Without its task the batcher's queue is closed: every call
        // answers Unavailable, as when the service stops.
        if let Err(e) = started {
            tracing::error!(error = %e, task = name, "starting a batch thread failed");
        }
        Batcher { jobs }
    }

    /// Serves `request` in the next batch. `Unavailable` when the task is
    /// gone (the service is stopping).
    pub async fn call(&self, request: Q) -> Result<A> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        answer.await.map_err(|_| StoreError::Unavailable)?
    }
}
