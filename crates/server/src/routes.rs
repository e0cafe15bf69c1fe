//! The route table: every route, its method, and the [`Action`] it performs (`None`: public).
//! The roles come from `Action::roles`, the one table of who may do what. The router, the
//! authentication layer, the metrics labels and the OpenAPI document all follow this table, and
//! tests check each against it.

use gallery::{Action, Role};

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// `None`: no key needed.
    pub action: Option<Action>,
}

const fn route(method: &'static str, path: &'static str, action: Option<Action>) -> Route {
    Route {
        method,
        path,
        action,
    }
}

pub const ROUTES: &[Route] = &[
    route("GET", "/healthz", None),
    route("GET", "/readyz", None),
    route("GET", "/v1/openapi.json", None),
    route("GET", "/metrics", Some(Action::ReadMetrics)),
    route("POST", "/v1/detect", Some(Action::Detect)),
    route("POST", "/v1/verify", Some(Action::CompareImages)),
    route("POST", "/v1/gate/challenge", Some(Action::CompareImages)),
    route("POST", "/v1/gate/session", Some(Action::CompareImages)),
    route("GET", "/v1/galleries", Some(Action::ListGalleries)),
    route(
        "PUT",
        "/v1/galleries/{gallery}/policy",
        Some(Action::ChangePolicy),
    ),
    route(
        "POST",
        "/v1/galleries/{gallery}/identify",
        Some(Action::Search),
    ),
    route(
        "POST",
        "/v1/galleries/{gallery}/subjects",
        Some(Action::Enrol),
    ),
    route(
        "GET",
        "/v1/galleries/{gallery}/subjects/{reference}",
        Some(Action::ReadSubject),
    ),
    route(
        "DELETE",
        "/v1/galleries/{gallery}/subjects/{reference}",
        Some(Action::Delete),
    ),
    route("GET", "/v1/audit", Some(Action::ReadAudit)),
    route("POST", "/v1/audit/verify", Some(Action::VerifyAudit)),
];

/// The table's entry for a method and a matched route path.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// Whether any entry has this path (another method on it is a 405, not a missing entry).
pub fn known_path(path: &str) -> bool {
    ROUTES.iter().any(|r| r.path == path)
}

/// The roles allowed on a route (`None`: public).
pub fn roles(method: &str, path: &str) -> Option<&'static [Role]> {
    find(method, path).and_then(|r| r.action.map(Action::roles))
}
