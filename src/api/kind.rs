//! Runtime dispatch over the kinds, for the CLI and the REST API, which learn the kind
//! from user input.

use super::event::EventSpec;
use super::eventsource::EventSourceSpec;
use super::function::FunctionSpec;
use super::node::NodeSpec;
use super::nodepool::NodePoolSpec;
use super::object::{Object, Resource};
use super::snapshot::SnapshotImageSpec;
use super::warmpool::WarmPoolSpec;

/// The kinds this API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Function,
    NodePool,
    Node,
    SnapshotImage,
    EventSource,
    Event,
    WarmPool,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 7] = [
        Kind::Function,
        Kind::NodePool,
        Kind::Node,
        Kind::SnapshotImage,
        Kind::EventSource,
        Kind::Event,
        Kind::WarmPool,
    ];

    /// `Function`, `NodePool`, …
    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => FunctionSpec::KIND,
            Kind::NodePool => NodePoolSpec::KIND,
            Kind::Node => NodeSpec::KIND,
            Kind::SnapshotImage => SnapshotImageSpec::KIND,
            Kind::EventSource => EventSourceSpec::KIND,
            Kind::Event => EventSpec::KIND,
            Kind::WarmPool => WarmPoolSpec::KIND,
        }
    }

    /// `functions`, `nodepools`, …
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Function => FunctionSpec::PLURAL,
            Kind::NodePool => NodePoolSpec::PLURAL,
            Kind::Node => NodeSpec::PLURAL,
            Kind::SnapshotImage => SnapshotImageSpec::PLURAL,
            Kind::EventSource => EventSourceSpec::PLURAL,
            Kind::Event => EventSpec::PLURAL,
            Kind::WarmPool => WarmPoolSpec::PLURAL,
        }
    }

    fn short(self) -> &'static [&'static str] {
        match self {
            Kind::Function => FunctionSpec::SHORT,
            Kind::NodePool => NodePoolSpec::SHORT,
            Kind::Node => NodeSpec::SHORT,
            Kind::SnapshotImage => SnapshotImageSpec::SHORT,
            Kind::EventSource => EventSourceSpec::SHORT,
            Kind::Event => EventSpec::SHORT,
            Kind::WarmPool => WarmPoolSpec::SHORT,
        }
    }

    /// The kind named by its `kind:` value (exact, as in manifests).
    pub fn from_kind_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind named on the command line: singular, plural or short form, any case.
    pub fn from_alias(alias: &str) -> Option<Kind> {
        let a = alias.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            k.name().eq_ignore_ascii_case(&a) || k.plural() == a || k.short().contains(&a.as_str())
        })
    }

    /// Every accepted alias, for help texts and errors.
    pub fn aliases() -> Vec<String> {
        Kind::ALL
            .into_iter()
            .flat_map(|k| {
                let mut v = vec![k.plural().to_string()];
                v.extend(k.short().iter().map(|s| s.to_string()));
                v
            })
            .collect()
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An object of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyObject {
    Function(Object<FunctionSpec>),
    NodePool(Object<NodePoolSpec>),
    Node(Object<NodeSpec>),
    SnapshotImage(Object<SnapshotImageSpec>),
    EventSource(Object<EventSourceSpec>),
    Event(Object<EventSpec>),
    WarmPool(Object<WarmPoolSpec>),
}

/// Runs `$body` with `$obj` bound to the typed object inside an [`AnyObject`], and `$K` to its
/// spec type (usable in turbofish position).
#[macro_export]
macro_rules! with_any_object {
    ($any:expr, $obj:ident, $body:expr) => {
        match $any {
            $crate::api::AnyObject::Function($obj) => $body,
            $crate::api::AnyObject::NodePool($obj) => $body,
            $crate::api::AnyObject::Node($obj) => $body,
            $crate::api::AnyObject::SnapshotImage($obj) => $body,
            $crate::api::AnyObject::EventSource($obj) => $body,
            $crate::api::AnyObject::Event($obj) => $body,
            $crate::api::AnyObject::WarmPool($obj) => $body,
        }
    };
}

/// Runs `$body` with the type alias `$K` set to the spec type of a [`Kind`] value.
#[macro_export]
macro_rules! with_kind {
    ($kind:expr, $K:ident, $body:expr) => {
        match $kind {
            $crate::api::Kind::Function => {
                type $K = $crate::api::FunctionSpec;
                $body
            }
            $crate::api::Kind::NodePool => {
                type $K = $crate::api::NodePoolSpec;
                $body
            }
            $crate::api::Kind::Node => {
                type $K = $crate::api::NodeSpec;
                $body
            }
            $crate::api::Kind::SnapshotImage => {
                type $K = $crate::api::SnapshotImageSpec;
                $body
            }
            $crate::api::Kind::EventSource => {
                type $K = $crate::api::EventSourceSpec;
                $body
            }
            $crate::api::Kind::Event => {
                type $K = $crate::api::EventSpec;
                $body
            }
            $crate::api::Kind::WarmPool => {
                type $K = $crate::api::WarmPoolSpec;
                $body
            }
        }
    };
}

impl AnyObject {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            AnyObject::Function(_) => Kind::Function,
            AnyObject::NodePool(_) => Kind::NodePool,
            AnyObject::Node(_) => Kind::Node,
            AnyObject::SnapshotImage(_) => Kind::SnapshotImage,
            AnyObject::EventSource(_) => Kind::EventSource,
            AnyObject::Event(_) => Kind::Event,
            AnyObject::WarmPool(_) => Kind::WarmPool,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &super::ObjectMeta {
        crate::with_any_object!(self, o, &o.metadata)
    }

    /// Mutable metadata.
    pub fn metadata_mut(&mut self) -> &mut super::ObjectMeta {
        crate::with_any_object!(self, o, &mut o.metadata)
    }

    /// Full validation, see [`Object::validate`].
    pub fn validate(&self) -> Result<(), super::FieldErrors> {
        crate::with_any_object!(self, o, o.validate())
    }
}

/// Wraps a typed object into [`AnyObject`].
pub trait IntoAny {
    /// The wrapped object.
    fn into_any(self) -> AnyObject;
}

macro_rules! into_any {
    ($spec:ty, $variant:ident) => {
        impl IntoAny for Object<$spec> {
            fn into_any(self) -> AnyObject {
                AnyObject::$variant(self)
            }
        }
    };
}
into_any!(FunctionSpec, Function);
into_any!(NodePoolSpec, NodePool);
into_any!(NodeSpec, Node);
into_any!(SnapshotImageSpec, SnapshotImage);
into_any!(EventSourceSpec, EventSource);
into_any!(EventSpec, Event);
into_any!(WarmPoolSpec, WarmPool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        for (a, k) in [
            ("function", Kind::Function),
            ("functions", Kind::Function),
            ("fn", Kind::Function),
            ("Function", Kind::Function),
            ("nodepool", Kind::NodePool),
            ("np", Kind::NodePool),
            ("nodepools", Kind::NodePool),
            ("node", Kind::Node),
            ("nodes", Kind::Node),
            ("snapshotimage", Kind::SnapshotImage),
            ("si", Kind::SnapshotImage),
            ("eventsource", Kind::EventSource),
            ("eventsources", Kind::EventSource),
            ("es", Kind::EventSource),
            ("events", Kind::Event),
            ("ev", Kind::Event),
            ("warmpools", Kind::WarmPool),
            ("wp", Kind::WarmPool),
            ("pools", Kind::WarmPool),
        ] {
            assert_eq!(Kind::from_alias(a), Some(k), "{a}");
        }
        assert_eq!(Kind::from_alias("pods"), None);
    }
}
