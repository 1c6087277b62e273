//! web-fe: counts page views in Redis and shows which replica served each one.

pub mod build_info;
pub mod configuration;
pub mod guard;
pub mod healthcheck;
pub mod metrics;
pub mod privileges;
pub mod rejections;
pub mod replica;
pub mod routes;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
