//! Pushes a few inference events, a gauge and some `tracing` logs to a daemon.
//!
//!     cargo run -p modelwatch-client --example quickstart -- http://127.0.0.1:7070
use modelwatch_client::layer::ModelwatchLayer;
use modelwatch_client::{pb, Client, Config, Stage};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

fn main() {
    let endpoint = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:7070".into());
    let mut cfg = Config::new(&endpoint, "quickstart");
    cfg.models = vec![("card-detector".into(), "v2".into())];
    let client = Client::start(cfg);
    let subscriber = tracing_subscriber::registry().with(ModelwatchLayer::new(client.clone(), tracing::Level::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");

    for i in 0..100 {
        let rid = format!("req-{i}");
        let span = tracing::info_span!("request", request_id = %rid);
        let _enter = span.enter();
        let mut t = client.timer("card-detector", &rid);
        t.version("v2").label("card_type", if i % 3 == 0 { "passport" } else { "id_card" });
        std::thread::sleep(Duration::from_millis(1));
        t.stage(Stage::Preprocess);
        std::thread::sleep(Duration::from_millis(2));
        t.stage(Stage::Inference);
        if i % 25 == 0 {
            tracing::warn!(error_type = "LowConfidence", score = 0.41, "low confidence");
            t.finish_err(pb::Status::Error, "LowConfidence");
        } else {
            tracing::info!("done");
            t.finish_ok();
        }
        client.gauge("queue_depth", &[("model", "card-detector")], f64::from(i % 7));
    }
    let ok = client.close(Duration::from_secs(10));
    println!("flushed: {ok}; {:?}", client.stats());
}
