//! Swarm mode as the walkthrough uses it: an imperative service that scales and heals,
//! then `docker stack deploy -c stack.yml` with 10 replicas sharing one counter.
//!
//! This kernel may lack IPVS, where the routing mesh and service VIPs do not answer, so
//! replicas are reached from a client container through `tasks.<service>` DNS; the
//! published port is checked only where /proc/sys/net/ipv4/vs exists.

use std::collections::BTreeSet;
use std::path::Path;

use e2e::{
    CONVERGE, Cleanup, WEB_FE_IMAGE, build_web_fe_image, deploy_stack, docker, docker_ok,
    exclusive, http_get, in_client_container, join_swarm, not_checked_here, page_count_and_host,
    redis_hits, redis_image, redis_master, reliability_row, remove_stack, running_tasks,
    service_containers, stack_volumes, stop_stack, wait_for,
};
use serde_json::Value;

#[test]
fn an_imperative_service_scales_and_heals() {
    let _lock = exclusive();
    build_web_fe_image();
    let _swarm = join_swarm();
    let tag = std::process::id();
    let network = format!("counter-e2e-net-{tag}");
    let redis = format!("counter-e2e-redis-{tag}");
    let web = format!("counter-e2e-web-{tag}");
    let mut cleanup = Cleanup::new();
    cleanup.docker(&["network", "rm", &network]);
    cleanup.docker(&["service", "rm", &redis]);
    cleanup.docker(&["service", "rm", &web]);

    docker_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        &network,
    ]);
    docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        &redis,
        "--network",
        &network,
        "--endpoint-mode",
        "dnsrr",
        &redis_image(),
        "redis-server",
        "--protected-mode",
        "no",
    ]);
    docker_ok(&[
        "service",
        "create",
        "--quiet",
        "--name",
        &web,
        "--network",
        &network,
        "--replicas",
        "3",
        "--env",
        &format!("REDIS_URL=redis://{redis}:6379"),
        WEB_FE_IMAGE,
    ]);
    let listed = docker_ok(&[
        "service",
        "ls",
        "--filter",
        &format!("name={web}"),
        "--format",
        "{{.Replicas}}",
    ]);
    assert_eq!(listed, "3/3");
    assert_eq!(running_tasks(&web), 3);
    assert_eq!(distinct_replicas(&network, &web, 3).len(), 3);

    docker_ok(&["service", "scale", "--detach=false", &format!("{web}=5")]);
    assert_eq!(running_tasks(&web), 5);

    let containers = service_containers(&web);
    assert_eq!(containers.len(), 5);
    let removed: Vec<&str> = containers.iter().take(2).map(String::as_str).collect();
    docker_ok(&[&["rm", "-f"][..], &removed].concat());
    let healed = wait_for(
        "swarm to replace the two removed replicas",
        CONVERGE,
        || {
            let now = service_containers(&web);
            (now.len() == 5 && running_tasks(&web) == 5).then_some(now)
        },
    );
    assert!(
        removed.iter().all(|r| !healed.contains(&r.to_string())),
        "{healed:?}"
    );
    assert_eq!(distinct_replicas(&network, &web, 5).len(), 5);

    docker_ok(&["service", "rm", &web, &redis]);
    wait_for("the services' containers to go", CONVERGE, || {
        service_containers(&web).is_empty().then_some(())
    });
}

#[test]
fn the_stack_runs_ten_replicas_on_one_counter() {
    let _lock = exclusive();
    build_web_fe_image();
    let _swarm = join_swarm();
    let stack = format!("counter-e2e-{}", std::process::id());
    let mut cleanup = Cleanup::new();
    let name = stack.clone();
    cleanup.run(move || remove_stack(&name));

    deploy_stack(&stack, WEB_FE_IMAGE);
    let web = format!("{stack}_web-fe");
    let services = docker_ok(&[
        "stack",
        "services",
        &stack,
        "--format",
        "{{.Name}} {{.Replicas}}",
    ]);
    for service in ["redis 3/3", "sentinel 3/3", "web-fe 10/10"] {
        assert!(
            services.contains(&format!("{stack}_{service}")),
            "{services}"
        );
    }
    let tasks = docker_ok(&["stack", "ps", &stack, "--format", "{{.Name}}"]);
    assert_eq!(
        tasks.lines().filter(|t| t.starts_with(&web)).count(),
        10,
        "{tasks}"
    );

    let network = format!("{stack}_counter-net");
    let answers = distinct_replicas(&network, "web-fe", 10);
    assert_eq!(answers.len(), 10, "10 distinct hostnames: {answers:?}");
    let counts: BTreeSet<u64> = answers.iter().map(|a| a.count).collect();
    let slots: BTreeSet<String> = answers.iter().map(|a| a.slot.clone()).collect();
    assert_eq!(
        counts.len(),
        10,
        "one shared counter gives 10 different counts: {answers:?}"
    );
    assert_eq!(
        counts.last().unwrap() - counts.first().unwrap(),
        9,
        "consecutive counts: {counts:?}"
    );
    let expected: BTreeSet<String> = (1..=10).map(|n| n.to_string()).collect();
    assert_eq!(
        slots, expected,
        "each task slot answers with its slot number"
    );

    if Path::new("/proc/sys/net/ipv4/vs").exists() {
        published_port_spreads_requests();
    } else {
        not_checked_here(
            "Published port 5000 through the routing mesh",
            "this kernel has no IPVS: /proc/sys/net/ipv4/vs is missing",
        );
    }

    // `docker stack rm` and a new deploy: the copies keep their volumes, the count goes on.
    let before = redis_hits(&redis_master(&stack));
    stop_stack(&stack);
    deploy_stack(&stack, WEB_FE_IMAGE);
    let again = distinct_replicas(&network, "web-fe", 10);
    let lowest = again.iter().map(|a| a.count).min().unwrap();
    assert!(
        lowest > before,
        "the count restarted after a redeploy: {before} then {again:?}"
    );
    reliability_row(&format!(
        "Stack removed and deployed again | `docker stack rm`, then `docker stack deploy` | 10 | 0 | 0 | count {before} before, {lowest} and up after"
    ));

    remove_stack(&stack);
    let leftovers = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.stack.namespace={stack}"),
    ]);
    assert!(leftovers.is_empty(), "containers left: {leftovers}");
    assert!(
        docker_ok(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={network}")
        ])
        .is_empty()
    );
    for volume in stack_volumes(&stack) {
        assert!(
            !docker(&["volume", "inspect", &volume]).status.success(),
            "{volume} left"
        );
    }
    let secrets = docker_ok(&["secret", "ls", "-q", "--filter", &format!("name={stack}_")]);
    assert!(secrets.is_empty(), "secrets left: {secrets}");
}

/// Through the routing mesh, new connections land on different replicas.
fn published_port_spreads_requests() {
    let hosts: BTreeSet<String> = (0..40)
        .filter_map(|_| http_get(5000, "/"))
        .filter(|(status, _)| *status == 200)
        .map(|(_, html)| page_count_and_host(&html).1)
        .collect();
    assert!(hosts.len() > 1, "port 5000 always reached {hosts:?}");
}

#[derive(Debug)]
struct Answer {
    hostname: String,
    slot: String,
    count: u64,
}

/// Asks every address behind `tasks.<service>` for /api once, from a client container on
/// the service's network; waits until `expected` replicas answer.
fn distinct_replicas(network: &str, service: &str, expected: usize) -> Vec<Answer> {
    let script = format!(
        "for ip in $(getent ahostsv4 tasks.{service} | awk '{{print $1}}' | sort -u); do \
           curl -s --max-time 3 http://$ip:8080/api; echo; \
         done"
    );
    wait_for(
        &format!("{expected} replicas of {service} to answer"),
        CONVERGE,
        || {
            let answers: Vec<Answer> = in_client_container(network, &script)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                // A counted view; a 503 (copies still syncing) is asked again.
                .filter(|json| json["count"].is_u64())
                .map(|json| Answer {
                    hostname: json["hostname"].as_str().unwrap_or_default().to_owned(),
                    slot: json["slot"].as_str().unwrap_or_default().to_owned(),
                    count: json["count"].as_u64().unwrap_or_default(),
                })
                .collect();
            let hosts: BTreeSet<&str> = answers.iter().map(|a| a.hostname.as_str()).collect();
            (answers.len() == expected && hosts.len() == expected).then_some(answers)
        },
    )
}
