//! Message size limits (docs/design.md "Limits"): a request message above
//! `server::MAX_REQUEST_MESSAGE_BYTES` is refused with OUT_OF_RANGE before
//! its handler runs, so nothing is written; `PackageService` takes upload
//! chunks up to `padlock_deploy::MAX_UPLOAD_CHUNK_BYTES`, and refuses a larger one before
//! reading it, leaving nothing behind. A body that is not the request
//! message at all is refused with INVALID_ARGUMENT, also before its handler
//! runs.

mod common;

use common::*;
use padlock_deploy::MAX_UPLOAD_CHUNK_BYTES as MAX_CHUNK_BYTES;
use padlock_proto::deploy::v1 as pb;
use padlock_runtime::server::MAX_REQUEST_MESSAGE_BYTES;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_is_refused_and_nothing_is_written() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let ops = h.token("ops", &["operator"], None);
        let status = h
            .apps()
            .create_app(bearer(
                &ops,
                pb::CreateAppRequest {
                    name: "x".repeat(MAX_REQUEST_MESSAGE_BYTES + 1),
                    technical_contact: "tina".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert_no_apps(&h, &ops).await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_create_app_request_is_invalid_and_nothing_is_written() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let ops = h.token("ops", &["operator"], None);
        // Field 1 (name) holding bytes that are not UTF-8.
        let status = padlock_test_support::raw_grpc::call(
            h.channel.clone(),
            "/padlock.deploy.v1.AppService/CreateApp",
            Some(&ops),
            vec![0x0a, 0x02, 0xc3, 0x28, 0x12, 0x04, b't', b'i', b'n', b'a'],
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("CreateAppRequest.name"),
            "{status:?}"
        );
        assert_no_apps(&h, &ops).await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_chunks_may_reach_the_chunk_limit_and_no_further() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.token("tina", &[], None);

        let fits = mda(1, MAX_CHUNK_BYTES);
        let parts = upload_parts(metadata(&app, "1.0.0", &fits), &fits, MAX_CHUNK_BYTES);
        h.upload_parts(&tina, parts).await.unwrap();

        let too_big = mda(2, 2 * MAX_CHUNK_BYTES);
        let parts = upload_parts(
            metadata(&app, "2.0.0", &too_big),
            &too_big,
            2 * MAX_CHUNK_BYTES,
        );
        // The decoder refuses the message; the handler, reading the
        // stream, reports the upload as broken off at its `chunk`.
        let status = h.upload_parts(&tina, parts).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(bad_fields(&status), ["chunk"]);
        let listed = h
            .packages()
            .list_packages(bearer(
                &tina,
                pb::ListPackagesRequest {
                    app_id: app.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .packages;
        let versions: Vec<&str> = listed.iter().map(|p| p.version.as_str()).collect();
        assert_eq!(versions, ["1.0.0"], "{}", h.backend);
        assert_eq!(h.temp_files(), 0, "{}", h.backend);
        h.stop().await;
    }
}

/// No app was created.
async fn assert_no_apps(h: &Harness, ops: &str) {
    let apps = h
        .apps()
        .list_apps(bearer(ops, pb::ListAppsRequest {}))
        .await
        .expect("list apps")
        .into_inner()
        .apps;
    assert!(apps.is_empty(), "{}: {apps:?}", h.backend);
}
