//! Building and running a node's HTTP server. The listener is bound first, so
//! port 0 works in tests and the real port is known before serving.

use actix_web::HttpServer;
use actix_web::dev::{Server, ServerHandle};
use std::net::TcpListener;

use crate::config::Settings;
use crate::http;
use crate::node::Node;

pub struct Application {
    port: u16,
    node: Node,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.server.bind)
            .map_err(|e| anyhow::anyhow!("server.bind: cannot listen on {}: {e}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let node = Node::build(settings).await?;
        let app_node = node.clone();
        let server = HttpServer::new(move || http::app(app_node.clone()))
            .workers(workers)
            .shutdown_timeout(5)
            .listen(listener)?
            .run();
        tracing::info!(port, node_id = %node.id, "listening");
        Ok(Self { port, node, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (signal or `handle().stop()`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let _sweeper = crate::sweeper::start(self.node.clone());
        self.server.await
    }
}
