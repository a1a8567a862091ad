//! Who is looking at a page, as every page handler gets it (from the session middleware).

use crate::client::ApiClient;

/// Who is looking at a page: the client that acts for them and their CSRF token.
#[derive(Clone)]
pub struct Viewer {
    /// The connection that acts for this person (the console's key plus their token).
    pub api: ApiClient,
    /// Who, as shown on pages ("unauthenticated" in open mode).
    pub who: String,
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// Open mode: nobody is signed in.
    pub open: bool,
}
