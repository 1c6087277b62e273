//! Checks of how locked down the running containers are.

use crate::runner::{docker_ok, repo_root};

/// Non-root, read-only root, no capabilities, no new privileges: on the running process.
pub fn check_web_fe_hardening(container: &str) {
    let inspect = |f: &str| docker_ok(&["inspect", "-f", f, container]);
    assert_eq!(inspect("{{.Config.User}}"), "65532:65532");
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    let pid = inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "{line:?} missing:\n{status}"
        );
    }
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65532\t")),
        "{status}"
    );
    let env = inspect("{{json .Config.Env}}");
    assert!(
        env.contains("REDIS_PASSWORD_FILE=/run/secrets/redis-password"),
        "{env}"
    );
}

/// Redis answers nobody without the password, and the password is in no environment
/// or command line.
pub fn check_redis_locked(redis: &str, web: &str) {
    let anonymous = docker_ok(&["exec", redis, "redis-cli", "ping"]);
    assert!(
        anonymous.contains("NOAUTH"),
        "Redis answered without a password: {anonymous}"
    );
    let password = std::fs::read_to_string(repo_root().join("secrets/redis-password")).unwrap();
    let password = password.trim();
    for container in [redis, web] {
        let env = docker_ok(&[
            "inspect",
            "-f",
            "{{json .Config.Env}} {{json .Config.Cmd}}",
            container,
        ]);
        assert!(
            !env.contains(password),
            "password visible in {container}'s config"
        );
    }
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", redis]);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(password),
        "password in redis argv"
    );
}
