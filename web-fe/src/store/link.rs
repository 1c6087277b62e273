//! The one way to Redis for every user in `store/`: where the master is (one address, or
//! the one the Sentinels name), the connection shared until it fails, and reconnecting one
//! caller at a time.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::select_ok;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    PushInfo, PushKind, RedisError, Value,
};

use super::error::StoreError;
use crate::configuration::RedisTarget;

/// A shared connection to the master and what is needed to open the next one.
pub struct Link {
    target: RedisTarget,
    config: AsyncConnectionConfig,
    timeout: Duration,
    /// The connection callers share, and the master's address (for logs), until it fails.
    shared: RefCell<Option<(MultiplexedConnection, String)>>,
    /// Set when Redis closes the shared connection (a restart, or Sentinel demoting the
    /// master), so the next caller opens a new one instead of failing on a dead one.
    dropped: Arc<AtomicBool>,
    /// After an outage one caller reconnects while the others wait for its connection.
    opening: tokio::sync::Mutex<()>,
}

impl Link {
    pub fn new(target: RedisTarget, timeout: Duration) -> Self {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        // A restarting Redis container drops packets for a while; short connect attempts
        // leave room to retry within the budget.
        let connect_timeout = (timeout / 4).max(Duration::from_millis(50)).min(timeout);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Relaxed);
                }
                Ok::<(), Infallible>(())
            });
        Self {
            target,
            config,
            timeout,
            shared: RefCell::new(None),
            dropped,
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// The shared connection, opened first if there is none or Redis closed the last one.
    pub async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if self.dropped.swap(false, Ordering::Relaxed) {
            self.forget();
        }
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _turn = self.opening.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let (conn, address) = self.open().await?;
        self.shared.replace(Some((conn.clone(), address)));
        Ok(conn)
    }

    /// Runs `work` within the Redis timeout; after any failure the next caller opens a new
    /// connection (to the master the Sentinels name now, if any).
    pub async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        let error = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => StoreError::from_redis(&self.address(), e),
            Err(_) => StoreError::timed_out(&self.address(), self.timeout),
        };
        self.forget();
        Err(error)
    }

    /// Drops the shared connection after a failure: the next caller finds the master anew.
    pub fn forget(&self) {
        self.shared.take();
    }

    /// Where the shared connection goes, or where the next one will be looked for; for logs.
    pub fn address(&self) -> String {
        match (&*self.shared.borrow(), &self.target) {
            (Some((_, address)), _) => address.clone(),
            (None, RedisTarget::Direct(info)) => info.addr().to_string(),
            (None, RedisTarget::Sentinels { master, .. }) => {
                format!("the master {master:?} that the Sentinels name")
            }
        }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.shared.borrow().as_ref().map(|(conn, _)| conn.clone())
    }

    async fn open(&self) -> Result<(MultiplexedConnection, String), RedisError> {
        let info = match &self.target {
            RedisTarget::Direct(info) => info.clone(),
            RedisTarget::Sentinels {
                sentinels,
                master,
                redis,
            } => {
                let addr = ask_sentinels(sentinels, master, self.timeout).await?;
                addr.into_connection_info()?
                    .set_redis_settings(redis.clone())
            }
        };
        let address = info.addr().to_string();
        // Disconnect notices come as RESP3 pushes (Redis 6 and newer).
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        if matches!(self.target, RedisTarget::Sentinels { .. }) {
            // A Sentinel's answer may be stale: only a master is worth counting on.
            check_master(&mut conn, &address).await?;
        }
        Ok((conn, address))
    }
}

/// Asks every Sentinel at once and takes the first answer: a Sentinel on a machine that
/// is gone must not hold the others up.
async fn ask_sentinels(
    sentinels: &[ConnectionInfo],
    master: &str,
    timeout: Duration,
) -> Result<ConnectionAddr, RedisError> {
    let asks = sentinels.iter().map(|sentinel| {
        Box::pin(async move {
            let ask = ask_sentinel(sentinel, master);
            tokio::time::timeout(timeout, ask)
                .await
                .unwrap_or_else(|_| Err(unreachable(format!("{} did not answer", sentinel.addr()))))
        })
    });
    select_ok(asks).await.map(|(addr, _)| addr).map_err(|last| {
        unreachable(format!(
            "no Sentinel named the master {master:?} (the last said: {last})"
        ))
    })
}

async fn ask_sentinel(
    sentinel: &ConnectionInfo,
    master: &str,
) -> Result<ConnectionAddr, RedisError> {
    let mut conn = redis::Client::open(sentinel.clone())?
        .get_multiplexed_async_connection()
        .await?;
    let named: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await?;
    let (host, port) = named
        .ok_or_else(|| unreachable(format!("{} knows no master {master:?}", sentinel.addr())))?;
    Ok(ConnectionAddr::Tcp(host, port))
}

/// `ROLE` must say master; a demoted one says replica until the Sentinels catch up.
async fn check_master(conn: &mut MultiplexedConnection, address: &str) -> Result<(), RedisError> {
    let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
    let kind = role
        .first()
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
    match kind.as_deref() {
        Some("master") => Ok(()),
        _ => Err(unreachable(format!(
            "{address} was named the master but is not one (yet)"
        ))),
    }
}

/// Connection trouble that another try, after the Sentinels have their say, may clear.
fn unreachable(what: String) -> RedisError {
    io::Error::new(io::ErrorKind::NotConnected, what).into()
}
