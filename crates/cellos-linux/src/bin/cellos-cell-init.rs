//! Stand-alone cell init for tests and embedders whose own binary cannot re-exec itself:
//! `cellos-cell-init __cell-init` (started by the backend, never by hand).

fn main() {
    cellos_linux::init::run_if_init();
    eprintln!("cellos-cell-init: started by the CellOS Linux backend only (argv[1] = __cell-init)");
    std::process::exit(2);
}
