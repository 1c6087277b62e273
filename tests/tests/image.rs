//! The image: small, not root, labelled, healthy; the dependency layer survives a source
//! edit; and the same Dockerfile builds with BuildKit too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{
    Cleanup, WEB_FE_IMAGE, build_web_fe_image, checked, classic_builder, docker, docker_ok,
    exclusive, repo_root, wait_for, web_fe_build,
};

/// The Flask original is about 57 MB; ours must stay at 6 MB or less.
const MAX_IMAGE_BYTES: u64 = 6_000_000;

#[test]
fn image_is_small_non_root_and_labelled() {
    let _lock = exclusive();
    build_web_fe_image();
    let inspect = |format: &str| docker_ok(&["image", "inspect", "-f", format, WEB_FE_IMAGE]);

    let size: u64 = inspect("{{.Size}}").parse().unwrap();
    println!("image size: {size} bytes");
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes");
    let user = inspect("{{.Config.User}}");
    assert_eq!(user, "65532:65532", "must not run as root");
    assert_eq!(
        inspect(r#"{{index .Config.Labels "org.opencontainers.image.version"}}"#),
        env!("CARGO_PKG_VERSION"),
        "the Dockerfile's COUNTER_VERSION default must follow Cargo.toml"
    );
    for label in ["title", "revision"] {
        let value = inspect(&format!(
            r#"{{{{index .Config.Labels "org.opencontainers.image.{label}"}}}}"#
        ));
        assert!(!value.is_empty(), "label {label} is missing");
    }
    // No made-up address: the source label is empty unless SOURCE_URL is given.
    assert!(
        inspect("{{json .Config.Labels}}").contains(r#""org.opencontainers.image.source":"""#),
        "the source label must be present and empty by default"
    );
    assert_eq!(inspect("{{.Config.StopSignal}}"), "SIGTERM");
    assert_eq!(
        inspect("{{json .Config.ExposedPorts}}"),
        r#"{"8080/tcp":{}}"#
    );
    assert_eq!(
        inspect("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD","/usr/local/bin/web-fe","healthcheck"]"#
    );
}

#[test]
fn container_runs_as_non_root_and_turns_healthy_without_redis() {
    let _lock = exclusive();
    build_web_fe_image();
    let name = format!("counter-e2e-image-{}", std::process::id());
    let mut cleanup = Cleanup::new();
    cleanup.docker(&["rm", "-f", &name]);
    // No Redis at all: liveness must still pass, or Docker would call it unhealthy.
    docker_ok(&["run", "-d", "--name", &name, WEB_FE_IMAGE]);
    let health = wait_for(
        "the container to become healthy",
        Duration::from_secs(30),
        || {
            let status = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
            (status != "starting").then_some(status)
        },
    );
    assert_eq!(health, "healthy");
    let processes = docker_ok(&["top", &name, "-o", "pid,uid"]);
    let uids: Vec<&str> = processes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(
        !uids.is_empty() && uids.iter().all(|u| *u == "65532"),
        "{processes}"
    );
    docker_ok(&["stop", "-t", "10", &name]);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]),
        "0"
    );
}

#[test]
fn source_edit_reuses_the_dependency_layer() {
    let _lock = exclusive();
    build_web_fe_image();
    let context = tempdir("counter-e2e-context");
    copy_tree(&repo_root(), &context);
    let file = context.join("web-fe/src/build_info.rs");
    let source = std::fs::read_to_string(&file).unwrap();
    // A unique edit: an edit an earlier run already built would hit the layer cache.
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::fs::write(&file, format!("{source}\n// cache test edit {nonce}\n")).unwrap();

    let tag = "counter-web-fe:e2e-cache";
    let mut cleanup = Cleanup::new();
    cleanup.docker(&["image", "rm", tag]);
    let context_dir = context.clone();
    cleanup.run(move || {
        let _ = std::fs::remove_dir_all(context_dir);
    });
    let log = checked(&mut web_fe_build(classic_builder(), tag, &context, &[]));
    let steps: Vec<&str> = log.split("\nStep ").collect();
    let step = |needle: &str| {
        *steps
            .iter()
            .find(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no build step with {needle:?}:\n{log}"))
    };
    let dependencies = step("echo 'fn main() {}'");
    assert!(
        dependencies.contains("Using cache"),
        "dependencies rebuilt:\n{dependencies}"
    );
    let sources = step("COPY web-fe/src");
    assert!(
        !sources.contains("Using cache"),
        "the edited source was not copied"
    );
    // The classic builder may colour a step's stderr; the words are what count.
    let app = without_colours(step("install -D"));
    let compiled: Vec<&str> = app.lines().filter(|l| l.contains("Compiling ")).collect();
    assert!(
        !compiled.is_empty() && compiled.iter().all(|l| l.contains("Compiling web-fe ")),
        "only web-fe may be compiled after a source edit:\n{app}"
    );
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().take_while(|c| *c != 'm').for_each(drop);
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn dockerfile_builds_with_buildkit_too() {
    let _lock = exclusive();
    let tag = "counter-web-fe:e2e-buildkit";
    let mut cleanup = Cleanup::new();
    cleanup.docker(&["image", "rm", tag]);
    let args = [("COUNTER_VERSION", "2.0.0-e2e")];
    checked(&mut web_fe_build(
        buildkit_command(),
        tag,
        &repo_root(),
        &args,
    ));
    let version = docker_ok(&["run", "--rm", tag, "--version"]);
    assert_eq!(version, "web-fe 2.0.0-e2e");
}

/// A docker CLI that builds with BuildKit: buildx where installed, else Debian's 20.10 CLI,
/// whose built-in BuildKit needs no plugin.
fn buildkit_command() -> Command {
    let buildx = docker(&["buildx", "version"]).status.success();
    let mut command = if buildx || !Path::new("/usr/bin/docker").exists() {
        Command::new("docker")
    } else {
        Command::new("/usr/bin/docker")
    };
    command.env("DOCKER_BUILDKIT", "1");
    command
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies the build context, leaving out what .dockerignore would drop anyway.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}
