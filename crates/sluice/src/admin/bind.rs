//! Binding the admin port: with address reuse, and a short, bounded retry while a sluice that
//! is stopping still holds it (a restart right after a stop).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

/// How long a port that is in use is tried again: long enough for a previous sluice without
/// messages in flight to finish stopping, short enough that a port held by something else is
/// reported soon.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Binds `addr`, retrying while it is in use (up to [`RETRY_FOR`], or until `stop`); the error
/// says what to do.
pub async fn bind(addr: &str, stop: &CancellationToken) -> Result<TcpListener, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("`{addr}` is not an address ({e}); e.g. --admin 127.0.0.1:9850"))?
        .collect();
    let deadline = Instant::now() + RETRY_FOR;
    let mut retried = false;
    loop {
        match bind_once(&addrs) {
            Ok(listener) => {
                if retried {
                    tracing::info!("admin address {addr} is free again");
                }
                return Ok(listener);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !retried {
                    tracing::warn!(
                        "admin address {addr} is in use (a sluice that is stopping may still \
                         hold it); trying again for up to {}",
                        humantime::format_duration(RETRY_FOR)
                    );
                    retried = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return Err("stopped while waiting for the port".into()),
                    _ = tokio::time::sleep(RETRY_EVERY) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "{e} (still after {}); stop what holds the port, or pass --admin ADDR (or `off`)",
                    humantime::format_duration(RETRY_FOR)
                ));
            }
            Err(e) => return Err(format!("{e}; pass --admin ADDR (or `off`)")),
        }
    }
}

/// One try over the resolved addresses; the last error when none binds.
fn bind_once(addrs: &[SocketAddr]) -> io::Result<TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::AddrNotAvailable, "resolves to no address");
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        // Connections a previous process left in TIME_WAIT must not block the port; this is
        // what `TcpListener::bind` does too, stated here because the restart depends on it.
        socket.set_reuseaddr(true)?;
        match socket.bind(*addr).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_freed_while_retrying_is_bound() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap().to_string();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            drop(holder);
        });
        let started = Instant::now();
        let listener = bind(&addr, &CancellationToken::new()).await.unwrap();
        assert_eq!(listener.local_addr().unwrap().to_string(), addr);
        assert!(started.elapsed() >= Duration::from_millis(400));
        release.join().unwrap();
    }

    #[tokio::test]
    async fn stop_ends_the_retry() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        stop.cancel();
        let e = bind(&addr, &stop).await.unwrap_err();
        assert!(e.contains("stopped"), "{e}");
    }

    #[tokio::test]
    async fn a_bad_address_is_reported_at_once() {
        let e = bind("not an address", &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(e.contains("--admin"), "{e}");
    }
}
