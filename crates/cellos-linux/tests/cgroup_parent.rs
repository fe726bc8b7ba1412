//! `CELLOS_CGROUP_PARENT` moves the cells' cgroups under another parent. Its own test binary,
//! because it changes the process environment.

use cellos_linux::cgroup::{CellCgroup, CgroupLimits, Layout};

#[test]
fn parent_from_the_environment_is_used_and_validated() {
    let parent = format!("cellos-parent-test-{}", std::process::id());
    std::env::set_var("CELLOS_CGROUP_PARENT", format!("{parent}/nested"));
    let id = "cell-under-custom-parent";
    let mut cg = CellCgroup::create(id, &CgroupLimits::default()).expect("create");
    let roots: Vec<_> = Layout::host().all_roots();
    for path in cg.paths() {
        let root = roots
            .iter()
            .find(|(_, r)| path.starts_with(r))
            .map(|(_, r)| r)
            .expect("leaf under a hierarchy root");
        assert_eq!(path, &root.join(&parent).join("nested").join(id));
    }
    assert_eq!(CellCgroup::list_leftovers(), [id]);
    cg.remove().expect("remove");
    assert!(CellCgroup::list_leftovers().is_empty());
    for (_, root) in &roots {
        let _ = std::fs::remove_dir(root.join(&parent).join("nested"));
        let _ = std::fs::remove_dir(root.join(&parent));
        assert!(!root.join(&parent).exists());
    }

    for bad in ["../escape", "a/../b", "/", "."] {
        std::env::set_var("CELLOS_CGROUP_PARENT", bad);
        let err = CellCgroup::create(id, &CgroupLimits::default()).expect_err(bad);
        assert!(err.to_string().contains("CELLOS_CGROUP_PARENT"), "{err}");
    }
}
