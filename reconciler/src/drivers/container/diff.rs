//! The container decision table: declared resources and the runtime's list in, one
//! [`Change`] per declared or pruned container out. Pure: no I/O; `now` is passed in
//! (restart backoff).
//!
//! | under gitvisor's runtime root                    | plan                                   |
//! |--------------------------------------------------|----------------------------------------|
//! | nothing                                          | `Create` (started when `Running`)      |
//! | a container without gitvisor's marker, or without a store record | `Conflict`; with `gitvisor.dev/adopt: "true"`, `Replace` (a container's annotations cannot change, so adopting recreates it) |
//! | ours, a recreating field changed (image, command, args, env, workingDir, user, mounts, network except `publish` and `vlans`, healthCheck), or its record unreadable, or stuck `creating` | `Replace` |
//! | ours, declared `Running`, running                | `Update` of the limits, the host veth's VLANs (on a bridge that filters them) and `/etc/resolv.conf` (the bridge's dnsmasq or the host's servers, [`etc_files`](super::etc_files)) that differ, in place, or `NoOp` |
//! | ours, declared `Running`, created but never started (an interrupted create) | `Update`: restart |
//! | ours, declared `Running`, exited                 | by `restartPolicy` and backoff ([`restart`](super::restart)): `Update` (restart) or `NoOp` with the reason |
//! | ours, declared `Stopped`, running or paused      | `Update`: stop                         |
//! | ours, declared `Stopped`, created or exited      | `NoOp`                                 |
//!
//! A container that is no longer declared is removed only when it is ours (marker and
//! record); half-ours ones are left in place with a warning. Removing (a prune or a
//! replace) stops the container first: SIGTERM, then SIGKILL after its `stopTimeout`
//! (the declared one, or for a prune the one recorded on the container).

use std::sync::Arc;
use std::time::SystemTime;

use super::applied::AppliedSpec;
use super::drift;
use super::observed::{Declaration, HostContainers, ObservedContainer, Work, marker};
use super::restart::{self, Decision};
use super::seam::{APPLIED_ANNOTATION, RuntimeContainer, RuntimeStatus};
use crate::contract::{
    Action, Change, Effect, Evidence, FieldChange, Ownership, PlanContext, Prune,
};
use crate::drivers::container::ContainerSpec;
use crate::drivers::vlan_port::{VlanDrift, vlan_list};
use crate::model::{Kind, Name, Resource, ResourceId, RunState};

/// The change for one declared container.
pub(crate) fn declared(
    resource: &Arc<Resource>,
    spec: &ContainerSpec,
    host: &HostContainers,
    context: &PlanContext,
    now: SystemTime,
) -> Change {
    let id = resource.id();
    let declaration = Declaration::resolve(
        &resource.metadata.name,
        spec,
        context,
        host.host_resolver(),
        host.state_dir(),
    );
    let change = Change::new(id.clone(), Action::NoOp).with_desired(Arc::clone(resource));
    let mut change = match &declaration.mounts {
        Err(why) => change.with_reason(format!("apply will fail: {why}")),
        Ok(_) => change,
    };
    let running = spec.state == RunState::Running;
    // A failed create left only files, which a create replaces: as if absent.
    let current = host
        .get(id.name.as_str())
        .filter(|c| c.status != RuntimeStatus::NotCreated);
    let Some(current) = current else {
        let fields = creation_fields(spec);
        return finish(
            Change {
                action: Action::Create,
                ..change
            }
            .with_fields(fields),
            None,
            declaration,
            vec![Work::Create { start: running }],
        );
    };

    let evidence = Evidence::new(marker(current), context.is_recorded(&id));
    match evidence.declared(
        format_args!("container {}", id.name),
        resource.metadata.adopt(),
    ) {
        Ownership::Ours => {}
        Ownership::Adopt => {
            change = change.with_first_reason(
                "adopting an existing container (gitvisor.dev/adopt): its annotations cannot change, so it is recreated with gitvisor's marker",
            );
            return replace(change, current, declaration, running, Vec::new());
        }
        Ownership::Conflict(reason) => {
            return finish(
                Change {
                    action: Action::Conflict,
                    ..change
                }
                .with_reason(reason),
                Some(current),
                declaration,
                Vec::new(),
            );
        }
    }

    let applied = current
        .annotations
        .get(APPLIED_ANNOTATION)
        .map(|text| AppliedSpec::parse(text));
    let fields = match applied {
        Some(Ok(applied)) => match applied.differences(spec) {
            Ok(fields) => fields,
            Err(error) => {
                change = change.with_reason(format!("cannot show a field: {error}"));
                Vec::new()
            }
        },
        Some(Err(error)) => {
            change = change.with_reason(format!(
                "the declaration recorded on the container cannot be read ({error}); it is recreated"
            ));
            return replace(change, current, declaration, running, Vec::new());
        }
        None => {
            change = change
                .with_reason("the container carries no record of its declaration; it is recreated");
            return replace(change, current, declaration, running, Vec::new());
        }
    };
    if !fields.is_empty() {
        return replace(change, current, declaration, running, fields);
    }
    if current.status == RuntimeStatus::Creating {
        change = change.with_reason("its creation was interrupted; it is recreated");
        return replace(change, current, declaration, running, Vec::new());
    }
    if let Some(health) = &current.health
        && health.status != "healthy"
    {
        change = change.with_reason(format!(
            "health {} ({} failures in a row): {}",
            health.status, health.failures, health.last_output
        ));
    }

    match (spec.state, current.status) {
        (RunState::Running, RuntimeStatus::Running) => {
            let mut fields = current
                .limits
                .map(|observed| drift::limits(&declaration.limits, &observed))
                .unwrap_or_default();
            let mut work = Vec::new();
            if !fields.is_empty() {
                work.push(Work::UpdateLimits(declaration.limits));
            }
            if let Some(vlans) = vlan_drift(&declaration, host) {
                fields.push(FieldChange::new(
                    "network.vlans",
                    vlan_list(&vlans.old),
                    vlan_list(&vlans.new),
                    Effect::Hot,
                ));
                work.push(Work::SetVlans(vlans));
            }
            if let Some(observed) = &current.resolv_conf
                && *observed != declaration.etc_files.resolv_conf
            {
                fields.push(FieldChange::new(
                    "/etc/resolv.conf",
                    nameservers(observed),
                    nameservers(&declaration.etc_files.resolv_conf),
                    Effect::Hot,
                ));
                work.push(Work::WriteResolvConf(
                    declaration.etc_files.resolv_conf.clone(),
                ));
            }
            if work.is_empty() {
                let note = describe(current, Some(now));
                finish(
                    change.with_reason(note),
                    Some(current),
                    declaration,
                    Vec::new(),
                )
            } else {
                finish(
                    Change {
                        action: Action::Update,
                        ..change
                    }
                    .with_fields(fields),
                    Some(current),
                    declaration,
                    work,
                )
            }
        }
        (RunState::Running, RuntimeStatus::Created | RuntimeStatus::Paused) => {
            let reason = if current.status == RuntimeStatus::Created {
                "created but not started (gitvisor had stopped it, or a create was interrupted); it is started"
            } else {
                "paused by someone else; it is restarted"
            };
            restart_change(change.with_reason(reason), current, declaration)
        }
        (RunState::Running, RuntimeStatus::Stopped) => {
            match restart::decide(spec.restart_policy, current, now) {
                Decision::Restart { why } => {
                    restart_change(change.with_reason(why), current, declaration)
                }
                Decision::Wait { remaining, why } => finish(
                    change.with_reason(format!(
                        "{why} in {} (backoff)",
                        humantime::format_duration(round_to_seconds(remaining))
                    )),
                    Some(current),
                    declaration,
                    Vec::new(),
                ),
                Decision::Keep { why } => finish(
                    change.with_reason(why),
                    Some(current),
                    declaration,
                    Vec::new(),
                ),
            }
        }
        (RunState::Stopped, RuntimeStatus::Running | RuntimeStatus::Paused) => {
            let field = state_field(current.status, "Stopped");
            finish(
                Change {
                    action: Action::Update,
                    ..change
                }
                .with_fields(vec![field]),
                Some(current),
                declaration,
                vec![Work::Stop],
            )
        }
        (RunState::Stopped, _)
        | (RunState::Running, RuntimeStatus::Creating | RuntimeStatus::NotCreated) => {
            let note = describe(current, Some(now));
            finish(
                change.with_reason(note),
                Some(current),
                declaration,
                Vec::new(),
            )
        }
    }
}

/// How the running container's host veth end's VLANs differ from the declared ones, on
/// a bridge that filters VLANs. A veth that is no bridge port (gone with a namespace
/// someone else tore down) has no VLANs to compare.
fn vlan_drift(declaration: &Declaration, host: &HostContainers) -> Option<VlanDrift> {
    let veth = declaration.veth.as_ref()?;
    let declared = veth.vlans.as_ref()?;
    let now = host.port_vlans(&veth.host_name)?;
    VlanDrift::between(now.to_vec(), declared.clone())
}

/// The name servers (and search domains) a resolv.conf names, for a plan's field: the
/// lines that matter, not the comments.
fn nameservers(resolv_conf: &str) -> String {
    resolv_conf
        .lines()
        .filter(|line| line.starts_with("nameserver") || line.starts_with("search"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a container is doing, for `status`: `running (pid 42, up 3m 12s), 2 restarts,
/// last exit code 137, healthy`. The uptime only with `now` (a note kept for later, as
/// the controller's watch keeps one, would go stale).
pub(crate) fn describe(current: &RuntimeContainer, now: Option<SystemTime>) -> String {
    let mut note = match current.pid {
        Some(pid) if current.status == RuntimeStatus::Running => {
            let up = now.zip(current.started);
            match up.and_then(|(now, started)| now.duration_since(started).ok()) {
                Some(up) => format!(
                    "running (pid {pid}, up {})",
                    humantime::format_duration(std::time::Duration::from_secs(up.as_secs()))
                ),
                None => format!("running (pid {pid})"),
            }
        }
        _ => current.status.to_string(),
    };
    if current.restarts > 0 {
        let plural = if current.restarts == 1 { "" } else { "s" };
        note.push_str(&format!(", {} restart{plural}", current.restarts));
    }
    if let Some(exit) = &current.exit {
        note.push_str(&format!(", last exit code {}", exit.code));
    }
    if let Some(health) = &current.health {
        note.push_str(&format!(", {}", health.status));
    }
    note
}

fn round_to_seconds(duration: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(duration.as_secs() + u64::from(duration.subsec_nanos() > 0))
}

/// Whether `change` starts again a container whose process ended: its `restartPolicy` at
/// work (the controller saw it die, or a resync found it dead), not drift someone made
/// (a pause by hand is `paused`, an interrupted create `created`).
pub(crate) fn restarts_a_dead_container(change: &Change) -> bool {
    change.id.kind == Kind::Container
        && change.action == Action::Update
        && matches!(change.fields.as_slice(), [field]
            if field.path == STATE_FIELD && field.old == RuntimeStatus::Stopped.to_string())
}

/// The field a restart changes.
const STATE_FIELD: &str = "state";

fn state_field(status: RuntimeStatus, declared: &str) -> FieldChange {
    FieldChange::new(STATE_FIELD, status.to_string(), declared, Effect::Restart)
}

fn restart_change(change: Change, current: &RuntimeContainer, declaration: Declaration) -> Change {
    let field = state_field(current.status, "Running");
    finish(
        Change {
            action: Action::Update,
            ..change
        }
        .with_fields(vec![field]),
        Some(current),
        declaration,
        vec![Work::Restart],
    )
}

fn replace(
    change: Change,
    current: &RuntimeContainer,
    declaration: Declaration,
    running: bool,
    fields: Vec<FieldChange>,
) -> Change {
    finish(
        Change {
            action: Action::Replace,
            ..change
        }
        .with_fields(fields),
        Some(current),
        declaration,
        vec![Work::Stop, Work::Remove, Work::Create { start: running }],
    )
}

fn finish(
    change: Change,
    current: Option<&RuntimeContainer>,
    declaration: Declaration,
    work: Vec<Work>,
) -> Change {
    change.with_observed(ObservedContainer {
        current: current.cloned(),
        declaration: Some(declaration),
        work,
    })
}

/// What a create sets, as the plan shows it (old values are null).
fn creation_fields(spec: &ContainerSpec) -> Vec<FieldChange> {
    let null = serde_json::Value::Null;
    let mut fields = vec![FieldChange::new(
        "image",
        null.clone(),
        spec.image.clone(),
        Effect::Recreate,
    )];
    if !spec.command.is_empty() {
        fields.push(FieldChange::new(
            "command",
            null.clone(),
            spec.command.clone(),
            Effect::Recreate,
        ));
    }
    if !spec.args.is_empty() {
        fields.push(FieldChange::new(
            "args",
            null.clone(),
            spec.args.clone(),
            Effect::Recreate,
        ));
    }
    if !spec.env.is_empty() {
        fields.push(FieldChange::new(
            "env",
            null.clone(),
            serde_json::to_value(&spec.env).unwrap_or_default(),
            Effect::Recreate,
        ));
    }
    if !spec.mounts.is_empty() {
        fields.push(FieldChange::new(
            "mounts",
            null.clone(),
            serde_json::to_value(&spec.mounts).unwrap_or_default(),
            Effect::Recreate,
        ));
    }
    if let Some(network) = &spec.network {
        fields.push(FieldChange::new(
            "network.bridge",
            null.clone(),
            network.bridge.as_str(),
            Effect::Recreate,
        ));
        if let Some(address) = &network.address {
            fields.push(FieldChange::new(
                "network.address",
                null.clone(),
                address.to_string(),
                Effect::Recreate,
            ));
        }
        if let Some(gateway) = &network.gateway {
            fields.push(FieldChange::new(
                "network.gateway",
                null.clone(),
                gateway.to_string(),
                Effect::Recreate,
            ));
        }
        if !network.publish.is_empty() {
            let published: Vec<String> = network
                .publish
                .iter()
                .map(|p| {
                    format!(
                        "{} {}:{} -> {}",
                        p.protocol.as_str(),
                        p.host_address.map_or("*".to_owned(), |a| a.to_string()),
                        p.host_port,
                        p.port.unwrap_or(p.host_port)
                    )
                })
                .collect();
            fields.push(FieldChange::new(
                "network.publish",
                null.clone(),
                published,
                Effect::Hot,
            ));
        }
    }
    if let Some(resources) = &spec.resources {
        if let Some(cpus) = resources.cpus {
            fields.push(FieldChange::new(
                "resources.cpus",
                null.clone(),
                cpus,
                Effect::Hot,
            ));
        }
        if let Some(memory) = resources.memory {
            fields.push(FieldChange::new(
                "resources.memory",
                null.clone(),
                memory.to_string(),
                Effect::Hot,
            ));
        }
        if let Some(pids) = resources.pids {
            fields.push(FieldChange::new(
                "resources.pids",
                null.clone(),
                pids,
                Effect::Hot,
            ));
        }
    }
    let state = match spec.state {
        RunState::Running => "Running",
        RunState::Stopped => "Stopped",
    };
    fields.push(FieldChange::new(STATE_FIELD, null, state, Effect::Restart));
    fields
}

/// Deletes for containers that are gitvisor's and no longer declared, sorted by name.
pub(crate) fn pruned(
    declared: &std::collections::BTreeSet<&str>,
    host: &HostContainers,
    context: &PlanContext,
) -> Vec<Change> {
    let mut deletes = Vec::new();
    for container in host.all() {
        if declared.contains(container.id.as_str()) {
            continue;
        }
        let Ok(name) = Name::parse(&container.id) else {
            tracing::warn!(container = %container.id, "a container under gitvisor's runtime root has a name no manifest can declare; leaving it in place");
            continue;
        };
        let id = ResourceId::new(Kind::Container, name);
        match Evidence::new(marker(container), context.is_recorded(&id)).undeclared() {
            Prune::Delete if container.status == RuntimeStatus::NotCreated => deletes.push(
                Change::new(id, Action::Delete)
                    .with_reason(
                        "no longer declared; its create had failed: what it left (bundle, writable layer, logs) is removed",
                    )
                    .with_observed(ObservedContainer {
                        current: Some(container.clone()),
                        declaration: None,
                        work: vec![Work::Remove],
                    }),
            ),
            Prune::Delete => deletes.push(
                Change::new(id, Action::Delete)
                    .with_reason("no longer declared")
                    .with_observed(ObservedContainer {
                        current: Some(container.clone()),
                        declaration: None,
                        work: vec![Work::Stop, Work::Remove],
                    }),
            ),
            Prune::KeepAndWarn(why) => tracing::warn!(container = %container.id, "{why}"),
            Prune::Keep => {}
        }
    }
    deletes
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_running_container_is_described_with_its_pid_and_uptime() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut current = RuntimeContainer {
            id: "web".into(),
            status: RuntimeStatus::Running,
            pid: Some(42),
            annotations: BTreeMap::new(),
            limits: None,
            exit: None,
            health: None,
            restarts: 2,
            started: Some(started),
            stopped_by_gitvisor: false,
            resolv_conf: None,
        };
        let now = started + Duration::from_millis(192_700);
        assert_eq!(
            describe(&current, Some(now)),
            "running (pid 42, up 3m 12s), 2 restarts"
        );
        assert_eq!(describe(&current, None), "running (pid 42), 2 restarts");
        current.started = None;
        assert_eq!(
            describe(&current, Some(now)),
            "running (pid 42), 2 restarts"
        );
    }
}
