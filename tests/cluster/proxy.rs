//! A TCP proxy between nodes and Redis that a test turns against them: cut
//! the pub/sub links, refuse new connections, black-hole the pub/sub links
//! (half-open: nothing goes through, nothing is closed) or hold everything (a
//! partition; bytes pass again when it heals, as TCP retransmits them), or
//! let a command through and lose its answer (`lose_answers_after`). A link
//! is pub/sub once its client sent SUBSCRIBE.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::cluster::Redis;

#[derive(Default)]
struct Link {
    pubsub: AtomicBool,
    blackholed: AtomicBool,
    cut: Mutex<Option<watch::Sender<bool>>>,
}

#[derive(Default)]
struct State {
    refuse: AtomicBool,
    partition: AtomicBool,
    /// The first command link that sends these bytes passes them, then nothing more.
    lose_after: Mutex<Option<Vec<u8>>>,
    links: Mutex<Vec<Arc<Link>>>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<State>,
}

impl Proxy {
    pub async fn start(redis: &Redis) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let upstream = redis.port;
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let (tx, rx) = watch::channel(false);
                let link = Arc::new(Link { cut: Mutex::new(Some(tx)), ..Link::default() });
                st.links.lock().unwrap().push(link.clone());
                tokio::spawn(pump(client, server, link, st.clone(), rx));
            }
        });
        Proxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn pubsub_links(&self) -> Vec<Arc<Link>> {
        self.state.links.lock().unwrap().iter().filter(|l| l.pubsub.load(Ordering::SeqCst)).cloned().collect()
    }

    /// Closes every pub/sub link; returns how many there were.
    pub fn cut_pubsub(&self) -> usize {
        let links = self.pubsub_links();
        for l in &links {
            if let Some(tx) = l.cut.lock().unwrap().take() {
                let _ = tx.send(true);
            }
        }
        links.len()
    }

    /// New connections are closed at once while set.
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }

    /// The pub/sub links open now pass nothing more, either way, and stay open.
    pub fn blackhole_pubsub(&self) -> usize {
        let links = self.pubsub_links();
        for l in &links {
            l.blackholed.store(true, Ordering::SeqCst);
        }
        links.len()
    }

    /// The command links open now (every one not pub/sub) pass nothing more,
    /// either way, and stay open: a half-open command connection.
    pub fn blackhole_commands(&self) -> usize {
        let links: Vec<_> = self.state.links.lock().unwrap().iter().filter(|l| !l.pubsub.load(Ordering::SeqCst)).cloned().collect();
        for l in &links {
            l.blackholed.store(true, Ordering::SeqCst);
        }
        links.len()
    }

    /// The next command containing `pattern` reaches Redis and runs; its
    /// answer, and everything after on that link, is held for good.
    pub fn lose_answers_after(&self, pattern: &[u8]) {
        *self.state.lose_after.lock().unwrap() = Some(pattern.to_vec());
    }

    /// While set, nothing passes on any link, old or new.
    pub fn partition(&self, on: bool) {
        self.state.partition.store(on, Ordering::SeqCst);
    }
}

async fn pump(client: TcpStream, server: TcpStream, link: Arc<Link>, state: Arc<State>, cut: watch::Receiver<bool>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Held bytes are not dropped but delayed, as TCP does across a partition.
    let held = || async {
        while link.blackholed.load(Ordering::SeqCst) || state.partition.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            held().await;
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                link.pubsub.store(true, Ordering::SeqCst);
            }
            held().await;
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let mut lose = state.lose_after.lock().unwrap();
            if lose.as_ref().is_some_and(|p| buf[..n].windows(p.len()).any(|w| w == p.as_slice())) {
                *lose = None;
                link.blackholed.store(true, Ordering::SeqCst);
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            held().await;
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            held().await;
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let mut cut = cut;
    tokio::select! {
        () = up => {}
        () = down => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}
