//! The images the tests run: web-fe built from the repository, and base images (local
//! stand-ins by default, so no registry is needed).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::runner::{checked, repo_root};

/// The image the tests build from the Dockerfile and run everywhere.
pub const WEB_FE_IMAGE: &str = "counter-web-fe:e2e";

/// Base images. No registry is needed: by default these are the local stand-ins that
/// `scripts/offline-images.sh` builds; set the variables to use the official images.
pub fn builder_image() -> String {
    image_setting("BUILDER_IMAGE", "counter-offline/rust:bookworm")
}

pub fn redis_image() -> String {
    image_setting("REDIS_IMAGE", "counter-offline/redis:bookworm")
}

/// A Debian image with curl, for clients inside Docker networks.
pub fn client_image() -> String {
    image_setting("CLIENT_IMAGE", "counter-offline/debian:bookworm")
}

pub(crate) fn image_setting(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Builds the web-fe image from the repository's Dockerfile (cached after the first time).
pub fn build_web_fe_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        checked(&mut web_fe_build(
            classic_builder(),
            WEB_FE_IMAGE,
            &repo_root(),
            &[],
        ));
    });
}

/// Builds a second web-fe that looks different (version and accent), for rolling updates.
pub fn build_web_fe_variant(tag: &str, version: &str, accent: &str) {
    let args = [("COUNTER_VERSION", version), ("COUNTER_ACCENT", accent)];
    checked(&mut web_fe_build(
        classic_builder(),
        tag,
        &repo_root(),
        &args,
    ));
}

/// The docker CLI with the classic builder (the one on PATH here has no buildx).
pub fn classic_builder() -> Command {
    let mut docker = Command::new("docker");
    docker.env("DOCKER_BUILDKIT", "0");
    docker
}

/// `docker build` of the Dockerfile in `context` with the builder stand-in and
/// `build_args`: the one way the tests build web-fe, whichever CLI and builder runs it.
pub fn web_fe_build(
    mut docker: Command,
    tag: &str,
    context: &Path,
    build_args: &[(&str, &str)],
) -> Command {
    // --force-rm: a failed step of the legacy builder leaves no container behind.
    docker
        .args(["build", "--force-rm", "-t", tag])
        .args(["--build-arg", &format!("BUILDER_IMAGE={}", builder_image())]);
    for (name, value) in build_args {
        docker.args(["--build-arg", &format!("{name}={value}")]);
    }
    docker.arg(context);
    docker
}
