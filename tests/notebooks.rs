//! The notebooks in notebooks/ execute without a cell error (nbclient, the reference venv's
//! Python kernel); their outputs are not written back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn execute(name: &str) {
    let path = root().join("notebooks").join(name);
    let code = r#"
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                 resources={"metadata": {"path": sys.argv[2]}})
client.execute()
print(sum(1 for c in nb.cells if c.cell_type == "code"), "code cells ran")
"#;
    let o = std::process::Command::new(reference_python())
        .args(["-c", code])
        .arg(&path)
        .arg(root().join("notebooks"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{name}: {}", String::from_utf8_lossy(&o.stdout).trim());
}

#[test]
fn the_demo_notebook_runs() {
    execute("demo.ipynb");
}

#[test]
fn the_embeddings_notebook_runs() {
    execute("embeddings.ipynb");
}
