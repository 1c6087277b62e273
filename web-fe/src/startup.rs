//! Builds the HTTP server from settings and runs it until SIGTERM or SIGINT.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use tokio::signal::unix::{SignalKind, signal};

use crate::build_info;
use crate::configuration::Settings;
use crate::replica::Replica;
use crate::routes;
use crate::state::AppState;
use crate::store::Store;
use crate::telemetry::observe_request;

pub struct Application {
    server: Server,
    port: u16,
    state: Data<AppState>,
    drain: Duration,
}

impl Application {
    /// Binds the port and prepares the workers; Redis is not contacted until a request needs it.
    pub fn build(settings: &Settings) -> io::Result<Self> {
        let listener = TcpListener::bind((settings.host, settings.port))?;
        let port = listener.local_addr()?.port();
        let replica = Replica::new(
            Replica::local_hostname(),
            settings.task_slot.clone(),
            settings.node_name.clone(),
        );
        let state = Data::new(AppState::new(replica, settings.replica_stale));
        let app_state = state.clone();
        let (store_settings, hostname) = (settings.clone(), state.replica.hostname.clone());
        let server = HttpServer::new(move || {
            // One store per worker: a multiplexed connection's driver runs on the thread that
            // opened it, so sharing across workers would cost two thread wake-ups per call.
            let store = Store::new(&store_settings, &hostname);
            App::new()
                .app_data(app_state.clone())
                .app_data(Data::new(store))
                .wrap(from_fn(observe_request))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(settings.workers)
        .keep_alive(
            settings
                .keep_alive
                .map_or(KeepAlive::Disabled, KeepAlive::Timeout),
        )
        // actix counts whole seconds; round up so a short timeout is not zero.
        .shutdown_timeout(settings.shutdown_timeout.as_secs_f64().ceil() as u64)
        // Signals are handled below, so the drain delay can run before the stop.
        .disable_signals()
        .listen(listener)?
        .run();
        tracing::info!(
            replica = %state.replica.hostname,
            address = %format!("{}:{port}", settings.host),
            redis = %settings.redis.addr(),
            version = build_info::VERSION,
            keep_alive = ?settings.keep_alive,
            workers = settings.workers,
            "web-fe listening"
        );
        Ok(Self {
            server,
            port,
            state,
            drain: settings.shutdown_drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until a signal, then drains and stops gracefully; resolves when all workers ended.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let handle = self.server.handle();
        actix_web::rt::spawn(stop_on_signal(handle, self.state, self.drain));
        self.server.await
    }
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
    tracing::info!(signal = name, drain = ?drain, "shutting down: finishing in-flight requests");
    state.start_draining();
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
