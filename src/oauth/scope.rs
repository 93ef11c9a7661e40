//! The scopes this server grants: `polytomic:read` (read-only) and `polytomic:write` (full access; implies
//! read). A grant's scope decides the session's access mode, so OAuth-only clients, which cannot send
//! `X-Polytomic-Access-Mode`, still carry the person's choice in every token. (`POLYTOMIC_OAUTH_SCOPES` is
//! something else: the scopes asked of Polytomic's own provider.)

use crate::core::AccessMode;

pub const READ: &str = "polytomic:read";
pub const WRITE: &str = "polytomic:write";
/// Every scope this server grants, for `scopes_supported`.
pub const SUPPORTED: [&str; 2] = [READ, WRITE];

/// The scope string that grants `access` (write always comes with read).
pub fn granting(access: AccessMode) -> &'static str {
    match access {
        AccessMode::ReadOnly => READ,
        AccessMode::FullAccess => "polytomic:read polytomic:write",
    }
}

/// The access a stored grant gives. Anything without `polytomic:write` is read-only: a grant never reads
/// wider than what it names.
pub fn access_of(scope: Option<&str>) -> AccessMode {
    if words(scope.unwrap_or_default()).any(|word| word == WRITE) {
        AccessMode::FullAccess
    } else {
        AccessMode::ReadOnly
    }
}

/// The most access a client asked for in an authorization request: `None` when it named none of our
/// scopes (then the person may choose either, within the server's cap). Other scope values are ignored:
/// clients copy scope lists from older metadata, and refusing them would strand the person.
pub fn requested_at_authorize(scope: Option<&str>) -> Option<AccessMode> {
    let mut asked = None;
    for word in words(scope.unwrap_or_default()) {
        match word {
            WRITE => return Some(AccessMode::FullAccess),
            READ => asked = Some(AccessMode::ReadOnly),
            _ => {}
        }
    }
    asked
}

/// The access a refresh asks for, checked against what was granted (RFC 6749 §6: never more than the
/// original grant). `None` keeps the grant; a narrower scope narrows it. The error is the description for
/// an `invalid_scope` answer.
pub fn requested_at_refresh(
    scope: Option<&str>,
    granted: AccessMode,
) -> Result<AccessMode, String> {
    let Some(scope) = scope.filter(|s| !s.trim().is_empty()) else {
        return Ok(granted);
    };
    let mut asked = AccessMode::ReadOnly;
    for word in words(scope) {
        match word {
            READ => {}
            WRITE => asked = AccessMode::FullAccess,
            other => {
                return Err(format!(
                    "scope {:?} was never granted; this server grants {}",
                    other.chars().take(64).collect::<String>(),
                    granting(granted)
                ));
            }
        }
    }
    if asked > granted {
        return Err(format!(
            "the sign-in granted only {}; to get {WRITE}, the person must connect again and choose full access",
            granting(granted)
        ));
    }
    Ok(asked)
}

fn words(scope: &str) -> impl Iterator<Item = &str> {
    scope.split_ascii_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_reads_only_what_it_names() {
        assert_eq!(
            access_of(Some("polytomic:read polytomic:write")),
            AccessMode::FullAccess
        );
        assert_eq!(access_of(Some("polytomic:read")), AccessMode::ReadOnly);
        assert_eq!(access_of(Some("read write")), AccessMode::ReadOnly);
        assert_eq!(access_of(None), AccessMode::ReadOnly);
        assert_eq!(
            access_of(Some(granting(AccessMode::FullAccess))),
            AccessMode::FullAccess
        );
        assert_eq!(
            access_of(Some(granting(AccessMode::ReadOnly))),
            AccessMode::ReadOnly
        );
    }

    #[test]
    fn authorization_requests_name_the_most_they_want() {
        assert_eq!(requested_at_authorize(None), None);
        assert_eq!(requested_at_authorize(Some("openid profile")), None);
        assert_eq!(
            requested_at_authorize(Some("polytomic:read")),
            Some(AccessMode::ReadOnly)
        );
        assert_eq!(
            requested_at_authorize(Some("polytomic:write")),
            Some(AccessMode::FullAccess)
        );
        assert_eq!(
            requested_at_authorize(Some("x polytomic:read polytomic:write")),
            Some(AccessMode::FullAccess)
        );
    }

    #[test]
    fn a_refresh_may_narrow_but_never_widen() {
        let full = AccessMode::FullAccess;
        let read = AccessMode::ReadOnly;
        assert_eq!(requested_at_refresh(None, full), Ok(full));
        assert_eq!(requested_at_refresh(Some(" "), read), Ok(read));
        assert_eq!(requested_at_refresh(Some("polytomic:read"), full), Ok(read));
        assert_eq!(
            requested_at_refresh(Some("polytomic:read polytomic:write"), full),
            Ok(full)
        );
        assert!(requested_at_refresh(Some("polytomic:write"), read).is_err());
        assert!(requested_at_refresh(Some("polytomic:read admin"), full).is_err());
    }
}
