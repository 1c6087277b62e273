//! The single-node swarm: joining it, the stack, its tasks, clients on its network.

use std::process::Command;
use std::time::Duration;

use crate::images::{client_image, redis_image};
use crate::runner::{Cleanup, checked, docker, docker_ok, repo_root, wait_for};

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
pub fn remove_stack(stack: &str) {
    let _ = docker(&["stack", "rm", stack]);
    let label = format!("label=com.docker.stack.namespace={stack}");
    wait_for("the stack's containers and network to go", CONVERGE, || {
        let containers = docker_ok(&["ps", "-aq", "--filter", &label]);
        let networks = docker_ok(&["network", "ls", "-q", "--filter", &label]);
        (containers.is_empty() && networks.is_empty()).then_some(())
    });
    let _ = docker(&["volume", "rm", &format!("{stack}_redis-data")]);
}

pub fn running_tasks(service: &str) -> usize {
    docker_ok(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
    ])
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

/// Deploys stack.yml as `stack` with the given web-fe image and waits for 10/10 replicas.
/// Redis goes to the node labelled for it, as the README's walkthrough labels it.
pub fn deploy_stack(stack: &str, web_fe_image: &str) {
    let node = docker_ok(&["info", "--format", "{{.Swarm.NodeID}}"]);
    docker_ok(&["node", "update", "--label-add", "counter-redis=true", &node]);
    checked(
        Command::new("docker")
            .current_dir(repo_root())
            .args(["stack", "deploy", "-c", "stack.yml", stack])
            .env("WEB_FE_IMAGE", web_fe_image)
            .env("REDIS_IMAGE", redis_image()),
    );
    let web = format!("{stack}_web-fe");
    wait_for("10/10 web-fe replicas", CONVERGE, || {
        let filter = format!("name={web}");
        let replicas = docker_ok(&[
            "service",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Replicas}}",
        ]);
        (replicas == "10/10" && running_tasks(&web) == 10).then_some(())
    });
}
