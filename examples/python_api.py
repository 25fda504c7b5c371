"""The sigma-arrow Python API on the example rules and events (run from the project root).

python examples/python_api.py
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sigma_arrow as sa
from sigma_arrow.errorlog import ErrorLog
from sigma_arrow.flatten import records_to_batch
from sigma_arrow.scanning import ScanStats

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "rules"
EVENTS = HERE / "events.jsonl"


def main() -> None:
    # 1. Load and compile rules once (cached on disk); .errors lists what could not be used and why.
    rules = sa.load_rules([RULES], pipelines=[], logsource_map="windows")
    print(f"{len(rules)} rules loaded, {len(rules.errors)} failed")
    for error in rules.errors:
        print("  ", error)

    # 2. Stream match records over files, directories or globs (bounded memory).
    errors = ErrorLog()
    stats = ScanStats()
    levels: Counter[str] = Counter()
    for matches in sa.scan([EVENTS], rules, errors=errors, stats=stats):
        for record in matches.to_pylist():
            levels[record["rule_level"]] += 1
            print(f"{record['event_index']:>3} {record['rule_level']:<8} {record['rule_title']}")
    print(f"{stats.events} events, {stats.matches} matches {dict(levels)}, {errors.total} input problems")

    # 3. Or evaluate your own Arrow batches: flatten events, then ask the engine.
    engine = sa.Engine(rules)
    batch = records_to_batch(
        [
            {
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "EventID": 1,
                "Image": "C:\\Windows\\System32\\whoami.exe",
                "CommandLine": "whoami /priv",
            },
            {
                "Channel": "Microsoft-Windows-Sysmon/Operational",
                "EventID": 1,
                "Image": "C:\\Windows\\System32\\notepad.exe",
                "CommandLine": "notepad.exe",
            },
        ],
        source="inline",
        first_index=0,
    )
    masks = engine.evaluate(batch)  # one boolean column per rule id
    fired = {
        name: masks.column(name).to_pylist()
        for name in masks.schema.names
        if any(masks.column(name).to_pylist())
    }
    print("masks:", fired)
    print(engine.matches(batch, include_event=False).to_pylist())


if __name__ == "__main__":
    main()
