//! GeoIP: where a client address is. One trait, so placement never knows where the answer came
//! from, and one implementation over MaxMind DB files (`--geoip`, repeatable: e.g. separate IPv4
//! and IPv6 files, first with an answer wins).
//!
//! Two record layouts are read: MaxMind GeoIP2/GeoLite2 City (`location.latitude`,
//! `city.names.en`, `country.iso_code`) and the flat DB-IP / ip-location-db city layout
//! (`latitude`, `longitude`, `city`, `country_code`). Answers are cached per address with moka.

use crate::estimate::LatLon;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What GeoIP knows of an address.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoInfo {
    /// ISO 3166 country code.
    pub country: Option<String>,
    /// City name (English where the database has several).
    pub city: Option<String>,
    /// Coordinates.
    pub pos: Option<LatLon>,
}

/// Anything that can place an address on the map.
pub trait GeoLookup: Send + Sync {
    /// Where `ip` is, or `None` when unknown.
    fn lookup(&self, ip: IpAddr) -> Option<Arc<GeoInfo>>;
}

/// A database that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("geoip: {path}: {message}")]
pub struct GeoError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// MaxMind DB files, tried in order, behind a bounded cache.
pub struct MmdbGeo {
    readers: Vec<(PathBuf, maxminddb::Reader<Vec<u8>>)>,
    cache: moka::sync::Cache<IpAddr, Option<Arc<GeoInfo>>>,
}

/// The fields of both layouts; `city` is a name in one and a record in the other.
#[derive(Deserialize)]
struct AnyCityRecord {
    #[serde(default)]
    city: Option<CityField>,
    #[serde(default)]
    country: Option<CountryRecord>,
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

/// A coordinate stored as a double (MaxMind) or a float (some DB-IP builds): the reader is
/// strict about the stored type, so this takes whichever number is there.
struct Coord(f64);

impl<'de> Deserialize<'de> for Coord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Coord, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Coord;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Coord, E> {
                Ok(Coord(v))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Coord, E> {
                Ok(Coord(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CityField {
    Name(String),
    Record {
        #[serde(default)]
        names: BTreeMap<String, String>,
    },
}

#[derive(Deserialize)]
struct CountryRecord {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<Coord>,
    #[serde(default)]
    longitude: Option<Coord>,
}

impl AnyCityRecord {
    fn into_info(self) -> GeoInfo {
        let city = match self.city {
            Some(CityField::Name(n)) if !n.is_empty() => Some(n),
            Some(CityField::Record { mut names }) => names.remove("en").or_else(|| names.into_values().next()),
            _ => None,
        };
        let country = self.country.and_then(|c| c.iso_code).or(self.country_code);
        let (lat, lon) = match self.location {
            Some(l) => (l.latitude, l.longitude),
            None => (self.latitude, self.longitude),
        };
        let pos = match (lat, lon) {
            (Some(lat), Some(lon)) => LatLon::new(lat.0, lon.0),
            _ => None,
        };
        GeoInfo { country, city, pos }
    }
}

impl MmdbGeo {
    /// Opens every file; a file that is not a MaxMind DB is an error naming it.
    pub fn open(paths: &[PathBuf], cache_entries: u64) -> Result<MmdbGeo, GeoError> {
        let mut readers = Vec::with_capacity(paths.len());
        for path in paths {
            let reader = maxminddb::Reader::open_readfile(path)
                .map_err(|e| GeoError { path: path.clone(), message: e.to_string() })?;
            tracing::info!(
                path = %path.display(),
                kind = %reader.metadata().database_type,
                ip_version = reader.metadata().ip_version,
                "geoip database loaded"
            );
            readers.push((path.clone(), reader));
        }
        Ok(MmdbGeo { readers, cache: moka::sync::Cache::new(cache_entries) })
    }

    /// The files loaded.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.readers.iter().map(|(p, _)| p.as_path())
    }

    fn lookup_uncached(&self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        for (path, reader) in &self.readers {
            // An IPv6 address in an IPv4-only file is an error by design; skip to the next file.
            if ip.is_ipv6() && reader.metadata().ip_version == 4 {
                continue;
            }
            let found = match reader.lookup(ip) {
                Ok(r) => r.decode::<AnyCityRecord>(),
                Err(e) => Err(e),
            };
            match found {
                Ok(Some(rec)) => return Some(Arc::new(rec.into_info())),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(path = %path.display(), %ip, error = %e, "geoip record unreadable");
                    continue;
                }
            }
        }
        None
    }
}

impl GeoLookup for MmdbGeo {
    fn lookup(&self, ip: IpAddr) -> Option<Arc<GeoInfo>> {
        self.cache.get_with(ip, || self.lookup_uncached(ip))
    }
}

/// No database: every address is unknown, and placement falls back to measurements and load.
pub struct NoGeo;

impl GeoLookup for NoGeo {
    fn lookup(&self, _ip: IpAddr) -> Option<Arc<GeoInfo>> {
        None
    }
}

/// A geo cell: the grid square of `cell_deg` degrees a position falls in. Clients in one cell
/// share measured estimates when their own prefix has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellKey {
    lat: i32,
    lon: i32,
}

impl CellKey {
    /// The cell of `pos`.
    pub fn of(pos: LatLon, cell_deg: f64) -> CellKey {
        CellKey { lat: (pos.lat / cell_deg).floor() as i32, lon: (pos.lon / cell_deg).floor() as i32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_group_nearby_points() {
        let a = CellKey::of(LatLon::new(51.5, -0.12).unwrap(), 1.0);
        assert_eq!(a, CellKey::of(LatLon::new(51.9, -0.9).unwrap(), 1.0));
        assert_ne!(a, CellKey::of(LatLon::new(52.1, -0.12).unwrap(), 1.0));
        assert_ne!(a, CellKey::of(LatLon::new(51.5, 0.12).unwrap(), 1.0));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let path = std::env::temp_dir().join(format!("not-mmdb-{}", std::process::id()));
        std::fs::write(&path, b"hello").unwrap();
        let e = MmdbGeo::open(std::slice::from_ref(&path), 10).err().unwrap();
        assert!(e.to_string().contains("not-mmdb"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
