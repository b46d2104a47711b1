//! `switchyard route`: where would a message go?

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use switchyard_api::QoS;

use crate::config;
use crate::router::RouteTable;

/// Prints the hub topic of remote name `name` arriving on bridge `from`, and every
/// destination bridge with the name it would have there.
pub fn route(files: &[PathBuf], from: &str, name: &str) -> anyhow::Result<()> {
    let (settings, sources) = config::load(files)?;
    let plans = config::plan_bridges(&settings, &sources)?;
    let Some(origin) = plans.iter().position(|plan| plan.spec.name == from) else {
        let names: Vec<&str> = plans.iter().map(|plan| plan.spec.name.as_str()).collect();
        bail!(
            "no bridge called {from:?}; the bridges are: {}",
            names.join(", ")
        );
    };
    let inbound = match plans[origin].spec.rules.inbound(name) {
        Ok(Some(inbound)) => inbound,
        Ok(None) => {
            println!("{from}: {name:?} passes no `in` rule of this bridge; it would be ignored.");
            return Ok(());
        }
        Err(invalid) => {
            println!("{from}: {invalid}; it would be dropped (invalid).");
            return Ok(());
        }
    };
    println!(
        "{from}: {name:?} enters the hub as {:?} (qos {} at most).",
        inbound.topic,
        inbound.qos.level()
    );
    let table = RouteTable::new(
        plans
            .iter()
            .map(|plan| (Arc::clone(&plan.spec.rules), plan.kind.is_server())),
    );
    let mut destinations = Vec::new();
    let looped = table.destinations(
        Some(origin),
        &inbound.topic,
        QoS::AtLeastOnce.min(inbound.qos),
        &mut destinations,
    );
    for destination in &destinations {
        let plan = &plans[destination.bridge];
        let rule = &plan.spec.rules.rules()[destination.rule];
        let remote = rule.to_remote(&inbound.topic).unwrap_or_default();
        println!(
            "  -> {} ({}) as {:?}, qos {}, by topics[{}]",
            plan.spec.name,
            plan.kind.type_name(),
            remote,
            destination.qos.level(),
            destination.rule
        );
    }
    if destinations.is_empty() {
        println!("  -> no destination.");
    }
    if looped {
        println!("  ({from} itself is left out: a message never goes back where it came from.)");
    }
    Ok(())
}
