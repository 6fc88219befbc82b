//! `shardline keys create|list|revoke`

use std::time::Duration;

use anyhow::Context;
use shardline_core::MerchantId;
use shardline_core::api_keys::{self, Scope};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::cli::{KeysArgs, KeysCommand};
use crate::config::ConfigError;
use crate::local::catalog_url;

fn parse_scope(scope: &str, merchant: Option<&str>) -> Result<Scope, ConfigError> {
    let merchant_id = merchant
        .map(|m| {
            m.parse::<MerchantId>()
                .map_err(|e| ConfigError::new("merchant", e.to_string()))
        })
        .transpose()?;
    match (scope, merchant_id) {
        ("admin", None) => Ok(Scope::Admin),
        ("admin", Some(_)) => Err(ConfigError::new(
            "merchant",
            "only a `payments` key can be limited to one merchant",
        )),
        ("payments", merchant_id) => Ok(Scope::Payments { merchant_id }),
        (other, _) => Err(ConfigError::new(
            "scope",
            format!("{other:?} is not a scope (admin, payments)"),
        )),
    }
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    // Validate the command before touching the network.
    let scope = match &args.command {
        KeysCommand::Create {
            scope, merchant, ..
        } => Some(parse_scope(scope, merchant.as_deref())?),
        _ => None,
    };
    let url = catalog_url(&args.catalog)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .context("connecting to the catalog")?;
    match args.command {
        KeysCommand::Create { name, json, .. } => {
            let scope = scope.context("scope was validated above")?;
            let key = api_keys::create(&pool, &name, &scope).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.id, "prefix": key.prefix, "token": key.token, "scope": scope})
                );
            } else {
                println!("created key {} ({name})", key.id);
                println!("{}", key.token);
                println!("store it now: it is not shown again");
            }
        }
        KeysCommand::List { json } => {
            let keys = api_keys::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!(
                    "{:<36} {:<12} {:<9} {:<36} {:<8} NAME",
                    "ID", "PREFIX", "SCOPE", "MERCHANT", "REVOKED"
                );
                for k in keys {
                    let (scope, merchant) = match &k.scope {
                        Scope::Admin => ("admin", String::from("-")),
                        Scope::Payments { merchant_id } => (
                            "payments",
                            merchant_id.map_or_else(|| "all".to_owned(), |m| m.to_string()),
                        ),
                    };
                    println!(
                        "{:<36} {:<12} {:<9} {:<36} {:<8} {}",
                        k.id,
                        k.prefix,
                        scope,
                        merchant,
                        if k.revoked_at.is_some() { "yes" } else { "no" },
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            let id: Uuid = id
                .parse()
                .map_err(|e| ConfigError::new("id", format!("not a key id: {e}")))?;
            api_keys::revoke(&pool, id).await?;
            println!("revoked {id}");
        }
    }
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_validated() {
        assert_eq!(parse_scope("admin", None).unwrap(), Scope::Admin);
        assert!(
            parse_scope("root", None)
                .unwrap_err()
                .to_string()
                .contains("`scope`")
        );
        assert!(parse_scope("admin", Some("0190a0a0-0000-7000-8000-000000000001")).is_err());
        assert!(
            parse_scope("payments", Some("nope"))
                .unwrap_err()
                .to_string()
                .contains("`merchant`")
        );
        assert!(matches!(
            parse_scope("payments", Some("0190a0a0-0000-7000-8000-000000000001")).unwrap(),
            Scope::Payments {
                merchant_id: Some(_)
            }
        ));
    }
}
