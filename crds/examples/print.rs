use kube::CustomResourceExt;
fn main() {
    println!(
        "{}",
        serde_json::to_string_pretty(&trunkgate_crds::CarrierTrunk::crd()).unwrap()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&trunkgate_crds::NumberOwnership::crd()).unwrap()
    );
}
