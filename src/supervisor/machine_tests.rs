//! The instance state machine and its runner in paused time, with a fake host: no process, no
//! port, no sleep that costs real time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{self, EventKind};
use super::machine::{Exit, Machine};
use super::probe::Expect;
use super::runner::{self, Adoption, Host, InstanceHandle, Process, Shared, SpawnError};
use super::status::{InstanceStatus, State};
use crate::topology::{GatewaySpec, Instance, Location};

/// How a fake child reacts to signals.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Temper {
    /// Exits on the stop signal.
    Obedient,
    /// Ignores everything but SIGKILL.
    Stubborn,
}

#[derive(Default)]
struct World {
    next_pid: u32,
    /// Spawn times (virtual), in order.
    spawns: Vec<Instant>,
    ports_taken: Option<String>,
    spawn_error: Option<SpawnError>,
    /// What probes answer.
    ready: bool,
    live: bool,
    temper: Option<Temper>,
    /// pid -> the sender that ends that child.
    children: BTreeMap<u32, watch::Sender<Option<Exit>>>,
    signals: Vec<(u32, Signal)>,
    reaped: Vec<u32>,
}

#[derive(Clone, Default)]
struct FakeHost {
    world: Arc<Mutex<World>>,
}

struct FakeProcess {
    pid: u32,
    exit: watch::Receiver<Option<Exit>>,
    temper: Temper,
    world: Arc<Mutex<World>>,
}

fn exit_code(code: i32) -> Exit {
    Exit {
        code: Some(code),
        signal: None,
        description: format!("exit code {code}"),
    }
}

fn by_signal(signal: Signal) -> Exit {
    Exit {
        code: None,
        signal: Some(signal as i32),
        description: format!("signal {} ({signal})", signal as i32),
    }
}

impl FakeHost {
    fn with(edit: impl FnOnce(&mut World)) -> FakeHost {
        let host = FakeHost::default();
        {
            let mut world = host.world.lock().unwrap();
            world.next_pid = 100;
            world.ready = true;
            world.live = true;
            edit(&mut world);
        }
        host
    }

    fn edit(&self, edit: impl FnOnce(&mut World)) {
        edit(&mut self.world.lock().unwrap());
    }

    fn spawns(&self) -> Vec<Instant> {
        self.world.lock().unwrap().spawns.clone()
    }

    fn signals(&self) -> Vec<(u32, Signal)> {
        self.world.lock().unwrap().signals.clone()
    }

    /// Ends the child `pid` on its own.
    fn crash(&self, pid: u32, exit: Exit) {
        let world = self.world.lock().unwrap();
        world.children[&pid].send_replace(Some(exit));
    }

    fn fake_process(&self, temper: Temper) -> FakeProcess {
        let mut world = self.world.lock().unwrap();
        world.next_pid += 1;
        let pid = world.next_pid;
        let (end, exit) = watch::channel(None);
        world.children.insert(pid, end);
        FakeProcess {
            pid,
            exit,
            temper,
            world: self.world.clone(),
        }
    }
}

impl Host for FakeHost {
    type Process = FakeProcess;

    fn retire(&self, _instance: &str) {}

    async fn check_ports(&self, _instance: &Instance) -> Result<(), String> {
        match self.world.lock().unwrap().ports_taken.clone() {
            Some(holder) => Err(holder),
            None => Ok(()),
        }
    }

    async fn spawn(
        &self,
        _instance: &Instance,
        _status: &InstanceStatus,
    ) -> Result<FakeProcess, SpawnError> {
        let (error, temper) = {
            let mut world = self.world.lock().unwrap();
            world.spawns.push(Instant::now());
            (world.spawn_error.clone(), world.temper)
        };
        if let Some(error) = error {
            return Err(error);
        }
        Ok(self.fake_process(temper.unwrap_or(Temper::Obedient)))
    }
}

impl Process for FakeProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait(&mut self) -> Exit {
        let exit = self
            .exit
            .wait_for(Option::is_some)
            .await
            .expect("the world keeps its children");
        exit.clone().expect("waited for it")
    }

    fn signal(&mut self, signal: Signal) {
        let mut world = self.world.lock().unwrap();
        world.signals.push((self.pid, signal));
        let acts = match self.temper {
            Temper::Obedient => true,
            Temper::Stubborn => false,
        };
        if acts {
            world.children[&self.pid].send_replace(Some(by_signal(signal)));
        }
    }

    fn kill(&mut self) {
        let mut world = self.world.lock().unwrap();
        world.signals.push((self.pid, Signal::SIGKILL));
        world.children[&self.pid].send_replace(Some(by_signal(Signal::SIGKILL)));
    }

    async fn reap(self) {
        self.world.lock().unwrap().reaped.push(self.pid);
    }

    // Not an `async fn`: the probe must not borrow the process (it is polled beside it).
    #[allow(clippy::manual_async_fn)]
    fn probe(
        &mut self,
        _port: u16,
        _path: String,
        expect: Expect,
        _timeout: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let world = self.world.clone();
        async move {
            let world = world.lock().unwrap();
            let ok = match expect {
                Expect::Ready => world.ready,
                Expect::Live => world.live,
            };
            if ok { Ok(()) } else { Err("no".into()) }
        }
    }
}

fn instance(edit: impl FnOnce(&mut GatewaySpec)) -> Instance {
    let mut spec = GatewaySpec {
        profile: Some("main".into()),
        ..GatewaySpec::default()
    };
    edit(&mut spec);
    spec.resolve(
        20000,
        Path::new("/home/ada"),
        Path::new("/srv"),
        Location {
            file: "reef.lua".into(),
            line: 1,
        },
    )
    .unwrap()
}

fn shared() -> Shared {
    Shared {
        events: events::bus(),
        changed: Arc::new(watch::channel(0u64).0),
        hurry: CancellationToken::new(),
    }
}

fn start(host: &FakeHost, instance: Instance, shared: &Shared) -> InstanceHandle {
    let machine = Machine::new(instance, "/tmp/main.log".into(), 0.0).with_jitter(|| 0.5);
    runner::spawn(
        machine,
        Arc::new(host.clone()),
        shared.clone(),
        Vec::new(),
        None,
    )
}

async fn until(handle: &InstanceHandle, what: &str, test: impl Fn(&InstanceStatus) -> bool) {
    let mut status = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(3600), status.wait_for(|s| test(s)))
        .await
        .unwrap_or_else(|_| panic!("never {what}: {:?}", handle.status()))
        .expect("the task is alive");
}

async fn state(handle: &InstanceHandle, state: State) {
    until(handle, &state.to_string(), |s| s.state == state).await;
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_exponentially_and_commands_do_not_cut_it_short() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let spec = instance(|_| {});
    let handle = start(&host, spec.clone(), &shared);
    for round in 0..5u32 {
        until(&handle, "a new process", |s| {
            s.state == State::Ready && s.restarts == round
        })
        .await;
        host.crash(handle.status().pid.unwrap(), exit_code(1));
        if round >= 1 {
            state(&handle, State::Backoff).await;
            // Neither a start nor a live update ends the delay early.
            assert!(handle.start().await.unwrap().contains("already restarting"));
            let mut live = spec.clone();
            live.health.interval = 3.0;
            handle.respec(live, Vec::new(), false).await;
            assert_eq!(handle.status().state, State::Backoff);
        }
    }
    until(&handle, "a sixth process", |s| s.restarts == 5).await;
    let spawns = host.spawns();
    let gaps: Vec<f64> = spawns
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // First restart at once, then 0.5, 1, 2, 4 s (jitter fixed at the middle).
    let expected = [0.0, 0.5, 1.0, 2.0, 4.0];
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            (gap - want).abs() < 0.05,
            "restart gaps {gaps:?}, expected about {expected:?}"
        );
    }
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_restart_ends_a_backoff_and_resets_it() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    for _ in 0..4 {
        state(&handle, State::Ready).await;
        host.crash(handle.status().pid.unwrap(), exit_code(1));
        state(&handle, State::Starting).await;
    }
    state(&handle, State::Ready).await;
    host.crash(handle.status().pid.unwrap(), exit_code(1));
    state(&handle, State::Backoff).await;
    let before = Instant::now();
    assert_eq!(handle.restart().await.unwrap(), "starting");
    state(&handle, State::Ready).await;
    assert!(Instant::now() - before < Duration::from_millis(100));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stop_during_start_and_during_backoff() {
    let host = FakeHost::with(|w| w.ready = false);
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Starting).await;
    let pid = handle.status().pid.unwrap();
    let answer = handle.stop().await.unwrap();
    assert!(answer.starts_with("stopped"), "{answer}");
    assert_eq!(handle.status().state, State::Stopped);
    assert_eq!(host.signals(), [(pid, Signal::SIGTERM)]);

    host.edit(|w| w.ready = true);
    handle.start().await.unwrap();
    state(&handle, State::Ready).await;
    for _ in 0..2 {
        host.crash(handle.status().pid.unwrap(), exit_code(1));
        state(&handle, State::Starting).await;
        state(&handle, State::Ready).await;
    }
    host.crash(handle.status().pid.unwrap(), exit_code(1));
    state(&handle, State::Backoff).await;
    let spawned = host.spawns().len();
    assert_eq!(handle.stop().await.unwrap(), "stopped");
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        host.spawns().len(),
        spawned,
        "no spawn after a stop in backoff"
    );
    assert_eq!(handle.status().state, State::Stopped);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failing_liveness_restarts_after_three_probes() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let mut events = shared.events.subscribe();
    let spec = instance(|s| {
        s.health = Some(crate::topology::HealthSpec {
            interval: Some(10.0),
            ..Default::default()
        })
    });
    let handle = start(&host, spec, &shared);
    state(&handle, State::Ready).await;
    let first = handle.status().pid.unwrap();
    let ready_at = Instant::now();
    host.edit(|w| w.live = false);
    state(&handle, State::Unhealthy).await;
    host.edit(|w| w.ready = false);
    until(&handle, "a new process", |s| {
        s.pid.is_some_and(|p| p != first)
    })
    .await;
    let took = Instant::now() - ready_at;
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "three failures 10 s apart: {took:?}"
    );
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        kinds.push(event.kind);
    }
    assert!(
        kinds
            .iter()
            .any(|k| matches!(k, EventKind::Unhealthy { .. }))
    );
    assert!(kinds.iter().any(|k| matches!(
        k,
        EventKind::Exited { reason: Some(reason), .. } if reason.contains("liveness")
    )));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_gateway_not_ready_within_its_start_period_is_restarted() {
    let host = FakeHost::with(|w| w.ready = false);
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Starting).await;
    let started = Instant::now();
    until(&handle, "a second process", |s| s.restarts == 1).await;
    let took = Instant::now() - started;
    assert!(
        took > Duration::from_secs(120) && took < Duration::from_secs(121),
        "the default start period is 120 s: {took:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stubborn_gateway_gets_sigkill_after_its_stop_timeout_or_sooner_when_hurried() {
    let host = FakeHost::with(|w| w.temper = Some(Temper::Stubborn));
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Ready).await;
    let pid = handle.status().pid.unwrap();
    let before = Instant::now();
    handle.restart().await.unwrap();
    let took = Instant::now() - before;
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "the default stop timeout is 10 s: {took:?}"
    );
    assert_eq!(
        host.signals(),
        [(pid, Signal::SIGTERM), (pid, Signal::SIGKILL)]
    );

    state(&handle, State::Ready).await;
    let stopping = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.shutdown().await })
    };
    state(&handle, State::Stopping).await;
    let before = Instant::now();
    shared.hurry.cancel();
    stopping.await.unwrap();
    let took = Instant::now() - before;
    assert!(took <= Duration::from_secs(1), "hurried: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stop_that_begins_after_the_hurry_gets_the_short_grace_too() {
    let host = FakeHost::with(|w| w.temper = Some(Temper::Stubborn));
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Ready).await;
    shared.hurry.cancel();
    // Let the task see the hurry before its stop begins (dependents stop first, say).
    tokio::time::sleep(Duration::from_millis(1)).await;
    let before = Instant::now();
    handle.shutdown().await;
    let took = Instant::now() - before;
    assert!(took <= Duration::from_secs(1), "hurried: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn commands_are_served_while_a_stop_is_in_progress() {
    let host = FakeHost::with(|w| w.temper = Some(Temper::Stubborn));
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Ready).await;
    let stopping = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.stop().await })
    };
    state(&handle, State::Stopping).await;
    // A start during the stop is answered at once and wins once the stop is over.
    let answer = handle.start().await.unwrap();
    assert!(answer.contains("once the current stop is over"), "{answer}");
    assert_eq!(stopping.await.unwrap().unwrap(), "restarting");
    state(&handle, State::Ready).await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exit_78_is_a_config_error_until_a_manual_restart() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Ready).await;
    host.crash(handle.status().pid.unwrap(), exit_code(78));
    state(&handle, State::ConfigError).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(host.spawns().len(), 1, "no restart loop on a config error");
    assert!(
        handle
            .status()
            .message
            .unwrap()
            .contains("reef restart main")
    );
    handle.restart().await.unwrap();
    state(&handle, State::Ready).await;
    assert_eq!(host.spawns().len(), 2);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn blocked_ports_are_retried_and_a_lasting_spawn_error_ends_the_instance() {
    let host = FakeHost::with(|w| w.ports_taken = Some("port 20000 is held by pid 7".into()));
    let shared = shared();
    let handle = start(&host, instance(|_| {}), &shared);
    state(&handle, State::Blocked).await;
    host.edit(|w| {
        w.ports_taken = None;
        w.spawn_error = Some(SpawnError {
            message: "cannot start `x`: no such file".into(),
            lasting: true,
        });
    });
    state(&handle, State::Exited).await;
    assert!(handle.status().message.unwrap().contains("no such file"));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_adopted_gateway_keeps_its_restart_count_and_last_exit() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let machine = Machine::new(instance(|_| {}), "/tmp/main.log".into(), 0.0);
    let process = host.fake_process(Temper::Obedient);
    let pid = process.pid;
    let handle = runner::spawn(
        machine,
        Arc::new(host.clone()),
        shared.clone(),
        Vec::new(),
        Some(Adoption {
            process,
            started_at: 12.0,
            restarts: 4,
            last_exit: Some("exit code 1".into()),
        }),
    );
    until(&handle, "adopted and ready", |s| {
        s.state == State::Ready && s.adopted
    })
    .await;
    let status = handle.status();
    assert_eq!(status.pid, Some(pid));
    assert_eq!(status.restarts, 4);
    assert_eq!(status.started_at, Some(12.0));
    assert_eq!(status.last_exit.as_deref(), Some("exit code 1"));
    assert!(host.spawns().is_empty(), "adopted, not spawned");
    host.crash(pid, exit_code(1));
    until(&handle, "restarted", |s| {
        s.restarts == 5 && s.state == State::Ready
    })
    .await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_spec_restarts_a_running_gateway_and_ends_a_backoff() {
    let host = FakeHost::with(|_| {});
    let shared = shared();
    let spec = instance(|_| {});
    let handle = start(&host, spec.clone(), &shared);
    state(&handle, State::Ready).await;
    let first = handle.status().pid.unwrap();
    let mut changed = spec.clone();
    changed.args = vec!["--verbose".into()];
    handle.respec(changed.clone(), Vec::new(), true).await;
    until(&handle, "the new process", |s| {
        s.state == State::Ready && s.pid != Some(first)
    })
    .await;
    assert_eq!(host.reaped_len(), 1);
    handle.shutdown().await;
    assert_eq!(handle.status().state, State::Stopped);
}

impl FakeHost {
    fn reaped_len(&self) -> usize {
        self.world.lock().unwrap().reaped.len()
    }
}
