//! Serde for [`RootfsSpec`]: the string `host`, or a map with `path` or `ociLayout` + `ref`.

use std::fmt;

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Schema, SchemaObject};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::document::{RootfsOci, RootfsPath, RootfsSpec};

/// The word that selects the host's own system directories.
const HOST: &str = "host";

impl Serialize for RootfsSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RootfsSpec::Host => s.serialize_str(HOST),
            RootfsSpec::Path(path) => path.serialize(s),
            RootfsSpec::Oci(oci) => oci.serialize(s),
        }
    }
}

/// Every key a rootfs map may hold; which ones are present decides the variant.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RootfsFields {
    path: Option<String>,
    oci_layout: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl<'de> Deserialize<'de> for RootfsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RootfsVisitor;

        impl<'de> Visitor<'de> for RootfsVisitor {
            type Value = RootfsSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host\", {path} or {ociLayout, ref}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RootfsSpec, E> {
                if v == HOST {
                    Ok(RootfsSpec::Host)
                } else {
                    Err(E::custom(format!(
                        "rootfs must be \"host\", {{path}} or {{ociLayout, ref}}, not {v:?}"
                    )))
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RootfsSpec, A::Error> {
                let fields = RootfsFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match fields {
                    RootfsFields {
                        path: Some(path),
                        oci_layout: None,
                        reference: None,
                    } => Ok(RootfsSpec::Path(RootfsPath { path })),
                    RootfsFields {
                        path: None,
                        oci_layout: Some(oci_layout),
                        reference: Some(reference),
                    } => Ok(RootfsSpec::Oci(RootfsOci {
                        oci_layout,
                        reference,
                    })),
                    RootfsFields {
                        path: None,
                        oci_layout: Some(_),
                        reference: None,
                    } => Err(de::Error::custom(
                        "rootfs with ociLayout also needs ref (an image name in the layout or a sha256: digest)",
                    )),
                    _ => Err(de::Error::custom(
                        "rootfs map must hold either path, or ociLayout and ref",
                    )),
                }
            }
        }

        d.deserialize_any(RootfsVisitor)
    }
}

/// Schema of the `host` literal inside the untagged `RootfsSpec` schema.
pub(crate) fn host_literal_schema(_: &mut SchemaGenerator) -> Schema {
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::String.into()),
        enum_values: Some(vec![HOST.into()]),
        ..Default::default()
    })
}
