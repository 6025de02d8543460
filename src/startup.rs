//! Building and running a node's HTTP server. The listener is bound first, so
//! port 0 works in tests and the real port is known before serving.

use actix_web::HttpServer;
use actix_web::dev::{Server, ServerHandle};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use crate::config::Settings;
use crate::{drain, http};
use crate::node::Node;

/// The address a browser on this machine uses for `bind`.
fn listener_ip(bind: &SocketAddr) -> String {
    match bind.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => "127.0.0.1".into(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

pub struct Application {
    port: u16,
    node: Node,
    server: Server,
    /// The peerconnection_client listener, when `compat.peerconnection.enabled`.
    compat: Option<std::net::TcpListener>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let bind = settings.bind();
        let listener = TcpListener::bind(bind).map_err(|e| anyhow::anyhow!("server.bind: cannot listen on {bind}: {e}"))?;
        let port = listener.local_addr()?.port();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let drain = settings.server.drain;
        let dev = settings.is_dev();
        // A client that stopped reading is ended by the kernel once its data is this old.
        let user_timeout = settings.ws.silent_after() + Duration::from_secs(1);
        let send_buffer = settings.ws.send_buffer_bytes;
        let header_timeout = settings.server.header_timeout;
        let per_ip = crate::http::connections::PerIp::new(
            settings.server.max_conns_per_ip,
            crate::http::request_log::TrustedProxies(settings.server.trusted_proxies.clone()),
        );
        let compat = crate::compat::peerconnection::bind(&settings)?;
        let node = Node::build(settings).await?;
        // Before serving: a restart under a used node id ends what the predecessor left.
        match tokio::time::timeout(Duration::from_secs(5), node.service.take_over()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not look for an earlier incarnation; its lease is swept when it ends"),
            Err(_) => tracing::warn!("looking for an earlier incarnation timed out; its lease is swept when it ends"),
        }
        // Bans hold from the first request on (then each sweep reads them again).
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(5), node.service.refresh_bans()).await.map_err(|_| crate::error::Error::unavailable(anyhow::anyhow!("timed out"))) {
            tracing::warn!(error = %e, "could not read the bans at start; the first sweep reads them");
        }
        let app_node = node.clone();
        // Signals are ours: SIGTERM drains (crate::drain) instead of cutting sockets.
        let server = HttpServer::new(move || http::app(app_node.clone()))
            .workers(workers)
            .disable_signals()
            .on_connect(move |conn, ext| {
                per_ip.on_connect(conn, ext);
                crate::http::connections::watch(conn, ext, header_timeout);
                crate::actors::flow::on_connect(conn, ext, user_timeout, send_buffer);
            })
            // The request head, authenticated or not, within `server.header_timeout_s`.
            .client_request_timeout(header_timeout)
            // Close TCP as soon as a response ends: a WebSocket's Close is answered and
            // the connection gone at once (the default lingers a second, reading).
            .client_disconnect_timeout(Duration::ZERO)
            .shutdown_timeout(drain::shutdown_timeout(drain))
            .listen(listener)?
            .run();
        tracing::info!(port, node_id = %node.id, "listening");
        if dev {
            let ip = listener_ip(&bind);
            tracing::info!("demo page: http://{ip}:{port}/");
        }
        Ok(Self { port, node, server, compat })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The peerconnection_client listener's port, when it is on.
    pub fn compat_port(&self) -> Option<u16> {
        self.compat.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped: drained (`Node::request_drain`,
    /// which the binary calls on SIGTERM and SIGINT), or at once by `handle().stop()`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let sweeper = crate::sweeper::start(self.node.clone());
        let hooks = actix_web::rt::spawn(crate::webhooks::delivery::run(self.node.service.clone(), self.node.metrics.clone()));
        let compat = self.compat.map(|l| actix_web::rt::spawn(crate::compat::peerconnection::serve(self.node.clone(), l)));
        let (node, handle) = (self.node.clone(), self.server.handle());
        let drainer = actix_web::rt::spawn(async move {
            node.drain_requested().await;
            drain::run(&node, handle, sweeper).await;
        });
        let served = self.server.await;
        drainer.abort();
        hooks.abort();
        if let Some(c) = compat {
            c.abort();
        }
        served
    }
}
