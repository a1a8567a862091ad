//! The console's server render: the namespace page of 1,000 keys, asked over HTTP from a
//! console served in this process (open mode) against the real validator, one request after
//! another. Each sample is the whole page as a browser gets it: the console's reads through the
//! validator (values, schema) and the template.

use std::time::{Duration, Instant};

use mycosynth::client::ApiClient;
use mycosynth::console::{self, Console};
use mycosynth_testkit::console::http;

use crate::{histogram, paths, Summary};

/// Renders of the namespace page of `keys` keys: `samples` of them after 20 of warm-up.
pub async fn namespace_page(api: &ApiClient, url: &str, keys: usize, samples: u64) -> Summary {
    let ns = "console-bench";
    paths::seed_keys(api, ns, keys).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let client = ApiClient::connect(url, Duration::from_secs(10))
        .await
        .expect("console's client");
    let server = tokio::spawn(console::serve(listener, Console::new(client, None, false)));
    // The first answer sets the session cookie every later request sends.
    let first = tokio::task::spawn_blocking(move || http(port, "GET", "/", None, None))
        .await
        .expect("first page");
    let cookie = first
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let path = format!("/ns/{ns}/prod");
    let mut h = histogram();
    for i in 0..20 + samples {
        let (cookie, path) = (cookie.clone(), path.clone());
        let (elapsed, answer) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let answer = http(port, "GET", &path, Some(&cookie), None);
            (started.elapsed(), answer)
        })
        .await
        .expect("render");
        assert_eq!(answer.status, 200, "{}", answer.body);
        if i == 0 {
            let rows = answer.body.matches("<tr data-key=").count();
            assert_eq!(rows, keys, "the page shows every key");
        }
        if i >= 20 {
            let _ = h.record(elapsed.as_nanos() as u64);
        }
    }
    server.abort();
    Summary::of(&h)
}
