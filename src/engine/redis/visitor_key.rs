//! One key for anonymous visitors' tokens on every node.

use super::*;

/// Makes every node use one key for anonymous visitors' tokens, so a visitor proven by one node
/// is proven by all: the first node to start publishes its key in Redis, the others adopt it
/// (written into their data directory, where [`crate::auth`] reads it). Best effort: with Redis
/// away at start-up the node keeps its own key and says so. In a cluster the key lives on
/// whichever master owns its slot, not necessarily the one `url` names.
pub async fn share_visitor_key(url: &str, cluster: bool, prefix: &str, data_dir: &std::path::Path) {
    let path = data_dir.join("visitor-token.key");
    let local = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| hex::decode(t).is_ok_and(|k| !k.is_empty()));
    let proposal = local.clone().unwrap_or_else(|| {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        hex::encode(key)
    });
    let shared = async {
        let mut conn = Conn::open(url, cluster, Duration::from_secs(2)).await?;
        let key = format!("{prefix}:visitor-token-key");
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&proposal)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), shared).await {
        Ok(Ok(Some(shared))) if Some(&shared) != local.as_ref() => {
            if let Err(err) = write_key(&path, &shared) {
                tracing::warn!(error = %err, "cannot store the shared visitor token key; using this node's own");
            }
        }
        Ok(Ok(_)) => {}
        _ => tracing::warn!(
            "redis unreachable at start-up: anonymous visitors' tokens from this node may not be accepted by others"
        ),
    }
}

fn write_key(path: &std::path::Path, hex_key: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(hex_key.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, path)
}
