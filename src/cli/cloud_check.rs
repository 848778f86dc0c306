//! `lambda cloud-check`: authenticate against OpenStack and show what the platform would use
//! (catalog, compute microversions, flavors, key pairs, availability zones), optionally
//! resolving the flavor / image / network / key pair names of a NodePool.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::openstack::{COMPUTE_MICROVERSION, CloudConfig, OpenStack};

/// Options of `lambda cloud-check`.
#[derive(Debug, Args)]
pub struct CloudCheckArgs {
    /// Read the `OS_*` variables from this openrc file instead of the environment.
    #[arg(long)]
    pub openrc: Option<PathBuf>,
    /// Use this cloud of clouds.yaml (searched like openstacksdk; see OS_CLIENT_CONFIG_FILE).
    #[arg(long, env = "OS_CLOUD")]
    pub os_cloud: Option<String>,
    /// Check that this flavor (name or id) exists.
    #[arg(long)]
    pub flavor: Option<String>,
    /// Check that this image (name or id) exists and is active.
    #[arg(long)]
    pub image: Option<String>,
    /// Check that this network (name or id) exists.
    #[arg(long)]
    pub network: Option<String>,
    /// Check that this key pair exists.
    #[arg(long)]
    pub key_name: Option<String>,
}

fn config(args: &CloudCheckArgs) -> Result<CloudConfig> {
    if let Some(path) = &args.openrc {
        return Ok(CloudConfig::from_openrc_file(path)?);
    }
    if let Some(cloud) = &args.os_cloud {
        let explicit = std::env::var("OS_CLIENT_CONFIG_FILE").ok();
        let get = |k: &str| match k {
            "OS_CLOUD" => Some(cloud.clone()),
            "OS_CLIENT_CONFIG_FILE" => explicit.clone(),
            _ => std::env::var(k).ok(),
        };
        return Ok(CloudConfig::from_vars(&get, "command line")?);
    }
    Ok(CloudConfig::from_env()?)
}

/// Runs `lambda cloud-check`.
pub async fn run(args: &CloudCheckArgs) -> Result<()> {
    let config = config(args)?;
    println!("credentials: {}", config.source);
    println!("keystone:    {}", config.identity_v3_url()?);
    let os = OpenStack::connect(config)
        .await
        .context("connecting to OpenStack")?;
    let token = os.session().token().await?;
    println!(
        "project:     {} ({})",
        token.project_name.as_deref().unwrap_or("-"),
        token.project_id.as_deref().unwrap_or("-")
    );
    println!("token until: {}", token.expires_at);
    println!("catalog:");
    for s in &token.catalog.services {
        for e in &s.endpoints {
            println!(
                "  {:<12} {:<9} {:<12} {}",
                s.service_type,
                e.interface,
                e.region_id
                    .as_deref()
                    .or(e.region.as_deref())
                    .unwrap_or("-"),
                e.url
            );
        }
    }
    let v = os.compute().api_version();
    println!(
        "compute:     {} (microversions {}..{}, pinned {COMPUTE_MICROVERSION})",
        os.compute().endpoint(),
        v.min_version,
        v.version
    );
    println!("image:       {}", os.image().endpoint());
    match os.network() {
        Ok(n) => println!("network:     {}", n.endpoint()),
        Err(_) => println!("network:     (none in the catalog)"),
    }
    println!("flavors:");
    for f in os.compute().list_flavors().await? {
        println!(
            "  {:<20} id {:<10} {} vCPU {} MiB {} GiB",
            f.name, f.id, f.vcpus, f.ram, f.disk
        );
    }
    let keys = os.compute().list_keypairs().await?;
    println!(
        "key pairs:   {}",
        keys.iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let zones = os.compute().list_availability_zones().await?;
    println!(
        "zones:       {}",
        zones
            .iter()
            .map(|z| format!(
                "{}{}",
                z.name,
                if z.available { "" } else { " (unavailable)" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(f) = &args.flavor {
        let f = os.compute().find_flavor(f).await?;
        println!("flavor {:?}: id {}", f.name, f.id);
    }
    if let Some(i) = &args.image {
        let i = os.image().find_image(i).await?;
        println!(
            "image {:?}: id {} status {:?}",
            i.name.unwrap_or_default(),
            i.id,
            i.status
        );
    }
    if let Some(n) = &args.network {
        let n = os.network()?.find_network(n).await?;
        println!("network {:?}: id {}", n.name, n.id);
    }
    if let Some(k) = &args.key_name {
        let k = os.compute().get_keypair(k).await?;
        println!("key pair {:?}: {}", k.name, k.fingerprint);
    }
    Ok(())
}
