//! The three Polytomic headers: strict parsing, with errors that name the header and the allowed values.

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;

pub const ACCESS_MODE_HEADER: &str = "x-polytomic-access-mode";
pub const AUTH_MODE_HEADER: &str = "x-polytomic-auth-mode";
pub const PARTNER_ORG_HEADER: &str = "x-polytomic-partner-org-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum AccessMode {
    /// Only GET and HEAD reach Polytomic.
    ReadOnly,
    FullAccess,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadOnly => "read-only",
            AccessMode::FullAccess => "full-access",
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessMode {
    type Err = ();
    fn from_str(value: &str) -> Result<Self, ()> {
        match value.trim().to_ascii_lowercase().as_str() {
            "read-only" => Ok(Self::ReadOnly),
            "full-access" => Ok(Self::FullAccess),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    User,
    Partner,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::User => "user",
            AuthMode::Partner => "partner",
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HeaderError {
    pub header: &'static str,
    pub message: String,
}

fn header_error(header: &'static str, message: String) -> HeaderError {
    HeaderError { header, message }
}

/// The effective modes of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modes {
    pub access_mode: AccessMode,
    pub auth_mode: AuthMode,
    pub partner_org_id: Option<String>,
}

/// Reads the three headers. The access mode is capped by the server's maximum: asking for more than the
/// operator allows is not an error, it just yields the cap.
pub fn parse_modes(headers: &HeaderMap, max_access: AccessMode) -> Result<Modes, HeaderError> {
    let text = |name: &'static str| -> Result<Option<&str>, HeaderError> {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(header_error(
                name,
                format!("{} was sent more than once; send it once", canonical(name)),
            ));
        }
        first.to_str().map(|v| Some(v.trim())).map_err(|_| {
            header_error(
                name,
                format!("{} must be plain ASCII text", canonical(name)),
            )
        })
    };

    let requested_access = match text(ACCESS_MODE_HEADER)? {
        None | Some("") => AccessMode::FullAccess,
        Some(value) => value.parse().map_err(|()| {
            header_error(
                ACCESS_MODE_HEADER,
                format!(
                    "X-Polytomic-Access-Mode has an unsupported value {:?}; allowed values: read-only, full-access",
                    truncate(value)
                ),
            )
        })?,
    };
    let auth_mode = match text(AUTH_MODE_HEADER)?
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("user") => AuthMode::User,
        Some("partner") => AuthMode::Partner,
        Some(other) => {
            return Err(header_error(
                AUTH_MODE_HEADER,
                format!(
                    "X-Polytomic-Auth-Mode has an unsupported value {:?}; allowed values: user, partner",
                    truncate(other)
                ),
            ));
        }
    };
    let partner_org_id = match text(PARTNER_ORG_HEADER)? {
        None | Some("") => None,
        Some(value) => {
            if auth_mode != AuthMode::Partner {
                return Err(header_error(
                    PARTNER_ORG_HEADER,
                    "X-Polytomic-Partner-Org-Id only applies in partner mode; also send X-Polytomic-Auth-Mode: partner, or drop the header".into(),
                ));
            }
            if uuid::Uuid::parse_str(value).is_err() {
                return Err(header_error(
                    PARTNER_ORG_HEADER,
                    format!(
                        "X-Polytomic-Partner-Org-Id must be an organization id (a UUID such as 0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80), got {:?}",
                        truncate(value)
                    ),
                ));
            }
            Some(value.to_ascii_lowercase())
        }
    };
    Ok(Modes {
        access_mode: requested_access.min(max_access),
        auth_mode,
        partner_org_id,
    })
}

fn canonical(name: &str) -> &'static str {
    match name {
        ACCESS_MODE_HEADER => "X-Polytomic-Access-Mode",
        AUTH_MODE_HEADER => "X-Polytomic-Auth-Mode",
        _ => "X-Polytomic-Partner-Org-Id",
    }
}

/// Echoing a caller's value back helps them spot the typo; cap it so a huge header is not reflected whole.
fn truncate(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn defaults_are_user_and_full_access() {
        let modes = parse_modes(&HeaderMap::new(), AccessMode::FullAccess).unwrap();
        assert_eq!(
            modes,
            Modes {
                access_mode: AccessMode::FullAccess,
                auth_mode: AuthMode::User,
                partner_org_id: None
            }
        );
    }

    #[test]
    fn server_maximum_caps_the_header() {
        let modes = parse_modes(
            &headers(&[(ACCESS_MODE_HEADER, "full-access")]),
            AccessMode::ReadOnly,
        )
        .unwrap();
        assert_eq!(modes.access_mode, AccessMode::ReadOnly);
    }

    #[test]
    fn bad_values_name_header_and_allowed_values() {
        let err = parse_modes(
            &headers(&[(ACCESS_MODE_HEADER, "readonly")]),
            AccessMode::FullAccess,
        )
        .unwrap_err();
        assert!(
            err.message.contains("X-Polytomic-Access-Mode")
                && err.message.contains("read-only, full-access")
        );
        let err = parse_modes(
            &headers(&[(AUTH_MODE_HEADER, "admin")]),
            AccessMode::FullAccess,
        )
        .unwrap_err();
        assert!(err.message.contains("user, partner"));
        let err = parse_modes(
            &headers(&[(AUTH_MODE_HEADER, "partner"), (PARTNER_ORG_HEADER, "acme")]),
            AccessMode::FullAccess,
        )
        .unwrap_err();
        assert!(err.message.contains("UUID"));
    }

    #[test]
    fn partner_org_outside_partner_mode_is_refused() {
        let err = parse_modes(
            &headers(&[(PARTNER_ORG_HEADER, "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80")]),
            AccessMode::FullAccess,
        )
        .unwrap_err();
        assert_eq!(err.header, PARTNER_ORG_HEADER);
    }

    #[test]
    fn duplicate_header_is_refused() {
        let err = parse_modes(
            &headers(&[
                (ACCESS_MODE_HEADER, "read-only"),
                (ACCESS_MODE_HEADER, "full-access"),
            ]),
            AccessMode::FullAccess,
        )
        .unwrap_err();
        assert!(err.message.contains("more than once"));
    }
}
