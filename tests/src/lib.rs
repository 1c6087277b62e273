//! Shared harness for the Docker end-to-end tests.
