//! The access policy's rules (pure, no I/O): which role an identity holds on a namespace x
//! environment, the denial message naming identity, action and missing permission, and the
//! checks a policy document must pass before it is stored.

use mycosynth_subscriber::wire::{ApprovalRule, ErrorKind, Policy, Role, Violation};
use wildmatch::WildMatch;

use crate::failure::{failure, Failure};

/// Where an action applies: one namespace and environment, every environment of a namespace
/// (schemas), or the whole system (the policy itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One namespace x environment.
    Env(&'a str, &'a str),
    /// Every environment of a namespace: needs a grant whose environment glob is `*`.
    Namespace(&'a str),
    /// Everything: needs a grant on namespace `*` and environment `*`.
    System,
}

impl Scope<'_> {
    fn describe(&self) -> String {
        match self {
            Scope::Env(ns, env) => format!("{ns}/{env}"),
            Scope::Namespace(ns) => format!("{ns}/*"),
            Scope::System => "*/*".into(),
        }
    }
}

fn covers(glob: &str, name: &str) -> bool {
    WildMatch::new(glob).matches(name)
}

/// The highest role `identity` holds on `scope` (None: no access at all).
pub fn role_of(policy: &Policy, identity: &str, scope: Scope<'_>) -> Option<Role> {
    policy
        .grants
        .iter()
        .filter(|g| g.identity == identity)
        .filter(|g| match scope {
            Scope::Env(ns, env) => covers(&g.namespace, ns) && covers(&g.environment, env),
            Scope::Namespace(ns) => covers(&g.namespace, ns) && g.environment == "*",
            Scope::System => g.namespace == "*" && g.environment == "*",
        })
        .map(|g| g.role)
        .max()
}

/// Ok when `identity` holds at least `needed` on `scope`; else an `access_denied` failure that
/// names the identity, the action and the missing permission.
pub fn check(
    policy: &Policy,
    identity: &str,
    action: &str,
    needed: Role,
    scope: Scope<'_>,
) -> Result<(), Failure> {
    match role_of(policy, identity, scope) {
        Some(role) if role >= needed => Ok(()),
        held => {
            metrics::counter!("mycosynth_validator_denials_total", "action" => action.to_owned())
                .increment(1);
            let held =
                held.map_or_else(|| "no role".to_owned(), |r| format!("only {}", r.as_str()));
            Err(failure(
                ErrorKind::AccessDenied,
                format!(
                    "identity {identity:?} may not {action} {}: missing permission {} on {} (it has {held})",
                    scope.describe(),
                    needed.as_str(),
                    scope.describe(),
                ),
            ))
        }
    }
}

/// The approval rule deciding changes to `namespace`/`environment`: the first that matches.
pub fn approval_rule<'p>(
    policy: &'p Policy,
    namespace: &str,
    environment: &str,
) -> Option<&'p ApprovalRule> {
    policy
        .approvals
        .iter()
        .find(|r| covers(&r.namespace, namespace) && covers(&r.environment, environment))
}

/// A principal of an approval rule: an identity, or everyone holding at least a role.
enum Principal<'a> {
    Identity(&'a str),
    AtLeast(Role),
}

fn principal_kind<'a>(policy: &Policy, principal: &'a str) -> Result<Principal<'a>, String> {
    match principal.strip_prefix("role:") {
        Some("read") => Ok(Principal::AtLeast(Role::Read)),
        Some("write") => Ok(Principal::AtLeast(Role::Write)),
        Some("admin") => Ok(Principal::AtLeast(Role::Admin)),
        Some(other) => Err(format!(
            "{principal:?}: no role {other:?} (read, write or admin)"
        )),
        None if policy.identities.contains_key(principal) => Ok(Principal::Identity(principal)),
        None => Err(format!(
            "{principal:?} is not in identities (nor role:<read|write|admin>)"
        )),
    }
}

/// Whether `identity` is one of `principals` on `namespace`/`environment`.
pub fn is_among(
    policy: &Policy,
    identity: &str,
    principals: &[String],
    namespace: &str,
    environment: &str,
) -> bool {
    principals.iter().any(|p| match principal_kind(policy, p) {
        Ok(Principal::Identity(name)) => name == identity,
        Ok(Principal::AtLeast(role)) => {
            role_of(policy, identity, Scope::Env(namespace, environment))
                .is_some_and(|held| held >= role)
        }
        Err(_) => false,
    })
}

/// The rule violations of a policy document: unknown identities in grants and approval rules,
/// malformed keys, and a policy that would leave no administrator (nobody could change it
/// again).
pub fn violations(policy: &Policy) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut rule = |key: String, rule: &str, message: String| {
        found.push(Violation {
            key,
            rule: rule.into(),
            message,
        })
    };
    for (name, record) in &policy.identities {
        let valid = nkeys::KeyPair::from_public_key(&record.public_key)
            .is_ok_and(|k| k.public_key().starts_with('U'));
        if !valid {
            rule(
                format!("identities.{name}.public_key"),
                "public_key",
                format!(
                    "identity {name:?}: {:?} is not a public user nkey (U...)",
                    record.public_key
                ),
            );
        }
    }
    for (i, grant) in policy.grants.iter().enumerate() {
        if !policy.identities.contains_key(&grant.identity) {
            rule(
                format!("grants[{i}].identity"),
                "identity",
                format!(
                    "grant {i} names identity {:?}, which is not in identities",
                    grant.identity
                ),
            );
        }
    }
    for (i, approval) in policy.approvals.iter().enumerate() {
        for (field, principals) in [
            ("approvers", &approval.approvers),
            ("emergency", &approval.emergency),
        ] {
            for principal in principals {
                if let Err(message) = principal_kind(policy, principal) {
                    rule(format!("approvals[{i}].{field}"), "principal", message);
                }
            }
        }
        if approval.approvals > 0 && approval.approvers.is_empty() {
            rule(
                format!("approvals[{i}].approvers"),
                "approvers",
                format!(
                    "approval rule {i} needs {} approval(s) but names no approvers",
                    approval.approvals
                ),
            );
        }
    }
    let admins = policy
        .identities
        .keys()
        .any(|name| role_of(policy, name, Scope::System) == Some(Role::Admin));
    if !admins {
        rule(
            "grants".into(),
            "admin",
            "the policy must grant admin on namespace \"*\" and environment \"*\" to at least one identity".into(),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycosynth_subscriber::wire::{Grant, IdentityRecord};

    fn policy() -> Policy {
        let key = nkeys::KeyPair::new_user().public_key();
        let grant = |identity: &str, role, namespace: &str, environment: &str| Grant {
            identity: identity.into(),
            role,
            namespace: namespace.into(),
            environment: environment.into(),
        };
        Policy {
            identities: ["root", "team"]
                .map(|n| {
                    (
                        n.to_owned(),
                        IdentityRecord {
                            public_key: key.clone(),
                        },
                    )
                })
                .into(),
            grants: vec![
                grant("root", Role::Admin, "*", "*"),
                grant("team", Role::Write, "payment-*", "staging"),
                grant("team", Role::Read, "payment-*", "*"),
            ],
            approvals: vec![ApprovalRule {
                namespace: "*".into(),
                environment: "production".into(),
                approvals: 1,
                approvers: vec!["role:admin".into()],
                emergency: vec!["team".into()],
            }],
        }
    }

    #[test]
    fn the_first_matching_approval_rule_decides_and_principals_resolve() {
        let p = policy();
        let rule = approval_rule(&p, "payment-service", "production").unwrap();
        assert_eq!(rule.approvals, 1);
        assert!(approval_rule(&p, "payment-service", "staging").is_none());
        assert!(is_among(
            &p,
            "root",
            &rule.approvers,
            "payment-service",
            "production"
        ));
        assert!(!is_among(
            &p,
            "team",
            &rule.approvers,
            "payment-service",
            "production"
        ));
        assert!(is_among(
            &p,
            "team",
            &rule.emergency,
            "payment-service",
            "production"
        ));
        let mut bad = p.clone();
        bad.approvals[0].approvers = vec!["role:owner".into(), "nobody".into()];
        let found = violations(&bad);
        assert_eq!(
            found.iter().filter(|v| v.rule == "principal").count(),
            2,
            "{found:?}"
        );
    }

    #[test]
    fn roles_follow_globs_and_environments() {
        let p = policy();
        assert_eq!(
            role_of(&p, "team", Scope::Env("payment-service", "staging")),
            Some(Role::Write)
        );
        assert_eq!(
            role_of(&p, "team", Scope::Env("payment-service", "production")),
            Some(Role::Read)
        );
        assert_eq!(
            role_of(&p, "team", Scope::Env("inventory", "staging")),
            None
        );
        assert!(check(
            &p,
            "team",
            "write",
            Role::Write,
            Scope::Env("payment-service", "staging")
        )
        .is_ok());
        let err = check(
            &p,
            "team",
            "write",
            Role::Write,
            Scope::Env("payment-service", "production"),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AccessDenied);
        assert!(
            err.message.contains("\"team\"")
                && err
                    .message
                    .contains("missing permission write on payment-service/production"),
            "{}",
            err.message
        );
        assert!(check(&p, "team", "change the policy", Role::Admin, Scope::System).is_err());
        assert!(check(&p, "root", "change the policy", Role::Admin, Scope::System).is_ok());
    }

    #[test]
    fn a_policy_without_admin_or_with_unknown_identities_is_refused() {
        let mut p = policy();
        assert!(violations(&p).is_empty());
        p.grants.retain(|g| g.identity != "root");
        p.grants.push(Grant {
            identity: "ghost".into(),
            role: Role::Read,
            namespace: "*".into(),
            environment: "*".into(),
        });
        let rules: Vec<String> = violations(&p).into_iter().map(|v| v.rule).collect();
        assert_eq!(rules, vec!["identity", "admin"]);
    }
}
