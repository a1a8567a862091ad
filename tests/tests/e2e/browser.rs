//! The browser harness itself: a real headless Chromium (through chromedriver) loads a page
//! served on a free loopback port, the test reads an element's text back through the browser,
//! and a screenshot lands in `target/console/`.

use axum::response::Html;
use axum::routing::get;
use mycosynth_testkit::browser::Browser;

#[tokio::test]
async fn chromium_reads_a_served_page_and_screenshots_it() {
    // The text is made at run time, so the page cannot pass by a cached or fixed answer.
    let marker = format!("harness-{}", std::process::id());
    let page = format!(
        "<!doctype html><title>smoke</title><h1 id=\"greeting\">hello</h1>\
         <p id=\"late\"></p>\
         <script>document.getElementById('late').textContent = '{marker}';</script>"
    );
    let app = axum::Router::new().route("/", get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await;
    let driver_pid = browser.driver_pid().expect("chromedriver pid");
    browser.goto(&url).await;
    assert_eq!(browser.text("#greeting").await, "hello");
    // Set by the page's script: proves JavaScript ran in a real browser.
    assert_eq!(browser.text("#late").await, marker);

    let shot = browser.screenshot("browser-smoke").await;
    let png = std::fs::read(&shot).expect("read screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{} is not a PNG of the page ({} bytes)",
        shot.display(),
        png.len()
    );

    browser.close().await;
    // The chromedriver this harness started is gone (kill(pid, 0) fails for a reaped PID).
    // SAFETY: kill(2) with signal 0 only checks the PID.
    let alive = unsafe { libc::kill(driver_pid as i32, 0) } == 0;
    assert!(
        !alive,
        "chromedriver {driver_pid} still running after close"
    );
    server.abort();
}
