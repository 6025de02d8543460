//! Prometheus metrics of one node. Each node owns its registry (no globals),
//! so several nodes can live in one test process. Process metrics (CPU, RSS,
//! open descriptors) come from the Prometheus crate's process collector,
//! under their standard `process_` names.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// `process_*`, without the `camsig_` prefix, as dashboards expect them.
    process: Registry,
    pub http_requests: IntCounterVec,
    pub sessions_open: IntGauge,
    /// Long polls that hold their position and wait for an event.
    pub polls_waiting: IntGauge,
    pub events_delivered: IntCounterVec,
    /// From accepting the call that caused an event to writing it on a socket.
    pub delivery_seconds: Histogram,
    /// Requests sent to Redis and answered (a script or a pipeline counts once).
    pub redis_round_trips: IntCounter,
    /// Session ends Redis has not taken yet, recorded again at every sweep.
    pub session_ends_pending: IntGauge,
    /// Webhooks by receiver (its URL without query or credentials).
    pub webhooks_delivered: IntCounterVec,
    pub webhooks_retried: IntCounterVec,
    pub webhooks_failed: IntCounterVec,
    pub webhooks_buffered: IntGaugeVec,
    /// From the change (the store's clock) to the receiver's 2xx.
    pub webhook_delivery_seconds: Histogram,
}

impl Metrics {
    pub fn new(node_id: &str) -> Self {
        let registry = Registry::new_custom(Some("camsig".into()), Some([("node".to_string(), node_id.to_string())].into()))
            .expect("valid registry labels");
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .unwrap();
        let sessions_open = IntGauge::new("ws_sessions_open", "Open WebSocket sessions").unwrap();
        let polls_waiting = IntGauge::new("long_polls_waiting", "Long polls waiting for an event, their position in the log taken").unwrap();
        let events_delivered = IntCounterVec::new(
            Opts::new("events_delivered_total", "Events written to WebSocket sessions, by action"),
            &["action"],
        )
        .unwrap();
        let delivery_seconds = Histogram::with_opts(
            HistogramOpts::new("event_delivery_seconds", "Time from accepting a call to writing its event on a socket")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .unwrap();
        registry.register(Box::new(http_requests.clone())).unwrap();
        registry.register(Box::new(sessions_open.clone())).unwrap();
        registry.register(Box::new(polls_waiting.clone())).unwrap();
        registry.register(Box::new(events_delivered.clone())).unwrap();
        let redis_round_trips = IntCounter::new("redis_round_trips_total", "Round trips to Redis (a script or a pipeline counts once)").unwrap();
        registry.register(Box::new(delivery_seconds.clone())).unwrap();
        registry.register(Box::new(redis_round_trips.clone())).unwrap();
        let session_ends_pending = IntGauge::new("session_ends_pending", "Session ends Redis has not taken yet; each sweep records them again").unwrap();
        registry.register(Box::new(session_ends_pending.clone())).unwrap();
        let per_receiver = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["receiver"]).unwrap();
        let webhooks_delivered = per_receiver("webhooks_delivered_total", "Webhooks a receiver answered with a 2xx");
        let webhooks_retried = per_receiver("webhooks_retried_total", "Webhook tries that failed and will be tried again");
        let webhooks_failed = per_receiver("webhooks_failed_total", "Webhooks given up after webhooks.max_attempts, kept in the dead letters");
        let webhooks_buffered = IntGaugeVec::new(Opts::new("webhooks_buffered", "Webhooks this node holds in memory to deliver"), &["receiver"]).unwrap();
        let webhook_delivery_seconds = Histogram::with_opts(
            HistogramOpts::new("webhook_delivery_seconds", "Time from a change to its webhook's 2xx")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )
        .unwrap();
        registry.register(Box::new(webhooks_delivered.clone())).unwrap();
        registry.register(Box::new(webhooks_retried.clone())).unwrap();
        registry.register(Box::new(webhooks_failed.clone())).unwrap();
        registry.register(Box::new(webhooks_buffered.clone())).unwrap();
        registry.register(Box::new(webhook_delivery_seconds.clone())).unwrap();
        // Every series exists from the start, at 0, so rates and alerts work
        // before the first event of a kind.
        for action in crate::domain::names::EVENTS.iter().map(|e| e.name) {
            events_delivered.with_label_values(&[action]).reset();
        }
        let process = Registry::new_custom(None, Some([("node".to_string(), node_id.to_string())].into())).expect("valid registry labels");
        process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).unwrap();
        Self {
            registry,
            process,
            http_requests,
            sessions_open,
            polls_waiting,
            events_delivered,
            delivery_seconds,
            redis_round_trips,
            session_ends_pending,
            webhooks_delivered,
            webhooks_retried,
            webhooks_failed,
            webhooks_buffered,
            webhook_delivery_seconds,
        }
    }

    /// Counts one event written to a socket and how long it took to get there.
    pub fn delivered(&self, action: &str, accepted_us: i64) {
        self.events_delivered.with_label_values(&[action]).inc();
        let waited = crate::domain::event::now_us() - accepted_us;
        if waited >= 0 {
            self.delivery_seconds.observe(waited as f64 / 1e6);
        }
    }

    /// Every webhook series of these receivers exists from the start, at 0.
    pub fn webhook_receivers(&self, urls: &[String]) {
        for u in urls.iter().map(|u| crate::webhooks::label_of(u)) {
            self.webhooks_delivered.with_label_values(&[&u]).reset();
            self.webhooks_retried.with_label_values(&[&u]).reset();
            self.webhooks_failed.with_label_values(&[&u]).reset();
            self.webhooks_buffered.with_label_values(&[&u]).set(0);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new().encode(&families, &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
