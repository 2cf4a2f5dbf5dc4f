//! The edge admin API's routes, as its method, path and query name them: pure, so the routing
//! of hostile requests is tested and fuzzed without a node, and the node's handler only matches
//! on [`AdminRoute`].

/// One route of the admin API (README, "Admin API"). Names and ids are borrowed from the path,
/// not yet checked: the handler checks them against its own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute<'a> {
    /// `GET /healthz`, open.
    Health,
    /// `GET /metrics`, open.
    Metrics,
    /// `GET /v1/info`.
    Info,
    /// `PUT /v1/modules/{name}`.
    PutModule(&'a str),
    /// `GET /v1/modules`.
    ListModules,
    /// `GET /v1/modules/{name}`.
    GetModule(&'a str),
    /// `DELETE /v1/modules/{name}[?force=true]`.
    DeleteModule {
        /// Module name.
        name: &'a str,
        /// Close the rooms that use it.
        force: bool,
    },
    /// `POST /v1/rooms`.
    CreateRoom,
    /// `GET /v1/rooms`.
    ListRooms,
    /// `GET /v1/rooms/{id}`.
    GetRoom(&'a str),
    /// `DELETE /v1/rooms/{id}`.
    CloseRoom(&'a str),
    /// `POST /v1/rooms/{id}/signal`.
    Signal(&'a str),
    /// `POST /v1/rooms/{id}/upgrade`.
    Upgrade(&'a str),
    /// `POST /v1/rooms/{id}/migrate`.
    Migrate(&'a str),
    /// `POST /v1/drain`.
    Drain,
    /// `POST /v1/peer/rooms` (cluster token): a room another node hands over.
    PeerHandoff,
    /// `POST /v1/peer/rooms/{id}/forwarded` (cluster token).
    PeerForwarded(&'a str),
    /// `DELETE /v1/peer/rooms/{id}` (cluster token): a hand-off the source abandoned.
    PeerAbandon(&'a str),
    /// `GET /v1/peer/modules/{name}/{version}` (cluster token): a module's bytes.
    PeerModule {
        /// Module name.
        name: &'a str,
        /// Version (SHA-256).
        version: &'a str,
    },
}

/// Which token a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// None (health, metrics).
    Open,
    /// The admin token.
    Admin,
    /// The cluster token: calls between the nodes of one fleet.
    Cluster,
}

impl AdminRoute<'_> {
    /// Whether the route needs a token (all but health and metrics).
    pub fn needs_token(&self) -> bool {
        self.auth() != RouteAuth::Open
    }

    /// The token the route needs.
    pub fn auth(&self) -> RouteAuth {
        use AdminRoute::*;
        match self {
            Health | Metrics => RouteAuth::Open,
            PeerHandoff | PeerForwarded(_) | PeerAbandon(_) | PeerModule { .. } => RouteAuth::Cluster,
            _ => RouteAuth::Admin,
        }
    }
}

/// The route of `method path?query`, or the 404 message for a request that names none.
pub fn route<'a>(method: &str, path: &'a str, query: &str) -> Result<AdminRoute<'a>, String> {
    use AdminRoute::*;
    let segs: Vec<&'a str> = path.trim_matches('/').split('/').collect();
    Ok(match (method, segs.as_slice()) {
        ("GET", ["healthz"]) => Health,
        ("GET", ["metrics"]) => Metrics,
        ("GET", ["v1", "info"]) => Info,
        ("PUT", ["v1", "modules", name]) => PutModule(name),
        ("GET", ["v1", "modules"]) => ListModules,
        ("GET", ["v1", "modules", name]) => GetModule(name),
        ("DELETE", ["v1", "modules", name]) => DeleteModule { name, force: query_flag(query, "force") },
        ("POST", ["v1", "rooms"]) => CreateRoom,
        ("GET", ["v1", "rooms"]) => ListRooms,
        ("GET", ["v1", "rooms", id]) => GetRoom(id),
        ("DELETE", ["v1", "rooms", id]) => CloseRoom(id),
        ("POST", ["v1", "rooms", id, "signal"]) => Signal(id),
        ("POST", ["v1", "rooms", id, "upgrade"]) => Upgrade(id),
        ("POST", ["v1", "rooms", id, "migrate"]) => Migrate(id),
        ("POST", ["v1", "drain"]) => Drain,
        ("POST", ["v1", "peer", "rooms"]) => PeerHandoff,
        ("POST", ["v1", "peer", "rooms", id, "forwarded"]) => PeerForwarded(id),
        ("DELETE", ["v1", "peer", "rooms", id]) => PeerAbandon(id),
        ("GET", ["v1", "peer", "modules", name, version]) => PeerModule { name, version },
        _ => return Err(format!("no route {method} {path}")),
    })
}

/// Whether `query` sets `key` to `true` or `1`.
fn query_flag(query: &str, key: &str) -> bool {
    query.split('&').filter_map(|kv| kv.split_once('=')).any(|(k, v)| k == key && (v == "true" || v == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_and_anything_else_is_a_precise_404() {
        assert_eq!(route("GET", "/healthz", ""), Ok(AdminRoute::Health));
        assert!(!AdminRoute::Metrics.needs_token() && AdminRoute::Info.needs_token());
        assert_eq!(route("PUT", "/v1/modules/arena", ""), Ok(AdminRoute::PutModule("arena")));
        assert_eq!(
            route("DELETE", "/v1/modules/arena", "x=1&force=true"),
            Ok(AdminRoute::DeleteModule { name: "arena", force: true })
        );
        assert_eq!(
            route("DELETE", "/v1/modules/arena", "force=yes"),
            Ok(AdminRoute::DeleteModule { name: "arena", force: false })
        );
        assert_eq!(route("POST", "/v1/rooms/r1/signal", ""), Ok(AdminRoute::Signal("r1")));
        assert_eq!(route("POST", "/v1/rooms/r1/upgrade/", ""), Ok(AdminRoute::Upgrade("r1")));
        assert_eq!(route("POST", "/v1/rooms/r1/explode", ""), Err("no route POST /v1/rooms/r1/explode".into()));
        assert_eq!(route("PATCH", "/v1/rooms", ""), Err("no route PATCH /v1/rooms".into()));
        assert!(route("GET", "", "").is_err() && route("GET", "//", "").is_err());
        assert_eq!(route("POST", "/v1/rooms/r1/migrate", ""), Ok(AdminRoute::Migrate("r1")));
        assert_eq!(route("POST", "/v1/rooms/r1/migrate", "").unwrap().auth(), RouteAuth::Admin);
        let m = route("GET", "/v1/peer/modules/arena/abc", "").unwrap();
        assert_eq!(m, AdminRoute::PeerModule { name: "arena", version: "abc" });
        assert_eq!(m.auth(), RouteAuth::Cluster);
        assert_eq!(route("POST", "/v1/peer/rooms", "").unwrap().auth(), RouteAuth::Cluster);
        assert_eq!(route("DELETE", "/v1/peer/rooms/r1", ""), Ok(AdminRoute::PeerAbandon("r1")));
        assert!(route("GET", "/v1/peer/rooms", "").is_err());
    }
}
