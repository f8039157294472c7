"""Runs inside the sandbox (system python3, -I): call `fn_name` of the program with the JSON arguments read
from stdin and write the JSON of what it returned as one line on a private copy of stdout.

The expected value never enters the sandbox: the parent compares. Whatever the program prints goes to stderr;
a program that exits, patches builtins or forges output cannot know the expected value to forge.
"""

import json
import os
import sys

PRELUDE = (
    "from typing import *\nimport collections, heapq, math, bisect, itertools, functools, string, re\n"
    "from collections import *\nfrom heapq import *\nfrom bisect import *\nfrom functools import *\n"
    "from itertools import *\nfrom math import *\n"
)


def main() -> None:
    result_fd = os.dup(1)
    os.dup2(2, 1)
    fn_name = sys.argv[1]
    args = json.loads(sys.stdin.read())
    ns = {"__name__": "solution"}  # not __main__: a demo block reading input() must not run
    exec(compile(PRELUDE, "prelude", "exec"), ns)
    with open("/sandbox/solution.py", encoding="utf-8") as f:
        exec(compile(f.read(), "solution.py", "exec"), ns)
    cls = ns.get("Solution")
    target = getattr(cls(), fn_name) if isinstance(cls, type) else ns[fn_name]
    line = json.dumps(target(*args), allow_nan=False) + "\n"
    with os.fdopen(result_fd, "w") as out:
        out.write(line)
    os._exit(0)


main()
