//! systemd's notify protocol (`sd_notify`), without libsystemd: `READY=1`
//! once the gateway answers on its HTTP address, `WATCHDOG=1` from a task on
//! the async runtime (a runtime that hangs stops the pings, and systemd
//! restarts the service), `STOPPING=1` on shutdown. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sends one notification; `Ok(false)` when not run by systemd.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// Half the watchdog period systemd asked for (`WATCHDOG_USEC`), when it
/// asked this process (`WATCHDOG_PID`, if set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Tells systemd when the gateway is ready (its HTTP address accepts
/// connections, or at once when HTTP is off), then pings the watchdog until
/// `cancel`.
pub async fn supervise(http_listen: String, cancel: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if !http_listen.is_empty() {
        for _ in 0..600 {
            if cancel.is_cancelled() {
                return;
            }
            if tokio::net::TcpStream::connect(&http_listen).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Err(e) = notify("READY=1") {
        tracing::warn!(error = %e, "cannot tell systemd we are ready (NOTIFY_SOCKET)");
    }
    let Some(every) = watchdog_interval() else {
        cancel.cancelled().await;
        let _ = notify("STOPPING=1");
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = notify("STOPPING=1");
                return;
            }
            _ = tick.tick() => {
                if let Err(e) = notify("WATCHDOG=1") {
                    tracing::warn!(error = %e, "watchdog ping failed");
                }
            }
        }
    }
}
