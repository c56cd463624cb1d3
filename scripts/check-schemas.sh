#!/usr/bin/env bash
# Validates every example manifest against the checked-in JSON Schemas with an
# independent validator (check-jsonschema), and proves the check can fail by feeding it
# a document with an unknown field. Multi-document files are split first (one JSON file
# per document), since check-jsonschema reads one document per file.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" examples/*/*.yaml <<'PY'
import json, pathlib, sys
from ruamel.yaml import YAML
out = pathlib.Path(sys.argv[1])
yaml = YAML(typ="safe")
for name in sys.argv[2:]:
    for i, doc in enumerate(yaml.load_all(pathlib.Path(name).read_text())):
        if doc is None:
            continue
        target = out / (name.replace("/", "__") + f".{i}.json")
        target.write_text(json.dumps(doc, default=str))
PY
count=$(ls "$work"/*.json | wc -l)
check-jsonschema --schemafile schemas/manifest.json "$work"/*.json
echo "$count example documents valid against schemas/manifest.json"

cat > "$work/bad.json" <<'JSON'
{"apiVersion": "gitvisor.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "br0"}, "spec": {"mtuu": 9000}}
JSON
if check-jsonschema --schemafile schemas/manifest.json "$work/bad.json" >/dev/null 2>&1; then
    echo "error: the schema accepted an unknown field; the check cannot fail" >&2
    exit 1
fi
echo "a document with an unknown field is rejected, as it should be"
