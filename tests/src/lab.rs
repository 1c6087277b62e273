//! The many-machines lab (`lab/swarm`) driven from tests: nodes, their engines, the stack
//! deployed across them, and bounded load from a client container on the overlay network.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::client::{ClientLoad, ONE_REQUEST, tally};
use crate::load::LoadReport;
use crate::{checked, client_image, image_setting, redis_image, repo_root, wait_for};

/// Where the stack's tasks reach each other, and where the client joins.
pub const NETWORK: &str = "counter_counter-net";
pub const WEB: &str = "counter_web-fe";
pub const REDIS: &str = "counter_redis";
pub const SENTINEL: &str = "counter_sentinel";
/// The lab's machines, as `lab/swarm up` makes them by default.
const NODES: [&str; 5] = ["manager1", "manager2", "manager3", "worker1", "worker2"];
/// The network the lab's machines share (lab/swarm's `NETWORK`).
const LAB_NETWORK: &str = "counter-lab";
/// How long swarm may take to converge after a change across nested engines.
pub const SETTLE: Duration = Duration::from_secs(180);

pub fn node_image() -> String {
    image_setting("LAB_NODE_IMAGE", "counter-offline/dind:bookworm")
}

pub fn registry_image() -> String {
    image_setting("LAB_REGISTRY_IMAGE", "counter-offline/registry:bookworm")
}

pub fn page_image() -> String {
    image_setting("LAB_PAGE_IMAGE", "counter-offline/haproxy:bookworm")
}

/// Where `lab/swarm` publishes the lab's page on this machine (`LAB_PAGE`, as the script
/// reads it).
pub fn page_address() -> std::net::SocketAddr {
    let setting = std::env::var("LAB_PAGE").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let address: std::net::SocketAddr = setting
        .parse()
        .unwrap_or_else(|_| panic!("LAB_PAGE={setting:?}: expected address:port"));
    match address.ip().is_unspecified() {
        true => (std::net::Ipv4Addr::LOCALHOST, address.port()).into(),
        false => address,
    }
}

/// A lab that is up; `down` runs when it is dropped, passed or failed.
pub struct Lab {
    /// The client image, as the nodes pull it from the lab registry.
    pub client: String,
    /// Seconds `lab/swarm up` took.
    pub up_seconds: f64,
}

impl Lab {
    /// `lab/swarm up` with `web_fe_image` pushed to the lab registry, plus the client image.
    pub fn up(web_fe_image: &str) -> Self {
        // A lab left by a killed run would make `up` refuse; this one is ours to replace.
        let _ = lab(&["down"]).output();
        let started = Instant::now();
        checked(lab(&["up"]).env("WEB_FE_IMAGE", web_fe_image));
        let up_seconds = started.elapsed().as_secs_f64();
        let client = checked(&mut lab(&["push", &client_image(), "client:latest"]));
        Self { client, up_seconds }
    }

    /// `docker` on the first manager.
    pub fn docker(&self, args: &[&str]) -> String {
        checked(&mut lab(&[&["docker"], args].concat()))
    }

    /// A service's tasks and recent logs, from the first manager: why a step went wrong.
    pub fn story(&self, service: &str) -> String {
        let script = repo_root().join("lab/swarm");
        let script = script.to_str().expect("the repository's path is UTF-8");
        crate::swarm::tasks_story_via(&[script, "docker"], service)
    }

    /// The same, for a command that is expected to fail: (succeeded, stdout + stderr).
    pub fn try_docker(&self, args: &[&str]) -> (bool, String) {
        let out = lab(&[&["docker"], args].concat())
            .output()
            .expect("lab/swarm runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// A command on one node's own engine or shell.
    pub fn on(&self, node: &str, args: &[&str]) -> String {
        checked(&mut lab(&[&["node", node], args].concat()))
    }

    pub fn push(&self, image: &str, name: &str) -> String {
        checked(&mut lab(&["push", image, name]))
    }

    /// `docker stack deploy` of the repository's stack.yml on the lab, as `lab/swarm deploy`.
    pub fn deploy(&self) {
        checked(lab(&["deploy"]).env("REDIS_IMAGE", redis_image()));
        self.wait_replicas(10);
        // Redis starts alongside; the first views may find it still starting.
        self.wait_for_answer("a first counted view", "200");
    }

    /// Waits for `wanted` running replicas on reachable nodes. (`docker service ls` would
    /// also count tasks on a node that is down, whose state swarm cannot know.)
    pub fn wait_replicas(&self, wanted: usize) {
        wait_for(&format!("{wanted} web-fe replicas running"), SETTLE, || {
            (self.tasks_by_node().values().sum::<usize>() == wanted).then_some(())
        });
    }

    /// Running web-fe tasks per node hostname.
    pub fn tasks_by_node(&self) -> BTreeMap<String, usize> {
        let mut nodes = BTreeMap::new();
        let listing = self.docker(&crate::swarm::service_ps_args(
            WEB,
            "{{.Node}} {{.CurrentState}}",
        ));
        for line in listing.lines().filter(|l| l.contains(" Running")) {
            let node = line.split_whitespace().next().unwrap_or_default();
            *nodes.entry(node.to_owned()).or_default() += 1;
        }
        nodes
    }

    /// `hostname: (status, availability, manager status)` from `docker node ls`.
    pub fn nodes(&self) -> BTreeMap<String, (String, String, String)> {
        self.try_nodes()
            .expect("docker node ls answers on manager1")
    }

    /// The same, or `None` while the managers cannot answer (no leader for a moment, as
    /// after a manager comes back from a split).
    fn try_nodes(&self) -> Option<BTreeMap<String, (String, String, String)>> {
        let (ok, listing) = self.try_docker(&[
            "node",
            "ls",
            "--format",
            "{{.Hostname}}|{{.Status}}|{{.Availability}}|{{.ManagerStatus}}",
        ]);
        ok.then_some(())?;
        let nodes = listing
            .lines()
            .filter_map(|l| {
                let mut f = l.split('|').map(str::to_owned);
                Some((
                    f.next()?,
                    (f.next()?, f.next()?, f.next().unwrap_or_default()),
                ))
            })
            .collect();
        Some(nodes)
    }

    pub fn wait_node(&self, node: &str, status: &str) {
        wait_for(&format!("node {node} {status}"), SETTLE, || {
            self.try_nodes()?
                .get(node)
                .filter(|(s, _, _)| s == status)
                .map(drop)
        });
    }

    /// Waits up to [`SETTLE`] for `done`: swarm across nested engines converges slowly.
    pub fn settle(&self, what: &str, mut done: impl FnMut() -> bool) {
        wait_for(what, SETTLE, || done().then_some(()));
    }

    /// The overlay addresses of the web-fe replicas running on `node`.
    pub fn task_addresses(&self, node: &str) -> BTreeSet<String> {
        let ids = self.on(
            node,
            &[
                "docker",
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={WEB}"),
            ],
        );
        ids.lines()
            .map(|id| {
                self.on(
                    node,
                    &[
                        "docker",
                        "inspect",
                        "-f",
                        &format!(
                            "{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"
                        ),
                        id,
                    ],
                )
            })
            .collect()
    }

    /// Asks `/api` from the client until the status is `status`; returns the answer's body.
    pub fn wait_for_answer(&self, what: &str, status: &str) -> String {
        wait_for(what, SETTLE, || {
            let out = self.in_client(
                "curl -s --max-time 5 -w '\n%{http_code}' http://tasks.web-fe:8080/api || true",
            );
            let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
            (code.trim() == status).then(|| body.to_owned())
        })
    }

    /// Asks `/api` from the client until it answers 200. Each of those requests may count a
    /// view, as the load's do: they are tallied the same way, to be added to the load's.
    pub fn probe_until_counted(&self, what: &str) -> LoadReport {
        let mut seen = LoadReport::default();
        wait_for(what, SETTLE, || {
            let line = self.in_client(&format!("{ONE_REQUEST} || true"));
            let answer = tally(&line);
            let counted = answer.ok > 0;
            seen.add(answer);
            counted.then_some(())
        });
        seen
    }

    /// The node container's engine, for `docker kill` / `docker start` of a whole machine.
    pub fn machine(node: &str) -> String {
        format!("counter-lab-{node}")
    }

    /// The `hits` key, read with redis-cli on the copy that is the master now.
    pub fn hits(&self) -> u64 {
        self.try_hits().expect("the master answers GET hits")
    }

    /// The same, `None` while the master does not answer.
    pub fn try_hits(&self) -> Option<u64> {
        let value = self.on_master("get hits")?;
        match value.trim() {
            "" => Some(0),
            text => text.parse().ok(),
        }
    }

    /// `redis-cli <command>` on the master; `None` while it does not answer.
    pub fn on_master(&self, command: &str) -> Option<String> {
        let (node, copy) = self.master_copy();
        self.redis_cli(&node, &copy, command)
    }

    /// The node and container of the Redis copy that says it is the master (`ROLE`). Just
    /// after a failover the old master may still say so for a few seconds, with no
    /// replica: the master is the one with the most replicas.
    pub fn master_copy(&self) -> (String, String) {
        wait_for("a Redis copy that is the master", SETTLE, || {
            self.copies()
                .into_iter()
                .filter(|(_, _, role)| role == "master")
                .max_by_key(|(node, copy, _)| self.replicas_of(node, copy))
                .map(|(node, copy, _)| (node, copy))
        })
    }

    /// How many replicas of the master copy in `container` are in sync (`state=online`),
    /// and so can confirm a view for `WAIT`; one still loading the master's data cannot.
    fn replicas_of(&self, node: &str, container: &str) -> usize {
        self.redis_cli(node, container, "info replication")
            .map_or(0, |info| {
                info.lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count()
            })
    }

    /// Waits until the master has both replicas in sync again: a step that takes one away
    /// must start from two.
    pub fn both_replicas_in_sync(&self) {
        self.settle("the Redis master with both replicas in sync", || {
            let (node, copy) = self.master_copy();
            self.replicas_of(&node, &copy) == 2
        });
    }

    /// Every Redis copy that answers: its node, container and role (`master` or `slave`).
    /// Each machine is asked directly, so this works without a swarm manager (quorum lost).
    pub fn copies(&self) -> Vec<(String, String, String)> {
        let mut found = Vec::new();
        for node in NODES {
            for id in self.containers_on(node, REDIS) {
                if let Some(role) = self.redis_cli(node, &id, "role") {
                    let role = role.lines().next().unwrap_or_default().to_owned();
                    found.push((node.to_owned(), id, role));
                }
            }
        }
        found
    }

    /// The running containers of `service` on `node`; none when the node does not answer.
    fn containers_on(&self, node: &str, service: &str) -> Vec<String> {
        let label = format!("label=com.docker.swarm.service.name={service}");
        let (ok, ids) = self.try_on(node, &["docker", "ps", "-q", "--filter", &label]);
        if !ok {
            return Vec::new();
        }
        ids.lines().map(str::to_owned).collect()
    }

    /// Nodes where `service` has a task that should be running.
    pub fn service_nodes(&self, service: &str) -> BTreeSet<String> {
        self.docker(&crate::swarm::service_ps_args(service, "{{.Node}}"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `redis-cli <command>` in a copy's container, with the password from its secret.
    fn redis_cli(&self, node: &str, container: &str, command: &str) -> Option<String> {
        let script = crate::compose::redis_cli(command);
        let (ok, out) = self.try_on(node, &["docker", "exec", container, "sh", "-c", &script]);
        ok.then_some(out)
    }

    /// The master's node and container, once the master is on none of `nodes`. The copies
    /// there are made unfit to lead (`replica-priority 0`) while the Sentinels are asked to
    /// fail over, or they could hand the role back and forth between those nodes.
    pub fn master_off(&self, nodes: &[&str]) -> (String, String) {
        let avoided: Vec<_> = self
            .copies()
            .into_iter()
            .filter(|(node, _, _)| nodes.contains(&node.as_str()))
            .collect();
        let set_priority = |priority: &str| {
            for (node, copy, _) in &avoided {
                self.redis_cli(
                    node,
                    copy,
                    &format!("config set replica-priority {priority}"),
                );
            }
        };
        set_priority("0");
        let found = wait_for(&format!("the Redis master off {nodes:?}"), SETTLE, || {
            let (at, copy) = self.master_copy();
            if !nodes.contains(&at.as_str()) {
                return Some((at, copy));
            }
            self.failover();
            std::thread::sleep(Duration::from_secs(3));
            None
        });
        set_priority("100");
        found
    }

    /// Asks a Sentinel to hand the master's role to a replica.
    fn failover(&self) {
        for node in self.service_nodes(SENTINEL) {
            if let Some(id) = self.containers_on(&node, SENTINEL).first() {
                let script = crate::compose::redis_cli("-p 26379 sentinel failover counter");
                let (ok, _) = self.try_on(&node, &["docker", "exec", id, "sh", "-c", &script]);
                if ok {
                    return;
                }
            }
        }
    }

    /// The same as [`Lab::on`], for a node that may be down: (succeeded, output).
    fn try_on(&self, node: &str, args: &[&str]) -> (bool, String) {
        let out = lab(&[&["node", node], args].concat())
            .output()
            .expect("lab/swarm runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs `script` in a throwaway client container on the overlay network.
    pub fn in_client(&self, script: &str) -> String {
        self.docker(&[
            "run",
            "--rm",
            "--network",
            NETWORK,
            &self.client,
            "sh",
            "-c",
            script,
        ])
    }

    /// Starts bounded load: `loops` request loops in a client container on manager1 (see
    /// [`crate::client::request_loops`]).
    pub fn load(&self, loops: u32) -> ClientLoad<'_> {
        self.load_on("manager1", loops)
    }

    /// The same load from a client container on `node`'s own engine, which reaches the
    /// replicas that node can reach (during a split, the ones on its side).
    pub fn load_on(&self, node: &str, loops: u32) -> ClientLoad<'_> {
        let name = format!("counter-lab-client-{node}-{}", std::process::id());
        let node = node.to_owned();
        let engine =
            Box::new(move |args: &[&str]| self.try_on(&node, &[&["docker"], args].concat()));
        ClientLoad::start(engine, &name, NETWORK, &self.client, loops)
    }

    /// Cuts `node`'s machine off the lab network: it runs on, alone.
    pub fn cut_off(&self, node: &str) {
        crate::docker_ok(&["network", "disconnect", LAB_NETWORK, &Self::machine(node)]);
    }

    /// Puts `node`'s machine back on the lab network at the address the swarm knows.
    pub fn reconnect(&self, node: &str, address: &str) {
        crate::docker_ok(&[
            "network",
            "connect",
            "--ip",
            address,
            LAB_NETWORK,
            &Self::machine(node),
        ]);
    }

    /// `node`'s machine's address on the lab network.
    pub fn machine_address(node: &str) -> String {
        crate::docker_ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{LAB_NETWORK}\").IPAddress}}}}"),
            &Self::machine(node),
        ])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = lab(&["down"]).status();
    }
}

/// `lab/swarm` with the stand-in node and registry images (or the ones set).
fn lab(args: &[&str]) -> Command {
    let mut command = Command::new(repo_root().join("lab/swarm"));
    command
        .args(args)
        .env("LAB_NODE_IMAGE", node_image())
        .env("LAB_REGISTRY_IMAGE", registry_image())
        .env("LAB_PAGE_IMAGE", page_image())
        .env("REDIS_IMAGE", redis_image());
    command
}

impl Lab {
    /// Reads the board from the overlay network, through manager1's engine.
    pub fn board_watcher(&self) -> crate::board::BoardWatcher<'_> {
        crate::board::BoardWatcher::start(
            Box::new(|args: &[&str]| self.try_docker(args)),
            NETWORK,
            &self.client,
        )
    }
}
