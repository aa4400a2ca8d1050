//! Runs `supervise::run` in-process for the tests, and waits for requests to land in a queue.
//! Shared with the orchestrator's integration tests (included there by path).

#![allow(dead_code)]

use std::path::Path;

/// `supervise::run` on 127.0.0.1:0 in a runtime of its own; stopped (gracefully) on drop.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub fn start(config: supervise::Config) -> Server {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).unwrap();
                supervise::run(config, listener, async move {
                    let _ = rx.await;
                })
                .await
            })
        });
        let addr = addr_rx.recv().expect("server started");
        Server { addr, stop: Some(tx), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Stops the server and returns what `run` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn config(queue_dir: &Path, wait_secs: u64) -> supervise::Config {
    config_with(queue_dir, wait_secs, &[])
}

/// The config the flags `--queue-dir DIR --bottle b1 --wait-timeout SECS` and `extra` make.
pub fn config_with(queue_dir: &Path, wait_secs: u64, extra: &[&str]) -> supervise::Config {
    use clap::Parser as _;
    let (dir, wait) = (queue_dir.to_str().unwrap().to_string(), wait_secs.to_string());
    let mut argv = vec!["supervise", "--listen", "127.0.0.1:0", "--queue-dir", &dir, "--bottle", "b1"];
    argv.extend(["--wait-timeout", &wait]);
    argv.extend_from_slice(extra);
    let args = supervise::Args::try_parse_from(argv).unwrap_or_else(|e| panic!("supervise flags {extra:?}: {e}"));
    args.validate(None).unwrap_or_else(|e| panic!("supervise flags {extra:?}: {e}")).1
}

/// Waits (polling, bounded) until `dir` holds a request not in `seen`, and returns its id.
pub fn next_request(dir: &Path, seen: &mut Vec<String>) -> String {
    for _ in 0..600 {
        let mut ids: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".request.json").map(str::to_string))
            .filter(|id| !id.starts_with('.') && !seen.contains(id))
            .collect();
        if let Some(id) = ids.pop() {
            seen.push(id.clone());
            return id;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no new request appeared in {}", dir.display());
}
