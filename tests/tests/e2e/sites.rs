//! Sites: a hub and a leaf-node site, each a real nats-server from `nats/site/`. The site holds
//! read-only mirrors (`mycosynth site init`); its subscribers follow the heads the mirror
//! republishes (`EventSource::SiteMirror`).

use std::time::{Duration, Instant};

use mycosynth_subscriber::{EventSource, Origin, Subscriber};
use mycosynth_testkit::site::{Auth, SitePair, HUB_DOMAIN, SITE_DOMAIN};
use mycosynth_testkit::{cli_as, dev_seed, json, Validator};
use serde_json::json;

use crate::{run_cli, set_keys, set_keys_retrying, stderr, stdout};

const NS: &str = "payments";
const ENV: &str = "prod";

fn fast(
    builder: mycosynth_subscriber::SubscriberBuilder,
) -> mycosynth_subscriber::SubscriberBuilder {
    builder
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .receipts(false, Duration::from_secs(10))
}

async fn at_site(pair: &SitePair) -> Subscriber {
    fast(Subscriber::builder(NS, ENV))
        .nats_url(pair.site_url())
        .events_from(EventSource::SiteMirror)
        .connect()
        .await
        .expect("subscriber at the site")
}

/// A hub with a validator watching the site, one committed version, and the site's mirrors.
async fn started() -> (SitePair, Validator, mycosynth::client::ApiClient) {
    let pair = SitePair::start(Auth::Open);
    let validator = Validator::start(&pair.hub_url(), &["--site", SITE_DOMAIN]);
    let api = crate::api(&pair.hub_url()).await;
    set_keys(&api, NS, ENV, &[("limit", json!(1)), ("mode", json!("a"))]).await;
    let init = run_cli(
        &pair.site_url(),
        &["site", "init", "--hub-domain", HUB_DOMAIN],
    )
    .await;
    assert!(init.status.success(), "site init: {}", stderr(&init));
    assert!(stdout(&init).contains("mycosynth-config") && stdout(&init).contains("created"));
    (pair, validator, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_the_hub_reaches_a_subscriber_at_the_site() {
    let (pair, _validator, api) = started().await;
    let site = at_site(&pair).await;
    assert!(site.wait_for_version(1, Duration::from_secs(10)).await);
    assert_eq!(site.get::<u64>("limit").unwrap(), 1);
    for n in 2..=5u64 {
        set_keys(&api, NS, ENV, &[("limit", json!(n))]).await;
        assert!(
            site.wait_for_version(n, Duration::from_secs(10)).await,
            "version {n} did not reach the site (holds {})",
            site.version()
        );
        assert_eq!(site.get::<u64>("limit").unwrap(), n);
    }
    // A deletion travels the same way.
    let deleted = run_cli(&pair.hub_url(), &["delete", NS, ENV, "mode"]).await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(site.wait_for_version(6, Duration::from_secs(10)).await);
    assert!(site.get::<String>("mode").is_err());
    // Reads at the site come from its own mirror: `site init` a second time changes nothing.
    let again = run_cli(
        &pair.site_url(),
        &["site", "init", "--hub-domain", HUB_DOMAIN],
    )
    .await;
    assert!(again.status.success() && stdout(&again).contains("existed"));
    // The hub itself is not a site: its buckets are not mirrors.
    let hub = run_cli(
        &pair.hub_url(),
        &["site", "init", "--hub-domain", HUB_DOMAIN],
    )
    .await;
    assert_eq!(hub.status.code(), Some(14), "{}", stderr(&hub));
    assert!(stderr(&hub).contains("is not a mirror"), "{}", stderr(&hub));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_killed_new_and_running_services_at_the_site_serve_the_config() {
    let (mut pair, _validator, api) = started().await;
    set_keys(&api, NS, ENV, &[("limit", json!(42))]).await;
    let running = at_site(&pair).await;
    assert!(running.wait_for_version(2, Duration::from_secs(10)).await);

    pair.hub.kill();
    // The running service keeps serving from memory.
    assert_eq!(running.get::<u64>("limit").unwrap(), 42);
    // A new service starts at the site with the hub gone, from the mirror (no cache).
    let started_at = Instant::now();
    let new = at_site(&pair).await;
    let took = started_at.elapsed();
    assert_eq!(new.version(), 2);
    assert_eq!(new.get::<u64>("limit").unwrap(), 42);
    assert_eq!(new.get::<String>("mode").unwrap(), "a");
    assert_eq!(new.status().origin, Origin::Nats);
    eprintln!("a new subscriber at the site started from the mirror in {took:?} with the hub down");
    // Writes need the hub's validators: through the site there is none.
    let write = run_cli(
        &pair.site_url(),
        &["--timeout", "2", "set", NS, ENV, "limit", "7"],
    )
    .await;
    assert_eq!(write.status.code(), Some(7), "{}", stderr(&write));
    assert_eq!(running.get::<u64>("limit").unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_hub_back_the_site_catches_up_and_its_subscriber_converges() {
    let (mut pair, _validator, api) = started().await;
    let site = at_site(&pair).await;
    assert!(site.wait_for_version(1, Duration::from_secs(10)).await);
    let links = pair.links();

    pair.hub.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pair.hub.restart();
    let back = Instant::now();
    // Changes committed as soon as the validator is back, before the mirror has caught up.
    for n in 2..=4u64 {
        set_keys_retrying(&api, NS, ENV, &[("limit", json!(n))]).await;
    }
    assert!(
        pair.wait_links(links + 1, Duration::from_secs(30)),
        "the leaf did not reconnect"
    );
    assert!(
        site.wait_for_version(4, Duration::from_secs(120)).await,
        "the site's subscriber holds {} after the hub came back",
        site.version()
    );
    assert_eq!(site.get::<u64>("limit").unwrap(), 4);
    eprintln!(
        "the site's subscriber converged {:?} after the hub restarted",
        back.elapsed()
    );
    // A subscriber started now at the site reads the same version from the caught-up mirror.
    let fresh = at_site(&pair).await;
    assert_eq!(
        (fresh.version(), fresh.get::<u64>("limit").unwrap()),
        (4, 4)
    );
}

/// Polls `mycosynth status --json` (as `identity`) until `check` holds for the site's entry.
async fn site_status_until(
    url: &str,
    identity: Option<&'static str>,
    ns: &str,
    timeout: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (url, ns) = (url.to_owned(), ns.to_owned());
        let out = tokio::task::spawn_blocking(move || {
            cli_as(&url, identity, &["--json", "status", &ns, ENV])
        })
        .await
        .expect("cli thread");
        let site = json(&stdout(&out))["sites"][0].clone();
        if check(&site) || Instant::now() > deadline {
            return site;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sites_lag_is_shown_by_status_and_metrics() {
    let (mut pair, validator, api) = started().await;
    let hub = pair.hub_url();
    let site = site_status_until(&hub, None, NS, Duration::from_secs(20), |s| {
        s["reachable"] == true && s["versions_behind"] == 0
    })
    .await;
    assert_eq!(site["site"], SITE_DOMAIN);
    assert_eq!(
        (site["reachable"].clone(), site["versions_behind"].clone()),
        (json!(true), json!(0)),
        "{site}"
    );
    assert!(site["mirror_active_seconds"].as_f64().is_some(), "{site}");

    // The site goes away; the hub commits three versions it cannot have.
    pair.site.kill();
    for n in 2..=4u64 {
        set_keys(&api, NS, ENV, &[("limit", json!(n))]).await;
    }
    let site = site_status_until(&hub, None, NS, Duration::from_secs(20), |s| {
        s["reachable"] == false && s["versions_behind"] == 3
    })
    .await;
    assert_eq!(
        (site["reachable"].clone(), site["versions_behind"].clone()),
        (json!(false), json!(3)),
        "{site}"
    );
    let page = mycosynth_testkit::http_get(&validator.http_addr(), "/metrics")
        .unwrap()
        .1;
    assert_eq!(
        mycosynth_testkit::metric_sum(&page, "mycosynth_site_versions_behind", "site=\"eu\""),
        3.0
    );
    assert_eq!(
        mycosynth_testkit::metric_sum(&page, "mycosynth_site_reachable", "site=\"eu\""),
        0.0
    );
    let human = run_cli(&hub, &["status", NS, ENV]).await;
    assert!(
        stdout(&human).contains("site eu") && stdout(&human).contains("UNREACHABLE"),
        "{}",
        stdout(&human)
    );

    pair.site.restart();
    let site = site_status_until(&hub, None, NS, Duration::from_secs(120), |s| {
        s["reachable"] == true && s["versions_behind"] == 0
    })
    .await;
    assert_eq!(site["versions_behind"], 0, "{site}");
    assert_eq!(
        validator.metric("mycosynth_site_reachable", "site=\"eu\""),
        1.0
    );
    // The operator's own probe agrees.
    let probe = run_cli(&hub, &["site", "status", "--site", SITE_DOMAIN]).await;
    assert!(probe.status.success(), "{}", stderr(&probe));
    assert!(
        stdout(&probe).contains("versions behind      0"),
        "{}",
        stdout(&probe)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_credential_trying_to_write_is_refused_by_the_server() {
    let pair = SitePair::start(Auth::Secure);
    let (hub, site) = (pair.hub_url(), pair.site_url());
    let _validator = Validator::start_with_env(
        &hub,
        &["--site", SITE_DOMAIN],
        &mycosynth_testkit::identity_env("validator"),
    );
    let ns = "payment-service";
    let set = cli_as(&hub, Some("admin"), &["set", ns, ENV, "limit", "5"]);
    assert!(set.status.success(), "{}", stderr(&set));
    // The minimal permissions are enough to mirror: init as the site's admin, read as a service.
    let init = cli_as(
        &site,
        Some("nats-admin"),
        &["site", "init", "--hub-domain", HUB_DOMAIN],
    );
    assert!(init.status.success(), "{}", stderr(&init));
    let creds = mycosynth_subscriber::Credentials::default()
        .with_nkey_seed(&dev_seed("svc-payment-service"))
        .unwrap();
    let service = fast(Subscriber::builder(ns, ENV))
        .nats_url(&site)
        .credentials(creds)
        .events_from(EventSource::SiteMirror)
        .connect()
        .await
        .expect("service at the site");
    assert!(service.wait_for_version(1, Duration::from_secs(10)).await);
    assert_eq!(service.get::<u64>("limit").unwrap(), 5);
    // And the hub's validator may probe the site.
    let lag = site_status_until(&hub, Some("admin"), ns, Duration::from_secs(20), |s| {
        s["versions_behind"] == 0
    })
    .await;
    assert_eq!(lag["reachable"], true, "{lag}");

    // The site's credential, used directly against the hub: every write is refused.
    let (errors_tx, mut errors) = tokio::sync::mpsc::unbounded_channel();
    let as_site = async_nats::ConnectOptions::with_nkey(dev_seed("site-eu"))
        .event_callback(move |event| {
            let errors_tx = errors_tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = errors_tx.send(err.to_string());
                }
            }
        })
        .connect(&hub)
        .await
        .expect("the site identity may connect");
    let attempts = [
        format!("$KV.mycosynth-config.{ns}.{ENV}.limit"),
        "$JS.API.STREAM.PURGE.KV_mycosynth-config".to_owned(),
        "$JS.hub.API.STREAM.DELETE.KV_mycosynth-config".to_owned(),
        "mycosynth.api.change".to_owned(),
        format!("mycosynth.events.{ENV}.{ns}"),
    ];
    for subject in &attempts {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            as_site.request(subject.clone(), r#"{"value":666}"#.into()),
        )
        .await;
        assert!(!matches!(reply, Ok(Ok(_))), "{subject} was answered");
        // The hub maps its domain's API prefix to `$JS.API` before it checks permissions.
        let mapped = subject.replace("$JS.hub.API.", "$JS.API.");
        let refused = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(err) = errors.recv().await {
                eprintln!("server error to the site identity: {err}");
                if err.contains("Permissions Violation")
                    && (err.contains(subject.as_str()) || err.contains(&mapped))
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(refused, Ok(true), "the hub did not refuse {subject}");
    }
    // Through the leaf, an admin at the site reaches no writer of the hub either.
    let at_site_admin = async_nats::ConnectOptions::with_nkey(dev_seed("nats-admin"))
        .connect(&site)
        .await
        .unwrap();
    for subject in [
        "$JS.hub.API.STREAM.PURGE.KV_mycosynth-config".to_owned(),
        format!("$JS.hub.API.$KV.mycosynth-config.{ns}.{ENV}.limit"),
        format!("$KV.mycosynth-config.{ns}.{ENV}.limit"),
        "mycosynth.api.change".to_owned(),
    ] {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            at_site_admin.request(subject.clone(), r#"{"value":666}"#.into()),
        )
        .await;
        assert!(
            !matches!(reply, Ok(Ok(_))),
            "{subject} was answered through the leaf"
        );
    }
    let get = cli_as(&hub, Some("admin"), &["--json", "get", ns, ENV]);
    assert_eq!(
        json(&stdout(&get))["values"][0][1]["value"],
        5,
        "{}",
        stdout(&get)
    );
    assert_eq!(service.version(), 1);
    assert_eq!(service.get::<u64>("limit").unwrap(), 5);
}
