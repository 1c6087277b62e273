//! The single-node swarm: joining it, the stack, its tasks, clients on its network.

use std::process::Command;
use std::time::Duration;

use crate::images::{client_image, redis_image};
use crate::runner::{Cleanup, checked, docker, docker_ok, repo_root};
use test_support::{poll, wait_for};

/// Runs a shell script in a throwaway client container on `network` and returns stdout.
pub fn in_client_container(network: &str, script: &str) -> String {
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        network,
        &client_image(),
        "sh",
        "-c",
        script,
    ])
}

/// How long swarm may take to converge after a change.
pub const CONVERGE: Duration = Duration::from_secs(120);

/// Uses the node's swarm if it has one; otherwise starts one and leaves it afterwards.
pub fn join_swarm() -> Cleanup {
    let mut cleanup = Cleanup::new();
    if docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "active" {
        return cleanup;
    }
    // With several interfaces swarm wants an address; loopback is enough for one node.
    if !docker(&["swarm", "init"]).status.success() {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    cleanup.docker(&["swarm", "leave", "--force"]);
    cleanup
}

/// `docker stack rm` and what it leaves behind on purpose: the data volume.
/// `docker stack rm`, waiting until its containers and network are gone; the volumes stay.
pub fn stop_stack(stack: &str) {
    let _ = docker(&["stack", "rm", stack]);
    let label = format!("label=com.docker.stack.namespace={stack}");
    wait_for("the stack's containers and network to go", CONVERGE, || {
        let containers = docker_ok(&["ps", "-aq", "--filter", &label]);
        let networks = docker_ok(&["network", "ls", "-q", "--filter", &label]);
        (containers.is_empty() && networks.is_empty()).then_some(())
    });
}

/// Removes the stack and its volumes.
pub fn remove_stack(stack: &str) {
    stop_stack(stack);
    let volumes = stack_volumes(stack);
    let _ = docker(
        &[
            &["volume", "rm"][..],
            &volumes.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
}

/// `docker service ps` of the tasks of `service` that should be running, one `format`
/// line each.
pub fn service_ps_args<'a>(service: &'a str, format: &'a str) -> [&'a str; 7] {
    [
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        format,
    ]
}

pub fn running_tasks(service: &str) -> usize {
    docker_ok(&service_ps_args(service, "{{.CurrentState}}"))
        .lines()
        .filter(|s| s.starts_with("Running"))
        .count()
}

pub fn service_containers(service: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Deploys stack.yml as `stack` with the given web-fe image, as the README does (no node
/// label, no other command), and waits until every service runs all its tasks.
pub fn deploy_stack(stack: &str, web_fe_image: &str) {
    checked(
        Command::new("docker")
            .current_dir(repo_root())
            .args(["stack", "deploy", "-c", "stack.yml", stack])
            .env("WEB_FE_IMAGE", web_fe_image)
            .env("REDIS_IMAGE", redis_image())
            .env("COUNTER_STACK", stack),
    );
    for (service, wanted) in [("redis", 3), ("sentinel", 3), ("web-fe", 10)] {
        let service = format!("{stack}_{service}");
        let all_running = poll(CONVERGE, || {
            let filter = format!("name={service}");
            let replicas = docker_ok(&[
                "service",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Replicas}}",
            ]);
            (replicas == format!("{wanted}/{wanted}") && running_tasks(&service) == wanted)
                .then_some(())
        });
        // The copies and the Sentinels wait for each other at start: their logs say why.
        assert!(
            all_running.is_some(),
            "timed out after {CONVERGE:?} waiting for {wanted}/{wanted} {service} tasks\n{}",
            copies_story(stack),
        );
    }
    // The master takes views once a replica has synced: a few seconds on a first start.
    let network = format!("{stack}_counter-net");
    let counted = poll(CONVERGE, || {
        let status = in_client_container(
            &network,
            "curl -s -o /dev/null --max-time 3 -w '%{http_code}' http://tasks.web-fe:8080/api",
        );
        (status == "200").then_some(())
    });
    assert!(
        counted.is_some(),
        "no view counted after {CONVERGE:?}\n{}",
        copies_story(stack),
    );
}

/// The stack's volumes: one per Redis copy and one per Sentinel (stack.yml names them).
pub fn stack_volumes(stack: &str) -> Vec<String> {
    (1..=3)
        .flat_map(|slot| {
            [
                format!("{stack}_redis-data-{slot}"),
                format!("{stack}_sentinel-data-{slot}"),
            ]
        })
        .collect()
}

/// The container of the stack's Redis copy that says it is the master (`ROLE`).
pub fn redis_master(stack: &str) -> String {
    let master = poll(CONVERGE, || {
        service_containers(&format!("{stack}_redis"))
            .into_iter()
            .find(|copy| redis_role(copy).as_deref() == Some("master"))
    });
    master.unwrap_or_else(|| {
        panic!(
            "no Redis copy is the master after {CONVERGE:?}\n{}",
            copies_story(stack)
        )
    })
}

/// `master` or `slave`, as the copy in `container` answers `ROLE`.
pub fn redis_role(container: &str) -> Option<String> {
    let text = crate::compose::redis_cli_in(container, "role")?;
    let role = text.lines().next().unwrap_or_default().trim();
    (!role.is_empty()).then(|| role.to_owned())
}

/// The stories of a stack's Redis copies and Sentinels: why its count stalled.
pub fn copies_story(stack: &str) -> String {
    format!(
        "{}\n{}",
        tasks_story(&format!("{stack}_redis")),
        tasks_story(&format!("{stack}_sentinel"))
    )
}

/// A service's tasks (state, error) and the last 300 lines of its logs, timestamped: what
/// a failed wait or a lost view needs explained.
pub fn tasks_story(service: &str) -> String {
    tasks_story_via(&["docker"], service)
}

/// [`tasks_story`] through another `docker` command line, such as the lab's manager's.
pub fn tasks_story_via(docker: &[&str], service: &str) -> String {
    let run = |args: &[&str]| {
        // `docker service logs` can hang on a task being replaced: each call gets 30 s.
        Command::new("timeout")
            .arg("30")
            .args(docker)
            .args(args)
            .output()
            .expect("timeout (coreutils) runs")
    };
    let tasks = run(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
        service,
    ]);
    let logs = run(&["service", "logs", "--timestamps", "--tail", "300", service]);
    format!(
        "{service} tasks:\n{}\n{service} logs:\n{}{}",
        String::from_utf8_lossy(&tasks.stdout),
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    )
}
