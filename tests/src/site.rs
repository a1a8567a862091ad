//! A hub and a site: two real nats-servers, the site a leaf node of the hub with its own
//! JetStream domain, from the shipped configs `nats/site/hub.conf` and `nats/site/leaf.conf`
//! (ports, store dirs and the users file templated). Either is killed and restarted for real.

use std::path::Path;
use std::time::Duration;

use crate::{dev_seed, free_port, repo_root, NatsServer};

/// The hub's JetStream domain in `nats/site/hub.conf`.
pub const HUB_DOMAIN: &str = "hub";
/// The site's JetStream domain in `nats/site/leaf.conf` (and of the dev `site-eu` identity).
pub const SITE_DOMAIN: &str = "eu";

/// A hub server and one site's leaf-node server.
pub struct SitePair {
    /// The hub (JetStream domain `hub`, a leaf-node port).
    pub hub: NatsServer,
    /// The site (JetStream domain `eu`), a leaf node of the hub.
    pub site: NatsServer,
}

/// With or without the shipped identities and permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authentication anywhere (like `nats/dev.conf`).
    Open,
    /// `nats/secure/users.conf` at both; the leaf connects as the dev identity `site-eu`.
    Secure,
}

fn template(file: &str, auth: Auth, store: &Path, replace: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(repo_root().join("nats/site").join(file))
        .unwrap_or_else(|e| panic!("nats/site/{file}: {e}"));
    for (from, to) in replace {
        assert!(
            text.contains(from),
            "nats/site/{file} has no {from:?} to template"
        );
        text = text.replace(from, to);
    }
    // Monitoring ports are not needed and could collide.
    text = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("http:"))
        .collect::<Vec<_>>()
        .join("\n");
    let users = repo_root().join("nats/secure/users.conf");
    match auth {
        Auth::Secure => {
            let copy = store.join("users.conf");
            std::fs::copy(users, &copy).expect("copy users.conf");
            // Includes are relative to the config file, which is written beside the copy.
            text.replace("include \"../secure/users.conf\"", "include \"users.conf\"")
        }
        Auth::Open => text
            .replace("include \"../secure/users.conf\"", "")
            .lines()
            .filter(|l| !l.trim_start().starts_with("nkey:"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

impl SitePair {
    /// Starts the hub, then the site, and waits until the leaf connection is up.
    pub fn start(auth: Auth) -> SitePair {
        let leaf_port = free_port();
        let hub_port = free_port();
        let hub = NatsServer::start_config(hub_port, |store| {
            template(
                "hub.conf",
                auth,
                store,
                &[
                    ("127.0.0.1:4222", format!("127.0.0.1:{hub_port}")),
                    ("127.0.0.1:7422", format!("127.0.0.1:{leaf_port}")),
                    (
                        "\".tools/nats-data-hub\"",
                        format!("{:?}", store.join("jetstream").display().to_string()),
                    ),
                ],
            )
        });
        let site_port = free_port();
        let site = NatsServer::start_config(site_port, |store| {
            template(
                "leaf.conf",
                auth,
                store,
                &[
                    ("127.0.0.1:4232", format!("127.0.0.1:{site_port}")),
                    ("127.0.0.1:7422", format!("127.0.0.1:{leaf_port}")),
                    (
                        "\".tools/nats-data-site-eu\"",
                        format!("{:?}", store.join("jetstream").display().to_string()),
                    ),
                    ("$MYCOSYNTH_SITE_NKEY", format!("{:?}", dev_seed("site-eu"))),
                ],
            )
        });
        let pair = SitePair { hub, site };
        assert!(
            pair.wait_linked(Duration::from_secs(20)),
            "the site's leaf connection did not come up"
        );
        pair
    }

    /// Waits until the site logs a (new) leaf connection to the hub.
    pub fn wait_linked(&self, timeout: Duration) -> bool {
        self.site.wait_log("JetStream using domains", timeout)
    }

    /// How many times the site has linked to the hub so far (this run of the site's server).
    pub fn links(&self) -> usize {
        self.site.log.as_ref().map_or(0, |log| {
            log.snapshot()
                .iter()
                .filter(|l| l.contains("JetStream using domains"))
                .count()
        })
    }

    /// Waits until the site has linked to the hub `count` times.
    pub fn wait_links(&self, count: usize, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.links() < count {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// The site's server URL (where the region's services connect).
    pub fn site_url(&self) -> String {
        self.site.url()
    }

    /// The hub's server URL.
    pub fn hub_url(&self) -> String {
        self.hub.url()
    }
}
