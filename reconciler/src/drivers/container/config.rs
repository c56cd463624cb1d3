//! The container's process and settings from its declaration and its image's defaults,
//! the way other engines combine them:
//!
//! - `command` replaces the image's entrypoint, `args` its cmd; a declared `command`
//!   without `args` drops the image's cmd too (as Kubernetes does);
//! - `env` is the image's environment with the declared variables set over it, and
//!   `PATH` defaulted when neither has one;
//! - `workingDir` and `user` fall back to the image's, then to `/` and root.

use std::collections::BTreeMap;

use super::applied::AppliedSpec;
use super::image::PreparedImage;
use super::observed::Declaration;
use super::seam::{APPLIED_ANNOTATION, ContainerConfig, HealthConfig, MANAGED_ANNOTATION};

/// `PATH` when neither the image nor the declaration sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn container_config(
    name: &str,
    declaration: &Declaration,
    image: &PreparedImage,
) -> Result<ContainerConfig, String> {
    let spec = &declaration.spec;
    let defaults = &image.defaults;
    let mut args = if spec.command.is_empty() {
        defaults.entrypoint.clone()
    } else {
        spec.command.clone()
    };
    if !spec.args.is_empty() {
        args.extend(spec.args.iter().cloned());
    } else if spec.command.is_empty() {
        args.extend(defaults.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(format!(
            "no command: image {} has no entrypoint or cmd; declare `command`",
            spec.image
        ));
    }

    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    };
    for entry in &defaults.env {
        let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
        set(key, value);
    }
    for (key, value) in &spec.env {
        set(key, value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }

    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| defaults.working_dir.clone())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(format!("working directory {cwd} must be an absolute path"));
    }
    let applied = AppliedSpec::of(spec, &image.id)
        .to_json()
        .map_err(|e| format!("cannot record the declaration on the container: {e}"))?;
    let annotations = BTreeMap::from([
        (MANAGED_ANNOTATION.to_owned(), name.to_owned()),
        (APPLIED_ANNOTATION.to_owned(), applied),
    ]);
    Ok(ContainerConfig {
        id: name.to_owned(),
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        user: spec.user.clone().or_else(|| defaults.user.clone()),
        mounts: declaration.mounts.clone()?,
        limits: declaration.limits,
        annotations,
        health: spec.health_check.as_ref().map(|check| HealthConfig {
            command: check.command.clone(),
            interval: check.interval.0,
            timeout: check.timeout.0,
            retries: check.retries,
            start_period: check.start_period.0,
        }),
        etc_files: declaration.etc_files.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::PlanContext;
    use crate::drivers::container::image::ImageDefaults;
    use crate::model::Name;

    fn config(yaml: &str, defaults: ImageDefaults) -> Result<ContainerConfig, String> {
        let spec = serde_yaml::from_str(yaml).unwrap();
        let name = Name::parse("web").unwrap();
        let declaration = Declaration::resolve(
            &name,
            &spec,
            &PlanContext::default(),
            "",
            std::path::Path::new("/var/lib/gitvisor"),
        );
        let image = PreparedImage {
            id: "sha256:1".into(),
            lowers: Vec::new(),
            defaults,
        };
        container_config("web", &declaration, &image)
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000".into()),
        }
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_like_kubernetes() {
        let c = config("image: /i", image()).unwrap();
        assert_eq!(c.args, ["/entry", "serve"]);
        let c = config("image: /i\nargs: [debug]", image()).unwrap();
        assert_eq!(c.args, ["/entry", "debug"]);
        let c = config("image: /i\ncommand: [/bin/sh]", image()).unwrap();
        assert_eq!(c.args, ["/bin/sh"]);
        let c = config("image: /i\ncommand: [/bin/sh]\nargs: [-c, x]", image()).unwrap();
        assert_eq!(c.args, ["/bin/sh", "-c", "x"]);
        let error = config("image: /i", ImageDefaults::default()).unwrap_err();
        assert!(error.contains("declare `command`"), "{error}");
    }

    #[test]
    fn declared_env_overrides_the_images_and_path_has_a_default() {
        let c = config("image: /i\nenv: {MODE: dev, EXTRA: '1'}", image()).unwrap();
        assert_eq!(c.env, ["PATH=/bin", "MODE=dev", "EXTRA=1"]);
        assert_eq!(c.cwd, "/srv");
        assert_eq!(c.user.as_deref(), Some("1000"));
        let c = config("image: /i\ncommand: [x]", ImageDefaults::default()).unwrap();
        assert_eq!(c.env, [format!("PATH={DEFAULT_PATH}")]);
        assert_eq!(c.cwd, "/");
        assert_eq!(c.annotations[MANAGED_ANNOTATION], "web");
        let applied = AppliedSpec::parse(&c.annotations[APPLIED_ANNOTATION]).unwrap();
        assert_eq!(applied.image_id, "sha256:1");
    }
}
