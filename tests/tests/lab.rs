//! The walkthrough across machines: a five-node swarm (3 managers, 2 workers), each node a
//! real nested Docker engine, made by `lab/swarm`. The stack runs on it from the lab
//! registry; faults hit whole machines under bounded load from a client on the overlay
//! network. One scenario, in order: each step starts from the state the last one left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::lab::{Lab, REDIS_NODE, WEB};
use e2e::{
    LoadReport, WEB_FE_IMAGE, build_web_fe_image, build_web_fe_variant, docker, docker_ok,
    exclusive, reliability_row,
};

const V2_IMAGE: &str = "counter-web-fe:lab-v2";
const V2_VERSION: &str = "2.0.0-lab";
const LOOPS: u32 = 4;

#[test]
fn a_five_node_swarm_runs_the_walkthrough_across_machines() {
    let _lock = exclusive();
    build_web_fe_image();
    build_web_fe_variant(V2_IMAGE, V2_VERSION, "#c2410c");
    let lab = Lab::up(WEB_FE_IMAGE);
    println!("lab: up in {:.0} s", lab.up_seconds);
    the_swarm_has_three_managers_and_two_workers(&lab);
    lab.deploy();
    replicas_spread_over_nodes_and_share_one_count(&lab);
    report_cost(&lab);
    losing_a_worker_machine_heals_and_it_rejoins(&lab);
    draining_a_worker_moves_its_tasks_and_loses_nothing(&lab);
    losing_quorum_refuses_changes_but_keeps_serving(&lab);
    rolling_to_v2_through_the_registry_fails_no_request(&lab);
    losing_the_redis_machine_answers_503_and_keeps_the_count(&lab);
    drop(lab);
    down_leaves_nothing_behind();
}

fn the_swarm_has_three_managers_and_two_workers(lab: &Lab) {
    let nodes = lab.nodes();
    println!("{}", lab.docker(&["node", "ls"]));
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    assert!(
        nodes
            .values()
            .all(|(status, availability, _)| status == "Ready" && availability == "Active"),
        "{nodes:?}"
    );
    let role = |wanted: &str| nodes.values().filter(|(_, _, m)| m == wanted).count();
    assert_eq!(
        (role("Leader"), role("Reachable"), role("")),
        (1, 2, 2),
        "{nodes:?}"
    );
}

fn replicas_spread_over_nodes_and_share_one_count(lab: &Lab) {
    let spread = lab.tasks_by_node();
    println!("tasks per node: {spread:?}");
    assert!(spread.len() >= 4, "10 tasks on only {spread:?}");
    let before = lab.hits();
    let answers =
        lab.in_client("for i in $(seq 80); do curl -s http://tasks.web-fe:8080/api; echo; done");
    let views: Vec<serde_json::Value> = answers
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let set =
        |key: &str| -> BTreeSet<String> { views.iter().map(|v| v[key].to_string()).collect() };
    let (hosts, nodes, counts) = (set("hostname"), set("node"), set("count"));
    let failed: Vec<_> = views.iter().filter(|v| !v["count"].is_u64()).collect();
    assert!(failed.is_empty(), "views not counted: {failed:?}");
    assert_eq!(views.len(), 80, "{answers}");
    assert_eq!(hosts.len(), 10, "distinct replicas: {hosts:?}");
    assert!(nodes.len() >= 4, "nodes named on the pages: {nodes:?}");
    assert_eq!(
        counts.len(),
        80,
        "one shared count gives each view its own number"
    );
    assert_eq!(lab.hits() - before, 80);
}

fn report_cost(lab: &Lab) {
    let usage = docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        &Lab::machine("manager1"),
        &Lab::machine("manager2"),
        &Lab::machine("manager3"),
        &Lab::machine("worker1"),
        &Lab::machine("worker2"),
    ]);
    println!(
        "lab cost: up in {:.0} s; memory per node with the stack running:\n{usage}",
        lab.up_seconds
    );
    let cells: Vec<String> = usage
        .lines()
        .map(|l| {
            l.replace("counter-lab-", "")
                .split(" / ")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    reliability_row(&format!(
        "Lab cost (5 nested engines) | `lab/swarm up`, stack deployed | - | - | - | up in {:.0} s; {}",
        lab.up_seconds,
        cells.join(", ")
    ));
}

/// Runs `fault` under load and reports a row: requests, failures (and where), lost views.
fn under_load(
    lab: &Lab,
    fault: &str,
    injection: &str,
    inject: impl FnOnce() -> String,
) -> LoadReport {
    let before = lab.hits();
    let load = lab.load(LOOPS);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let outcome = inject();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let report = load.finish();
    let moved = lab.hits() - before;
    let lost = i64::try_from(report.ok).unwrap() - i64::try_from(moved).unwrap();
    println!("{fault}: {report:?}; hits moved {moved}");
    reliability_row(&format!(
        "{fault} | {injection} | {} | {} {:?} | {lost} | {outcome} in {:.0} s",
        report.ok + report.failed(),
        report.failed(),
        report.failures,
        took.as_secs_f64()
    ));
    assert!(report.ok > 0, "nothing was served during {fault}");
    assert!(
        lost <= 0,
        "{lost} views answered 200 were not counted during {fault}"
    );
    assert!(
        -lost <= i64::try_from(report.failed()).unwrap(),
        "more views counted than were answered or failed during {fault}"
    );
    report
}

fn draining_a_worker_moves_its_tasks_and_loses_nothing(lab: &Lab) {
    // worker2 came back empty (swarm does not rebalance); new tasks go to the emptiest node.
    lab.docker(&["service", "scale", "--detach=false", &format!("{WEB}=12")]);
    lab.wait_replicas(12);
    let on_worker2 = lab.tasks_by_node().get("worker2").copied().unwrap_or(0);
    assert!(on_worker2 > 0, "worker2 runs no task to drain");
    let report = under_load(
        lab,
        "Worker drained",
        "`docker node update --availability drain worker2`",
        || {
            lab.docker(&["node", "update", "--availability", "drain", "worker2"]);
            lab.settle("worker2's tasks to move", || {
                let spread = lab.tasks_by_node();
                !spread.contains_key("worker2") && spread.values().sum::<usize>() == 12
            });
            format!("{on_worker2} tasks moved, 12/12 on the other nodes")
        },
    );
    assert_eq!(
        report.failed(),
        0,
        "requests failed while draining: {report:?}"
    );
    lab.docker(&["node", "update", "--availability", "active", "worker2"]);
}

fn losing_a_worker_machine_heals_and_it_rejoins(lab: &Lab) {
    let victim = "worker2";
    let doomed = lab.task_addresses(victim);
    let mut seen_down = Duration::ZERO;
    let report = under_load(
        lab,
        "Worker machine killed",
        "`docker kill` of node worker2",
        || {
            let killed = Instant::now();
            docker_ok(&["kill", &Lab::machine(victim)]);
            lab.wait_node(victim, "Down");
            seen_down = killed.elapsed();
            lab.settle("10/10 on the other nodes", || {
                let spread = lab.tasks_by_node();
                !spread.contains_key(victim) && spread.values().sum::<usize>() == 10
            });
            format!(
                "node Down after {:.0} s, 10/10 again",
                seen_down.as_secs_f64()
            )
        },
    );
    // Only connections to the dead machine's replicas may fail (curl names no address
    // when it could not connect at all).
    assert!(
        report
            .failed_addresses
            .keys()
            .all(|a| a == "none" || doomed.contains(a)),
        "failures on replicas that kept running: {:?} (dead: {doomed:?})",
        report.failed_addresses
    );
    docker_ok(&["start", &Lab::machine(victim)]);
    lab.wait_node(victim, "Ready");
}

fn losing_quorum_refuses_changes_but_keeps_serving(lab: &Lab) {
    docker_ok(&["stop", &Lab::machine("manager3")]);
    lab.wait_node("manager3", "Down");
    // 2 of 3 managers: still a majority, so changes go through.
    lab.docker(&["service", "scale", "--detach=false", &format!("{WEB}=10")]);
    lab.wait_replicas(10);
    let mut refusal = String::new();
    under_load(
        lab,
        "Quorum lost (1 of 3 managers up)",
        "`docker stop` of manager2 and manager3",
        || {
            docker_ok(&["stop", &Lab::machine("manager2")]);
            let (ok, said) =
                lab.try_docker(&["service", "scale", "--detach", &format!("{WEB}=10")]);
            assert!(!ok, "a swarm without quorum accepted a change: {said}");
            println!("docker service scale without quorum: {said}");
            refusal = said.lines().last().unwrap_or_default().to_owned();
            std::thread::sleep(Duration::from_secs(5));
            "changes refused".into()
        },
    );
    assert!(
        refusal.contains("leader") || refusal.contains("quorum") || refusal.contains("deadline"),
        "{refusal}"
    );
    for manager in ["manager2", "manager3"] {
        docker_ok(&["start", &Lab::machine(manager)]);
    }
    lab.settle("a leader again", || {
        lab.try_docker(&["service", "scale", "--detach", &format!("{WEB}=10")])
            .0
    });
    lab.wait_replicas(10);
}

fn rolling_to_v2_through_the_registry_fails_no_request(lab: &Lab) {
    let v2 = lab.push(V2_IMAGE, "counter-web-fe:2");
    println!("v2 in the lab registry: {v2}");
    let report = under_load(
        lab,
        "Rolling update across nodes",
        "`docker service update --image` from the lab registry",
        || {
            lab.docker(&[
                "service",
                "update",
                "--quiet",
                "--detach=false",
                "--image",
                &v2,
                WEB,
            ]);
            lab.wait_replicas(10);
            "converged".into()
        },
    );
    assert_eq!(
        report.failed(),
        0,
        "requests failed during the rolling update: {report:?}"
    );
    let versions = lab.in_client(
        "for i in $(seq 30); do curl -s http://tasks.web-fe:8080/api | grep -o '\"version\":\"[^\"]*\"'; done | sort -u",
    );
    assert_eq!(versions.trim(), format!("\"version\":\"{V2_VERSION}\""));
}

fn losing_the_redis_machine_answers_503_and_keeps_the_count(lab: &Lab) {
    let before = lab.hits();
    docker_ok(&["kill", &Lab::machine(REDIS_NODE)]);
    let down = Instant::now();
    let answer = lab.wait_for_answer("a 503 while Redis's machine is down", "503");
    assert!(
        answer.contains("could not count this view: Redis"),
        "{answer}"
    );
    // A connection open to the dead machine gets no answer, so a view sent on it may have
    // been counted; one that could not connect was not. Either way the page says which.
    assert!(
        answer.contains("This view was not counted.")
            || answer.contains("This view may have been counted."),
        "{answer}"
    );
    let probes = lab.in_client(
        "for i in $(seq 10); do curl -s -o /dev/null -w '%{http_code}\\n' --max-time 5 http://tasks.web-fe:8080/api; done",
    );
    let unavailable = probes.lines().filter(|l| l.trim() == "503").count();
    assert_eq!(unavailable, 10, "while Redis's machine is down: {probes}");
    lab.wait_node(REDIS_NODE, "Down");
    docker_ok(&["start", &Lab::machine(REDIS_NODE)]);
    let first_200 = lab.wait_for_answer("a 200 once it is back", "200");
    let back = down.elapsed();
    let count: u64 = first_200
        .split("\"count\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("a count in the answer");
    let lost = i64::try_from(before + 1).unwrap() - i64::try_from(count).unwrap();
    reliability_row(&format!(
        "Redis's machine killed | `docker kill` of node {REDIS_NODE}, then `docker start` | {} | {unavailable} (503, each naming its replica) | {lost} | count {before} → {count}, first 200 after {:.0} s",
        unavailable + 1,
        back.as_secs_f64()
    ));
    assert_eq!(lost, 0, "the count did not resume where it stopped");
}

fn down_leaves_nothing_behind() {
    for (kind, listing) in [
        (
            "container",
            docker(&["ps", "-aq", "--filter", "label=counter-lab"]),
        ),
        (
            "volume",
            docker(&["volume", "ls", "-q", "--filter", "label=counter-lab"]),
        ),
        (
            "network",
            docker(&["network", "ls", "-q", "--filter", "label=counter-lab"]),
        ),
    ] {
        let left = String::from_utf8_lossy(&listing.stdout).trim().to_owned();
        assert!(left.is_empty(), "lab/swarm down left a {kind}: {left}");
    }
}
