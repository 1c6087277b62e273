//! Faults on the swarm stack, under load from a client on the stack's network that
//! resolves `tasks.web-fe` for every connection: rolling updates (forced, and to a new
//! image) with zero failed requests, a broken image that rolls back by itself, replicas
//! removed under load, and the hardening of the running tasks. The board follows scaling,
//! a killed replica and a rolling update as they happen.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::board::{BoardView, BoardWatcher};
use e2e::client::{ClientLoad, this_machine};
use e2e::{
    CONVERGE, Cleanup, LoadReport, WEB_FE_IMAGE, assert_writes_before_answering,
    build_web_fe_image, build_web_fe_variant, check_redis_locked, check_web_fe_hardening,
    client_image, copies_story, deploy_stack, docker, docker_ok, exclusive, join_swarm, redis_hits,
    redis_master, redis_role, reliability_row, remove_stack, running_tasks, service_containers,
    try_redis_hits, under_fault, wait_for,
};

const V2_IMAGE: &str = "counter-web-fe:e2e-v2";
const V2_VERSION: &str = "2.0.0-e2e";
const BROKEN_IMAGE: &str = "counter-web-fe:e2e-broken";
/// Parallel request loops in the client container.
const LOOPS: u32 = 4;

/// The stack deployed for one test, with its swarm, and removed when the test ends.
struct Deployed {
    stack: String,
    web: String,
    network: String,
    _cleanup: Cleanup,
    _swarm: Cleanup,
}

impl Deployed {
    fn new(test: &str) -> Self {
        build_web_fe_image();
        let swarm = join_swarm();
        let stack = format!("counter-e2e-{test}-{}", std::process::id());
        let mut cleanup = Cleanup::new();
        let name = stack.clone();
        cleanup.run(move || remove_stack(&name));
        deploy_stack(&stack, WEB_FE_IMAGE);
        Self {
            web: format!("{stack}_web-fe"),
            network: format!("{stack}_counter-net"),
            stack,
            _cleanup: cleanup,
            _swarm: swarm,
        }
    }

    /// `inject` under load from a client container on the stack's network; every 200
    /// counted once, and a RELIABILITY.md row.
    fn under_load(&self, fault: &str, injection: &str, inject: impl FnOnce()) -> LoadReport {
        let client = format!("counter-e2e-client-{}", self.stack);
        let run = under_fault(
            // Read on the master each time: a fault may have moved it to another copy.
            || try_redis_hits(&redis_master(&self.stack)),
            || {
                ClientLoad::start(
                    this_machine(),
                    &client,
                    &self.network,
                    &client_image(),
                    LOOPS,
                )
            },
            || {
                inject();
                "converged".to_owned()
            },
        );
        run.record(fault, injection);
        // Each copy's role and count, shown if the check below fails: a lost view, or a
        // copy that still calls itself the master with an older count.
        for copy in service_containers(&format!("{}_redis", self.stack)) {
            let role = redis_role(&copy);
            println!("copy {copy}: {role:?}, hits {:?}", try_redis_hits(&copy));
        }
        if run.lost() > 0 || run.report.failed() > 0 {
            println!("{}", copies_story(&self.stack));
        }
        run.assert_nothing_lost(fault);
        assert!(run.report.ok > 50, "too little load: {run:?}");
        run.report
    }

    /// The copy that is the master now.
    fn redis(&self) -> String {
        redis_master(&self.stack)
    }
}

#[test]
fn stack_tasks_are_hardened() {
    let _lock = exclusive();
    let stack = Deployed::new("hard");
    let tasks = service_containers(&stack.web);
    check_web_fe_hardening(&tasks[0]);
    check_redis_locked(&stack.redis(), &tasks[0]);
    let limits = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        &tasks[0],
    ]);
    assert_eq!(limits, format!("{} 500000000", 64 * 1024 * 1024));
    let redis_service = stack.web.replace("_web-fe", "_redis");
    let published = docker_ok(&[
        "service",
        "inspect",
        "-f",
        "{{json .Endpoint.Ports}}",
        &redis_service,
    ]);
    assert!(
        published == "null" || published == "[]",
        "Redis is published: {published}"
    );
}

#[test]
fn a_forced_rolling_update_fails_no_request() {
    let _lock = exclusive();
    let stack = Deployed::new("force");
    let report = stack.under_load("Rolling update", "`docker service update --force`", || {
        assert!(update(&stack.web, &["--force"]).status.success());
    });
    assert_eq!(report.failed(), 0, "{report:?}");
}

#[test]
fn forced_updates_of_the_redis_copies_and_the_sentinels_lose_no_view() {
    let _lock = exclusive();
    let stack = Deployed::new("copies");
    let first_master = stack.redis();
    let redis = format!("{}_redis", stack.stack);
    let sentinel = format!("{}_sentinel", stack.stack);
    let report = stack.under_load(
        "Redis copies and Sentinels restarted one by one",
        "`docker service update --force` of redis, then of sentinel",
        || {
            for service in [&redis, &sentinel] {
                let out = update(service, &["--force"]);
                let said = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success(),
                    "update of {service} failed: {said}\n{}",
                    copies_story(&stack.stack)
                );
            }
        },
    );
    // Every copy restarted, the master too: one copy is the master, the others its replicas.
    let copies = service_containers(&redis);
    let roles: Vec<_> = copies.iter().map(|c| redis_role(c)).collect();
    assert_eq!(copies.len(), 3, "{roles:?}");
    assert!(
        !copies.contains(&first_master),
        "the first master was not restarted"
    );
    let masters = roles
        .iter()
        .filter(|r| r.as_deref() == Some("master"))
        .count();
    assert_eq!(masters, 1, "{roles:?}");
    for copy in &copies {
        assert_writes_before_answering(copy);
    }
    // The master hands its role over before it stops (redis/copy.sh) and web-fe waits the
    // handover out, so views usually all get 200. Not asserted: a Sentinel that stalls
    // mid-handover (TILT mode, seen once when the machine was slow) leaves a few seconds
    // of 503s; the row shows how many, and the services' logs are printed above.
    println!("{report:?}");
}

#[test]
fn a_rolling_update_to_a_new_image_fails_no_request() {
    let _lock = exclusive();
    build_web_fe_variant(V2_IMAGE, V2_VERSION, "#c2410c");
    let _image = remove_after(V2_IMAGE);
    let stack = Deployed::new("v2");
    let watcher = BoardWatcher::on_host(&stack.network, &client_image());
    let mut flips = Vec::new();
    let report = stack.under_load(
        "Rolling update to a new image",
        "`docker service update --image v2`",
        || {
            std::thread::scope(|s| {
                let updating = s.spawn(|| update(&stack.web, &["--image", V2_IMAGE]));
                // Live replicas on v2, each time the number changes, until all 10 are.
                watcher.wait("10 live replicas, all on v2", CONVERGE, |board| {
                    let on_v2 = board.live_on(V2_VERSION);
                    if flips.last() != Some(&on_v2) {
                        flips.push(on_v2);
                    }
                    on_v2 == 10 && board.live().len() == 10
                });
                assert!(updating.join().unwrap().status.success());
            });
        },
    );
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(service_image(&stack.web), V2_IMAGE);
    println!("live replicas on v2 as the board showed them: {flips:?}");
    assert!(
        flips.iter().filter(|&&n| n > 0 && n < 10).count() >= 2,
        "versions flipped replica by replica, not all at once: {flips:?}"
    );
    // The old replicas said goodbye: marked stopped, not silent.
    let (_, board) = watcher.wait("v1 replicas marked stopped", Duration::from_secs(5), |b| {
        b.tiles
            .iter()
            .any(|t| t.version != V2_VERSION && t.state == "stopped")
    });
    assert!(
        board
            .tiles
            .iter()
            .filter(|t| t.version != V2_VERSION)
            .all(|t| t.state == "stopped"),
        "{board:#?}"
    );
}

#[test]
fn the_board_follows_scaling_and_a_killed_replica() {
    let _lock = exclusive();
    let stack = Deployed::new("board");
    let web = &stack.web;
    let watcher = BoardWatcher::on_host(&stack.network, &client_image());
    watcher.wait("10 live replicas", CONVERGE, |b| b.live().len() == 10);
    docker_ok(&["service", "scale", "--detach", &format!("{web}=3")]);
    watcher.wait("3 live replicas", CONVERGE, |b| b.live().len() == 3);

    // 3 → 6: the newcomers appear without anyone loading a page.
    let hits = redis_hits(&stack.redis());
    let scaled = std::time::Instant::now();
    docker_ok(&["service", "scale", "--detach", &format!("{web}=6")]);
    wait_for("6 running tasks", CONVERGE, || {
        (running_tasks(web) == 6).then_some(())
    });
    let (shown, _) = watcher.wait("6 live replicas", Duration::from_secs(5), |b| {
        b.live().len() == 6
    });
    let since_command = scaled.elapsed();
    assert_eq!(
        redis_hits(&stack.redis()),
        hits,
        "watching the board counted views"
    );
    reliability_row(&format!(
        "Board: scale 3 → 6 | `docker service scale` | – | – | 0 | 6 live on the board {:.1} s after the command ({:.1} s after the 6th task ran); `hits` unchanged",
        since_command.as_secs_f64(),
        shown.as_secs_f64()
    ));

    // `docker rm -f`: no goodbye, so the missed heartbeats mark it.
    let victim = service_containers(web).pop().expect("a task");
    let hostname = docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", &victim]);
    let slot = slot_of(&watcher, &hostname);
    let start = std::time::Instant::now();
    docker_ok(&["rm", "-f", &victim]);
    watcher.wait("the removed replica marked", Duration::from_secs(5), |b| {
        b.state_of(&hostname) == Some("silent")
    });
    let marked = start.elapsed();
    let (_, board) = watcher.wait("its replacement", CONVERGE, |b| {
        b.live().len() == 6
            && b.live()
                .iter()
                .any(|t| t.slot == slot && t.hostname != hostname)
    });
    assert_eq!(board.state_of(&hostname), Some("silent"), "{board:#?}");
    reliability_row(&format!(
        "Board: a replica removed | `docker rm -f` | – | – | 0 | marked {:.1} s after the command, replacement shown in slot {slot}",
        marked.as_secs_f64()
    ));
}

fn slot_of(watcher: &BoardWatcher, hostname: &str) -> String {
    let board: BoardView = watcher.read().expect("a board");
    board
        .tiles
        .iter()
        .find(|t| t.hostname == hostname)
        .map(|t| t.slot.clone())
        .unwrap_or_else(|| panic!("{hostname} not on the board: {board:#?}"))
}

#[test]
fn an_image_that_fails_at_start_rolls_back_by_itself() {
    let _lock = exclusive();
    build_web_fe_image();
    build_broken_image();
    // Declared before the stack, so removed after it (and after its failed tasks).
    let _image = remove_after(BROKEN_IMAGE);
    let stack = Deployed::new("rollback");
    let web = &stack.web;
    let report = stack.under_load(
        "Update to an image that fails at start",
        "`docker service update --image broken`",
        || {
            // The CLI reports the failed update; swarm rolls back by itself.
            let _ = update(web, &["--image", BROKEN_IMAGE]);
            wait_for("the automatic rollback", CONVERGE, || {
                let state =
                    docker_ok(&["service", "inspect", "-f", "{{.UpdateStatus.State}}", web]);
                (state == "rollback_completed" && running_tasks(web) == 10).then_some(())
            });
        },
    );
    assert_eq!(report.failed(), 0, "{report:?}");
    assert_eq!(
        service_image(web),
        WEB_FE_IMAGE,
        "rolled back to the last good image"
    );
}

#[test]
fn removed_replicas_are_replaced_under_load() {
    let _lock = exclusive();
    let stack = Deployed::new("heal");
    let web = &stack.web;
    let report = stack.under_load(
        "3 of 10 replicas removed",
        "`docker rm -f` on 3 task containers",
        || {
            let before = service_containers(web);
            let removed: Vec<&str> = before.iter().take(3).map(String::as_str).collect();
            docker_ok(&[&["rm", "-f"][..], &removed].concat());
            wait_for("swarm to restore 10 replicas", CONVERGE, || {
                let now = service_containers(web);
                let fresh = removed.iter().all(|r| !now.iter().any(|n| n == r));
                (fresh && now.len() == 10 && running_tasks(web) == 10).then_some(())
            });
        },
    );
    // Only requests on connections already open to a removed container may fail: at
    // most one per client loop.
    assert!(report.failed() <= u64::from(LOOPS), "{report:?}");
}

/// Removes `image` when the test ends.
fn remove_after(image: &str) -> Cleanup {
    let mut cleanup = Cleanup::new();
    cleanup.docker(&["image", "rm", image]);
    cleanup
}

fn service_image(service: &str) -> String {
    let image = docker_ok(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        service,
    ]);
    image.split('@').next().unwrap_or_default().to_owned()
}

/// A broken release: a bad setting baked in makes it exit at start. (A broken HEALTHCHECK
/// in an image would not do: the stack's own health check replaces it.)
fn build_broken_image() {
    let dockerfile = format!("FROM {WEB_FE_IMAGE}\nENV WORKERS=0\n");
    let mut build = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", BROKEN_IMAGE, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker build runs");
    build
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    assert!(
        build.wait_with_output().unwrap().status.success(),
        "building {BROKEN_IMAGE}"
    );
}

/// `docker service update`, waiting until swarm has converged or given up.
fn update(service: &str, change: &[&str]) -> std::process::Output {
    let args = [
        &["service", "update", "--quiet", "--detach=false"][..],
        change,
        &[service],
    ]
    .concat();
    docker(&args)
}
