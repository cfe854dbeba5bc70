//! The snapshot Secret's data as an edge reads it (gzip JSON), and the JSON inside it: decoding
//! never panics, and a decoded snapshot indexes and encodes. (The content hash check makes a
//! mutated gzip stream fail early, so the JSON layer is fed directly as well.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use trunkgate_crds::EdgeConfig;
use trunkgate_crds::snapshot::NumberIndex;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = EdgeConfig::decode(data) {
        let _ = NumberIndex::of(&config).segments();
        let _ = config.encode();
    }
    if let Ok(config) = serde_json::from_slice::<EdgeConfig>(data) {
        let index = NumberIndex::of(&config);
        let _ = index.segments();
        for t in &config.trunks {
            let _ = config.trunk(&t.id);
        }
        let _ = config.stamped().encode();
    }
});
