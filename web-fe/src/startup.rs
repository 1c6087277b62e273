//! Builds the HTTP server from settings and runs it until SIGTERM or SIGINT.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::http::header::CACHE_CONTROL;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use crate::board::{Board, Published};
use crate::build_info;
use crate::configuration::Settings;
use crate::guard;
use crate::presence::Presence;
use crate::replica::Replica;
use crate::routes;
use crate::state::AppState;
use crate::store::{PresenceStore, Replication, Store};
use crate::telemetry::observe_request;

pub struct Application {
    server: Server,
    health: Server,
    /// The ports bound, which differ from the settings' where those say 0.
    port: u16,
    health_port: u16,
    state: Data<AppState>,
    presence: Presence,
    drain: Duration,
}

impl Application {
    /// Binds the port and prepares the workers; Redis is not contacted until a request needs it.
    pub fn build(settings: &Settings) -> io::Result<Self> {
        let net = &settings.server;
        let listener = TcpListener::bind((net.host, net.port))?;
        let port = listener.local_addr()?.port();
        let (health, health_port) = health_server(net.health_port)?;
        let replica = Replica::new(
            settings
                .replica
                .name
                .clone()
                .unwrap_or_else(Replica::local_hostname),
            // An empty value (`TASK_SLOT=`) says nothing: shown as not set.
            settings.replica.task_slot.clone().filter(|s| !s.is_empty()),
            settings.replica.node_name.clone().filter(|s| !s.is_empty()),
        );
        let (publish, board) = watch::channel(Arc::new(Published::new(
            Board::empty(&replica.hostname),
            false,
        )));
        let state = Data::new(AppState::new(
            replica,
            net.keep_alive.0.is_some(),
            net.max_board_streams,
            settings.replica.heartbeat + settings.redis.timeout,
            board,
        ));
        let replication = Replication::default();
        let presence = Presence::new(
            PresenceStore::new(&settings.redis, replication.clone()),
            state.clone(),
            publish,
            &settings.replica,
        );
        let app_state = state.clone();
        let (redis, hostname) = (settings.redis.clone(), state.replica.hostname.clone());
        let batch_sizes = state.metrics.batch_sizes();
        let server = HttpServer::new(move || {
            // One store per worker: a multiplexed connection's driver runs on the thread that
            // opened it, so sharing across workers would cost two thread wake-ups per call.
            let store = Store::new(&redis, &hostname, replication.clone(), batch_sizes.clone());
            App::new()
                .app_data(app_state.clone())
                .app_data(Data::new(store))
                .wrap(from_fn(observe_request))
                .wrap(from_fn(guard::connection_rules))
                .wrap(no_store())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(usize::from(net.workers))
        .on_connect(guard::on_connect)
        // actix caps connections per worker; the setting is per replica.
        .max_connections(
            usize::try_from(net.max_connections.div_ceil(u32::from(net.workers)))
                .unwrap_or(usize::MAX),
        )
        .client_request_timeout(net.request_timeout)
        // After an answer that closes, unread input is discarded for at most this long, so
        // the client reads the answer instead of a reset.
        .client_disconnect_timeout(Duration::from_secs(1))
        .keep_alive(
            net.keep_alive
                .0
                .map_or(KeepAlive::Disabled, KeepAlive::Timeout),
        )
        // actix counts whole seconds; round up so a short timeout is not zero.
        .shutdown_timeout(
            net.shutdown_timeout.as_secs() + u64::from(net.shutdown_timeout.subsec_nanos() > 0),
        )
        // Signals are handled below, so the drain delay can run before the stop.
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(
            replica = %state.replica.hostname,
            address = %format!("{}:{port}", net.host),
            port,
            redis = %settings.redis.target,
            version = build_info::VERSION,
            keep_alive = ?net.keep_alive.0,
            workers = net.workers,
            max_connections = net.max_connections,
            max_board_streams = net.max_board_streams,
            health_port,
            "web-fe listening"
        );
        Ok(Self {
            server,
            health,
            port,
            health_port,
            state,
            presence,
            drain: net.shutdown_drain,
        })
    }

    /// The port this replica listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback port of the container health check.
    pub fn health_port(&self) -> u16 {
        self.health_port
    }

    /// Serves until a signal, then drains and stops gracefully; resolves when all workers
    /// ended and the heartbeat said goodbye.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let handle = self.server.handle();
        let health = self.health.handle();
        let (stop_beating, beating_stopped) = oneshot::channel();
        let heartbeat = actix_web::rt::spawn(self.presence.run(beating_stopped));
        actix_web::rt::spawn(self.health);
        actix_web::rt::spawn(stop_on_signal(handle, self.state, self.drain));
        let served = self.server.await;
        health.stop(false).await;
        let _ = stop_beating.send(());
        // The goodbye is bounded by the Redis timeout; a failed one only delays the mark.
        if let Err(e) = heartbeat.await {
            tracing::warn!(error = %e, "the heartbeat task ended abnormally");
        }
        served
    }
}

/// Every answer, errors included, is fresh: a refresh must reach a replica, or neither the
/// count nor the replica shown would change, and a probe must not read a cached state.
/// The page's assets alone set their own (see `routes::assets`).
fn no_store() -> DefaultHeaders {
    DefaultHeaders::new().add((CACHE_CONTROL, "no-store"))
}

/// The container health check's own listener, on loopback only. The public port holds at
/// most `MAX_CONNECTIONS` and the kernel queues the rest, so a flood of slow clients could
/// keep a probe waiting there; Docker or swarm would then kill a replica that is only busy.
fn health_server(port: u16) -> io::Result<(Server, u16)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(|| {
        App::new()
            .wrap(no_store())
            .route("/healthz", web::get().to(routes::healthz))
    })
    .workers(1)
    .max_connections(16)
    .client_request_timeout(Duration::from_secs(1))
    .keep_alive(KeepAlive::Disabled)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok((server, port))
}

/// On the first SIGTERM/SIGINT: fail readiness, keep serving for `drain` while the
/// orchestrator stops routing here, then stop accepting and let in-flight requests finish.
/// A second signal stops at once.
async fn stop_on_signal(handle: ServerHandle, state: Data<AppState>, drain: Duration) {
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for stop signals");
            return;
        }
    };
    let name = signals.next().await;
    // Readiness fails before the line is written: whoever reads it finds the drain begun.
    state.start_draining();
    tracing::info!(signal = name, drain = ?drain, "shutting down: finishing in-flight requests");
    let graceful = async {
        tokio::time::sleep(drain).await;
        handle.stop(true).await;
    };
    tokio::select! {
        () = graceful => {}
        name = signals.next() => {
            tracing::warn!(signal = name, "second signal: stopping now");
            handle.stop(false).await;
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
