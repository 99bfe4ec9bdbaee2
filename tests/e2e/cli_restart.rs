//! `steerer watch` keeps going when the server goes away mid-rollout and comes back: it
//! reconnects, resumes after the last event it printed, and ends with every event exactly once.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli_support::{events, sequences, steerer};
use crate::common::Harness;
use steerer::v1::{Analysis, EventType, Phase};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Serves again on `addr` (the address the watcher knows), retrying while the old socket
/// goes away.
async fn serve_again_on(h: &Harness, addr: SocketAddr) -> JoinHandle<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind {addr} again: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (config, kube) = (h.config.clone(), h.kube.clone());
    tokio::spawn(async move {
        steerer_server::serve(config, listener, kube, std::future::pending())
            .await
            .unwrap();
    })
}

/// A TCP forwarder in front of the server. An in-process "crash" (aborting the server task)
/// leaves accepted connections alive, which a real crash would not; cutting the proxy's
/// connections gives the client what a dead process gives it: reset connections, then
/// refused or dropped ones until the new server is up.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let (cuts, _) = watch::channel(0u64);
        let task = {
            let target = target.clone();
            let cuts = cuts.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let to = *target.lock().unwrap();
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(to).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Proxy {
            addr,
            target,
            cuts,
            task,
        }
    }

    /// Drops every open connection.
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for the watcher to exit, killing it (and failing) if it has not within `limit`.
async fn wait_for(mut child: Child, limit: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            out.read_to_end(&mut buf).unwrap();
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            err.read_to_end(&mut buf).unwrap();
            buf
        });
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                let stdout = String::from_utf8(out_reader.join().unwrap()).unwrap();
                panic!("the watcher did not end within {limit:?}; it printed:\n{stdout}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Starts a rollout, starts `steerer watch` on it through `watch_addr`, lets it see a few
/// steps, runs `restart`, and checks the watcher's output.
async fn check_watch_across(
    h: &mut Harness,
    watch_addr: SocketAddr,
    restart: impl AsyncFnOnce(&mut Harness),
) {
    let started = h
        .start_rollout(h.request(Analysis {
            step_weight: Some(20),
            ..Default::default()
        }))
        .await;
    let watcher = steerer(watch_addr)
        .args(["watch", &started.id, "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Followed on the event stream, not polled: a poll can miss the whole stretch from 40%
    // to the end when the machine is busy, and restart a server whose rollout is over.
    crate::common::events_until(
        &mut h.client,
        &started.id,
        0,
        Duration::from_secs(30),
        |e| e.r#type() == EventType::WeightChanged && e.canary_weight >= 40,
    )
    .await;
    let before = h.get(&started.id).await;
    assert_eq!(
        before.phase(),
        Phase::Progressing,
        "the restart must come mid-rollout: {}",
        before.message
    );

    restart(h).await;
    let out = wait_for(watcher, Duration::from_secs(90)).await;

    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    let records = crate::cli_support::json_lines(&out);
    let events = events(&records);
    let done = h.get(&started.id).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{}", done.message);
    assert_eq!(
        sequences(&events),
        (1..=done.last_sequence).collect::<Vec<_>>(),
        "every event exactly once, in order"
    );
    let weights: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "WEIGHT_CHANGED")
        .map(|e| e["canary_weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [20, 40, 60, 80, 100]);
    assert_eq!(records.last().unwrap()["phase"], "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_going_across_a_graceful_restart_on_the_same_address() {
    let mut h = Harness::start().await;
    let addr = h.addr();
    let mut restarted = None;
    check_watch_across(&mut h, addr, async |h: &mut Harness| {
        h.server.take().unwrap().stop().await.unwrap();
        restarted = Some(serve_again_on(h, addr).await);
        h.client = crate::common::connect(addr).await;
    })
    .await;
    restarted.unwrap().abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keeps_going_across_a_server_crash() {
    let mut h = Harness::start().await;
    let proxy = Proxy::start(h.addr()).await;
    check_watch_across(&mut h, proxy.addr, async |h: &mut Harness| {
        h.server.take().unwrap().kill().await;
        proxy.cut();
        // Connections made while no server runs are dropped at once, like refused ones.
        proxy.retarget(SocketAddr::from(([127, 0, 0, 1], 1)));
        h.crash_and_restart().await;
        proxy.retarget(h.addr());
    })
    .await;
}
