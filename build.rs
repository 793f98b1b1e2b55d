//! Embeds the built-in provider catalog: every `providers/*.toml` becomes an
//! entry of a table that `src/config/catalog.rs` includes, so adding a
//! vendor is adding a file.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=providers");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("providers/ exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    names.sort();
    let mut out = String::from("&[\n");
    for name in names {
        let path = dir.join(format!("{name}.toml"));
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("]\n");
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("catalog.rs");
    std::fs::write(target, out).unwrap();
}
