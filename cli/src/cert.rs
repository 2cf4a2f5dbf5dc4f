//! `outpost cert`: a fleet's own CA and the HTTPS certificates it signs, so the router's and the
//! nodes' admin APIs can serve TLS that `outpost --ca` and `edge-node --router-ca` check, without
//! a public CA. (A public CA's certificates work too: then no `--ca` is needed.)

use clap::Args;
use outpost_net::tls::{PrivateCa, pem_cert_sha256};
use std::path::PathBuf;

/// `outpost cert`.
#[derive(Args, Debug)]
pub struct Cert {
    /// The CA's folder (`ca.pem`, `ca.key`); created with a new CA when missing.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Where the certificate goes (`NAME.pem`, `NAME.key`).
    #[arg(long)]
    out_dir: PathBuf,
    /// File stem of the certificate.
    #[arg(long)]
    name: String,
    /// Host names and IP addresses the certificate is for (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    san: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Cert {
    /// Issues the certificate and prints where everything is.
    pub fn run(self) -> anyhow::Result<()> {
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            anyhow::bail!("--name {:?} must be letters, digits, '-', '_' or '.'", self.name);
        }
        let ca = PrivateCa::open_or_create(&self.ca_dir)?;
        let (cert, key) = ca.issue(&self.out_dir, &self.name, &self.san)?;
        let sha256 = pem_cert_sha256(&cert)?;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"ca": ca.cert_path(), "cert": cert, "key": key, "sha256": sha256, "san": self.san})
            );
        } else {
            println!("CA          {}", ca.cert_path().display());
            println!("certificate {}", cert.display());
            println!("key         {}", key.display());
            println!("sha256      {sha256}");
        }
        Ok(())
    }
}
