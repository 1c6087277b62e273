//! Integration tests: the real web-fe binary against a real redis-server.

mod bad_requests;
mod counting;
mod outage;
mod pages;
mod settings;
mod shutdown;
mod support;
