"""Writes ``sim_plant/PLANTS.md``: every tag of every simulated plant, from the catalog.

The catalog is the one place tags are described; this page, the protocol
servers and the shipped configs are all derived from it, and a test fails
when the page is out of date.

    python -m sim_plant.docs
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim_plant.plants import PLANTS

PAGE = Path(__file__).resolve().parent / "PLANTS.md"


def _fmt(x: float) -> str:
    return f"{x:g}"


def render() -> str:
    out = [
        "# The simulated plants and their tags",
        "",
        "Written by `python -m sim_plant.docs` from each plant's `TAGS` (sim_plant/plants/); do not edit by hand.",
        "The range is the normal operating range, the one plantwatch's `limits` detector alarms outside of.",
        "",
    ]
    for name, cls in PLANTS.items():
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"## {name} ({len(cls.TAGS)} tags, dt {cls.dt:g} s)", "", doc, ""]
        out += ["| tag | unit | range | role | loop | area | meaning |", "|---|---|---|---|---|---|---|"]
        for t in cls.TAGS:
            out.append(
                f"| `{t.name}` | {t.unit or '-'} | {_fmt(t.lo)} .. {_fmt(t.hi)} | {t.role} | {t.loop or '-'} "
                f"| {t.area} | {t.description} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}")
    sys.exit(0)
