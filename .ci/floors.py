"""Print pip constraints that pin every declared dependency to its floor.

Reads ``pyproject.toml``: each ``name>=X`` in ``[project].dependencies`` and in the optional extras
named on the command line becomes ``name==X``; an extra naming this project's own extras
(``implicit-rec[a,b]``) contributes theirs. CI installs with these constraints and runs the fast
test lane, so the floors in pyproject.toml are tested claims rather than guesses.

Usage: python .ci/floors.py [EXTRA ...] > constraints.txt
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
specs = list(project["dependencies"])
todo = list(sys.argv[1:])
while todo:
    for spec in extras[todo.pop()]:
        own = re.fullmatch(rf"\s*{re.escape(project['name'])}\[([A-Za-z0-9_,\s-]+)\]\s*", spec)
        if own:
            todo += [e.strip() for e in own[1].split(",")]
        else:
            specs.append(spec)
for spec in dict.fromkeys(specs):
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][A-Za-z0-9.]*)\s*", spec)
    if match is None:
        sys.exit(f"pyproject.toml: dependency {spec!r} has no plain '>=' floor; floors.py cannot pin it")
    print(f"{match[1]}=={match[2]}")
