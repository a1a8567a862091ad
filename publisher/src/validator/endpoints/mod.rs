//! The validator's endpoints, in one table ([`table`]): each row names the endpoint, its request
//! type, the permission it needs (action, role, scope), whether it is rate limited and audited,
//! and its handler. The dispatcher (`dispatch.rs`) authenticates, applies the rate limit, and
//! calls the row's [`Endpoint::serve`], which parses the request, checks its names, authorizes
//! it from the row, runs the handler and encodes the reply; then the dispatcher appends the
//! audit record. No handler decides a permission the table already states.
//!
//! A handler that needs a finer check than its row (per key, per value) says so in the row's
//! `finer` column and makes it with [`Call::may`] (the same check, the same denial).
//!
//! Handlers, one file per area: `change.rs` (change, rollback), `read.rs` (get, reveal,
//! history, status, schema get), `impact.rs` (signals before and after a version), `schema.rs` (schema push), `parent.rs` (parent declarations),
//! `admin.rs` (policy, audit log), `rollouts.rs` (rollout start and steps).

mod admin;
mod change;
mod impact;
mod parent;
mod read;
mod requests;
mod rollouts;
mod schema;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use mycosynth_subscriber::wire::{
    endpoint, AmendRequest, ApproveRequest, AuditRequest, AuditVerifyRequest, ChangeRequest,
    Environment, ErrorKind, GetRequest, HistoryRequest, ImpactRequest, Namespace,
    NamespacesRequest, ParentRequest, PolicyGetRequest, PolicySetRequest, RejectRequest, Reply,
    RequestIdRequest, RequestListRequest, Role, RollbackRequest, RolloutActionRequest,
    RolloutStartRequest, SchemaGetRequest, SchemaPushRequest, StatusRequest, MAX_REQUEST_BYTES,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::instance::Validator;
use crate::access::{Caller, Scope};
use crate::failure::{failure, invalid, Failure};
use crate::validate;

/// The scope a row's permission applies to, taken from the request's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeOf {
    /// The request's namespace × environment.
    Env,
    /// Every environment of the request's namespace (a grant with environment `*`).
    Namespace,
    /// The request's namespace, environment named `*` (reads of what all environments share).
    NamespaceAnyEnv,
    /// The whole system (a grant on `*` × `*`).
    System,
    /// Nothing beyond authentication: the handler's finer check decides item by item.
    Nothing,
}

/// The permission a row needs: `role` on the scope, for `action` (as denials name it).
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// The action as denials name it ("change", "read the history of", ...).
    pub action: &'static str,
    /// The least role.
    pub role: Role,
    /// Where.
    pub scope: ScopeOf,
}

/// Whether a row's requests are rate limited per identity, and recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// Counted against the caller's rate limit (requests that change things).
    pub limited: bool,
    /// Recorded in the audit log before the reply.
    pub audited: bool,
}

/// Reads and admin requests: audited, not limited.
const AUDITED: Flags = Flags {
    limited: false,
    audited: true,
};
/// Requests that change things: limited and audited.
const LIMITED: Flags = Flags {
    limited: true,
    audited: true,
};
/// Polls (`status`): neither.
const POLL: Flags = Flags {
    limited: false,
    audited: false,
};

/// A request's reply and its outcome label (`ok` or the error kind).
pub type Answer = (Bytes, &'static str);

/// A row's typed glue: parse, check names, authorize, handle, encode.
type Serve = Box<dyn Fn(Arc<Validator>, Caller, Bytes) -> BoxFuture<'static, Answer> + Send + Sync>;

/// One row of the table.
pub struct Endpoint {
    /// The endpoint's name (`mycosynth.api.<name>`).
    pub name: &'static str,
    /// The request type, as the table names it.
    pub request: &'static str,
    /// The permission it needs.
    pub needs: Needs,
    /// Rate limited, audited.
    pub flags: Flags,
    /// The finer check its handler makes beyond `needs`, if any.
    pub finer: Option<&'static str>,
    serve: Serve,
}

impl Endpoint {
    /// Serves one authenticated request of this endpoint: the reply and its outcome label.
    pub fn serve(
        &self,
        validator: Arc<Validator>,
        caller: Caller,
        body: Bytes,
    ) -> BoxFuture<'static, Answer> {
        (self.serve)(validator, caller, body)
    }
}

macro_rules! rows {
    ($($name:ident => $request:ty, $action:literal, $role:ident, $scope:ident, $flags:ident, $finer:expr, $handler:path;)*) => {
        vec![$(row::<$request, _, _, _>(
            endpoint::$name,
            stringify!($request),
            Needs { action: $action, role: Role::$role, scope: ScopeOf::$scope },
            $flags,
            $finer,
            $handler,
        )),*]
    };
}

/// The table of endpoints.
pub fn table() -> Vec<Endpoint> {
    rows! {
        // name      => request,          action,                       role,  scope,           flags,     finer, handler;
        CHANGE       => ChangeRequest,     "change",                     Write, Env,             LIMITED,   None,  change::change;
        ROLLBACK     => RollbackRequest,   "roll back",                  Write, Env,             LIMITED,   None,  change::rollback;
        GET          => GetRequest,        "read",                       Read,  Env,             AUDITED,   None,  read::get;
        REVEAL       => GetRequest,        "reveal sensitive values of", Admin, Env,             AUDITED,   None,  read::reveal;
        HISTORY      => HistoryRequest,    "read the history of",        Read,  Env,             AUDITED,   None,  read::history;
        STATUS       => StatusRequest,     "read the status of",         Read,  Env,             POLL,      None,  read::status;
        NAMESPACES   => NamespacesRequest, "list namespaces",            Read,  Nothing,         AUDITED,      Some("each is listed only to those who may read it"), read::namespaces;
        IMPACT       => ImpactRequest,     "read the impact of changes to", Read, Env,           AUDITED,   None,  impact::impact;
        SCHEMA_GET   => SchemaGetRequest,  "read the schema of",         Read,  NamespaceAnyEnv, AUDITED,   None,  read::schema_get;
        SCHEMA_PUSH  => SchemaPushRequest, "push the schema of",         Admin, Namespace,       LIMITED,   None,  schema::push;
        PARENT       => ParentRequest,     "declare a parent",           Write, Env,             AUDITED,   None,  parent::declare;
        POLICY_GET   => PolicyGetRequest,  "read the policy of",         Admin, System,          AUDITED,   None,  admin::policy_get;
        POLICY_SET   => PolicySetRequest,  "change the policy of",       Admin, System,          AUDITED,   None,  admin::policy_set;
        AUDIT        => AuditRequest,      "read the audit log",         Admin, System,          AUDITED,   None,  admin::audit;
        AUDIT_VERIFY => AuditVerifyRequest,"verify the audit log",       Admin, System,          AUDITED,   None,  admin::audit_verify;
        REQUEST_LIST    => RequestListRequest, "list change requests",      Read,  Nothing,   AUDITED, Some("each is listed only to those who may read its namespace/environment"), requests::list;
        REQUEST_SHOW    => RequestIdRequest,   "read change requests of",   Read,  Env,       AUDITED, None, requests::show;
        REQUEST_APPROVE => ApproveRequest,     "approve change requests of", Read, Env,       LIMITED, Some("the approval rule names the approvers; the author never approves"), requests::approve;
        REQUEST_REJECT  => RejectRequest,      "reject change requests of", Read,  Env,       LIMITED, Some("the approval rule names who may reject"), requests::reject;
        REQUEST_CANCEL  => RequestIdRequest,   "cancel change requests of", Read,  Env,       LIMITED, Some("its author, or an admin of its namespace/environment"), requests::cancel;
        REQUEST_AMEND   => AmendRequest,       "amend change requests of",  Write, Env,       LIMITED, Some("its author, or an admin of its namespace/environment"), requests::amend;
        REQUEST_REBASE  => RequestIdRequest,   "rebase change requests of", Read,  Env,       LIMITED, Some("its author, or a writer of its namespace/environment"), requests::rebase;
        REQUEST_APPLY   => RequestIdRequest,   "apply change requests to",  Write, Env,       LIMITED, None, requests::apply;
        ROLLOUT_START   => RolloutStartRequest,  "start rollouts on",   Write, Env, LIMITED, None, rollouts::start;
        ROLLOUT_STATUS  => RolloutActionRequest, "read rollouts of",    Read,  Env, AUDITED, None, rollouts::status;
        ROLLOUT_PAUSE   => RolloutActionRequest, "pause rollouts of",   Write, Env, LIMITED, None, rollouts::pause;
        ROLLOUT_RESUME  => RolloutActionRequest, "resume rollouts of",  Write, Env, LIMITED, None, rollouts::resume;
        ROLLOUT_PROMOTE => RolloutActionRequest, "promote rollouts of", Write, Env, LIMITED, None, rollouts::promote;
        ROLLOUT_ABORT   => RolloutActionRequest, "abort rollouts of",   Write, Env, LIMITED, None, rollouts::abort;
    }
}

/// The names a request is about, as written in it.
pub enum Target<'a> {
    /// A namespace × environment.
    Env {
        /// Namespace.
        namespace: &'a str,
        /// Environment.
        environment: &'a str,
    },
    /// A namespace.
    Namespace(&'a str),
    /// Nothing in particular (the policy, the audit log).
    System,
}

/// A request type of the table: the names it is about.
pub trait Targeted {
    /// The names this request is about.
    fn target(&self) -> Target<'_>;
}

/// The checked names of an authorized request.
#[derive(Debug, Clone, Default)]
pub struct At {
    namespace: Option<Namespace>,
    environment: Option<Environment>,
}

impl At {
    /// Checks the names of `target`.
    fn of(target: Target<'_>) -> Result<At, Failure> {
        Ok(match target {
            Target::Env {
                namespace,
                environment,
            } => {
                let (ns, env) = validate::names(namespace, environment).map_err(invalid)?;
                At {
                    namespace: Some(ns),
                    environment: Some(env),
                }
            }
            Target::Namespace(namespace) => At {
                namespace: Some(
                    Namespace::new(namespace)
                        .map_err(|e| invalid(vec![validate::name_violation(&e)]))?,
                ),
                environment: None,
            },
            Target::System => At::default(),
        })
    }

    /// The namespace and environment (for requests about one).
    pub fn env(&self) -> Result<(&Namespace, &Environment), Failure> {
        match (&self.namespace, &self.environment) {
            (Some(ns), Some(env)) => Ok((ns, env)),
            _ => Err(failure(
                ErrorKind::Internal,
                "the request names no environment",
            )),
        }
    }

    /// The namespace (for requests about one).
    pub fn namespace(&self) -> Result<&Namespace, Failure> {
        self.namespace
            .as_ref()
            .ok_or_else(|| failure(ErrorKind::Internal, "the request names no namespace"))
    }

    /// The scope `needs` applies to at these names.
    fn scope(&self, needs: ScopeOf) -> Result<Scope<'_>, Failure> {
        Ok(match needs {
            ScopeOf::Env => {
                let (ns, env) = self.env()?;
                Scope::Env(ns.as_str(), env.as_str())
            }
            ScopeOf::Namespace => Scope::Namespace(self.namespace()?.as_str()),
            ScopeOf::NamespaceAnyEnv => Scope::Env(self.namespace()?.as_str(), "*"),
            ScopeOf::System | ScopeOf::Nothing => Scope::System,
        })
    }
}

/// What a handler gets besides its request: who asks (authorized for the row) and the checked
/// names.
pub struct Call {
    /// The authenticated caller, with the policy of this request.
    pub caller: Caller,
    /// The request's checked names.
    pub at: At,
}

impl Call {
    /// A finer check than the row's (see the `finer` column): `role` on `scope` for `action`.
    pub fn may(&self, action: &str, role: Role, scope: Scope<'_>) -> Result<(), Failure> {
        self.caller.may(action, role, scope)
    }
}

/// Parses, checks the names and authorizes a request of `R` for `needs`.
fn admit<R: DeserializeOwned + Targeted>(
    needs: &Needs,
    caller: &Caller,
    body: &[u8],
) -> Result<(R, At), Failure> {
    let request: R = parse(body)?;
    let at = At::of(request.target())?;
    if needs.scope != ScopeOf::Nothing {
        caller.may(needs.action, needs.role, at.scope(needs.scope)?)?;
    }
    Ok((request, at))
}

/// A row of the table, its glue typed by the request `R` and the reply `T` of its handler.
fn row<R, T, F, Fut>(
    name: &'static str,
    request: &'static str,
    needs: Needs,
    flags: Flags,
    finer: Option<&'static str>,
    handler: F,
) -> Endpoint
where
    R: DeserializeOwned + Targeted + Send + 'static,
    T: Serialize + 'static,
    F: Fn(Arc<Validator>, Call, R) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    let serve: Serve =
        Box::new(
            move |validator, caller, body| match admit::<R>(&needs, &caller, &body) {
                Err(refused) => Box::pin(std::future::ready(encode::<()>(Err(refused)))),
                Ok((request, at)) => {
                    let handled = handler(validator, Call { caller, at }, request);
                    Box::pin(async move { encode(handled.await) })
                }
            },
        );
    Endpoint {
        name,
        request,
        needs,
        flags,
        finer,
        serve,
    }
}

/// Reads a request body; too large or malformed is a bad request.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    if body.len() > MAX_REQUEST_BYTES {
        metrics::counter!("mycosynth_validator_rejections_total", "reason" => "too_large")
            .increment(1);
        return Err(failure(
            ErrorKind::BadRequest,
            format!(
                "request of {} bytes is larger than {MAX_REQUEST_BYTES} bytes",
                body.len()
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        metrics::counter!("mycosynth_validator_rejections_total", "reason" => "malformed")
            .increment(1);
        failure(ErrorKind::BadRequest, format!("malformed request: {e}"))
    })
}

/// A reply's bytes and its outcome label.
pub fn encode<T: Serialize>(result: Result<T, Failure>) -> Answer {
    let (reply, outcome) = match result {
        Ok(value) => (serde_json::to_vec(&Reply::Ok(value)), "ok"),
        Err(err) => {
            let kind = err.kind.as_str();
            (serde_json::to_vec(&Reply::<T>::Error(err)), kind)
        }
    };
    (
        Bytes::from(reply.unwrap_or_else(|_| {
            br#"{"error":{"kind":"internal","message":"reply not encodable"}}"#.to_vec()
        })),
        outcome,
    )
}

macro_rules! targets {
    ($($request:ty => |$r:ident| $target:expr;)*) => {
        $(impl Targeted for $request {
            fn target(&self) -> Target<'_> {
                let $r = self;
                $target
            }
        })*
    };
}

targets! {
    ChangeRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    RollbackRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    GetRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    HistoryRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    StatusRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    ImpactRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    ParentRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    SchemaGetRequest => |r| Target::Namespace(&r.namespace);
    SchemaPushRequest => |r| Target::Namespace(&r.namespace);
    PolicyGetRequest => |_r| Target::System;
    PolicySetRequest => |_r| Target::System;
    AuditRequest => |_r| Target::System;
    AuditVerifyRequest => |_r| Target::System;
    NamespacesRequest => |_r| Target::System;
    RequestListRequest => |_r| Target::System;
    RequestIdRequest => |r| proposal_target(&r.id);
    ApproveRequest => |r| proposal_target(&r.id);
    RejectRequest => |r| proposal_target(&r.id);
    AmendRequest => |r| proposal_target(&r.id);
    RolloutStartRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
    RolloutActionRequest => |r| Target::Env { namespace: &r.namespace, environment: &r.environment };
}

/// The namespace and environment a change request's id names (`<ns>.<env>.<short>`); a
/// malformed id fails the names' check (its handler then parses it whole).
fn proposal_target(id: &str) -> Target<'_> {
    let mut parts = id.splitn(3, '.');
    Target::Env {
        namespace: parts.next().unwrap_or_default(),
        environment: parts.next().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_in_the_table_once() {
        let table = table();
        let mut names: Vec<&str> = table.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), table.len(), "a name appears twice");
        for name in [
            endpoint::CHANGE,
            endpoint::ROLLBACK,
            endpoint::NAMESPACES,
            endpoint::GET,
            endpoint::HISTORY,
            endpoint::SCHEMA_PUSH,
            endpoint::SCHEMA_GET,
            endpoint::STATUS,
            endpoint::PARENT,
            endpoint::POLICY_GET,
            endpoint::POLICY_SET,
            endpoint::AUDIT,
            endpoint::AUDIT_VERIFY,
            endpoint::REVEAL,
            endpoint::REQUEST_LIST,
            endpoint::REQUEST_SHOW,
            endpoint::REQUEST_APPROVE,
            endpoint::REQUEST_REJECT,
            endpoint::REQUEST_CANCEL,
            endpoint::REQUEST_AMEND,
            endpoint::REQUEST_REBASE,
            endpoint::REQUEST_APPLY,
            endpoint::ROLLOUT_START,
            endpoint::ROLLOUT_STATUS,
            endpoint::ROLLOUT_PAUSE,
            endpoint::ROLLOUT_RESUME,
            endpoint::ROLLOUT_PROMOTE,
            endpoint::ROLLOUT_ABORT,
        ] {
            assert!(names.contains(&name), "{name} is not served");
        }
    }

    #[test]
    fn only_changes_are_rate_limited_and_only_polls_go_unaudited() {
        for row in table() {
            let changes = matches!(
                row.name,
                endpoint::CHANGE | endpoint::ROLLBACK | endpoint::SCHEMA_PUSH
            ) || (row.name.starts_with("request-")
                && !matches!(row.name, endpoint::REQUEST_LIST | endpoint::REQUEST_SHOW))
                || (row.name.starts_with("rollout-") && row.name != endpoint::ROLLOUT_STATUS);
            assert_eq!(row.flags.limited, changes, "{}", row.name);
            assert_eq!(
                row.flags.audited,
                row.name != endpoint::STATUS,
                "{}",
                row.name
            );
        }
    }

    #[test]
    fn writes_need_write_and_admin_actions_need_admin() {
        for row in table() {
            let least = match row.name {
                endpoint::CHANGE
                | endpoint::ROLLBACK
                | endpoint::PARENT
                | endpoint::REQUEST_AMEND
                | endpoint::REQUEST_APPLY => Role::Write,
                name if name.starts_with("rollout-") && name != endpoint::ROLLOUT_STATUS => {
                    Role::Write
                }
                endpoint::GET
                | endpoint::HISTORY
                | endpoint::STATUS
                | endpoint::IMPACT
                | endpoint::NAMESPACES
                | endpoint::SCHEMA_GET
                | endpoint::ROLLOUT_STATUS => Role::Read,
                // The approval rule and the author decide beyond reading (the `finer` column).
                name if name.starts_with("request-") => {
                    assert!(
                        row.finer.is_some()
                            || row.needs.role >= Role::Write
                            || name == endpoint::REQUEST_SHOW,
                        "{name} reads only, so its finer check must be named"
                    );
                    Role::Read
                }
                _ => Role::Admin,
            };
            assert_eq!(row.needs.role, least, "{}", row.name);
        }
    }

    #[test]
    fn a_scope_is_taken_from_names_the_request_has() {
        let at = At::of(Target::Namespace("payment-service")).unwrap();
        assert!(at.scope(ScopeOf::Namespace).is_ok());
        assert_eq!(
            at.scope(ScopeOf::Env).unwrap_err().kind,
            ErrorKind::Internal,
            "a row asking for an environment the request lacks is a fault, not a pass"
        );
        let bad = At::of(Target::Env {
            namespace: "Bad Name",
            environment: "production",
        })
        .unwrap_err();
        assert_eq!(bad.kind, ErrorKind::Validation);
    }
}
