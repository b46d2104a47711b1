//! `switchyard check`: validate and describe the configuration without connecting.

use std::path::PathBuf;

use switchyard_api::Direction;

use crate::config;

/// Validates the configuration and prints every bridge, rule and remote subscription.
pub fn check(files: &[PathBuf]) -> anyhow::Result<()> {
    let (settings, sources) = config::load(files)?;
    let plans = config::plan_bridges(&settings, &sources)?;
    crate::admin_tls::load(&settings.admin, &sources)?;
    println!(
        "Configuration OK: hub {:?}, {} bridge(s), admin {}.",
        settings.hub.name,
        plans.len(),
        if settings.admin.listen.is_empty() {
            "off"
        } else {
            &settings.admin.listen
        }
    );
    for plan in &plans {
        println!(
            "bridge {} ({}), format {}, {}",
            plan.spec.name,
            plan.kind.type_name(),
            plan.spec.format.as_str(),
            if plan.spec.common.required {
                "required"
            } else {
                "optional"
            }
        );
        for (index, rule) in plan.spec.rules.rules().iter().enumerate() {
            print!(
                "  topics[{index}]: {} {:?} qos {} local_prefix {:?} remote_prefix {:?}",
                rule.direction.as_str(),
                rule.filter.as_str(),
                rule.qos.level(),
                rule.local_prefix,
                rule.remote_prefix
            );
            if rule.direction != Direction::Out {
                if let Some(subscription) = plan.bridge.remote_subscription(rule) {
                    print!(" -> subscribes to {subscription}");
                }
            }
            println!();
        }
    }
    Ok(())
}
