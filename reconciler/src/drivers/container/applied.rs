//! The declaration a container was created from, kept on the container itself (its
//! [`APPLIED_ANNOTATION`](super::seam::APPLIED_ANNOTATION)), so one `runc list` tells
//! every field that needs a new container when it changes, with old and new values.
//!
//! Only those fields are kept: image, command, args, env, working dir, user, mounts,
//! network and health check. Resource limits are read from the cgroup instead (they
//! change in place, and someone may change them by hand); `state`, `restartPolicy` and
//! `stopTimeout` are gitvisor's own policy and need nothing from the container, and the
//! network's `publish` list is the bridge's rules (`drivers/network/publish.rs`) and its
//! `vlans` the host veth end's on the bridge (read from the host and changed in place),
//! so both are kept out of the network compared here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::{Effect, FieldChange};
use crate::drivers::container::{ContainerNetwork, ContainerSpec, HealthCheck, Mount};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedSpec {
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub network: Option<ContainerNetwork>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// The image id the image resolved to when the container was created.
    #[serde(default)]
    pub image_id: String,
    /// How long a stop waits before SIGKILL: kept so a prune (which has no declaration
    /// any more) stops the container as it was declared. Not compared: a new
    /// `stopTimeout` applies to the next stop without recreating anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<crate::model::Duration>,
}

impl AppliedSpec {
    pub fn of(spec: &ContainerSpec, image_id: &str) -> Self {
        AppliedSpec {
            image: spec.image.clone(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            mounts: spec.mounts.clone(),
            network: spec.network.clone().map(|network| ContainerNetwork {
                publish: Vec::new(),
                vlans: Vec::new(),
                ..network
            }),
            health_check: spec.health_check.clone(),
            image_id: image_id.to_owned(),
            stop_timeout: spec.stop_timeout,
        }
    }

    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The fields that differ from `spec`, each a recreate: `old` as applied, `new` as
    /// declared.
    pub fn differences(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Vec<FieldChange>, crate::contract::FieldValueError> {
        let declared = AppliedSpec {
            stop_timeout: self.stop_timeout,
            ..AppliedSpec::of(spec, &self.image_id)
        };
        let mut fields = Vec::new();
        macro_rules! compare {
            ($path:literal, $field:ident) => {
                if self.$field != declared.$field {
                    fields.push(FieldChange::serialized(
                        $path,
                        &self.$field,
                        &declared.$field,
                        Effect::Recreate,
                    )?);
                }
            };
        }
        compare!("image", image);
        compare!("command", command);
        compare!("args", args);
        compare!("env", env);
        compare!("workingDir", working_dir);
        compare!("user", user);
        compare!("mounts", mounts);
        compare!("network", network);
        compare!("healthCheck", health_check);
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ContainerSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn only_recreating_fields_are_compared_and_round_trip() {
        let base = spec("image: /images/app\ncommand: [sleep, '100']\nenv: {A: '1'}");
        let applied = AppliedSpec::of(&base, "sha256:abc");
        let back = AppliedSpec::parse(&applied.to_json().unwrap()).unwrap();
        assert_eq!(back, applied);
        assert!(applied.differences(&base).unwrap().is_empty());
        // Limits, state and restart policy are not the annotation's business.
        let tuned = spec(
            "image: /images/app\ncommand: [sleep, '100']\nenv: {A: '1'}\nstate: Stopped\nrestartPolicy: Never\nresources: {memory: 64MiB}",
        );
        assert!(applied.differences(&tuned).unwrap().is_empty());
        let changed = spec("image: /images/app2\ncommand: [sleep, '100']\nenv: {A: '2'}");
        let fields = applied.differences(&changed).unwrap();
        let paths: Vec<_> = fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["image", "env"]);
        assert_eq!(fields[0].old, "/images/app");
        assert_eq!(fields[0].new, "/images/app2");
        assert!(fields.iter().all(|f| f.effect == Effect::Recreate));
    }

    #[test]
    fn published_ports_are_the_bridges_business_and_recreate_nothing() {
        let network = "image: /i\nnetwork: {bridge: br0, address: 10.0.0.5/24";
        let applied = AppliedSpec::of(&spec(&format!("{network}}}")), "sha256:abc");
        let published = spec(&format!("{network}, publish: [{{hostPort: 8080}}]}}"));
        assert!(applied.differences(&published).unwrap().is_empty());
        let moved = spec(
            "image: /i\nnetwork: {bridge: br0, address: 10.0.0.6/24, publish: [{hostPort: 8080}]}",
        );
        let fields = applied.differences(&moved).unwrap();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path, "network");
    }
}
