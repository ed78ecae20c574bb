//! The gateway's limits (docs/design.md "Limits"), over real HTTP/1.1 against fake
//! backends whose handlers the test holds and releases: a backend call
//! that gets no answer ends with 504 after the backend timeout, a request
//! that outlives the request timeout with 504 `TIMEOUT`; beyond the
//! concurrency limit, or the upload limit, a request gets 503 `OVERLOADED`
//! at once while the probes still answer.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use padlock_gateway::{Gateway, Settings};
use padlock_proto::Reason;
use padlock_proto::auth::v1::key_service_server::{KeyService, KeyServiceServer};
use padlock_proto::auth::v1::{GetJwksRequest, Jwks};
use padlock_proto::deploy::v1::package_service_server::{PackageService, PackageServiceServer};
use padlock_proto::deploy::v1::{
    DeployPackageRequest, Deployment, ListDeploymentsRequest, ListDeploymentsResponse,
    ListPackagesRequest, ListPackagesResponse, Package, TransportPackageRequest,
    UploadPackageRequest,
};
use padlock_runtime::server::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

/// What a fake backend's held handler reports, and how it is let go.
#[derive(Clone)]
struct Hold {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl Hold {
    async fn hold(&self) -> Result<(), Status> {
        let _ = self.entered.send(());
        self.release
            .acquire()
            .await
            .map_err(|_| Status::internal("released for good"))?
            .forget();
        Ok(())
    }
}

/// auth: `GetJwks` is held.
struct Auth(Hold);

#[tonic::async_trait]
impl KeyService for Auth {
    async fn get_jwks(&self, _: Request<GetJwksRequest>) -> Result<Response<Jwks>, Status> {
        self.0.hold().await?;
        Ok(Response::new(Jwks::default()))
    }
}

/// deploy: `UploadPackage` is held; nothing else is called here.
struct Deploy(Hold);

#[tonic::async_trait]
impl PackageService for Deploy {
    async fn upload_package(
        &self,
        _: Request<Streaming<UploadPackageRequest>>,
    ) -> Result<Response<Package>, Status> {
        self.0.hold().await?;
        Ok(Response::new(Package::default()))
    }
    async fn list_packages(
        &self,
        _: Request<ListPackagesRequest>,
    ) -> Result<Response<ListPackagesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn deploy_package(
        &self,
        _: Request<DeployPackageRequest>,
    ) -> Result<Response<Deployment>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn transport_package(
        &self,
        _: Request<TransportPackageRequest>,
    ) -> Result<Response<Deployment>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn list_deployments(
        &self,
        _: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// One fake backend: its address, the handlers it started, their release.
struct Backend {
    addr: SocketAddr,
    entered: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
}

impl Backend {
    async fn start<S>(service: impl FnOnce(Hold) -> S) -> Backend
    where
        S: tonic::server::NamedService
            + tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let svc = service(Hold {
            entered: entered_tx,
            release: release.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Backend {
            addr,
            entered,
            release,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Served {
    async fn start(auth: &str, deploy: &str, settings: Settings, limits: Limits) -> Self {
        let gateway = Gateway::with_settings(settings, auth, deploy, &limits).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            padlock_gateway::serve(gateway, listener, &limits, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Served {
            addr,
            stop: Some(stop),
        }
    }

    /// Sends `request` on a new connection; the status and the body.
    fn send(&self, request: String) -> tokio::task::JoinHandle<(u16, String)> {
        let addr = self.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.unwrap();
            let response = String::from_utf8_lossy(&response).into_owned();
            let status = response[9..12].parse().unwrap();
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            (status, body)
        })
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.send(format!(
            "GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
        ))
        .await
        .unwrap()
    }

    /// A package upload with an access cookie (the fake deploy does not
    /// look at it).
    fn upload(&self) -> tokio::task::JoinHandle<(u16, String)> {
        let body = "a tiny package";
        self.send(format!(
            "POST /api/v1/apps/shop/packages?version=1.0.0&file_name=shop.mda HTTP/1.1\r\n\
             Host: gateway\r\nConnection: close\r\nX-Padlock-CSRF: 1\r\n\
             Cookie: padlock_access=token\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn settings(backend_timeout: Duration) -> Settings {
    Settings {
        session_ttl_secs: 3600,
        max_upload_bytes: 1024,
        max_concurrent_uploads: 1,
        backend_timeout,
    }
}

async fn backends() -> (Backend, Backend) {
    (
        Backend::start(|hold| KeyServiceServer::new(Auth(hold))).await,
        Backend::start(|hold| PackageServiceServer::new(Deploy(hold))).await,
    )
}

/// A backend that accepts connections and never answers (nor reads).
async fn silent_backend() -> (String, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = accepted.send(socket);
        }
    });
    (url, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_does_not_answer_is_a_504_after_the_backend_timeout() {
    let (auth, mut connections) = silent_backend().await;
    let (_, deploy) = backends().await;
    let gw = Served::start(
        &auth,
        &deploy.url(),
        settings(Duration::from_millis(300)),
        Limits::default(),
    )
    .await;
    let (status, body) = gw.get("/.well-known/jwks.json").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains(r#""error":"DEADLINE_EXCEEDED""#), "{body}");
    assert!(connections.recv().await.is_some(), "auth was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_outlives_the_request_timeout_is_a_504() {
    let (mut auth, deploy) = backends().await;
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gw = Served::start(
        &auth.url(),
        &deploy.url(),
        settings(Duration::from_secs(600)),
        limits,
    )
    .await;
    let (status, body) = gw.get("/.well-known/jwks.json").await;
    assert_eq!(status, 504, "{body}");
    assert!(has_error(&body, Reason::Timeout), "{body}");
    auth.entered.recv().await.unwrap();
    auth.release.add_permits(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_concurrency_limit_a_request_gets_503_at_once() {
    let (mut auth, deploy) = backends().await;
    let limits = Limits {
        max_concurrent_requests: 1,
        ..Limits::default()
    };
    let gw = Served::start(
        &auth.url(),
        &deploy.url(),
        settings(Duration::from_secs(600)),
        limits,
    )
    .await;
    let held = gw.send(
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".into(),
    );
    auth.entered.recv().await.unwrap();

    // The one place is taken until the release below.
    let (status, body) = gw.get("/.well-known/jwks.json").await;
    assert_eq!(status, 503, "{body}");
    assert!(has_error(&body, Reason::Overloaded), "{body}");
    assert!(auth.entered.try_recv().is_err(), "auth was not called");
    assert_eq!(gw.get("/healthz").await.0, 200, "probes always answer");

    auth.release.add_permits(1);
    assert_eq!(held.await.unwrap().0, 200);
    auth.release.add_permits(1);
    assert_eq!(gw.get("/.well-known/jwks.json").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_upload_limit_an_upload_gets_503_and_other_requests_go_on() {
    let (auth, mut deploy) = backends().await;
    let gw = Served::start(
        &auth.url(),
        &deploy.url(),
        settings(Duration::from_secs(600)),
        Limits::default(),
    )
    .await;
    let held = gw.upload();
    deploy.entered.recv().await.unwrap();

    let (status, body) = gw.upload().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(has_error(&body, Reason::Overloaded), "{body}");
    assert!(deploy.entered.try_recv().is_err(), "deploy was not called");
    auth.release.add_permits(1);
    assert_eq!(gw.get("/.well-known/jwks.json").await.0, 200);

    deploy.release.add_permits(1);
    assert_eq!(held.await.unwrap().0, 201);
}

/// Whether a JSON error body names `reason`.
fn has_error(body: &str, reason: Reason) -> bool {
    body.contains(&format!(r#""error":"{}""#, reason.as_str_name()))
}
