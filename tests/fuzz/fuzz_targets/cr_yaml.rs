//! A CR YAML file as standalone mode and `check` read it: the schema check and `compile` never
//! panic, whatever the documents say.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trunkgate_crds::compile;
use trunkgate_crds::files::{Loader, Manifests};

fuzz_target!(|data: &[u8]| {
    static LOADER: OnceLock<Loader> = OnceLock::new();
    let Ok(text) = std::str::from_utf8(data) else { return };
    let loader = LOADER.get_or_init(Loader::new);
    let mut m = Manifests::default();
    loader.load(Path::new("fuzz.yaml"), text, &mut m);
    let _ = compile(&m.trunks, &m.ownerships, &m.secrets, None);
});
