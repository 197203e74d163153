"""The key reference of docs/configuration.md, generated from ``configs/schema.json``: one table per
section, each key's type, default and meaning.

    python tools/config_docs.py            # rewrite the tables between the config-table markers
    python tools/config_docs.py --print    # print them
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from utils.atomic_io import atomic_write  # noqa: E402
from utils.config import DOCS, REQUIRED, SCHEMA, SECTIONS  # noqa: E402

MARKERS = r"(<!-- config-table[^\n]*-->\n).*?(\n<!-- /config-table -->)"


def markdown_table() -> str:
    """The generated part of docs/configuration.md: a heading and a table per schema section."""
    rows = []
    for section, title in SECTIONS.items():
        rows += ["", f"### {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for o in (o for o in SCHEMA if o.section == section):
            default = "required" if o.default is REQUIRED else f"`{json.dumps(o.default)}`"
            kind = o.type + (" or null" if o.nullable else "")
            what = "Each one of" if o.type.startswith("list") else "One of"
            choices = f" {what}: {', '.join(f'`{c}`' for c in o.choices)}." if o.choices else ""
            rows.append(f"| `{o.name}` | {kind} | {default} | {o.help}{choices} |")
    return "\n".join(rows[1:])


def update_docs() -> None:
    """Replace the generated tables between the config-table markers of docs/configuration.md."""
    path = os.path.join(ROOT, DOCS)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    atomic_write(path, re.sub(MARKERS, lambda m: m.group(1) + markdown_table() + m.group(2), text, flags=re.S))


if __name__ == "__main__":
    print(markdown_table()) if "--print" in sys.argv else update_docs()
