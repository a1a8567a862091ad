//! An example service that reads its config from Mycosynth and reacts to changes.
//!
//! `cargo run --example payment_service -- nats://127.0.0.1:4222` (the demo runs it for you).

use std::time::Duration;

use mycosynth_subscriber::{Credentials, Subscriber};

#[derive(serde::Deserialize)]
struct Database {
    host: String,
    pool_size: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let config = Subscriber::builder("payment-service", "production")
        .nats_url(url)
        // The service's nkey (and TLS files) from MYCOSYNTH_NKEY / MYCOSYNTH_NKEY_FILE /
        // MYCOSYNTH_TLS_*; none for an open dev server.
        .credentials(Credentials::from_env()?)
        .connect()
        .await?;

    let db: Database = config.get_section("database")?;
    let timeout_ms: u64 = config.get("http.timeout_ms")?;
    println!(
        "[payment-service] started at config version {}: database {} (pool {}), timeout {timeout_ms} ms",
        config.version(),
        db.host,
        db.pool_size
    );

    let mut changes = config.subscribe();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            notice = changes.recv() => {
                let Ok(notice) = notice else { break };
                let delay_ms = (notice.applied_at_us - notice.committed_at_us) as f64 / 1000.0;
                for key in &notice.keys {
                    let value: serde_json::Value = config.get(key).unwrap_or(serde_json::Value::Null);
                    println!(
                        "[payment-service] version {}: {key} = {value} (by {}, applied {delay_ms:.2} ms after commit)",
                        notice.version, notice.author
                    );
                }
            }
        }
    }
    Ok(())
}
