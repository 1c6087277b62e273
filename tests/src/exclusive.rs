//! One test at a time per test binary, on a machine that has what the tests need: a
//! Docker engine and the base images.

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::images::{builder_image, client_image, redis_image};
use crate::runner::docker;

/// Serialises the tests of one binary: they share port 5000, the swarm and image tags.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    check_prerequisites();
    guard
}

/// Fails once, clearly, when Docker or the base images are missing.
fn check_prerequisites() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "no Docker engine answers ({}). Start one (`sudo dockerd &` on Debian, \
                     or Docker Desktop), or run `bash .ci/run`, which installs and starts it.",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "the docker CLI cannot run ({e}). Install Docker \
                     (`sudo apt-get install docker.io docker-compose` on Debian)."
                ));
            }
        }
        for image in [builder_image(), redis_image(), client_image()] {
            if !docker(&["image", "inspect", &image]).status.success() {
                return Err(format!(
                    "base image {image} is missing. Build the offline stand-ins with \
                     `sudo scripts/offline-images.sh`, or set BUILDER_IMAGE / REDIS_IMAGE / \
                     CLIENT_IMAGE to images you have."
                ));
            }
        }
        Ok(())
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}
