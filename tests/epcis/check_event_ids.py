"""Checks every eventID of an EPCIS 2.0 document written by doorstep against the CBV 2.0 event
hash computed by GS1's reference implementation (PyPI `epcis-event-hash-generator`).

Usage: python check_event_ids.py DOCUMENT.jsonld [MIN_EVENTS]
Exit 0 when every event's eventID equals the reference hash of that event (and the document holds
at least MIN_EVENTS events); 1 otherwise, naming each event that differs.
"""

import json
import sys

from epcis_event_hash_generator import hash_generator, json_to_py


def main() -> int:
    path = sys.argv[1]
    least = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with open(path, encoding="utf-8") as f:
        text = f.read()
    events = json.loads(text)["epcisBody"]["eventList"]
    prehashes = hash_generator.derive_prehashes_from_events(json_to_py.event_list_from_epcis_document_str(text))
    hashes = hash_generator.calculate_hashes_from_pre_hashes(prehashes, "sha256")
    # The reference tool leaves out an event it cannot read: the lists would no longer line up.
    if len(hashes) != len(events):
        print(f"{path}: the reference read {len(hashes)} of {len(events)} events")
        return 1
    if len(events) < least:
        print(f"{path}: {len(events)} events, expected at least {least}")
        return 1
    wrong = [(i, e["eventID"], h, p) for i, (e, h, p) in enumerate(zip(events, hashes, prehashes)) if e["eventID"] != h]
    for i, ours, theirs, prehash in wrong[:5]:
        print(f"event {i}: eventID {ours}\n  reference {theirs}\n  pre-hash  {prehash}")
    if wrong:
        print(f"{path}: {len(wrong)} of {len(events)} eventIDs differ from the reference hash")
        return 1
    kinds = {}
    for e in events:
        kind = "errorDeclaration" if "errorDeclaration" in e else e["bizStep"]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{path}: all {len(events)} eventIDs equal the reference CBV 2.0 hash ({kinds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
