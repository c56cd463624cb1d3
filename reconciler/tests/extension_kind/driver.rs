//! The `MarkerFile` driver: each resource is a file `<run dir>/markers/<name>` whose
//! first line is gitvisor's marker. It follows the ownership rules: a file is gitvisor's
//! when it carries the marker and the store records it; anything else is a conflict
//! (unless adopted) and is never deleted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gitvisor::contract::{Evidence, Marker, Ownership, Prune};
use gitvisor::drivers::{
    Driver, DriverError, FailureClass, HostSettings, PlanContext, StepContext,
};
use gitvisor::model::{Kind, Name, Resource, ResourceId};
use gitvisor::plan::{Action, Change};

use super::spec::{KIND, MarkerFileSpec};

/// The first line of every file gitvisor writes.
pub const MARKER: &str = "# written by gitvisor";

pub struct MarkerFileDriver {
    root: PathBuf,
}

impl MarkerFileDriver {
    pub fn connect(settings: &HostSettings) -> Result<Box<dyn Driver>, DriverError> {
        Ok(Box::new(MarkerFileDriver {
            root: settings.run_dir.join("markers"),
        }))
    }

    /// Every file in the directory, read in one batch: name → (marker, text).
    async fn observe(&self) -> Result<BTreeMap<String, (Marker, String)>, DriverError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = BTreeMap::new();
            let entries = match std::fs::read_dir(&root) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let content = std::fs::read_to_string(entry.path())?;
                let (marker, text) = match content.split_once('\n') {
                    Some((MARKER, text)) => (Marker::Ours, text.to_owned()),
                    _ => (Marker::Foreign(content.clone()), content),
                };
                files.insert(
                    entry.file_name().to_string_lossy().into_owned(),
                    (marker, text),
                );
            }
            Ok(files)
        })
        .await
        .map_err(|e| DriverError::new(FailureClass::Bug, std::io::Error::other(e)))?
        .map_err(|e| DriverError::new(FailureClass::Transient, e))
    }
}

#[async_trait]
impl Driver for MarkerFileDriver {
    fn kind(&self) -> Kind {
        KIND
    }

    async fn plan(
        &self,
        desired: &[Arc<Resource>],
        context: &PlanContext,
    ) -> Result<Vec<Change>, DriverError> {
        let mut files = self.observe().await?;
        let mut changes = Vec::new();
        for resource in desired {
            let id = resource.id();
            let spec = resource
                .spec
                .get::<MarkerFileSpec>()
                .expect("the engine hands this driver only MarkerFiles");
            let change = match files.remove(resource.metadata.name.as_str()) {
                None => Change::new(id, Action::Create),
                Some((marker, text)) => {
                    let evidence = Evidence::new(marker, context.is_recorded(&id));
                    match evidence.declared(format!("marker file {id}"), resource.metadata.adopt())
                    {
                        Ownership::Conflict(reason) => {
                            Change::new(id, Action::Conflict).with_reason(reason)
                        }
                        Ownership::Adopt => Change::new(id, Action::Update),
                        Ownership::Ours if text == spec.text => Change::new(id, Action::NoOp),
                        Ownership::Ours => Change::new(id, Action::Update),
                    }
                }
            };
            changes.push(change.with_desired(resource.clone()));
        }
        for (name, (marker, _)) in files {
            let Ok(name) = Name::parse(&name) else {
                continue;
            };
            let id = ResourceId::new(KIND, name);
            if Evidence::new(marker, context.is_recorded(&id)).undeclared() == Prune::Delete {
                changes.push(Change::new(id, Action::Delete));
            }
        }
        Ok(changes)
    }

    async fn apply(&self, change: &Change, _step: &StepContext) -> Result<(), DriverError> {
        let path = self.root.join(change.id.name.as_str());
        let io = |e| DriverError::new(FailureClass::Transient, e);
        match change.action {
            Action::Create | Action::Update | Action::Replace => {
                let resource = change
                    .desired
                    .as_deref()
                    .expect("a write has a desired spec");
                let spec = resource.spec.get::<MarkerFileSpec>().expect("a MarkerFile");
                tokio::fs::create_dir_all(&self.root).await.map_err(io)?;
                tokio::fs::write(&path, format!("{MARKER}\n{}", spec.text))
                    .await
                    .map_err(io)?;
            }
            Action::Delete => match tokio::fs::remove_file(&path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            },
            Action::NoOp | Action::Conflict | Action::Unsupported => {}
        }
        Ok(())
    }
}
