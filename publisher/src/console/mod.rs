//! The web console (`mycosynth console --listen ADDR`): server-rendered pages over the
//! validator's API, like the CLI a client of it, with no write path of its own.
//!
//! - `session.rs`: who is signed in (a person's session token, kept server-side behind an
//!   `HttpOnly`, `SameSite=Strict` cookie), the CSRF check of every state-changing request, and
//!   the security headers (a Content-Security-Policy with no inline script).
//! - `pages/`: one file per page; each reads through the person's own [`ApiClient`] and renders
//!   an askama template from `publisher/templates/console/` (escaped by default).
//! - `form.rs`: form values to typed config values, as the schema types them.
//! - `error.rs`: every failure to one HTTP status and an error page, in one place.
//! - `routes.rs`: the routes, the key document `console login` reads, the vendored assets.
//!
//! Pages work without JavaScript (plain links and forms); the vendored htmx (`assets/`) only
//! swaps the part of a page that changed, and keeps the fleet page live over SSE.

mod error;
mod form;
mod pages;
mod routes;
mod session;
mod state;
mod viewer;

pub use error::ConsoleError;
pub use routes::{router, serve};
pub use state::{Console, Sessions, BUDGET};
pub use viewer::Viewer;
