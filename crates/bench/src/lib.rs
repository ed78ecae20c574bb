//! padlock-bench: loads padlock's services over gRPC, as any client would
//! (the generated clients of padlock-proto), and measures each RPC beside
//! the `grpc.health.v1.Health/Check` floor of the same server in the same
//! run. Also the RFC 6238 code path the load tool uses as its
//! authenticator, shared with the criterion micro-benchmarks, and a bulk
//! loader of users for the scale figure (`bulk`), through auth's own
//! operator command `padlock-auth users import`.

pub mod bulk;
pub mod cli;
pub mod clock;
pub mod grpc;
pub mod http;
pub mod load;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod steps;
pub mod totp;
