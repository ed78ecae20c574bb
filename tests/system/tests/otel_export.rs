//! OpenTelemetry export from the real binaries (docs/design.md "Observability"):
//! padlock-auth, padlock-deploy and padlock-gateway export over OTLP/gRPC to
//! a receiver in this test (opentelemetry-proto's tonic server) while an
//! operator, stepped up with TOTP, creates an app over gRPC and a person
//! signs in through the gateway, is refused a transport to production
//! without a second factor, enrolls TOTP and transports. The test shows one
//! trace across gateway -> deploy -> auth (the JWKS refresh a key rotation
//! causes) and gateway -> auth, the metrics docs/design.md names, JSON log lines
//! naming the trace, and no password, token, TOTP secret, code or phone
//! number in any exported span or metric. Without
//! `OTEL_EXPORTER_OTLP_ENDPOINT` nothing is exported.
//!
//! The binaries come from `$PADLOCK_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
//! else the workspace's `target/debug`: run `cargo build --bins` first
//! (tests/run-all.sh does). Without them the tests skip with a message,
//! except under `CI=true`, where that is a failure.

#![allow(clippy::unwrap_used)]

mod otel;

use otel::*;

// ---------------------------------------------------------------- the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_gateway_deploy_and_auth_for_a_transport_to_production() {
    let Some(bins) = binaries() else { return };
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", SPAN_DELAY_MS),
        ("OTEL_METRIC_EXPORT_INTERVAL", METRIC_INTERVAL_MS),
    ];
    let mut secrets: Vec<String> = vec![PHONE.to_owned(), PHONE[1..].to_owned()];
    let password = |who: &str| format!("{who}-correct-horse-battery-staple");
    for who in ["olga", "tina", "sara"] {
        secrets.push(password(who));
    }

    let auth = start(
        &bins,
        AUTH,
        dir.path(),
        &["--sms-dev-log".to_owned()],
        &otel,
    )
    .await;
    add_user(
        &bins,
        &auth.data_dir,
        "olga",
        &password("olga"),
        &["operator"],
    )
    .await;
    add_user(&bins, &auth.data_dir, "tina", &password("tina"), &[]).await;
    add_user(&bins, &auth.data_dir, "sara", &password("sara"), &[]).await;
    let deploy = start(
        &bins,
        DEPLOY,
        dir.path(),
        &["--auth-url".to_owned(), auth.url()],
        &otel,
    )
    .await;
    let gateway = start(
        &bins,
        GATEWAY,
        dir.path(),
        &[
            "--auth-url".to_owned(),
            auth.url(),
            "--deploy-url".to_owned(),
            deploy.url(),
        ],
        &otel,
    )
    .await;
    for service in [&auth, &deploy, &gateway] {
        assert!(
            service
                .log()
                .contains("exporting traces and metrics over OTLP"),
            "{} does not say it exports",
            service.name
        );
    }

    // olga, an operator, creates the app over gRPC (the gateway has no
    // route for it), which needs her second factor: she enrolls TOTP and
    // uses the stepped-up token. deploy fetches auth's keys for the first
    // time.
    let signed_in = SessionServiceClient::connect(auth.url())
        .await
        .unwrap()
        .sign_in(SignInRequest {
            username: "olga".into(),
            password: password("olga"),
        })
        .await
        .unwrap()
        .into_inner();
    secrets.push(signed_in.access_token.clone());
    secrets.push(signed_in.session_token.clone());
    let mut two_factor = TwoFactorServiceClient::connect(auth.url()).await.unwrap();
    let started = two_factor
        .start_totp_enrollment(with_bearer(
            StartTotpEnrollmentRequest {},
            &signed_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(started.secret.clone());
    secrets.push(started.otpauth_uri.clone());
    let olga_code = totp(&started.secret, unix_now());
    let stepped_up = two_factor
        .confirm_enrollment(with_bearer(
            ConfirmEnrollmentRequest {
                enrollment_id: started.enrollment_id,
                code: olga_code.clone(),
            },
            &signed_in.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    secrets.push(stepped_up.access_token.clone());
    let create = with_bearer(
        CreateAppRequest {
            name: "Shop".into(),
            technical_contact: "tina".into(),
        },
        &stepped_up.access_token,
    );
    let app = AppServiceClient::connect(deploy.url())
        .await
        .unwrap()
        .create_app(create)
        .await
        .unwrap()
        .into_inner();

    // tina, the Technical Contact, takes a package to acceptance through
    // the gateway; production is refused without a second factor.
    let cookies = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tina = Browser::new(&gateway, &cookies);
    let sign_in = json!({"username": "tina", "password": password("tina")});
    tina.post("/api/v1/sessions", sign_in.clone())
        .await
        .expect(201, "tina signs in");
    let package = tina
        .send(
            "POST",
            &format!(
                "/api/v1/apps/{}/packages?version=1.0.0&file_name=shop-1.0.0.mda",
                app.id
            ),
            Some(("application/octet-stream", vec![7u8; 4096])),
        )
        .await
        .expect(201, "tina uploads a package");
    let package_id = package["id"].as_str().unwrap().to_owned();
    tina.post(
        &format!("/api/v1/packages/{package_id}/deployments"),
        json!({"environment": "test"}),
    )
    .await
    .expect(201, "deploy to test");
    let transports = format!("/api/v1/packages/{package_id}/transports");
    tina.post(
        &transports,
        json!({"from_environment": "test", "to_environment": "acceptance"}),
    )
    .await
    .expect(201, "transport to acceptance");
    let to_production = json!({"from_environment": "acceptance", "to_environment": "production"});
    let refused = tina
        .post(&transports, to_production.clone())
        .await
        .expect(401, "production without a second factor");
    assert_eq!(
        refused["error"],
        Reason::MfaRequired.as_str_name(),
        "{refused}"
    );

    // A key rotation: tina's next token names a key deploy has not seen,
    // so her transport makes deploy refresh the JWKS from auth, inside the
    // transport's trace.
    rotate_keys(&bins, &auth).await;
    let mut tina = Browser::new(&gateway, &cookies);
    tina.post("/api/v1/sessions", sign_in)
        .await
        .expect(201, "tina signs in after the rotation");
    let started = tina
        .post("/api/v1/me/factor/totp", json!({}))
        .await
        .expect(200, "tina starts TOTP enrollment");
    let totp_secret = started["secret"].as_str().unwrap().to_owned();
    secrets.push(totp_secret.clone());
    secrets.push(started["otpauth_uri"].as_str().unwrap().to_owned());
    let code = totp(&totp_secret, unix_now());
    let mut codes = vec![olga_code, code.clone()];
    tina.post(
        "/api/v1/me/factor/confirmation",
        json!({"enrollment_id": started["enrollment_id"], "code": code}),
    )
    .await
    .expect(200, "tina confirms with her code");
    let done = tina
        .post(&transports, to_production)
        .await
        .expect(201, "transport to production with TOTP");
    assert_eq!(done["environment"], "production");

    // Five wrong codes lock tina's factor.
    let wrong = a_wrong_code(&totp_secret);
    let mut last = 0;
    for _ in 0..5 {
        last = tina
            .post("/api/v1/me/factor/verification", json!({"code": wrong}))
            .await
            .status;
    }
    assert_eq!(last, 429, "the fifth wrong code locks the factor");

    // sara enrolls her phone (the development sender logs the code); a
    // resend within the cooldown is refused.
    let mut sara = Browser::new(&gateway, &cookies);
    sara.post(
        "/api/v1/sessions",
        json!({"username": "sara", "password": password("sara")}),
    )
    .await
    .expect(201, "sara signs in");
    sara.post("/api/v1/me/factor/sms", json!({"phone_number": PHONE}))
        .await
        .expect(200, "sara enrolls her phone");
    sara.post("/api/v1/me/factor/sms/code", json!({}))
        .await
        .expect(429, "a resend within the cooldown");
    let sms_code = auth
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["target"] == padlock_runtime::telemetry::LOG_ONLY_TARGET)
        .and_then(|line| line["body"].as_str().map(|b| b[..6].to_owned()))
        .expect("the development sender logs the code");
    codes.push(sms_code);

    // The transport to production: one trace, gateway -> deploy -> auth.
    let route = "POST /api/v1/packages/{package_id}/transports";
    let (trace, spans) = wait_for("the production transport's trace", || {
        let spans = received.spans();
        let trace = spans
            .iter()
            .filter(|s| s.service == GATEWAY && s.item.name == route)
            .filter(|s| int_attr(&s.item.attributes, "http.response.status_code") == Some(201))
            .max_by_key(|s| s.item.start_time_unix_nano)?
            .item
            .trace_id
            .clone();
        let in_trace = |service: &str, name: &str| {
            spans
                .iter()
                .any(|s| s.service == service && s.item.trace_id == trace && s.item.name == name)
        };
        (in_trace(DEPLOY, "padlock.deploy.v1.PackageService/TransportPackage")
            && in_trace(AUTH, "padlock.auth.v1.KeyService/GetJwks")
            && in_trace(DEPLOY, "padlock.auth.v1.KeyService/GetJwks"))
        .then_some((trace, spans))
    })
    .await;
    let http = one_span(&spans, &trace, GATEWAY, route, None);
    assert!(
        http.parent_span_id.is_empty(),
        "the gateway starts the trace"
    );
    assert_eq!(
        str_attr(&http.attributes, "http.route"),
        Some("/api/v1/packages/{package_id}/transports")
    );
    let transport = "padlock.deploy.v1.PackageService/TransportPackage";
    let call = one_span(&spans, &trace, GATEWAY, transport, Some(&http.span_id));
    let served = one_span(&spans, &trace, DEPLOY, transport, Some(&call.span_id));
    assert_eq!(
        int_attr(&served.attributes, "rpc.grpc.status_code"),
        Some(0)
    );
    let jwks = "padlock.auth.v1.KeyService/GetJwks";
    let fetch = one_span(&spans, &trace, DEPLOY, jwks, Some(&served.span_id));
    let answered = one_span(&spans, &trace, AUTH, jwks, Some(&fetch.span_id));
    assert_eq!(answered.kind, 2, "auth's span is a server span");
    assert_eq!(fetch.kind, 3, "deploy's fetch is a client span");

    // deploy's JSON log line about the refresh names that trace and span.
    assert!(
        logged_ids(&deploy.log(), "JWKS fetched").contains(&(hex(&trace), hex(&served.span_id))),
        "deploy's log line about the refresh names the transport's trace and span"
    );
    assert!(
        logged_ids(&gateway.log(), "http request").contains(&(hex(&trace), hex(&http.span_id))),
        "the gateway's access log line names the trace and span"
    );

    // Signing in through the gateway: gateway -> auth in one trace.
    let sign_in_route = "POST /api/v1/sessions";
    let method = "padlock.auth.v1.SessionService/SignIn";
    let (sign_in, spans) = wait_for("a sign-in's trace", || {
        let spans = received.spans();
        let sign_in = spans
            .iter()
            .filter(|s| s.service == GATEWAY && s.item.name == sign_in_route)
            .find(|gateway| {
                spans.iter().any(|s| {
                    s.service == AUTH
                        && s.item.trace_id == gateway.item.trace_id
                        && s.item.name == method
                })
            })?
            .item
            .clone();
        Some((sign_in, spans))
    })
    .await;
    let call = one_span(
        &spans,
        &sign_in.trace_id,
        GATEWAY,
        method,
        Some(&sign_in.span_id),
    );
    one_span(&spans, &sign_in.trace_id, AUTH, method, Some(&call.span_id));

    // SIGTERM: each service flushes its last spans and its metrics.
    let mut logs = Vec::new();
    for service in [gateway, deploy, auth] {
        logs.push((service.name, service.stop().await));
    }
    let metrics = received.metrics();
    let value = |service: &str, name: &str, want: &[(&str, &str)]| {
        metric_value(&metrics, service, name, want).unwrap_or_else(|| {
            let names: BTreeSet<_> = metrics
                .iter()
                .map(|m| format!("{}: {}", m.service, m.item.name))
                .collect();
            panic!("no {name} {want:?} from {service}; received {names:#?}")
        })
    };
    // olga's and tina's enrollments, each confirmed with a code.
    assert_eq!(
        value(
            AUTH,
            "padlock.auth.verifications",
            &[("method", "totp"), ("outcome", "accepted")]
        ),
        2
    );
    assert_eq!(
        value(
            AUTH,
            "padlock.auth.verifications",
            &[("method", "totp"), ("outcome", "wrong")]
        ),
        5
    );
    assert_eq!(
        value(AUTH, "padlock.auth.lockouts", &[("method", "totp")]),
        1
    );
    assert_eq!(value(AUTH, "padlock.auth.sms.sent", &[]), 1);
    assert_eq!(
        value(AUTH, "padlock.auth.sms.refused", &[("reason", "cooldown")]),
        1
    );
    assert_eq!(
        value(
            DEPLOY,
            "padlock.deploy.step_up.refusals",
            &[
                ("reason", Reason::MfaRequired.as_str_name()),
                ("action", "transport_package"),
                ("environment", "production"),
            ]
        ),
        1
    );
    assert_eq!(
        value(
            DEPLOY,
            "rpc.server.call.duration",
            &[("rpc.method", transport), ("rpc.grpc.status_code", "0")]
        ),
        2
    );
    assert_eq!(
        value(
            DEPLOY,
            "rpc.server.call.duration",
            &[("rpc.method", transport), ("rpc.grpc.status_code", "16")]
        ),
        1
    );
    assert!(value(AUTH, "rpc.server.call.duration", &[("rpc.method", method)]) >= 3);

    // Nothing secret in any exported span or metric, or in any log line
    // (but the development sender's own, which logs the SMS code on purpose).
    secrets.extend(cookies.lock().unwrap().iter().cloned());
    let spans = received.spans();
    let mut exported: Vec<(String, String)> = Vec::new();
    for span in &spans {
        for text in span_strings(&span.item) {
            exported.push((format!("{} span {:?}", span.service, span.item.name), text));
        }
    }
    for metric in &received.metrics() {
        for text in metric_strings(&metric.item) {
            exported.push((
                format!("{} metric {}", metric.service, metric.item.name),
                text,
            ));
        }
    }
    assert!(spans.len() > 20, "only {} spans arrived", spans.len());
    for (whence, text) in &exported {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{whence} holds a secret");
        }
        for code in &codes {
            assert!(!holds_number(text, code), "{whence} holds a code");
        }
        assert!(!holds_jwt(text), "{whence} holds something like a JWT");
    }
    for (name, log) in &logs {
        for line in log
            .lines()
            .filter(|line| !line.contains(padlock_runtime::telemetry::LOG_ONLY_TARGET))
        {
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "{name}'s log holds a secret"
                );
            }
            for code in &codes {
                assert!(!holds_number(line, code), "{name}'s log holds a code");
            }
            assert!(!holds_jwt(line), "{name}'s log holds something like a JWT");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_without_an_endpoint() {
    let Some(bins) = binaries() else { return };
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // The per-signal variables point at the receiver: were an exporter
    // built without OTEL_EXPORTER_OTLP_ENDPOINT, it would send there.
    let env = [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", SPAN_DELAY_MS),
        ("OTEL_METRIC_EXPORT_INTERVAL", SPAN_DELAY_MS),
    ];
    let auth = start(&bins, AUTH, dir.path(), &[], &env).await;
    let refused = SessionServiceClient::connect(auth.url())
        .await
        .unwrap()
        .sign_in(SignInRequest {
            username: "nobody".into(),
            password: "wrong".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = auth.stop().await;
    assert!(!log.contains("exporting traces"), "{log}");
    assert!(received.spans().is_empty(), "spans were exported");
    assert!(received.metrics().is_empty(), "metrics were exported");
}
