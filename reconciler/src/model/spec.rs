//! A resource's spec: any kind's spec type, behind one value.
//!
//! The spec used to be a closed enum of the four built-in spec types, so a new kind
//! edited every `match` on it. Now each kind's spec type implements [`KindSpec`] (its
//! kind, and what it refers to) in its own folder, and [`Spec`] holds one of them: code
//! that knows the kind asks for its type ([`Spec::get`]), code that does not (the graph,
//! the state store, the planner) uses what every spec answers.
//!
//! A `Spec` serialises exactly as the spec type inside it does (the enum was
//! `#[serde(untagged)]`), so the spec hashes recorded in existing state stores do not
//! change.

use std::any::Any;
use std::fmt;

use serde::{Serialize, Serializer};

use super::{Kind, Reference};

/// A kind's spec type: what the kind is, and which resources a spec of it refers to.
pub trait KindSpec: fmt::Debug + Clone + PartialEq + Serialize + Send + Sync + 'static {
    /// The kind whose spec this is.
    const KIND: Kind;

    /// The resources this spec refers to, with the field path each is written at
    /// (`spec.disks[0].volume`); the graph orders them before the resource. None by default.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

/// What [`Spec`] needs of a [`KindSpec`], in a form a trait object can hold.
trait AnySpec: fmt::Debug + Send + Sync {
    fn kind(&self) -> Kind;
    fn references(&self) -> Vec<Reference>;
    fn clone_box(&self) -> Box<dyn AnySpec>;
    fn same_as(&self, other: &dyn AnySpec) -> bool;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_serialize(&self) -> &dyn erased_serde::Serialize;
}

impl<S: KindSpec> AnySpec for S {
    fn kind(&self) -> Kind {
        S::KIND
    }

    fn references(&self) -> Vec<Reference> {
        KindSpec::references(self)
    }

    fn clone_box(&self) -> Box<dyn AnySpec> {
        Box::new(self.clone())
    }

    fn same_as(&self, other: &dyn AnySpec) -> bool {
        other.as_any().downcast_ref::<S>() == Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn as_serialize(&self) -> &dyn erased_serde::Serialize {
        self
    }
}

/// One resource's spec, of any kind.
pub struct Spec(Box<dyn AnySpec>);

impl Spec {
    pub fn new<S: KindSpec>(spec: S) -> Self {
        Spec(Box::new(spec))
    }

    pub fn kind(&self) -> Kind {
        self.0.kind()
    }

    /// The spec as `S`, if it is one (a Bridge's spec as `BridgeSpec`).
    pub fn get<S: KindSpec>(&self) -> Option<&S> {
        self.0.as_any().downcast_ref()
    }

    pub fn get_mut<S: KindSpec>(&mut self) -> Option<&mut S> {
        self.0.as_any_mut().downcast_mut()
    }

    /// The resources this spec refers to ([`KindSpec::references`]).
    pub fn references(&self) -> Vec<Reference> {
        self.0.references()
    }
}

impl<S: KindSpec> From<S> for Spec {
    fn from(spec: S) -> Self {
        Spec::new(spec)
    }
}

impl Clone for Spec {
    fn clone(&self) -> Self {
        Spec(self.0.clone_box())
    }
}

impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_as(other.0.as_ref())
    }
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.kind())?;
        self.0.fmt(f)?;
        f.write_str(")")
    }
}

/// Exactly as the spec type inside: the JSON (and so the spec hash) is what it was.
impl Serialize for Spec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        erased_serde::serialize(self.0.as_serialize(), serializer)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::model::{Name, ResourceId};

    /// Two spec types of test kinds (the built-in ones live in their driver folders).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Snapshot {
        from: Name,
        size: u32,
    }

    impl KindSpec for Snapshot {
        const KIND: Kind = Kind::new("SpecTestSnapshot", 901);

        fn references(&self) -> Vec<Reference> {
            vec![Reference {
                target: ResourceId::new(Kind::Volume, self.from.clone()),
                path: "spec.from".into(),
            }]
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Plain {
        size: u32,
    }

    impl KindSpec for Plain {
        const KIND: Kind = Kind::new("SpecTestPlain", 902);
    }

    #[test]
    fn a_spec_serialises_as_its_concrete_type() {
        let plain = Plain { size: 3 };
        assert_eq!(
            serde_json::to_string(&Spec::new(plain.clone())).unwrap(),
            serde_json::to_string(&plain).unwrap()
        );
    }

    #[test]
    fn typed_access_equality_and_references() {
        let copy = Snapshot {
            from: Name::parse("base").unwrap(),
            size: 1,
        };
        let mut spec = Spec::new(copy.clone());
        assert_eq!(spec.kind(), Snapshot::KIND);
        assert_eq!(spec.get::<Snapshot>(), Some(&copy));
        assert!(spec.get::<Plain>().is_none());
        assert_eq!(spec.clone(), spec);
        assert_ne!(spec, Spec::new(Plain { size: 1 }));
        let refs = spec.references();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].target.to_string(), "Volume/base");
        assert_eq!(refs[0].path, "spec.from");
        spec.get_mut::<Snapshot>().unwrap().size = 2;
        assert_ne!(spec, Spec::new(copy));
        assert!(format!("{spec:?}").starts_with("SpecTestSnapshot(Snapshot {"));
    }
}
