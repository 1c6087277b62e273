//! The walkthrough across machines: a five-node swarm (3 managers, 2 workers), each node a
//! real nested Docker engine, made by `lab/swarm`. The stack runs on it from the lab
//! registry; faults hit whole machines under bounded load from a client on the overlay
//! network. One scenario, in order: each step starts from the state the last one left.
//! The board follows it all, read from the overlay network and watched in a headless
//! Chromium on the lab's page, which `lab/swarm` publishes on this machine (127.0.0.1:5000
//! unless `LAB_PAGE` says otherwise); its screenshots go to target/screenshots/lab-*.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::board::BoardWatcher;
use e2e::browser::Browser;
use e2e::lab::{Lab, REDIS, SENTINEL, WEB, page_address};
use e2e::{
    LoadReport, RunningLoad, WEB_FE_IMAGE, build_web_fe_image, build_web_fe_variant, counted_past,
    docker, docker_ok, exclusive, http_get_at, reliability_row, under_fault,
};

const V2_IMAGE: &str = "counter-web-fe:lab-v2";
const V2_VERSION: &str = "2.0.0-lab";
const LOOPS: u32 = 4;
/// How long the page may take to show a change that swarm is still making.
const SETTLE_BOARD: Duration = Duration::from_secs(60);

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
    the_page_on_this_machine_reaches_replicas_on_several_nodes();
    report_cost(&lab);
    {
        let watcher = lab.board_watcher();
        let browser = Browser::start();
        the_board_groups_every_replica_by_node(&lab, &watcher, &browser);
        losing_a_replica_machine_heals_and_it_rejoins(&lab);
        draining_a_worker_moves_its_tasks_and_loses_nothing(&lab, &watcher);
        losing_quorum_refuses_changes_but_keeps_serving(&lab);
        rolling_to_v2_through_the_registry_fails_no_request(&lab, &watcher, &browser);
        losing_the_master_machine_fails_over_and_loses_no_view(&lab, &browser);
        a_split_from_the_master_loses_no_view_answered_200(&lab);
    }
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

/// What a person at this machine gets from `lab/swarm deploy`: a page on loopback, each
/// new connection to another replica.
fn the_page_on_this_machine_reaches_replicas_on_several_nodes() {
    const CONNECTIONS: usize = 30;
    let page = page_address();
    let (mut seen, mut failed) = (BTreeMap::<String, String>::new(), Vec::new());
    for _ in 0..CONNECTIONS {
        let answer = http_get_at(page, "/api?close");
        let view = answer
            .as_ref()
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok());
        let Some(view) = view else {
            failed.push(answer);
            continue;
        };
        seen.insert(
            view["hostname"].as_str().unwrap_or_default().to_owned(),
            view["node"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let nodes: BTreeSet<&String> = seen.values().collect();
    println!(
        "http://{page}: {CONNECTIONS} new connections reached {} replicas on {} nodes",
        seen.len(),
        nodes.len()
    );
    reliability_row(&format!(
        "The lab's page on this machine | {CONNECTIONS} new connections to http://{page}/api \
         (`lab-page` on manager1) | {CONNECTIONS} | {} | 0 | reached {} replicas on {} nodes",
        failed.len(),
        seen.len(),
        nodes.len()
    ));
    assert!(failed.is_empty(), "answers that were not views: {failed:?}");
    assert!(seen.len() >= 3, "replicas reached: {seen:?}");
    assert!(nodes.len() >= 2, "nodes reached: {seen:?}");
}

fn the_board_groups_every_replica_by_node(lab: &Lab, watcher: &BoardWatcher, browser: &Browser) {
    let spread = lab.tasks_by_node();
    let (_, board) = watcher.wait("10 live replicas", Duration::from_secs(10), |b| {
        b.live().len() == 10
    });
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for tile in board.live() {
        *by_node.entry(tile.node.clone()).or_default() += 1;
    }
    assert_eq!(
        by_node, spread,
        "the board's nodes against `docker service ps`"
    );

    browser.set_window(1280, 1000);
    browser.open(&format!("http://{}/", page_address()));
    browser.until("10 replicas, live", Duration::from_secs(15), |b| {
        b.serving().len() == 10
            && b.script("return document.getElementById('stream-status').dataset.state") == "live"
    });
    let groups = browser.script("return document.querySelectorAll('#board .node').length");
    assert_eq!(
        groups.as_u64(),
        Some(spread.len() as u64),
        "node groups on the page"
    );
    browser.screenshot("lab-board");
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
/// `inject` tallies any request of its own that may count a view into the report it is
/// given, which joins the load's.
fn under_load(
    lab: &Lab,
    fault: &str,
    injection: &str,
    inject: impl FnOnce(&mut LoadReport) -> String,
) -> LoadReport {
    let mut own = LoadReport::default();
    let mut run = under_fault(|| lab.try_hits(), || lab.load(LOOPS), || inject(&mut own));
    run.report.add(own);
    run.record(fault, injection);
    run.assert_nothing_lost(fault);
    run.report
}

fn draining_a_worker_moves_its_tasks_and_loses_nothing(lab: &Lab, watcher: &BoardWatcher) {
    // New tasks go to the emptiest nodes (swarm does not rebalance), worker2 among them.
    lab.docker(&["service", "scale", "--detach=false", &format!("{WEB}=12")]);
    lab.wait_replicas(12);
    let on_worker2 = lab.tasks_by_node().get("worker2").copied().unwrap_or(0);
    assert!(on_worker2 > 0, "worker2 runs no task to drain");
    // When worker2 holds the Redis master, the drain stops it: it hands its role over first.
    let (master_at, _) = lab.master_copy();
    println!(
        "before the drain, the Redis master is on {master_at}; worker2 runs:\n{}",
        lab.docker(&["node", "ps", "--filter", "desired-state=running", "worker2"])
    );
    let master_moved = if master_at == "worker2" {
        ", the Redis master's among them (handed over)"
    } else {
        ""
    };
    let report = under_load(
        lab,
        "Worker drained",
        "`docker node update --availability drain worker2`",
        |_| {
            lab.docker(&["node", "update", "--availability", "drain", "worker2"]);
            lab.settle("worker2's tasks to move", || {
                let spread = lab.tasks_by_node();
                !spread.contains_key("worker2") && spread.values().sum::<usize>() == 12
            });
            format!("{on_worker2} web-fe tasks moved{master_moved}, 12/12 on the other nodes")
        },
    );
    if report.failed() > 0 {
        for service in [REDIS, SENTINEL, WEB] {
            println!("{}", lab.story(service));
        }
    }
    // web-fe's own tasks drain without failing a request. A Redis master on worker2 hands
    // its role over first and views wait for it, but a Sentinel that stalls mid-handover
    // (TILT mode) can leave a few seconds of 503s: only then may requests fail.
    if master_moved.is_empty() {
        assert_eq!(
            report.failed(),
            0,
            "requests failed while draining: {report:?}"
        );
    }
    // The drained node's group empties: its replicas stopped, none live there.
    watcher.wait("no live replica on worker2", Duration::from_secs(5), |b| {
        b.live().len() == 12 && b.live().iter().all(|t| t.node != "worker2")
    });
    lab.docker(&["node", "update", "--availability", "active", "worker2"]);
}

fn losing_a_replica_machine_heals_and_it_rejoins(lab: &Lab) {
    // A machine that holds a Redis replica (not the master) and is not manager1, which
    // drives the lab.
    let (master_at, _) = lab.master_copy();
    let victim = lab
        .service_nodes(REDIS)
        .into_iter()
        .find(|n| n != "manager1" && *n != master_at)
        .expect("a Redis replica on a machine other than manager1 and the master's");
    let doomed = lab.task_addresses(&victim);
    let report = under_load(
        lab,
        "Machine with a Redis replica killed",
        &format!("`docker kill` of node {victim}"),
        |_| {
            let killed = Instant::now();
            docker_ok(&["kill", &Lab::machine(&victim)]);
            lab.wait_node(&victim, "Down");
            let seen_down = killed.elapsed();
            lab.settle("10/10 on the other nodes", || {
                let spread = lab.tasks_by_node();
                !spread.contains_key(&victim) && spread.values().sum::<usize>() == 10
            });
            format!(
                "node Down after {:.0} s, 10/10 again",
                seen_down.as_secs_f64()
            )
        },
    );
    // Only connections to the dead machine's replicas may fail (curl names no address
    // when it could not connect at all): the master had the other replica for WAIT.
    assert!(
        report
            .failed_addresses
            .keys()
            .all(|a| a == "none" || doomed.contains(a)),
        "failures on replicas that kept running: {:?} (dead: {doomed:?})",
        report.failed_addresses
    );
    docker_ok(&["start", &Lab::machine(&victim)]);
    lab.wait_node(&victim, "Ready");
    lab.both_replicas_in_sync();
}

fn losing_quorum_refuses_changes_but_keeps_serving(lab: &Lab) {
    // The Redis master stays up with the manager that does: this step is about managers.
    lab.master_off(&["manager2", "manager3"]);
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
        |_| {
            docker_ok(&["stop", &Lab::machine("manager2")]);
            let (ok, said) =
                lab.try_docker(&["service", "scale", "--detach", &format!("{WEB}=10")]);
            assert!(!ok, "a swarm without quorum accepted a change: {said}");
            println!("docker service scale without quorum: {said}");
            refusal = said.lines().last().unwrap_or_default().to_owned();
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
    // The copies on the stopped managers start again and catch up with the master.
    lab.both_replicas_in_sync();
}

/// Versions of the replicas the page's board shows serving.
fn serving_versions(browser: &Browser) -> BTreeSet<String> {
    let versions = browser.script(
        "return [...document.querySelectorAll('#board [data-state=serving]')].map(t => t.dataset.version)",
    );
    versions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn rolling_to_v2_through_the_registry_fails_no_request(
    lab: &Lab,
    watcher: &BoardWatcher,
    browser: &Browser,
) {
    let v2 = lab.push(V2_IMAGE, "counter-web-fe:2");
    println!("v2 in the lab registry: {v2}");
    let report = under_load(
        lab,
        "Rolling update across nodes",
        "`docker service update --image` from the lab registry",
        |_| {
            std::thread::scope(|s| {
                let updating = s.spawn(|| {
                    lab.docker(&[
                        "service",
                        "update",
                        "--quiet",
                        "--detach=false",
                        "--image",
                        &v2,
                        WEB,
                    ])
                });
                // Mid-update, both versions serve side by side on the page's board.
                browser.until("v1 and v2 serving together", SETTLE_BOARD, |b| {
                    serving_versions(b).len() == 2
                });
                browser.screenshot("lab-board-rolling");
                updating.join().expect("the update ran");
            });
            lab.wait_replicas(10);
            "converged".into()
        },
    );
    assert_eq!(
        report.failed(),
        0,
        "requests failed during the rolling update: {report:?}"
    );
    watcher.wait(
        "10 live replicas, all on v2",
        Duration::from_secs(10),
        |b| b.live().len() == 10 && b.live_on(V2_VERSION) == 10,
    );
    let versions = lab.in_client(
        "for i in $(seq 30); do curl -s http://tasks.web-fe:8080/api | grep -o '\"version\":\"[^\"]*\"'; done | sort -u",
    );
    assert_eq!(versions.trim(), format!("\"version\":\"{V2_VERSION}\""));
}

fn losing_the_master_machine_fails_over_and_loses_no_view(lab: &Lab, browser: &Browser) {
    let copies = lab.service_nodes(REDIS);
    let sentinels = lab.service_nodes(SENTINEL);
    println!("Redis copies on {copies:?}, Sentinels on {sentinels:?}");
    assert!(
        copies.len() >= 3,
        "copies on fewer than 3 nodes: {copies:?}"
    );
    assert!(
        sentinels.len() >= 3,
        "Sentinels on fewer than 3 nodes: {sentinels:?}"
    );
    // The lab is driven through manager1, so the master is moved off it before its machine dies.
    let (victim, _) = lab.master_off(&["manager1"]);
    let mut first_200 = Duration::ZERO;
    let mut now_at = String::new();
    under_load(
        lab,
        "Redis master's machine killed",
        &format!("`docker kill` of node {victim}, which held the master"),
        |own| {
            let killed = Instant::now();
            docker_ok(&["kill", &Lab::machine(&victim)]);
            // The probe's own views are counted too.
            own.add(lab.probe_until_counted("a 200 after the master's machine died"));
            first_200 = killed.elapsed();
            (now_at, _) = lab.master_copy();
            format!(
                "{now_at} is the master; first 200 {:.1} s after the kill",
                first_200.as_secs_f64()
            )
        },
    );
    assert!(
        first_200 < Duration::from_secs(10),
        "200s came back after {first_200:?}"
    );
    // The board names the new master and its node.
    let listed = browser.within("the board listing the new master", SETTLE_BOARD, |b| {
        b.text("#redis-copies")
            .is_some_and(|t| t.contains(&format!("master on {now_at}")))
    });
    if let Err(shown) = listed {
        for service in [REDIS, SENTINEL, WEB] {
            println!("{}", lab.story(service));
        }
        panic!(
            "{shown}; the copies answer {:?}; their nodes, as the master holds them: {:?}",
            lab.copies(),
            lab.on_master("hgetall redis:copies")
        );
    }
    browser.screenshot("lab-board-after-failover");
    let before = lab.hits();
    docker_ok(&["start", &Lab::machine(&victim)]);
    lab.wait_node(&victim, "Ready");
    // The copy that comes back (or its replacement) joins as a replica: never two masters.
    lab.settle("three copies, one master", || {
        let roles: Vec<String> = lab.copies().into_iter().map(|(_, _, role)| role).collect();
        let masters = roles.iter().filter(|r| *r == "master").count();
        assert!(
            masters <= 1,
            "two masters after {victim} came back: {roles:?}"
        );
        roles.len() == 3 && masters == 1
    });
    let after = lab.hits();
    assert!(
        after >= before,
        "the count went back from {before} to {after}"
    );
    reliability_row(&format!(
        "Redis master's machine back | `docker start` of node {victim} | - | - | 0 | three copies, one master; count {before} → {after}"
    ));
}

/// The master's machine is cut off the lab network while clients on both sides keep
/// asking: the other side fails over; the cut-off master, with no replica to confirm a
/// view, answers none with 200. When the split heals it rejoins as a replica, and every
/// view answered 200 on either side is in `hits`.
fn a_split_from_the_master_loses_no_view_answered_200(lab: &Lab) {
    let (victim, _) = lab.master_off(&["manager1"]);
    let address = Lab::machine_address(&victim);
    let before = lab.hits();
    let majority = lab.load(LOOPS);
    let minority = lab.load_on(&victim, LOOPS);
    counted_past(&|| lab.try_hits(), before);
    let cut = Instant::now();
    lab.cut_off(&victim);
    // The cut-off copy still calls itself the master: the new one is on the other side.
    let mut new_master = String::new();
    lab.settle("a master on the other side of the split", || {
        let found = lab
            .copies()
            .into_iter()
            .find(|(node, _, role)| *node != victim && role == "master");
        found.map(|(node, _, _)| new_master = node).is_some()
    });
    let failed_over = cut.elapsed();
    // Some time apart, so that the cut-off side feels it.
    std::thread::sleep(Duration::from_secs(15));
    lab.reconnect(&victim, &address);
    lab.wait_node(&victim, "Ready");
    lab.settle("three copies, one master, after the split", || {
        let roles: Vec<String> = lab.copies().into_iter().map(|(_, _, role)| role).collect();
        roles.len() == 3 && roles.iter().filter(|r| *r == "master").count() == 1
    });
    let (majority, minority) = (majority.finish(), minority.finish());
    let moved = lab.hits() - before;
    let ok = majority.ok + minority.ok;
    let failed = majority.failed() + minority.failed();
    println!("split: other side {majority:?}, cut-off side {minority:?}; hits moved {moved}");
    reliability_row(&format!(
        "Redis master's machine cut off the network | `docker network disconnect` of node {victim} for {:.0} s | {} | {failed} {:?} / {:?} | {} | {new_master} named master {:.1} s after the cut; 200s on the cut-off side: {}",
        cut.elapsed().as_secs_f64(),
        ok + failed,
        majority.failures,
        minority.failures,
        i64::try_from(ok).unwrap() - i64::try_from(moved).unwrap(),
        failed_over.as_secs_f64(),
        minority.ok,
    ));
    assert!(
        majority.ok > 0,
        "the other side served nothing: {majority:?}"
    );
    assert!(
        moved >= ok,
        "views answered 200 were lost in the split: {moved} < {ok}"
    );
    assert!(
        moved <= ok + failed,
        "views counted twice: {moved} > {ok} + {failed}"
    );
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
