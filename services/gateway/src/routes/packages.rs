//! Packages and their way to production (deploy `PackageService`): list,
//! upload, deploy, transport, and the deployment history. An upload is
//! read whole first (at most `--max-upload-bytes`, else 413) to learn its
//! size and SHA-256, then streamed to deploy as the metadata message and
//! 64 KiB chunks; a refresh-and-retry streams it again from memory.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use padlock_proto::deploy::v1::{
    DeployPackageRequest, ListDeploymentsRequest, ListPackagesRequest, PackageMetadata,
    TransportPackageRequest, UploadPackageRequest, upload_package_request::Part,
};
use padlock_runtime::status::Violations;
use sha2::{Digest, Sha256};

use crate::backend::{UPLOAD_DEADLINE, authorized, with_bearer};
use crate::error::ApiError;
use crate::input::{JsonBody, PathParams, QueryFields};
use crate::session::{Cookies, with_session};
use crate::{Gateway, views};

/// The size of each `chunk` message sent to deploy.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// `GET /api/v1/apps/{app_id}/packages`.
pub async fn list(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
) -> Response {
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.packages();
        let request = authorized(
            ListPackagesRequest {
                app_id: app_id.clone(),
            },
            &token,
        );
        async move {
            client
                .list_packages(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| Json(views::list("packages", &r.packages, views::package)))
}

/// `GET /api/v1/apps/{app_id}/deployments[?environment=E]`, newest first.
pub async fn deployments(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    QueryFields(mut query): QueryFields,
) -> Response {
    let environment = query.optional_environment("environment");
    if let Err(e) = query.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.packages();
        let request = authorized(
            ListDeploymentsRequest {
                app_id: app_id.clone(),
                environment: environment as i32,
            },
            &token,
        );
        async move {
            client
                .list_deployments(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|r, _| {
        Json(views::list(
            "deployments",
            &r.deployments,
            views::deployment,
        ))
    })
}

/// `POST /api/v1/packages/{package_id}/deployments` `{"environment"}`: 201.
pub async fn deploy(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(package_id): PathParams<String>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let environment = body.environment("environment");
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.packages();
        let request = authorized(
            DeployPackageRequest {
                package_id: package_id.clone(),
                environment: environment as i32,
            },
            &token,
        );
        async move {
            client
                .deploy_package(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|d, _| (StatusCode::CREATED, Json(views::deployment(&d))))
}

/// `POST /api/v1/packages/{package_id}/transports`
/// `{"from_environment","to_environment"}`: 201.
pub async fn transport(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(package_id): PathParams<String>,
    JsonBody(mut body): JsonBody,
) -> Response {
    let from = body.environment("from_environment");
    let to = body.environment("to_environment");
    if let Err(e) = body.finish() {
        return e.into_response();
    }
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.packages();
        let request = authorized(
            TransportPackageRequest {
                package_id: package_id.clone(),
                from_environment: from as i32,
                to_environment: to as i32,
            },
            &token,
        );
        async move {
            client
                .transport_package(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|d, _| (StatusCode::CREATED, Json(views::deployment(&d))))
}

/// `POST /api/v1/apps/{app_id}/packages?version=V&file_name=F`, the body
/// the raw package: 201 package.
pub async fn upload(
    State(gw): State<Gateway>,
    cookies: Cookies,
    PathParams(app_id): PathParams<String>,
    QueryFields(mut query): QueryFields,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let version = query.string("version");
    let file_name = query.string("file_name");
    if let Err(e) = query.finish() {
        return e.into_response();
    }
    // Without any session there is nobody to upload for: do not read the body.
    if cookies.session.is_none() && cookies.access.is_none() {
        return ApiError::session_invalid().into_response();
    }
    let max = gw.settings.max_upload_bytes;
    let package = match read_package(body, content_length(&headers), max).await {
        Ok(package) => package,
        Err(e) => return e.into_response(),
    };
    with_session(&gw, &cookies, |token| {
        let mut client = gw.backends.packages();
        let metadata = PackageMetadata {
            app_id: app_id.clone(),
            version: version.clone(),
            file_name: file_name.clone(),
            size: package.size,
            sha256: package.sha256.clone(),
        };
        let mut request = tonic::Request::new(upload_messages(metadata, package.bytes.clone()));
        request.set_timeout(UPLOAD_DEADLINE);
        let request = with_bearer(request, &token);
        async move {
            client
                .upload_package(request)
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .respond(|p, _| (StatusCode::CREATED, Json(views::package(&p))))
}

/// A package body read into memory, with what deploy checks it against.
#[derive(Debug, Clone)]
pub struct Buffered {
    pub bytes: Bytes,
    pub size: u64,
    pub sha256: String,
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads `body` whole, hashing as it goes; 413 as soon as it is (or says
/// it will be) larger than `max` bytes.
pub async fn read_package(
    body: Body,
    declared: Option<u64>,
    max: u64,
) -> Result<Buffered, ApiError> {
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::payload_too_large(max));
    }
    let capacity = usize::try_from(declared.unwrap_or(0).min(max)).unwrap_or(0);
    let mut buffer = Vec::with_capacity(capacity);
    let mut hasher = Sha256::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            let mut v = Violations::new();
            v.add("body", "could not be read to the end");
            return Err(ApiError::invalid(v));
        };
        if (buffer.len() + chunk.len()) as u64 > max {
            return Err(ApiError::payload_too_large(max));
        }
        hasher.update(&chunk);
        buffer.extend_from_slice(&chunk);
    }
    Ok(Buffered {
        size: buffer.len() as u64,
        sha256: hex::encode(hasher.finalize()),
        bytes: Bytes::from(buffer),
    })
}

/// The client stream of `UploadPackage`: metadata first, then the chunks,
/// each copied out of `bytes` only when it is sent.
pub fn upload_messages(
    metadata: PackageMetadata,
    bytes: Bytes,
) -> impl Stream<Item = UploadPackageRequest> + Send + 'static {
    let first = UploadPackageRequest {
        part: Some(Part::Metadata(metadata)),
    };
    let chunks = (0..bytes.len()).step_by(CHUNK_BYTES).map(move |start| {
        let end = (start + CHUNK_BYTES).min(bytes.len());
        UploadPackageRequest {
            part: Some(Part::Chunk(bytes[start..end].to_vec())),
        }
    });
    futures::stream::iter(std::iter::once(first).chain(chunks))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn streamed(parts: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn a_package_is_measured_and_hashed() {
        let read = read_package(streamed(vec![b"ab", b"c"]), None, 3)
            .await
            .unwrap();
        assert_eq!(read.size, 3);
        assert_eq!(read.bytes.as_ref(), b"abc");
        assert_eq!(
            read.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn too_large_is_413_whether_declared_or_streamed() {
        let e = read_package(streamed(vec![b"ab"]), Some(4), 3)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // No Content-Length (chunked): counted while reading.
        let e = read_package(streamed(vec![b"ab", b"cd"]), None, 3)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // A Content-Length that lies low does not get past the count either.
        let e = read_package(streamed(vec![b"ab", b"cd"]), Some(1), 3)
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn the_stream_is_metadata_then_64_kib_chunks() {
        let bytes = Bytes::from(vec![7u8; 2 * CHUNK_BYTES + 10]);
        let messages: Vec<_> = upload_messages(PackageMetadata::default(), bytes)
            .collect()
            .await;
        assert!(matches!(messages[0].part, Some(Part::Metadata(_))));
        let sizes: Vec<usize> = messages[1..]
            .iter()
            .map(|m| match &m.part {
                Some(Part::Chunk(c)) => c.len(),
                _ => panic!("not a chunk"),
            })
            .collect();
        assert_eq!(sizes, [CHUNK_BYTES, CHUNK_BYTES, 10]);
    }
}
