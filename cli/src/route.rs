//! `outpost route`: what the router would choose for a client, and why.

use crate::fleet::RouterOpts;
use clap::Args;
use outpost_proto::api::Route;

/// `outpost route`.
#[derive(Args, Debug)]
pub struct RouteCmd {
    #[command(flatten)]
    router: RouterOpts,
    /// Module to route to.
    #[arg(long)]
    module: String,
    /// Route as this client address (needs the admin token); default: this machine.
    #[arg(long)]
    ip: Option<std::net::IpAddr>,
    /// Player id (with a router that requires auth, also pass --auth).
    #[arg(long)]
    player: Option<u64>,
    /// hex(HMAC-SHA256(secret, player)) from the game's login service.
    #[arg(long)]
    auth: Option<String>,
    /// Measure the router's candidate nodes first and route with the results
    /// (`POST /v1/route`), as `outpost connect` does.
    #[arg(long, conflicts_with = "ip")]
    probe: bool,
    /// Print the router's JSON (ticket included).
    #[arg(long)]
    json: bool,
}

impl RouteCmd {
    /// Asks the router and explains the answer.
    pub fn run(self) -> anyhow::Result<()> {
        let api = self.router.resolve()?;
        let mut query: Vec<(&str, String)> = vec![("module", self.module.clone())];
        if let Some(ip) = self.ip {
            query.push(("ip", ip.to_string()));
        }
        if let Some(p) = self.player {
            query.push(("player", p.to_string()));
        }
        if let Some(a) = &self.auth {
            query.push(("auth", a.clone()));
        }
        let route: Route = if self.probe {
            let routers = api.routers()?;
            let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (route, probed) = rt.block_on(routers.route_probed(&self.module, &pairs))?;
            if !self.json {
                println!(
                    "probed   {} candidates in {:.0} ms",
                    probed.results.len(),
                    probed.probe_time.as_secs_f64() * 1e3
                );
            }
            route
        } else {
            let qs: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish();
            api.get(&format!("/v1/route?{qs}"))?
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&route)?);
            return Ok(());
        }
        let c = &route.client;
        let place = match (&c.city, &c.country) {
            (Some(city), Some(cc)) => format!("{city}, {cc}"),
            (None, Some(cc)) => cc.clone(),
            _ => "unknown to GeoIP".to_string(),
        };
        let rtt = route.estimate.rtt_ms.map_or("no estimate".to_string(), |r| format!("~{r:.1} ms"));
        println!("client   {} ({place})", c.ip);
        println!(
            "node     {} in {} at {} ({rtt}, by {})",
            route.node.id, route.node.region, route.node.quic_addr, route.estimate.method
        );
        if !route.alternates.is_empty() {
            let alts: Vec<String> = route.alternates.iter().map(|a| format!("{} ({})", a.id, a.region)).collect();
            println!("then     {}", alts.join(", "));
        }
        println!("ticket   valid until {} for player {}", route.expires_at, route.player);
        Ok(())
    }
}
