//! Message size limits (docs/design.md "Limits"): every auth request message is
//! held to `server::MAX_REQUEST_MESSAGE_BYTES`; a larger one is refused
//! with OUT_OF_RANGE before its handler runs, so it changes nothing, not
//! even a factor's count of wrong attempts. So is a body that is not the
//! request message at all, with INVALID_ARGUMENT.

mod common;

use common::{Harness, assert_refused};
use padlock_proto::Reason;
use padlock_runtime::server::MAX_REQUEST_MESSAGE_BYTES;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_verification_is_refused_and_not_counted() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("olga").await;
        let token = session.access_token;

        let huge = "1".repeat(MAX_REQUEST_MESSAGE_BYTES + 1);
        let status = h.verify(&token, &huge).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

        assert_no_wrong_code_counted(&h, &token, &secret).await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_verify_request_is_invalid_and_not_counted() {
    for db in padlock_test_support::databases().await {
        let h = Harness::start(&db).await;
        let (session, secret, _) = h.enrolled_user("olga").await;
        let token = session.access_token;

        // Field 1 (code) holding bytes that are not UTF-8; then a length
        // running past the end of the body.
        let bodies = [
            (vec![0x0a, 0x02, 0xff, 0xfe], "VerifyRequest.code"),
            (vec![0x0a, 0x09, b'1', b'2'], "VerifyRequest.code"),
        ];
        for (body, field) in bodies {
            let status = padlock_test_support::raw_grpc::call(
                h.channel.clone(),
                "/padlock.auth.v1.TwoFactorService/Verify",
                Some(&token),
                body,
            )
            .await
            .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(field), "{status:?}");
            let info = status.get_details_error_info().unwrap();
            assert_eq!(info.reason, padlock_proto::codec::MALFORMED_REQUEST);
        }

        assert_no_wrong_code_counted(&h, &token, &secret).await;
        h.stop().await;
    }
}

/// The first wrong code the factor sees still leaves four tries: nothing
/// refused before it was counted.
async fn assert_no_wrong_code_counted(h: &Harness, token: &str, secret: &[u8]) {
    let status = assert_refused(
        h.verify(token, &h.code(secret, 5)).await,
        Code::Unauthenticated,
        Reason::CodeInvalid.as_str_name(),
    );
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.metadata["attempts_left"], "4", "{}", h.backend);
}
