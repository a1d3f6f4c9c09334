//! The connector's view of one HTTP/2 stream as bytes: the shared helpers of
//! [`crate::runtime::h2stream`] (one implementation for the edge and the connector).

pub use crate::runtime::h2stream::{H2Reader, H2Writer, release, send_all};
