#!/usr/bin/env python3
"""Write a variant of a facegate TOML config with a few keys changed, by text edit.

    config_variant.py SRC.toml DST.toml section.key=value [section.key=value ...]

A text edit (not parse + dump) keeps every other line, comment and later change of the shipped
file as it is. `value` is written verbatim (TOML syntax: false, 1.0, "text"). A key missing from its
section is added right after the section header; a missing section is an error.
"""
import re
import sys


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    src, dst, edits = argv[0], argv[1], argv[2:]
    lines = open(src).read().split("\n")
    for edit in edits:
        path, _, value = edit.partition("=")
        section, _, key = path.rpartition(".")
        if not section or not key or not value:
            raise SystemExit(f"config_variant: bad edit {edit!r} (want section.key=value)")
        header, cur, done = None, None, False
        key_re = re.compile(rf"^(\s*{re.escape(key)}\s*=\s*)(.*?)(\s*#.*)?$")
        for i, line in enumerate(lines):
            m = re.match(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$", line)
            if m:
                cur = m.group(1)
                if cur == section:
                    header = i
                continue
            if cur == section:
                k = key_re.match(line)
                if k:
                    lines[i] = f"{k.group(1)}{value}{k.group(3) or ''}"
                    done = True
                    break
        if not done:
            if header is None:
                raise SystemExit(f"config_variant: no [{section}] section in {src}")
            lines.insert(header + 1, f"{key} = {value}")
    with open(dst, "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
