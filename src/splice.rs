//! Moving bytes from one TCP socket to another inside the kernel (Linux `splice(2)`,
//! through a pipe), for the long parts of a frame the proxy passes through without
//! looking at (record batches). A user-space relay copies every byte twice (socket to
//! buffer, buffer to socket); here the pipe only takes references to the socket's
//! pages, so neither copy happens.
//!
//! Only between plain TCP sockets: a TLS upstream's bytes are decrypted by the proxy
//! anyway. Where [`TcpHalf::tcp`] is None (TLS, the in-memory streams of tests, other
//! systems) the caller reads and writes as before.

use tokio::net::TcpStream;

/// One direction of a relayed connection, which may be a plain TCP socket.
pub trait TcpHalf {
    /// The socket, when bytes may be spliced to or from it.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl TcpHalf for tokio::net::tcp::ReadHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl TcpHalf for tokio::net::tcp::WriteHalf<'_> {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<T> TcpHalf for tokio::io::ReadHalf<T> {}
impl<T> TcpHalf for tokio::io::WriteHalf<T> {}
impl TcpHalf for tokio::io::DuplexStream {}

/// How much a pipe is asked to hold (Linux lets any process go up to
/// `/proc/sys/fs/pipe-max-size`, 1 MiB by default; the default pipe holds 64 KiB).
/// Larger means fewer system calls per byte.
const PIPE_BYTES: usize = 256 * 1024;

pub use imp::Pipe;

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::pipe::{PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// A pipe between two sockets, with what it holds. Empty between calls to
    /// [`Pipe::fill`] and [`Pipe::drain`] (a drain that failed ends the session).
    #[derive(Debug)]
    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        cap: usize,
        held: usize,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // Refused past the per-user limit on pipe memory: the default size works too.
            let cap = rustix::pipe::fcntl_setpipe_size(&write, super::PIPE_BYTES)
                .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
            Ok(Pipe {
                read,
                write,
                cap,
                held: 0,
            })
        }

        /// The most one [`Pipe::fill`] takes.
        pub fn capacity(&self) -> usize {
            self.cap
        }

        /// Moves up to `max` bytes (at most the pipe's capacity) from `from` into the
        /// empty pipe, waiting until the socket has some. `Ok(0)`: the peer closed.
        pub async fn fill(&mut self, from: &TcpStream, max: usize) -> io::Result<usize> {
            debug_assert_eq!(self.held, 0, "the pipe is drained before it is filled");
            let want = max.min(self.cap);
            if want == 0 {
                return Ok(0);
            }
            loop {
                from.readable().await?;
                // The pipe is empty, so a WouldBlock can only mean the socket is: the
                // readiness try_io clears on it is the socket's.
                let r = from.try_io(Interest::READABLE, || {
                    splice(from.as_fd(), self.write.as_fd(), want)
                });
                match r {
                    Ok(n) => {
                        self.held = n;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }

        /// Moves everything the pipe holds to `to`, waiting while its send buffer is full.
        pub async fn drain(&mut self, to: &TcpStream) -> io::Result<()> {
            while self.held > 0 {
                to.writable().await?;
                let r = to.try_io(Interest::WRITABLE, || {
                    splice(self.read.as_fd(), to.as_fd(), self.held)
                });
                match r {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.held -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    fn splice(
        from: std::os::fd::BorrowedFd<'_>,
        to: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<usize> {
        rustix::pipe::splice(
            from,
            None,
            to,
            None,
            len,
            SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
        )
        .map_err(io::Error::from)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    use tokio::net::TcpStream;

    /// No splice here: [`Pipe::new`] fails and the caller copies as before.
    #[derive(Debug)]
    pub struct Pipe;

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn capacity(&self) -> usize {
            0
        }
        pub async fn fill(&mut self, _: &TcpStream, _: usize) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub async fn drain(&mut self, _: &TcpStream) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// Bytes spliced from one connection to another arrive whole and in order, also
    /// when the writer is slower than the pipe and the reader slower than the writer.
    #[tokio::test]
    async fn moves_bytes_between_sockets_in_order() {
        let (mut src_w, src_r) = pair().await;
        let (dst_w, mut dst_r) = pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(100_003) {
                src_w.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            src_w
        });
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 3_000_000];
            for chunk in got.chunks_mut(77_777) {
                dst_r.read_exact(chunk).await.unwrap();
            }
            got
        });
        let mut pipe = Pipe::new().unwrap();
        assert!(pipe.capacity() >= 64 * 1024);
        let mut left = data.len();
        while left > 0 {
            let n = pipe.fill(&src_r, left).await.unwrap();
            assert!(n > 0 && n <= left);
            pipe.drain(&dst_w).await.unwrap();
            left -= n;
        }
        let _keep_open = writer.await.unwrap();
        assert!(reader.await.unwrap() == data, "the bytes arrived changed");
    }

    /// A peer that closed is an end (0), not an error or a hang.
    #[tokio::test]
    async fn a_closed_peer_reads_as_zero() {
        let (src_w, src_r) = pair().await;
        drop(src_w);
        let mut pipe = Pipe::new().unwrap();
        assert_eq!(pipe.fill(&src_r, 1000).await.unwrap(), 0);
    }
}
