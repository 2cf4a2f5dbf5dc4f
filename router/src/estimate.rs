//! RTT estimates from geography: what the router uses when nobody has measured a path yet.
//!
//! Light in fibre covers about 200 km per millisecond. Real routes are longer than the great circle
//! (cables follow coasts and peering points) and every path pays a fixed cost in the last mile and
//! in the hosts, so the model is `rtt = 2 × distance / 200 km/ms × inflation + overhead`.

/// Mean Earth radius, km.
pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// Speed of light in fibre, km per ms (about two thirds of c).
pub const FIBRE_KM_PER_MS: f64 = 200.0;

/// The geographic RTT model's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoModel {
    /// How much longer real routes are than the great circle.
    pub path_inflation: f64,
    /// Fixed RTT every path pays, ms.
    pub overhead_ms: f64,
}

impl Default for GeoModel {
    fn default() -> Self {
        GeoModel { path_inflation: 1.5, overhead_ms: 5.0 }
    }
}

/// A point on Earth, degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    /// Latitude, −90..=90.
    pub lat: f64,
    /// Longitude, −180..=180.
    pub lon: f64,
}

impl LatLon {
    /// A checked point: `None` for values outside the globe or not finite.
    pub fn new(lat: f64, lon: f64) -> Option<LatLon> {
        (lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon))
            .then_some(LatLon { lat, lon })
    }
}

/// Great-circle distance in km (haversine).
pub fn great_circle_km(a: LatLon, b: LatLon) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

impl GeoModel {
    /// Estimated RTT between two points, ms.
    pub fn rtt_ms(&self, a: LatLon, b: LatLon) -> f64 {
        2.0 * great_circle_km(a, b) / FIBRE_KM_PER_MS * self.path_inflation + self.overhead_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> LatLon {
        LatLon::new(lat, lon).unwrap()
    }

    #[test]
    fn distances_match_known_city_pairs() {
        // London–New York is about 5,570 km; Sydney–Tokyo about 7,820 km.
        let london = p(51.5074, -0.1278);
        let new_york = p(40.7128, -74.0060);
        let (sydney, tokyo) = (p(-33.8688, 151.2093), p(35.6762, 139.6503));
        assert!((great_circle_km(london, new_york) - 5570.0).abs() < 30.0);
        assert!((great_circle_km(sydney, tokyo) - 7820.0).abs() < 40.0);
        assert_eq!(great_circle_km(london, london), 0.0);
        // Antipodes do not overflow asin.
        assert!((great_circle_km(p(0.0, 0.0), p(0.0, 180.0)) - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn rtt_grows_with_distance_from_the_overhead() {
        let m = GeoModel::default();
        let a = p(48.8566, 2.3522);
        assert_eq!(m.rtt_ms(a, a), m.overhead_ms);
        // Paris–Frankfurt (~480 km): 2 × 480 / 200 × 1.5 + 5 ≈ 12 ms.
        let rtt = m.rtt_ms(a, p(50.1109, 8.6821));
        assert!((rtt - 12.2).abs() < 0.5, "{rtt}");
    }

    #[test]
    fn bad_coordinates_are_refused() {
        for (lat, lon) in [(91.0, 0.0), (0.0, 181.0), (f64::NAN, 0.0), (0.0, f64::INFINITY)] {
            assert!(LatLon::new(lat, lon).is_none(), "{lat},{lon}");
        }
    }
}
