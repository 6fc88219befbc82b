//! A TCP proxy that adds latency: every chunk read from one side is written to
//! the other `delay` later, in order (a pipe with a longer wire, not a
//! throughput cap). The delay can be changed at any time and applies to chunks
//! read from then on, on open connections too. The `slow-shard` scenario puts
//! one in front of a shard's PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running proxy; stops when dropped or on [`DelayProxy::stop`].
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listen on `listen` (port 0: a free port) and forward every connection
    /// to `upstream`, initially without delay.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<Self, ProxyError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: listen,
            source,
        })?;
        let delay_us = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, upstream, delay_us.clone(), stop.clone()));
        Ok(DelayProxy {
            addr,
            upstream,
            delay_us,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Delay each chunk by `delay` per direction, from now on.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// Stop accepting and close every proxied connection.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    delay_us: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let client = match accepted {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (delay_us, stop) = (delay_us.clone(), stop.clone());
        conns.spawn(async move {
            // Upstream down (a killed shard): drop the client, as a refused
            // connection would.
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::select! {
                () = stop.cancelled() => {}
                () = async {
                    tokio::join!(
                        pipe(cr, sw, delay_us.clone()),
                        pipe(sr, cw, delay_us),
                    );
                } => {}
            }
        });
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

/// Copy `from` to `to`, each chunk held until its read time plus the delay
/// current when it was read. On EOF the write side is shut down once drained.
async fn pipe<R, W>(mut from: R, mut to: W, delay_us: Arc<AtomicU64>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
                    if tx.send((due, Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: every byte comes back.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(proxy: SocketAddr, payload: &[u8]) -> (Vec<u8>, Duration) {
        let mut c = TcpStream::connect(proxy).await.unwrap();
        let t = std::time::Instant::now();
        c.write_all(payload).await.unwrap();
        let mut got = vec![0u8; payload.len()];
        c.read_exact(&mut got).await.unwrap();
        (got, t.elapsed())
    }

    #[tokio::test]
    async fn bytes_pass_unchanged_and_the_delay_applies_per_direction() {
        let up = echo().await;
        let p = DelayProxy::start("127.0.0.1:0".parse().unwrap(), up)
            .await
            .unwrap();
        // 1 MiB of patterned bytes in many chunks: unchanged, in order.
        let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let (got, _) = round_trip(p.local_addr(), &big).await;
        assert!(got == big, "bytes changed in transit");

        let (_, fast) = round_trip(p.local_addr(), b"ping").await;
        p.set_delay(Duration::from_millis(100));
        let (got, slow) = round_trip(p.local_addr(), b"ping").await;
        assert_eq!(got, b"ping");
        // 100 ms each way.
        assert!(slow >= Duration::from_millis(200), "{slow:?}");
        // Switched off again: back to the undelayed path.
        p.set_delay(Duration::ZERO);
        let (_, again) = round_trip(p.local_addr(), b"ping").await;
        assert!(
            again < Duration::from_millis(200),
            "{again:?} (undelayed {fast:?})"
        );
        p.stop().await;
    }

    #[tokio::test]
    async fn the_delay_reaches_open_connections_and_keeps_order() {
        let up = echo().await;
        let p = DelayProxy::start("127.0.0.1:0".parse().unwrap(), up)
            .await
            .unwrap();
        let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
        c.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).await.unwrap();
        p.set_delay(Duration::from_millis(50));
        let t = std::time::Instant::now();
        for i in 0..20u8 {
            c.write_all(&[i]).await.unwrap();
        }
        let mut got = [0u8; 20];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got.to_vec(), (0..20u8).collect::<Vec<_>>());
        // Pipelined: 20 chunks cost about one delay each way, not 20.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
        drop(p);
    }

    #[tokio::test]
    async fn a_dead_upstream_closes_the_client() {
        // A port with nothing behind it.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = l.local_addr().unwrap();
        drop(l);
        let p = DelayProxy::start("127.0.0.1:0".parse().unwrap(), dead)
            .await
            .unwrap();
        let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        let e = DelayProxy::start(p.local_addr(), dead).await.unwrap_err();
        assert!(e.to_string().contains(&p.local_addr().to_string()), "{e}");
    }
}
