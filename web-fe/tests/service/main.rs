//! Integration tests: the real web-fe binary against a real redis-server.

mod bad_requests;
mod counting;
mod failover;
mod hostile_clients;
mod outage;
mod pages;
mod presence;
mod redis_data;
mod settings;
mod shutdown;
mod support;
