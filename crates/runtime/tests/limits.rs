//! The resource limits every gRPC server applies ([`server::Limits`]): a
//! request beyond the concurrency limit is refused at once with UNAVAILABLE
//! `OVERLOADED` (never queued) while health checks still answer; a request
//! that outlives its timeout is answered DEADLINE_EXCEEDED and frees its
//! place; a header block above [`server::MAX_HEADER_LIST_BYTES`] is refused
//! before any handler runs. The service under test is auth's `KeyService`
//! with a handler the test holds and releases, so nothing waits for time
//! except the one timeout under test.

#![allow(clippy::unwrap_used)]

use padlock_proto::Reason;
use std::sync::Arc;
use std::time::Duration;

use padlock_proto::auth::v1::key_service_client::KeyServiceClient;
use padlock_proto::auth::v1::key_service_server::{KeyService, KeyServiceServer};
use padlock_proto::auth::v1::{GetJwksRequest, Jwks};
use padlock_runtime::server::{self, Limits};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

/// `GetJwks` that reports it has started and then waits for a release.
struct Held {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

#[tonic::async_trait]
impl KeyService for Held {
    async fn get_jwks(
        &self,
        _: tonic::Request<GetJwksRequest>,
    ) -> Result<tonic::Response<Jwks>, Status> {
        let _ = self.entered.send(());
        self.release
            .acquire()
            .await
            .map_err(|_| Status::internal("released for good"))?
            .forget();
        Ok(tonic::Response::new(Jwks::default()))
    }
}

struct Served {
    channel: Channel,
    entered: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(limits: Limits) -> Served {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let (_health, routes) = server::base_routes(padlock_proto::AUTH_DESCRIPTOR_SET).unwrap();
        let routes = routes.add_service(KeyServiceServer::new(Held {
            entered: entered_tx,
            release: release.clone(),
        }));
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, routes, &limits, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Served {
            channel,
            entered,
            release,
            stop,
            task,
        }
    }

    fn call(&self) -> tokio::task::JoinHandle<Result<Jwks, Status>> {
        let mut client = KeyServiceClient::new(self.channel.clone());
        tokio::spawn(async move {
            client
                .get_jwks(GetJwksRequest {})
                .await
                .map(tonic::Response::into_inner)
        })
    }

    /// Waits until `n` more handlers have started.
    async fn entered(&mut self, n: usize) {
        for _ in 0..n {
            self.entered.recv().await.unwrap();
        }
    }

    fn no_handler_started(&mut self) -> bool {
        self.entered.try_recv().is_err()
    }

    async fn health(&self) -> Result<i32, Status> {
        HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
    }

    async fn stop(self) {
        // Let anything still held finish, so the drain ends.
        self.release.add_permits(Semaphore::MAX_PERMITS / 2);
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn limits(max_concurrent_requests: usize) -> Limits {
    Limits {
        max_concurrent_requests,
        ..Limits::default()
    }
}

#[track_caller]
fn assert_reason(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("padlock", reason)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_the_limit_is_refused_at_once_and_admitted_after_a_release() {
    let mut s = Served::start(limits(2)).await;
    let held = [s.call(), s.call()];
    s.entered(2).await;

    // Both places are taken and stay taken until the release below: the
    // third call can only end by being refused, not by waiting its turn.
    let refused = s.call().await.unwrap().unwrap_err();
    assert_reason(
        &refused,
        Code::Unavailable,
        Reason::Overloaded.as_str_name(),
    );
    assert!(
        refused.get_error_details().retry_info().is_some(),
        "{refused:?}"
    );
    assert!(
        s.no_handler_started(),
        "the refused call reached no handler"
    );
    assert_eq!(
        s.health().await.unwrap(),
        ServingStatus::Serving as i32,
        "health checks are never refused"
    );

    s.release.add_permits(2);
    for call in held {
        call.await.unwrap().unwrap();
    }
    let admitted = s.call();
    s.entered(1).await;
    s.release.add_permits(1);
    admitted.await.unwrap().unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_answered_deadline_exceeded_and_frees_its_place() {
    let mut s = Served::start(Limits {
        max_concurrent_requests: 1,
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    // Never released: only the server's timeout can end it.
    let stuck = s.call();
    s.entered(1).await;
    let status = stuck.await.unwrap().unwrap_err();
    assert_reason(
        &status,
        Code::DeadlineExceeded,
        Reason::Timeout.as_str_name(),
    );

    // Its place is free again.
    let next = s.call();
    s.entered(1).await;
    s.release.add_permits(1);
    next.await.unwrap().unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_over_the_limit_is_refused_before_any_handler() {
    let mut s = Served::start(Limits::default()).await;
    let mut request = tonic::Request::new(GetJwksRequest {});
    let padding = "x".repeat(server::MAX_HEADER_LIST_BYTES as usize + 1);
    request
        .metadata_mut()
        .insert("x-padding", padding.parse().unwrap());
    let refused = KeyServiceClient::new(s.channel.clone())
        .get_jwks(request)
        .await
        .unwrap_err();
    // hyper answers HTTP 431 (no gRPC status), which tonic reports so.
    assert!(refused.message().contains("431"), "{refused:?}");
    assert!(s.no_handler_started(), "{refused:?}");

    // The connection and the server are fine afterwards.
    let fine = s.call();
    s.entered(1).await;
    s.release.add_permits(1);
    fine.await.unwrap().unwrap();
    s.stop().await;
}
