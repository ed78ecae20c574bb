//! The codec padlock's servers decode requests with: prost's, except that a
//! request body that is not a message of the method's request type is the
//! caller's mistake, INVALID_ARGUMENT, where prost's codec answers INTERNAL
//! (as if the server had failed). The status keeps prost's description
//! (message and field names, never the bytes) and carries
//! `google.rpc.ErrorInfo` with reason `MALFORMED_REQUEST` in the `padlock`
//! domain. Clients keep prost's codec: a response they cannot decode is
//! the server's fault.

use std::collections::HashMap;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The `ErrorInfo.domain` of every padlock error.
pub const DOMAIN: &str = "padlock";

/// The `ErrorInfo.reason` of a request that did not decode.
/// ([`crate::Reason::MalformedRequest`], spelled out for `const` use).
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";

/// prost's codec with [`RequestDecoder`]; generated servers use it.
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes like prost's decoder; a failure is INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| malformed(&status))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// INVALID_ARGUMENT for a request prost refused with `status`.
fn malformed(status: &Status) -> Status {
    let details = ErrorDetails::with_error_info(MALFORMED_REQUEST, DOMAIN, HashMap::new());
    let message = status
        .message()
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(status.message());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("the request is not a valid protobuf message: {message}"),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prost_s_refusal_becomes_invalid_argument_with_its_description() {
        let refused = Status::internal(
            "failed to decode Protobuf message: VerifyRequest.code: invalid string value: \
             data is not UTF-8 encoded",
        );
        let status = malformed(&refused);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request is not a valid protobuf message: VerifyRequest.code: invalid string \
             value: data is not UTF-8 encoded"
        );
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (MALFORMED_REQUEST, DOMAIN)
        );
        assert_eq!(
            crate::Reason::from_str_name(MALFORMED_REQUEST),
            Some(crate::Reason::MalformedRequest)
        );
    }
}
