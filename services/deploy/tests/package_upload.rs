//! Uploads stream in; a package is stored by its SHA-256 only when size
//! and hash match, and an upload that fails or is cut off leaves nothing
//! behind: no row without its file, no file without its row.

mod common;

use common::*;
use padlock_proto::Reason;
use padlock_proto::deploy::v1::{self as pb, upload_package_request::Part};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_is_stored_by_content_and_listed() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.token("tina", &[], None);
        let bytes = mda(7, 10_000);
        let package = h.upload(&tina, &app, "1.0.0", &bytes).await.unwrap();
        assert_eq!(package.sha256, metadata(&app, "1.0.0", &bytes).sha256);
        assert_eq!(
            (package.uploaded_by.as_str(), package.file_name.as_str()),
            ("tina", "shop-1.0.0.mda")
        );
        let stored = h.app.package_path(&package.sha256).unwrap();
        assert_eq!(std::fs::read(stored).unwrap(), bytes, "{}", h.backend);

        // The same bytes as another version share the stored file.
        h.upload(&tina, &app, "1.0.1", &bytes).await.unwrap();
        refused(
            h.upload(&tina, &app, "1.0.0", &mda(8, 100)).await,
            Code::AlreadyExists,
            Reason::PackageVersionExists.as_str_name(),
        );
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
        assert_eq!(listed.len(), 2);
        assert_eq!(h.temp_files(), 0);
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_leave_nothing_behind() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let app = h.shop().await;
        let tina = h.token("tina", &[], None);
        let bytes = mda(9, 4096);

        let mut wrong_hash = metadata(&app, "1.0.0", &bytes);
        wrong_hash.sha256 = metadata(&app, "x", &mda(10, 4096)).sha256;
        let truncated = upload_parts(metadata(&app, "1.0.0", &bytes), &bytes[..4000], 1000);
        let mut oversized = upload_parts(metadata(&app, "1.0.0", &bytes), &bytes, 1024);
        oversized.push(pb::UploadPackageRequest {
            part: Some(Part::Chunk(vec![0; 10])),
        });
        let mut twice = upload_parts(metadata(&app, "1.0.0", &bytes), &bytes, 1024);
        twice.insert(
            2,
            pb::UploadPackageRequest {
                part: Some(Part::Metadata(metadata(&app, "1.0.0", &bytes))),
            },
        );
        let chunk_first = vec![pb::UploadPackageRequest {
            part: Some(Part::Chunk(bytes.clone())),
        }];
        let mut bad_meta = metadata(&app, "1 0", &bytes);
        bad_meta.file_name = "../etc/passwd".into();

        let cases: Vec<(&str, Vec<pb::UploadPackageRequest>, Vec<&str>)> = vec![
            (
                "hash mismatch",
                upload_parts(wrong_hash, &bytes, 1024),
                vec!["sha256"],
            ),
            ("truncated", truncated, vec!["size"]),
            ("oversized", oversized, vec!["size"]),
            ("metadata twice", twice, vec!["chunk"]),
            ("no metadata", chunk_first, vec!["metadata"]),
            (
                "bad metadata",
                upload_parts(bad_meta, &bytes, 1024),
                vec!["metadata.version", "metadata.file_name"],
            ),
            ("nothing", vec![], vec!["metadata"]),
        ];
        for (name, parts, fields) in cases {
            let status = h.upload_parts(&tina, parts).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            assert_eq!(bad_fields(&status), fields, "{name}");
        }
        let mut too_big = metadata(&app, "1.0.0", &bytes);
        too_big.size = 1 << 40;
        let status = h
            .upload_parts(&tina, upload_parts(too_big, &bytes, 1024))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["size"]);

        assert!(
            h.app.store().packages(&app).await.unwrap().is_empty(),
            "{}: no rows",
            h.backend
        );
        assert_eq!(h.temp_files(), 0, "no temporary data");
        let path = h.app.package_path(&metadata(&app, "", &bytes).sha256);
        assert!(!path.unwrap().exists(), "no stored file");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    let app = h.shop().await;
    let tina = h.token("tina", &[], None);
    let bytes = mda(11, 64 * 1024);
    let parts = upload_parts(metadata(&app, "1.0.0", &bytes), &bytes, 8 * 1024);

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut client = h.packages();
    let call = tokio::spawn(async move {
        client
            .upload_package(bearer(
                &tina,
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .await
    });
    for part in parts.into_iter().take(4) {
        tx.send(part).await.unwrap();
    }
    // The server has begun writing the upload...
    assert!(
        wait_for(|| h.temp_files() == 1).await,
        "the upload never started"
    );
    // ...and now the client vanishes.
    call.abort();
    drop(tx);
    let _ = call.await;
    assert!(
        wait_for(|| h.temp_files() == 0).await,
        "the temporary file stayed"
    );
    assert!(h.app.store().packages(&app).await.unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_deploy_members_upload() {
    let db = padlock_test_support::sqlite();
    let h = Harness::start(&db).await;
    let app = h.shop().await;
    h.add_member(&app, "mia", pb::TeamRole::Member).await;
    refused(
        h.upload(&h.token("mia", &[], None), &app, "1.0.0", &mda(1, 10))
            .await,
        Code::PermissionDenied,
        Reason::DeployRoleRequired.as_str_name(),
    );
    refused(
        h.upload(&h.token("eve", &[], None), &app, "1.0.0", &mda(1, 10))
            .await,
        Code::PermissionDenied,
        Reason::NotAMember.as_str_name(),
    );
    refused(
        h.upload("not-a-token", &app, "1.0.0", &mda(1, 10)).await,
        Code::Unauthenticated,
        Reason::TokenInvalid.as_str_name(),
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    refused(
        h.upload(&h.token("tina", &[], None), &unknown, "1.0.0", &mda(1, 10))
            .await,
        Code::NotFound,
        Reason::AppNotFound.as_str_name(),
    );
    assert_eq!(h.temp_files(), 0);
    h.stop().await;
}

/// Polls `done` until it holds, for at most about ten seconds (a loaded CI
/// machine): waiting for the server to react, not for time to pass.
async fn wait_for(done: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}
