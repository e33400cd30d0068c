//! Rebuilds the crate when a migration file is added or changed: `store::setup` embeds the
//! `migrations` folder, and cargo does not see a new file in it by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
