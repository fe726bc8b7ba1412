"""Asserts on one boot's guest log: the guest ran to its end marker and every expected check
reported ok. Prints one table row per check. Usage: assert.py BOOT LOG SECONDS CHECK..."""
import json, sys

boot, log, secs, expected = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
results, begun, ended = {}, None, False
with open(log, errors="replace") as f:
    for line in f:
        # The console may put terminal escapes before the first marker.
        line = line.strip()
        if "CELLOS-VM-BEGIN " in line:
            begun = line.split("CELLOS-VM-BEGIN ", 1)[1]
        elif line.startswith("CELLOS-VM-END"):
            ended = True
        elif line.startswith("CELLOS-VM {"):
            r = json.loads(line[len("CELLOS-VM "):])
            results[r["check"]] = r

ok = begun is not None and ended
print(f"{boot:<12} {'boot':<18} {'ok' if ok else 'FAIL':<6} {begun or 'the guest never started the battery'}; {secs} s{'' if ended else '; no end marker'}")
for check in expected:
    r = results.get(check)
    passed = bool(r and r["ok"])
    ok &= passed
    detail = r["detail"] if r else "not reported"
    print(f"{boot:<12} {check:<18} {'ok' if passed else 'FAIL':<6} {detail[:160]}")
sys.exit(0 if ok else 1)
