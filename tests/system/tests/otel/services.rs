//! The services as processes, and a browser for the gateway.

use super::*;

// ---------------------------------------------------------------- services

/// A running service: its address from the "listening on" line, its JSON
/// log on disk.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

/// The environment a service starts with: none of the caller's PADLOCK_*,
/// OTEL_*, DATABASE_URL or RUST_LOG, then `env`.
pub fn clean_env(command: &mut Command, env: &[(&str, &str)]) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("OTEL_")
            || key.starts_with("PADLOCK_")
            || key == "DATABASE_URL"
            || key == "RUST_LOG"
        {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info");
    command.envs(env.iter().copied());
}

pub async fn start(
    bins: &Path,
    name: &'static str,
    dir: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Service {
    let data_dir = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let mut command = Command::new(bins.join(name));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(&data_dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    clean_env(&mut command, env);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(READY_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, addr)) = line.split_once("listening on ") {
                return Some(addr.trim().to_owned());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        panic!(
            "{name} did not say where it listens; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    // Keep reading stdout so the service never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Service {
        name,
        child,
        addr,
        log,
        data_dir,
    }
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// SIGTERM, and the exit code must be 0: the shutdown flush is inside.
    pub async fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = tokio::time::timeout(READY_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit after SIGTERM", self.name))
            .unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(
            status.success(),
            "{} exited {status}; log:\n{log}",
            self.name
        );
        log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// `padlock-auth users add` against `auth`'s data, without telemetry.
pub async fn add_user(
    bins: &Path,
    auth_data: &Path,
    username: &str,
    password: &str,
    roles: &[&str],
) {
    let mut command = Command::new(bins.join(AUTH));
    command
        .arg("--data-dir")
        .arg(auth_data)
        .args(["users", "add", "--username", username]);
    for role in roles {
        command.args(["--role", role]);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    clean_env(&mut command, &[]);
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "users add {username} failed");
}

/// `message` with `access_token` as its bearer token.
pub fn with_bearer<T>(message: T, access_token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {access_token}").parse().unwrap(),
    );
    request
}

/// Rotates auth's signing key (`keys rotate`, then SIGHUP) and waits until
/// its JWKS serves both keys.
pub async fn rotate_keys(bins: &Path, auth: &Service) {
    let mut command = Command::new(bins.join(AUTH));
    command
        .arg("--data-dir")
        .arg(&auth.data_dir)
        .args(["keys", "rotate"])
        .stdout(Stdio::null());
    clean_env(&mut command, &[]);
    assert!(
        command.status().await.unwrap().success(),
        "keys rotate failed"
    );
    auth.signal("-HUP");
    let mut keys = KeyServiceClient::connect(auth.url()).await.unwrap();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let jwks = keys.get_jwks(GetJwksRequest {}).await.unwrap().into_inner();
        if jwks.keys.len() == 2 {
            return;
        }
        assert!(Instant::now() < deadline, "auth did not load the new key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- a browser

/// What a browser tab keeps: cookies. Like the UI it sends
/// `X-Padlock-CSRF: 1` with every write.
#[derive(Debug)]
pub struct Browser {
    pub addr: String,
    pub jar: BTreeMap<String, String>,
    /// Every cookie value the gateway ever set: tokens, for the leak check.
    pub seen: Arc<Mutex<BTreeSet<String>>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

impl Browser {
    pub fn new(gateway: &Service, seen: &Arc<Mutex<BTreeSet<String>>>) -> Self {
        Self {
            addr: gateway.addr.clone(),
            jar: BTreeMap::new(),
            seen: seen.clone(),
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Reply {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.addr)
            .header(http::header::ACCEPT, "application/json");
        if method != "GET" {
            request = request.header("x-padlock-csrf", "1");
        }
        if !self.jar.is_empty() {
            let cookies: Vec<_> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(http::header::COOKIE, cookies.join("; "));
        }
        let content = match body {
            Some((content_type, bytes)) => {
                request = request.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(content)).unwrap())
            .await
            .unwrap();
        for set in response.headers().get_all(http::header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let first = set.split(';').next().unwrap_or_default();
            let (name, value) = first.split_once('=').unwrap_or((first, ""));
            if value.is_empty() || set.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.seen.lock().unwrap().insert(value.trim().to_owned());
                self.jar
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, body }
    }

    pub async fn post(&mut self, path: &str, body: Value) -> Reply {
        let bytes = serde_json::to_vec(&body).unwrap();
        self.send("POST", path, Some(("application/json", bytes)))
            .await
    }
}
