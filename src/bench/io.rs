//! The one read helper every bench driver uses.
//!
//! compio 0.19 reads into a buffer *from its start* (the whole capacity is handed to the
//! kernel) and only raises its length; to append after bytes already buffered (a partial
//! head, the rest of a frame) the read must target a slice that begins at the current length.
//! Getting this wrong silently overwrites buffered bytes, so it lives in exactly one place.

use std::io;

use bytes::BytesMut;
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::io::AsyncRead;

/// Reads once, appending to `buf` (after reserving `min_spare` bytes of room if needed).
pub(super) async fn read_append<R: AsyncRead>(
    reader: &mut R,
    mut buf: BytesMut,
    min_spare: usize,
) -> (io::Result<usize>, BytesMut) {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let len = buf.len();
    let BufResult(res, slice) = reader.read(buf.slice(len..)).await;
    (res, slice.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{DriverKind, build_runtime};
    use compio::io::AsyncWriteExt;
    use compio::net::{TcpListener, TcpStream};

    #[test]
    fn appends_after_buffered_bytes_on_both_drivers() {
        let mut drivers = vec![DriverKind::Poll];
        if crate::runtime::select_driver(crate::runtime::IoDriver::IoUring).is_ok() {
            drivers.push(DriverKind::IoUring);
        }
        for driver in drivers {
            let rt = build_runtime(driver).unwrap();
            rt.block_on(async {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                let mut c = TcpStream::connect(addr).await.unwrap();
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = BytesMut::new();
                for piece in [&b"hello "[..], b"world"] {
                    c.write_all(piece).await.0.unwrap();
                    let (n, b) = read_append(&mut s, buf, 16).await;
                    assert_eq!(n.unwrap(), piece.len());
                    buf = b;
                }
                assert_eq!(&buf[..], b"hello world", "{driver:?}");
            });
        }
    }
}
