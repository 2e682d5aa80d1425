//! The drill's acting side: instances of each consuming service, started, stopped and killed
//! as an orchestrator would. Each instance has a slot (0, 1, …) that names it: its log, and with
//! static membership its group member id (`<service>-<slot>`, as a StatefulSet pod's name).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::check::{free_port, http_get};
use crate::{Pipeline, Service};

/// A consuming service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `enricher`.
    Enricher,
    /// `detector`.
    Detector,
    /// `counter`.
    Counter,
}

impl Role {
    /// Every consuming service, in pipeline order.
    pub const ALL: [Role; 3] = [Role::Enricher, Role::Detector, Role::Counter];

    /// The binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Enricher => "enricher",
            Role::Detector => "detector",
            Role::Counter => "counter",
        }
    }
}

/// How instances belong to their group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A new member id per process (the default): a stop leaves the group.
    Dynamic,
    /// `--group-instance-id <service>-<slot>`: a restart under the same id keeps the assignment;
    /// a stop does not leave the group.
    Static,
}

/// The group protocol and its assignor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// Classic protocol, librdkafka's default assignors (range, roundrobin): every rebalance
    /// revokes everything.
    Eager,
    /// Classic protocol, `cooperative-sticky`: only what moves is revoked.
    Cooperative,
    /// KIP-848 (`group.protocol=consumer`): the broker assigns.
    Consumer,
}

impl Assignment {
    /// The `-X` settings that select it.
    fn properties(self) -> &'static [&'static str] {
        match self {
            Assignment::Eager => &[],
            Assignment::Cooperative => &["partition.assignment.strategy=cooperative-sticky"],
            Assignment::Consumer => &["group.protocol=consumer"],
        }
    }
}

/// One running instance.
#[derive(Debug)]
struct Instance {
    /// Its process.
    service: Service,
    /// Its metrics and health address.
    addr: String,
}

/// The instances of every service.
#[derive(Debug)]
pub struct Fleet<'a> {
    p: &'a Pipeline,
    membership: Membership,
    assignment: Assignment,
    running: BTreeMap<(Role, usize), Instance>,
}

impl<'a> Fleet<'a> {
    /// No instance yet.
    pub fn new(p: &'a Pipeline, membership: Membership, assignment: Assignment) -> Self {
        Self { p, membership, assignment, running: BTreeMap::new() }
    }

    /// The log name of an instance.
    pub fn log(role: Role, slot: usize) -> String {
        format!("{}-{slot}", role.name())
    }

    /// Starts the instance in `slot` of `role`.
    pub fn start(&mut self, role: Role, slot: usize) {
        let addr = format!("127.0.0.1:{}", free_port());
        let member = Self::log(role, slot);
        let mut args: Vec<&str> = vec!["--metrics-addr", &addr];
        for property in self.assignment.properties() {
            args.extend(["-X", property]);
        }
        if self.membership == Membership::Static {
            args.extend(["--group-instance-id", &member]);
        }
        if role == Role::Counter {
            // Its partials come at each trigger: a short one shows a pause to a quarter second.
            args.extend(["--trigger", "250ms"]);
        }
        let service = self.p.service(role.name(), &member, &args);
        self.running.insert((role, slot), Instance { service, addr });
    }

    /// Starts `role`'s lowest free slot; returns it.
    pub fn start_next(&mut self, role: Role) -> usize {
        let slot = self.free_slot(role);
        self.start(role, slot);
        slot
    }

    /// The slots of `role` running now.
    pub fn slots(&self, role: Role) -> Vec<usize> {
        self.running.keys().filter(|(r, _)| *r == role).map(|(_, s)| *s).collect()
    }

    /// The lowest slot of `role` not running.
    pub fn free_slot(&self, role: Role) -> usize {
        (0..).find(|s| !self.running.contains_key(&(role, *s))).unwrap_or(0)
    }

    /// Whether the instance answers `/readyz` with 200 (partitions assigned, and restored).
    pub fn ready(&self, role: Role, slot: usize) -> bool {
        self.running.get(&(role, slot)).is_some_and(|i| http_get(&format!("http://{}/readyz", i.addr)).0 == 200)
    }

    /// Waits (at most `limit`) until the instance is ready; whether it became so.
    pub fn await_ready(&self, role: Role, slot: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.ready(role, slot) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// SIGTERM to every instance in `slots` of `role` at once, then waits for each to exit
    /// (at most `limit`, then SIGKILL). Their exit codes, nonzero ones first.
    pub fn stop(&mut self, role: Role, slots: &[usize], limit: Duration) -> Vec<Option<i32>> {
        let stopping: Vec<Instance> = slots.iter().filter_map(|s| self.running.remove(&(role, *s))).collect();
        stopping.iter().for_each(|i| i.service.ask_to_stop());
        let mut codes: Vec<Option<i32>> = stopping
            .into_iter()
            .map(|mut i| match i.service.exits_within(limit) {
                Some(status) => status.code(),
                None => {
                    i.service.kill();
                    None
                }
            })
            .collect();
        codes.sort_by_key(|c| *c == Some(0));
        codes
    }

    /// SIGKILL to the instance in `slot` of `role`.
    pub fn kill(&mut self, role: Role, slot: usize) {
        if let Some(i) = self.running.remove(&(role, slot)) {
            i.service.kill();
        }
    }

    /// Instances that exited by themselves (none should): their log names.
    pub fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for ((role, slot), instance) in &mut self.running {
            if !instance.service.is_running() {
                gone.push(Self::log(*role, *slot));
            }
        }
        gone
    }

    /// Stops everything (SIGTERM, each within `limit`).
    pub fn stop_all(&mut self, limit: Duration) -> Vec<Option<i32>> {
        let mut codes = Vec::new();
        for role in Role::ALL {
            let slots = self.slots(role);
            codes.extend(self.stop(role, &slots, limit));
        }
        codes
    }
}
