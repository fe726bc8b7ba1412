//! `cellos pause` and `cellos resume` of a cell started by `cellos run`: its output stops and
//! goes on, the events are in the signed log, and a paused cell still ends without residue.

use std::time::{Duration, Instant};

use crate::support::*;

/// Lines of output the cell has written so far.
fn lines_of(home: &Home, id: &str) -> usize {
    stdout(&home.run(&["logs", id])).lines().count()
}

#[test]
fn pause_stops_the_cell_and_resume_lets_it_go_on() {
    let home = Home::new();
    let id = unique_id("pause");
    let spec = home.spec(
        &id,
        &sh("i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"),
    );
    let mut run = home.start_run(&spec);
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines_of(&home, &id) < 3 {
        assert!(Instant::now() < deadline, "cell never wrote output");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = home.run(&["pause", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = lines_of(&home, &id);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines_of(&home, &id), before, "output went on while paused");

    let out = home.run(&["resume", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lines_of(&home, &id) > before,
        "output did not go on after resume"
    );

    // A paused cell still ends cleanly when killed.
    assert!(home.run(&["pause", &id]).status.success());
    let out = home.run(&["kill", "-s", "KILL", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    run.wait().unwrap();
    assert!(
        residue_of(&home, &id).is_empty(),
        "{:?}",
        residue_of(&home, &id)
    );

    let all = events(&home);
    let types: Vec<String> = events_of(&all, &id).iter().map(|e| short_type(e)).collect();
    let paused = types.iter().filter(|t| *t == "lifecycle.v1.paused").count();
    let resumed = types
        .iter()
        .filter(|t| *t == "lifecycle.v1.resumed")
        .count();
    assert_eq!((paused, resumed), (2, 1), "{types:?}");
    let mechanism = events_of(&all, &id)
        .into_iter()
        .find(|e| short_type(e) == "lifecycle.v1.paused")
        .map(|e| {
            e["data"]["mechanism"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
    assert!(
        mechanism
            .as_deref()
            .is_some_and(|m| m.starts_with("cgroup ")),
        "{mechanism:?}"
    );
    assert!(home.run(&["verify"]).status.success());
}

#[test]
fn pause_of_an_unknown_cell_fails_like_kill() {
    let home = Home::new();
    let pause = home.run(&["pause", "no-such-cell"]);
    let kill = home.run(&["kill", "no-such-cell"]);
    assert_ne!(pause.status.code(), Some(0));
    assert_eq!(pause.status.code(), kill.status.code());
    assert!(
        stderr(&pause).contains("no running cell 'no-such-cell'"),
        "{}",
        stderr(&pause)
    );
    assert_eq!(stderr(&pause).lines().count(), 1, "{}", stderr(&pause));
}
