//! Message size limits (README "Limits"): every auth request message is
//! held to `server::MAX_REQUEST_MESSAGE_BYTES`; a larger one is refused
//! with OUT_OF_RANGE before its handler runs, so it changes nothing, not
//! even a factor's count of wrong attempts.

mod common;

use common::{Harness, assert_refused};
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

        // The first wrong code the factor sees still leaves four tries.
        let status = assert_refused(
            h.verify(&token, &h.code(&secret, 5)).await,
            Code::Unauthenticated,
            "CODE_INVALID",
        );
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().metadata["attempts_left"],
            "4",
            "{}",
            h.backend
        );
        h.stop().await;
    }
}
