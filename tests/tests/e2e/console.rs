//! The web console in a real headless Chromium (Debian's, through chromedriver): an edit
//! reaching a running subscriber, an invalid value refused inline with nothing written, a
//! rollback from the history page, a change request proposed by one person and approved by
//! another (each signed in with their own key), the fleet page updating live when a
//! subscriber joins, a script value rendered inert, and a form without its CSRF token refused;
//! the cookie's attributes, reading and previewing without JavaScript, labels and keyboard
//! reach. Every page visited is saved as a screenshot in `target/console/`.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use mycosynth::access::session_token;
use mycosynth::client::ApiClient;
use mycosynth_subscriber::wire::{
    endpoint, ChangeOutcome, GetOutcome, GetRequest, SchemaPushRequest,
};
use mycosynth_subscriber::{Credentials, Subscriber};
use mycosynth_testkit::browser::Browser;
use mycosynth_testkit::console::{http, ConsoleServer};
use mycosynth_testkit::{dev_public_key, dev_seed, dev_seed_file, NatsServer, Validator};
use serde_json::{json, Value};

use super::security::{run_as, set_policy};
use super::{change_request, stderr};

const NS: &str = "checkout";

/// A schema with a bounded integer, a boolean, an enum and a free string.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "http.timeout_ms": {"type": "integer", "minimum": 10, "maximum": 60000, "description": "Card processor timeout"},
            "feature.new_flow": {"type": "boolean", "default": false},
            "log.level": {"type": "string", "enum": ["debug", "info", "warn"]},
            "banner": {"type": "string"}
        }
    })
}

/// Open mode: a plain server, a validator, the schema, and a console.
struct Open {
    nats: NatsServer,
    _validator: Validator,
    api: ApiClient,
    console: ConsoleServer,
}

async fn open() -> Open {
    let nats = NatsServer::start();
    let validator = Validator::start(&nats.url(), &[]);
    let api = ApiClient::connect(&nats.url(), Duration::from_secs(10))
        .await
        .expect("api");
    let push = SchemaPushRequest {
        namespace: NS.into(),
        schema: schema(),
        author: "test".into(),
        force: false,
    };
    let _: Value = api
        .call(endpoint::SCHEMA_PUSH, &push)
        .await
        .expect("schema");
    let console = ConsoleServer::start(&nats.url(), None);
    Open {
        nats,
        _validator: validator,
        api,
        console,
    }
}

async fn set(api: &ApiClient, env: &str, pairs: &[(&str, Value)]) -> ChangeOutcome {
    api.call(endpoint::CHANGE, &change_request(NS, env, pairs))
        .await
        .expect("change accepted")
}

async fn live(api: &ApiClient, env: &str) -> GetOutcome {
    let request = GetRequest {
        namespace: NS.into(),
        environment: env.into(),
        key: None,
    };
    api.call(endpoint::GET, &request).await.expect("get")
}

fn value_of(outcome: &GetOutcome, key: &str) -> Option<Value> {
    outcome
        .values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, r)| r.value.clone())
}

/// The element at `css` (waiting up to 10 s).
async fn find(browser: &Browser, css: &str) -> fantoccini::elements::Element {
    match browser
        .client()
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            let page = browser.client().source().await.unwrap_or_default();
            panic!("element {css}: {e}; the page:\n{page}")
        }
    }
}

async fn click(browser: &Browser, css: &str) {
    find(browser, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn type_into(browser: &Browser, css: &str, text: &str) {
    let field = find(browser, css).await;
    field
        .clear()
        .await
        .unwrap_or_else(|e| panic!("clear {css}: {e}"));
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

/// Waits (up to 10 s) until the text of `css` contains `wanted`; returns it.
async fn text_containing(browser: &Browser, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = find(browser, css).await.text().await.unwrap_or_default();
        if text.contains(wanted) || Instant::now() > deadline {
            assert!(text.contains(wanted), "{css}: {text:?} lacks {wanted:?}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_edit_in_the_browser_reaches_a_running_subscriber() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(250))]).await;
    set(&stack.api, "staging", &[("http.timeout_ms", json!(900))]).await;
    let subscriber = Subscriber::builder(NS, "prod")
        .nats_url(stack.nats.url())
        .connect()
        .await
        .expect("subscriber");
    assert_eq!(subscriber.get::<i64>("http.timeout_ms").ok(), Some(250));

    let browser = Browser::start().await;
    let url = stack.console.url();
    browser.goto(&url).await;
    text_containing(&browser, "#environments", "prod").await;
    assert!(browser.text(".banner").await.contains("Unauthenticated"));
    browser.screenshot("overview").await;
    type_into(&browser, "#q", "TIMEOUT").await;
    click(&browser, "form.search button").await;
    let hits = text_containing(&browser, "main table", "staging").await;
    assert!(
        hits.contains("http.timeout_ms") && hits.contains("900"),
        "{hits}"
    );
    browser.screenshot("search").await;
    browser.goto(&format!("{url}/ns/{NS}/prod")).await;
    let row = browser.text("tr[data-key='http.timeout_ms']").await;
    assert!(row.contains("250") && row.contains("integer"), "{row}");
    assert!(row.contains("Card processor timeout"), "{row}");
    browser.screenshot("namespace").await;

    browser.goto(&format!("{url}/ns/{NS}/prod/edit")).await;
    type_into(&browser, "[name='v:http.timeout_ms']", "400").await;
    click(&browser, "[name='v:feature.new_flow'][type=checkbox]").await;
    type_into(&browser, "#reason", "slower processor").await;
    click(&browser, "#preview").await;
    let diff = text_containing(&browser, "#diff", "400").await;
    assert!(
        diff.contains("250") && diff.contains("feature.new_flow"),
        "{diff}"
    );
    // The preview is a dry run: nothing is written yet.
    assert_eq!(live(&stack.api, "prod").await.version, 1);
    browser.screenshot("edit").await;
    click(&browser, "#commit").await;
    text_containing(&browser, "#notice", "Committed v2").await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while subscriber.get::<i64>("http.timeout_ms").ok() != Some(400) {
        assert!(Instant::now() < deadline, "the subscriber never held 400");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(subscriber.get::<bool>("feature.new_flow").ok(), Some(true));
    let history = live(&stack.api, "prod").await;
    let record = history
        .values
        .iter()
        .find(|(k, _)| k == "http.timeout_ms")
        .map(|(_, r)| r.meta.reason.clone());
    assert_eq!(record.as_deref(), Some("slower processor"));

    // Compare the two environments and copy the timeout from prod to staging.
    browser
        .goto(&format!("{url}/compare/{NS}?a=prod&b=staging&only=1"))
        .await;
    click(&browser, "[id='c-http.timeout_ms']").await;
    browser.screenshot("compare").await;
    click(&browser, "#compare ~ button").await;
    text_containing(&browser, "#notice", "Copied into staging").await;
    let staging = live(&stack.api, "staging").await;
    assert_eq!(value_of(&staging, "http.timeout_ms"), Some(json!(400)));
    browser.close().await;
}

#[tokio::test]
async fn an_invalid_value_shows_the_validators_message_inline_and_writes_nothing() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(250))]).await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ns/{NS}/prod/edit", stack.console.url()))
        .await;
    type_into(&browser, "[name='v:http.timeout_ms']", "5").await;
    click(&browser, "#preview").await;
    let error = browser.text("[id='e-http.timeout_ms']").await;
    assert!(
        error.contains("http.timeout_ms") && error.contains("10"),
        "the validator's message names the key and its minimum: {error}"
    );
    let field = find(&browser, "[name='v:http.timeout_ms']").await;
    assert_eq!(
        field.attr("aria-invalid").await.expect("attr").as_deref(),
        Some("true")
    );
    browser.screenshot("edit-invalid").await;
    let now = live(&stack.api, "prod").await;
    assert_eq!(now.version, 1, "nothing was written");
    assert_eq!(value_of(&now, "http.timeout_ms"), Some(json!(250)));
    browser.close().await;
}

#[tokio::test]
async fn a_rollback_from_the_history_page_restores_the_version() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(100))]).await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(200))]).await;
    set(&stack.api, "prod", &[("log.level", json!("debug"))]).await;
    let browser = Browser::start().await;
    let url = stack.console.url();
    browser.goto(&format!("{url}/ns/{NS}/prod/history")).await;
    text_containing(&browser, "#history", "v3").await;
    browser.screenshot("history").await;
    click(&browser, "tr[data-version='1'] a.rollback").await;
    // The confirmation shows what the rollback changes before anything happens.
    let diff = text_containing(&browser, "#diff", "log.level").await;
    assert!(diff.contains("200") && diff.contains("100"), "{diff}");
    assert_eq!(live(&stack.api, "prod").await.version, 3);
    browser.screenshot("rollback-confirm").await;
    click(&browser, "#confirm-rollback").await;
    text_containing(&browser, "#notice", "Rolled back to v1: now v4").await;
    let now = live(&stack.api, "prod").await;
    assert_eq!(value_of(&now, "http.timeout_ms"), Some(json!(100)));
    assert_eq!(value_of(&now, "log.level"), None);
    // A diff of two versions from the history page's links.
    browser
        .goto(&format!("{url}/ns/{NS}/prod/diff?from=1&to=3"))
        .await;
    let diff = text_containing(&browser, "#diff", "log.level").await;
    assert!(diff.contains("debug"), "{diff}");
    browser.close().await;
}

#[tokio::test]
async fn the_fleet_page_updates_without_reload_when_a_subscriber_joins() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(250))]).await;
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/ns/{NS}/prod/fleet", stack.console.url()))
        .await;
    text_containing(&browser, "#fleet", "0 of 0").await;
    // A marker in the page that a reload would lose: the update must come over SSE.
    browser
        .client()
        .execute(
            "document.body.dataset.loaded = 'once'; return null;",
            vec![],
        )
        .await
        .expect("mark the page");
    let _subscriber = Subscriber::builder(NS, "prod")
        .nats_url(stack.nats.url())
        .instance_id("web-1")
        .receipts(true, Duration::from_secs(1))
        .connect()
        .await
        .expect("subscriber");
    text_containing(&browser, "#fleet", "1 of 1").await;
    assert!(browser.text("#fleet").await.contains("web-1"));
    let marker = browser
        .client()
        .execute("return document.body.dataset.loaded || '';", vec![])
        .await
        .expect("read the mark");
    assert_eq!(marker, json!("once"), "the page was reloaded");
    browser.screenshot("fleet").await;
    browser.close().await;
}

#[tokio::test]
async fn a_script_value_renders_as_text_and_a_form_without_csrf_is_refused() {
    let stack = open().await;
    let script = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";
    set(&stack.api, "prod", &[("banner", json!(script))]).await;
    let browser = Browser::start().await;
    let url = stack.console.url();
    browser.goto(&format!("{url}/ns/{NS}/prod")).await;
    let cell = browser.text("tr[data-key='banner'] .value").await;
    assert_eq!(cell, script, "shown as text");
    let title = browser.client().title().await.expect("title");
    assert!(!title.contains("pwned"), "the script ran: {title}");
    let images = browser
        .client()
        .find_all(Locator::Css("main img"))
        .await
        .expect("find");
    assert!(images.is_empty(), "the value became markup");
    browser.goto(&format!("{url}/audit")).await;
    browser.screenshot("audit-open-mode").await;
    browser.goto(&format!("{url}/requests")).await;
    browser.screenshot("requests-open-mode").await;

    // The browser's own session, replayed without the CSRF token: refused, nothing written.
    let cookie = browser
        .client()
        .get_named_cookie("mycosynth_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let jar = format!("mycosynth_session={}", cookie.value());
    let port = stack.console.port();
    let form = "v%3Abanner=changed&version=1&action=commit";
    let refused = tokio::task::spawn_blocking(move || {
        http(
            port,
            "POST",
            &format!("/ns/{NS}/prod/edit"),
            Some(&jar),
            Some(form),
        )
    })
    .await
    .expect("request");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("CSRF"), "{}", refused.body);
    let csp = refused
        .header("content-security-policy")
        .unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let now = live(&stack.api, "prod").await;
    assert_eq!(
        value_of(&now, "banner"),
        Some(json!(script)),
        "nothing written"
    );
    browser.close().await;
}

/// Signed mode: `alice` and `bob` write checkout; production needs one approval from bob;
/// the console signs as `ci-bot`, which has no grants of its own.
async fn signed() -> (NatsServer, Validator, ConsoleServer) {
    let nats = NatsServer::start_secure();
    let validator = Validator::start_secure(&nats.url(), &[]);
    let policy = json!({
        "identities": {
            "admin": {"public_key": dev_public_key("admin")},
            "alice": {"public_key": dev_public_key("alice")},
            "bob": {"public_key": dev_public_key("bob")},
            "console": {"public_key": dev_public_key("ci-bot")},
        },
        "grants": [
            {"identity": "admin", "role": "admin", "namespace": "*", "environment": "*"},
            {"identity": "alice", "role": "write", "namespace": NS, "environment": "*"},
            {"identity": "bob", "role": "write", "namespace": NS, "environment": "*"},
        ],
        "approvals": [
            {"namespace": NS, "environment": "production", "approvals": 1, "approvers": ["bob"]},
        ]
    });
    set_policy(&nats.url(), &policy).await;
    let out = run_as(
        &nats.url(),
        Some("admin"),
        &["set", "vault-ns", "staging", "k", "1"],
    )
    .await;
    assert!(out.status.success(), "admin's namespace: {}", stderr(&out));
    let console = ConsoleServer::start(&nats.url(), Some("ci-bot"));
    (nats, validator, console)
}

/// Signs `identity` in: its session token for the console's key, opened as the sign-in link.
async fn sign_in(browser: &Browser, console: &ConsoleServer, identity: &str) {
    let key = nkeys::KeyPair::from_seed(&dev_seed(identity)).expect("dev seed");
    let token = session_token(&key, &dev_public_key("ci-bot"), Duration::from_secs(600))
        .expect("session token");
    browser
        .goto(&format!("{}/login?token={token}", console.url()))
        .await;
    // The sign-in lands on the overview, the token gone from the address bar.
    let at = browser.client().current_url().await.expect("url");
    assert!(!at.as_str().contains("token"), "{at}");
}

#[tokio::test]
async fn a_change_request_proposed_by_alice_is_approved_by_bob_in_the_browser() {
    let (nats, _validator, console) = signed().await;
    let url = console.url();
    let browser = Browser::start().await;
    // Without a session the console asks for a sign-in; the console's key alone reads nothing.
    browser.goto(&format!("{url}/ns/{NS}/production")).await;
    assert!(browser.text("main").await.contains("console login"));

    // alice signs in with the CLI's link, as a person would.
    let out = run_as(
        &nats.url(),
        Some("alice"),
        &["--json", "console", "login", &url],
    )
    .await;
    assert!(out.status.success(), "console login: {}", stderr(&out));
    let printed: Value =
        serde_json::from_slice(&out.stdout).expect("console login --json prints JSON");
    let link = printed["link"].as_str().expect("link").to_owned();
    assert_eq!(printed["audience"], dev_public_key("ci-bot"));
    let token = link
        .split("token=")
        .nth(1)
        .expect("token in the link")
        .to_owned();
    browser.goto(&link).await;
    // The overview lists only what alice may read: not the namespace only admin reads.
    let listed = browser.text("#environments").await;
    assert!(!listed.contains("vault-ns"), "{listed}");
    browser
        .goto(&format!("{url}/ns/{NS}/production/edit"))
        .await;
    type_into(&browser, "#new-key", "http.timeout_ms").await;
    type_into(&browser, "#new-value", "300").await;
    type_into(&browser, "#reason", "more headroom").await;
    click(&browser, "#preview").await;
    text_containing(&browser, "#diff", "300").await;
    click(&browser, "#commit").await;
    let notice = text_containing(&browser, "#notice", "Change request").await;
    assert!(notice.contains("1 approval"), "{notice}");
    // alice may not approve her own: nothing waits for her.
    browser.goto(&format!("{url}/requests")).await;
    assert!(browser.text("#to-approve").await.contains("Nothing waits"));

    sign_in(&browser, &console, "bob").await;
    browser.goto(&format!("{url}/requests")).await;
    let waiting = text_containing(&browser, "#to-approve", "more headroom").await;
    assert!(waiting.contains("300"), "{waiting}");
    browser.screenshot("requests").await;
    type_into(&browser, "#to-approve input[name=comment]", "fine").await;
    click(&browser, "#to-approve button.approve").await;
    text_containing(&browser, "#pending", "approved").await;

    sign_in(&browser, &console, "alice").await;
    browser.goto(&format!("{url}/requests")).await;
    click(&browser, "#pending button.apply").await;
    let creds = Credentials::default()
        .with_nkey_file(dev_seed_file("admin"))
        .expect("admin seed");
    let admin = ApiClient::connect_with(&nats.url(), Duration::from_secs(5), &creds)
        .await
        .expect("admin client");
    let deadline = Instant::now() + Duration::from_secs(10);
    let set = loop {
        let history: Value = admin
            .call(
                endpoint::HISTORY,
                &json!({"namespace": NS, "environment": "production"}),
            )
            .await
            .expect("history");
        let newest = history["change_sets"][0].clone();
        if newest["version"] == 1 || Instant::now() > deadline {
            break newest;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The person is the author, the approver is recorded, and the audit names the console.
    assert_eq!(set["author"], "alice", "{set}");
    assert_eq!(set["approved_by"], json!(["bob"]), "{set}");
    let audit: Value = admin
        .call(
            endpoint::AUDIT,
            &json!({"namespace": NS, "identity": "bob"}),
        )
        .await
        .expect("audit");
    let approvals: Vec<&Value> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["action"] == "request-approve")
        .collect();
    assert_eq!(approvals.len(), 1, "{audit}");
    assert_eq!(approvals[0]["via"], "console", "{audit}");
    // The audit log is for admins: alice is refused with the validator's reason; admin sees
    // the intact chain and bob's approval via the console.
    browser.goto(&format!("{url}/audit")).await;
    text_containing(&browser, "main", "may not read the audit log").await;
    sign_in(&browser, &console, "admin").await;
    browser.goto(&url).await;
    assert!(browser.text("#environments").await.contains("vault-ns"));
    browser.goto(&format!("{url}/audit?identity=bob")).await;
    text_containing(&browser, "#chain", "intact").await;
    let rows = text_containing(&browser, "#audit", "request-approve").await;
    assert!(rows.contains("via console"), "{rows}");
    browser.screenshot("audit").await;
    browser.close().await;
    // Neither the token nor the session's secrets reach the console's log.
    let log = console.log();
    assert!(log.contains("console sign-in"), "{log}");
    assert!(!log.contains(&token), "the session token was logged");
}

#[tokio::test]
async fn behind_tls_the_session_cookie_is_secure_and_pages_read_without_javascript() {
    let nats = NatsServer::start();
    let _validator = Validator::start(&nats.url(), &[]);
    let api = ApiClient::connect(&nats.url(), Duration::from_secs(10))
        .await
        .expect("api");
    set(&api, "prod", &[("http.timeout_ms", json!(250))]).await;
    let console = ConsoleServer::start_with(&nats.url(), None, &["--secure-cookie"]);
    let port = console.port();
    let first = tokio::task::spawn_blocking(move || http(port, "GET", "/", None, None))
        .await
        .expect("request");
    assert_eq!(first.status, 200);
    let cookie = first.header("set-cookie").unwrap_or_default().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    // No script ran: the server's HTML already holds everything to read, and a plain form
    // post (the CSRF token from that HTML) gives the preview's diff.
    assert!(
        first.body.contains("checkout") && first.body.contains("v1"),
        "{}",
        first.body
    );
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    let csrf = first
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf field")
        .to_owned();
    let form = format!("csrf={csrf}&v%3Ahttp.timeout_ms=300&version=1&action=preview");
    let preview = tokio::task::spawn_blocking(move || {
        http(
            port,
            "POST",
            &format!("/ns/{NS}/prod/edit"),
            Some(&session),
            Some(&form),
        )
    })
    .await
    .expect("request");
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(
        preview.body.contains("id=\"diff\"") && preview.body.contains(">300<"),
        "{}",
        preview.body
    );
    assert_eq!(
        live(&api, "prod").await.version,
        1,
        "a preview writes nothing"
    );
}

#[tokio::test]
async fn every_input_has_a_label_and_every_control_is_reachable_by_keyboard() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(250))]).await;
    set(&stack.api, "staging", &[("http.timeout_ms", json!(300))]).await;
    let browser = Browser::start().await;
    let url = stack.console.url();
    // Inputs without a label (for=, a wrapping label, or aria-label), and controls taken out of
    // the tab order or made of non-focusable elements with click handlers.
    let check = "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))\
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))\
        .map(e => e.name || e.id)\
        .concat(Array.from(document.querySelectorAll('[tabindex=\"-1\"], [onclick], div[hx-post], span[hx-post]')).map(e => 'unreachable ' + e.outerHTML.slice(0, 60)));";
    for page in [
        "/".to_owned(),
        format!("/ns/{NS}/prod"),
        format!("/ns/{NS}/prod/edit"),
        format!("/ns/{NS}/prod/history"),
        format!("/compare/{NS}?a=prod&b=staging"),
        "/requests".to_owned(),
        format!("/ns/{NS}/prod/fleet"),
        "/audit".to_owned(),
    ] {
        browser.goto(&format!("{url}{page}")).await;
        find(&browser, "main h1").await;
        let unlabelled = browser
            .client()
            .execute(check, vec![])
            .await
            .expect("check");
        assert_eq!(unlabelled, json!([]), "{page}");
    }
    // Tab from the top of the edit page reaches its first value field, then the next control.
    browser.goto(&format!("{url}/ns/{NS}/prod/edit")).await;
    let mut reached = Vec::new();
    for _ in 0..12 {
        browser
            .client()
            .active_element()
            .await
            .expect("active")
            .send_keys("\u{e004}")
            .await
            .expect("tab");
        let name = browser
            .client()
            .execute("return document.activeElement.name || document.activeElement.id || document.activeElement.textContent;", vec![])
            .await
            .expect("active element");
        reached.push(name.as_str().unwrap_or_default().to_owned());
    }
    assert!(
        reached.iter().any(|n| n == "v:http.timeout_ms"),
        "the value field is not in the tab order: {reached:?}"
    );
    browser.close().await;
}

#[tokio::test]
async fn the_impact_page_draws_each_signal_before_and_after_a_version() {
    let stack = open().await;
    set(&stack.api, "prod", &[("http.timeout_ms", json!(250))]).await;
    let subscriber = Subscriber::builder(NS, "prod")
        .nats_url(stack.nats.url())
        .instance_id("web-1")
        .receipts(true, Duration::from_millis(200))
        .connect()
        .await
        .expect("subscriber");
    // The error signal follows the timeout the instance holds: 0.01 before, 0.04 after.
    let reader = subscriber.clone();
    subscriber.health_signal("errors", move || {
        if reader.get::<i64>("http.timeout_ms").ok() == Some(250) {
            0.01
        } else {
            0.04
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let changed = set(&stack.api, "prod", &[("http.timeout_ms", json!(50))]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let browser = Browser::start().await;
    browser
        .goto(&format!(
            "{}/ns/{NS}/prod/impact?version={}&window=1m",
            stack.console.url(),
            changed.version
        ))
        .await;
    let table = text_containing(&browser, "#impact", "errors").await;
    assert!(
        table.contains("0.0100") && table.contains("0.0400"),
        "{table}"
    );
    assert!(table.contains("4.00×"), "{table}");
    // Two bars, the after one four times as wide as the before one.
    let widths = browser
        .client()
        .execute(
            "return Array.from(document.querySelectorAll('#chart rect')).map(r => Number(r.getAttribute('width')));",
            vec![],
        )
        .await
        .expect("bars");
    assert_eq!(widths, json!([90, 360]), "bar widths");
    browser.screenshot("impact").await;
    browser.close().await;
}
