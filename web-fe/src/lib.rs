//! web-fe: counts page views in Redis and shows which replica served each one.

// What `main` uses is public; the rest is the service's own business.
mod board;
pub mod build_info;
mod clock;
pub mod configuration;
mod echo;
mod guard;
pub mod healthcheck;
mod metrics;
mod presence;
pub mod privileges;
mod rejections;
mod replica;
mod routes;
pub mod startup;
mod state;
mod store;
pub mod telemetry;
